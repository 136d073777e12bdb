"""Launch → first paint, and → interactive with the restoration summary on screen.

The installed `aime-tui --demo` (injected faults off) runs in a pseudo-terminal; the
figures are the time from exec to its first frame (the title bar) and to the moment the
summary line ("Restored 3 succeeded") reaches the terminal, the same data dir relaunched
each time (what a restart does). The baseline is the floor for any Textual app: a label
and a footer in the same pseudo-terminal, exec → label on screen, measured in the same
run with the runs interleaved so that noise hits both alike. (The earlier baseline, a bare
interpreter importing our dependencies, is retired: it says nothing about what a user
sees first.)
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

import aime_tui

from .common import REPO, Figure, Stats, scratch_dir
from .context import Context
from .terminal import DemoTerminal
from .textual_floor import READY

SUMMARY = b"Restored 3 succeeded, 0 failed"
TITLE = "aime-tui ─ demo".encode()
PAINT_TARGET, SUMMARY_TARGET = 1.15, 1.6


def compile_package() -> None:
    """Byte-compile aime_tui as an install does: with PYTHONDONTWRITEBYTECODE set (or a
    checkout just edited), every launch would otherwise compile the changed modules."""
    compileall.compile_dir(Path(aime_tui.__file__).parent, quiet=1)


def run(ctx: Context) -> list[Figure]:
    compile_package()
    runs = ctx.runs(15, 1)
    summary, paint, quits, floor = [], [], [], []
    with scratch_dir(ctx.tmp_root, "launch") as directory:
        data_dir, config = directory / "demo", directory / "none.toml"
        for run_index in range(runs + 1):  # the first run creates the database: a warm-up
            floor_app = [sys.executable, "-m", "benchmarks.textual_floor"]
            with DemoTerminal(data_dir, config, command=floor_app, cwd=REPO) as terminal:
                floor_seconds = terminal.wait_for(READY)
                if terminal.quit() is None:
                    raise AssertionError("the minimal Textual app did not quit within 10 s of q")
            with DemoTerminal(data_dir, config) as terminal:
                painted = terminal.wait_for(TITLE)
                shown = terminal.wait_for(SUMMARY)
                quit_seconds = terminal.quit()
            if quit_seconds is None:
                raise AssertionError("aime-tui did not quit within 10 s of q")
            if run_index:
                summary.append(shown)
                paint.append(painted)
                quits.append(quit_seconds)
                floor.append(floor_seconds)
    textual = Stats.of(floor)
    first, shown = Stats.of(paint), Stats.of(summary)
    return [
        Figure(
            "launch", "launch → first paint (title bar), vs a minimal Textual app", "s", first, textual,
            "label + footer app", target=f"≤ {PAINT_TARGET}×", met=first.median <= PAINT_TARGET * textual.median,
        ),
        Figure(
            "launch", "launch → summary on screen (demo, pty), vs a minimal Textual app", "s", shown, textual,
            "label + footer app", target=f"≤ {SUMMARY_TARGET}×", met=shown.median <= SUMMARY_TARGET * textual.median,
        ),
        Figure("launch", "q → process exited", "s", Stats.of(quits)),
    ]
