"""What every benchmark shares: statistics, figures, a loop-lag probe, RSS, synthetic services.

A benchmark measures a figure and its baseline in the same run, over repeated runs, and
reports median, p95 and p99 of each. Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from aime_tui.services.base import Service
from aime_tui.services.registry import SERVICE_NAMES

REPO = Path(__file__).resolve().parent.parent


# -- statistics ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    p95: float
    p99: float
    min: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        values = [float(v) for v in values]
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(values),
            median=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            min=min(values),
            max=max(values),
            mean=sum(values) / len(values),
        )

    def scaled(self, factor: float) -> "Stats":
        return Stats(self.n, *(getattr(self, k) * factor for k in ("median", "p95", "p99", "min", "max", "mean")))


@dataclass
class Figure:
    """One row of the results table."""

    benchmark: str
    name: str
    unit: str
    value: Stats
    baseline: Stats | None = None
    baseline_name: str = ""
    target: str = ""
    #: True/False when the figure has a target, None when it is for information.
    met: bool | None = None
    #: Which statistic the target is judged on ("median", "p99", ...).
    judged_on: str = "median"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.n or not self.baseline.median:
            return None
        return self.value.median / self.baseline.median

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


# -- event-loop lag -------------------------------------------------------------------


class LagProbe:
    """A 10 ms ticker on the running loop; each tick records how late it woke up.

    Only ticks taken while `active` is true are kept, so a benchmark can measure exactly
    the window it cares about (a restoration, a backfill) inside a longer run.
    """

    def __init__(self, period: float = 0.010) -> None:
        self.period = period
        self.samples: list[float] = []
        self.active = True
        self._task: asyncio.Task | None = None

    def start(self) -> "LagProbe":
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-probe")
        return self

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            late = loop.time() - due
            if self.active:
                self.samples.append(late)

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.samples


# -- synthetic services ---------------------------------------------------------------


class SyntheticService(Service):
    """Follows the real Service contract: a start that takes `start_delay`, or never returns."""

    def __init__(self, name: str, *, start_delay: float = 0.010, hang: bool = False,
                 modes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.name = name
        self.modes = modes
        self.start_delay = start_delay
        self.hang = hang
        self.running = False
        self.ready_at: float | None = None

    async def start(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        self.running = True
        self.ready_at = time.perf_counter()

    async def stop(self) -> None:
        self.running = False

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "tracks_found": 0, "last_check": None}


def synthetic_like_real(config=None, store=None, *, start_delay: float = 0.0) -> list[Service]:
    """Synthetic services named like the real three (the scheduler with its two modes)."""
    return [
        SyntheticService(
            name, start_delay=start_delay,
            modes=("MAINTENANCE", "MASSIVE") if name == "scheduler" else (),
        )
        for name in SERVICE_NAMES
    ]


# -- processes and machine ------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size in MB (10^6 bytes), from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")


def dashboard_host(launcher: int) -> int:
    """The process hosting a dashboard launched as `launcher`: its forked child."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected the launcher {launcher} to have one child, found {children}")
    return int(children[0])


def executable(name: str) -> Path:
    """A console script installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable} nor on PATH")
    return Path(found)


def filesystem_of(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=5).stdout
        return out.splitlines()[1].split()[1]
    except Exception:
        return "unknown"


def machine_info(tmp_root: Path) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "tmp_filesystem": filesystem_of(tmp_root),
    }


@contextmanager
def scratch_dir(root: Path | None, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"aime-bench-{prefix}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def now() -> float:
    return time.perf_counter()


def free_port() -> int:
    """A loopback port free now, below the ephemeral range: one from bind(0) may be taken
    meanwhile as the source port of another process's connection (a test run beside)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port between 10000 and {low}")
