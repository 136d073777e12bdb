"""Launch → interactive with the restoration summary on screen.

The installed `aime-tui --demo` (injected faults off) runs in a pseudo-terminal; the
figure is the time from exec to the moment the summary line ("Restored 3 succeeded")
reaches the terminal, the same data dir relaunched each time (what a restart does).
Also reported: first paint (the title bar). The baseline is a bare interpreter
importing textual, apscheduler, aiosqlite and httpx, timed from exec to exit; a
second, heavier one imports what the app cannot start without (textual.app and its
widgets, the asyncio scheduler, and what httpx and websockets load at their first
request), which shows how much of the launch is imports no code of ours can avoid; a
third is the floor for any Textual app: a label and a footer in the same
pseudo-terminal, exec → label on screen. Runs alternate so that noise hits all alike.
"""

from __future__ import annotations

import compileall
import subprocess
import sys
import time
from pathlib import Path

import aime_tui

from .common import REPO, Figure, Stats, scratch_dir
from .context import Context
from .terminal import DemoTerminal
from .textual_floor import READY

SUMMARY = b"Restored 3 succeeded, 0 failed"
TITLE = "aime-tui ─ demo".encode()
BARE = "import textual, apscheduler, aiosqlite, httpx"
# What the app cannot start without: the widgets it shows, the asyncio scheduler, and
# what httpx and websockets load at their first request and connection.
HEAVY = (
    "import textual.app, textual.widgets._data_table, textual.widgets._rich_log,"
    " textual.widgets._footer, apscheduler.schedulers.asyncio, aiosqlite, httpx, httpcore,"
    " anyio._backends._asyncio, websockets.asyncio.client"
)


def timed_python(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


def compile_package() -> None:
    """Byte-compile aime_tui as an install does: with PYTHONDONTWRITEBYTECODE set (or a
    checkout just edited), every launch would otherwise compile the changed modules."""
    compileall.compile_dir(Path(aime_tui.__file__).parent, quiet=1)


def run(ctx: Context) -> list[Figure]:
    compile_package()
    runs = ctx.runs(15, 1)
    summary, paint, quits, bare, heavy, floor = [], [], [], [], [], []
    with scratch_dir(ctx.tmp_root, "launch") as directory:
        data_dir, config = directory / "demo", directory / "none.toml"
        for run_index in range(runs + 1):  # the first run creates the database: a warm-up
            bare_seconds, heavy_seconds = timed_python(BARE), timed_python(HEAVY)
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
                bare.append(bare_seconds)
                heavy.append(heavy_seconds)
                floor.append(floor_seconds)
    value, baseline, textual = Stats.of(summary), Stats.of(bare), Stats.of(floor)
    ratio = value.median / baseline.median
    return [
        Figure(
            "launch", "launch → summary on screen (demo, pty)", "s", value, baseline,
            "bare imports", target="≤ 0.6 s and ≤ 1.7×", met=value.median <= 0.6 and ratio <= 1.7,
            notes=f"baseline: python -c '{BARE}'",
            extra={"ratio": ratio},
        ),
        Figure("launch", "launch → summary on screen, vs a minimal Textual app", "s", value, textual,
               "label + footer app"),
        Figure("launch", "launch → first paint (title bar)", "s", Stats.of(paint), baseline, "same baseline"),
        Figure("launch", "launch → summary on screen, vs importing what it needs", "s", value, Stats.of(heavy),
               "those imports alone", notes=HEAVY.replace("import ", "")),
        Figure("launch", "importing what the app needs, vs bare imports", "s", Stats.of(heavy), baseline,
               "bare imports"),
        Figure("launch", "q → process exited", "s", Stats.of(quits)),
    ]
