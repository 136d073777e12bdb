"""The options one benchmark run was given: quick or full, repeats, where scratch files go."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Context:
    quick: bool = False
    #: Scratch directories go here (None: the system's temporary directory).
    tmp_root: Path | None = None
    #: Minutes of demo for the memory soak (None: 10 in a full run, a few seconds in quick).
    soak_minutes: float | None = None
    #: kill -9 count for the soak (None: 500 full, 12 quick).
    kills: int | None = None
    #: Override the number of repeated runs of every benchmark.
    repeats: int | None = None
    verbose: bool = True

    def runs(self, full: int, quick: int) -> int:
        if self.repeats is not None:
            return max(1, self.repeats)
        return quick if self.quick else full

    def pick(self, full, quick):
        return quick if self.quick else full

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"  · {text}", file=sys.stderr, flush=True)
