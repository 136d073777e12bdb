"""Your data on a large history: export, stats, search and the plays screen's first paint.

A history of 1,000,000 plays (20,000 with --quick) is generated into a real database
through the store's schema (every index and trigger), over ten years up to now. Then:

- `export --format ndjson` of everything, in a child process writing to a file: plays/s
  and the child's peak RSS above what it had before the export began (RSS growth);
  the baseline is the bare read of the same columns (no formatting, nothing written);
- stats for the last 30 days (plays per day, top artists, tracks, albums, per source);
- a search over the whole history (the screen's first page of matches) for a popular
  artist, a rare one and a two-letter prefix, judged on the worst of the first two;
- the plays screen's first paint: the `p` action in the real app under Pilot until the
  frame showing its first page, chart and 7/30-day tops (the all-time top follows after).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from aime_tui.demo.history import generate_plays, write_history
from aime_tui.reports import stats
from aime_tui.store import queries

from .common import Figure, Stats, ms, scratch_dir
from .context import Context

EXPORT_CHILD = """
import json, sys, time
from pathlib import Path
from aime_tui.reports.export import export
from benchmarks.common import rss_mb
from aime_tui.store.queries import connect_read_only, iter_plays

db, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
before = rss_mb()
peak = before
began = time.perf_counter()
if mode == "export":
    class Sampling:
        # The file as export_to_file opens it (text, its bytes beneath), sampling RSS.
        def __init__(self, handle):
            self.handle, self.writes = handle, 0
        def write(self, data):
            global peak
            self.writes += 1
            if self.writes % 50 == 0:
                peak = max(peak, rss_mb())
            return self.handle.write(data)
        def flush(self):
            self.handle.flush()
        @property
        def buffer(self):
            return Sampling(self.handle.buffer)
    with open(out, "w", encoding="utf-8", newline="") as handle:
        count = export(db, Sampling(handle), fmt="ndjson")
else:
    connection = connect_read_only(db)
    count = sum(len(chunk) for chunk in iter_plays(connection))
    connection.close()
seconds = time.perf_counter() - began
peak = max(peak, rss_mb())
print(json.dumps({"count": count, "seconds": seconds, "before": before, "peak": peak}))
"""


def _child(db: Path, out: Path, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", EXPORT_CHILD, str(db), str(out), mode],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent,
    )
    if result.returncode != 0:
        raise RuntimeError(f"export child failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def _timed(work, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        samples.append(time.perf_counter() - began)
    return samples


async def _first_paint(data_dir: Path, runs: int) -> list[float]:
    """Seconds from `p` to the plays screen showing its first page, chart and tops."""
    from textual.widgets import Sparkline

    from aime_tui.config import load_config
    from aime_tui.engine import Engine
    from aime_tui.ui.app import AimeApp
    from aime_tui.ui.screens.plays import PAGE, PlaysScreen

    from .common import synthetic_like_real

    config = load_config(config_path=data_dir / "config.toml", data_dir=data_dir, env={})
    app = AimeApp(Engine(config, services=synthetic_like_real))
    samples = []
    async with app.run_test(size=(100, 30)) as pilot:
        while app.last_summary is None:
            await pilot.pause(0.01)
        for _ in range(runs):
            began = time.perf_counter()
            app.action_plays()
            deadline = began + 30
            # Plain sleeps, not Pilot's pauses: those also wait for the app to go idle.
            while True:
                screen = app.screen
                # The overview is set once the screen is composed and its first load is in.
                if (isinstance(screen, PlaysScreen) and screen._overview is not None
                        and screen.table.row_count == PAGE and sum(screen.query_one(Sparkline).data) > 0):
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError("the plays screen never painted")
                await asyncio.sleep(0.002)
            painted = asyncio.Event()
            screen.call_after_refresh(painted.set)  # the frame showing it
            await painted.wait()
            samples.append(time.perf_counter() - began)
            # Let the all-time top finish before the next round.
            while "all" not in screen._overview.top:
                await asyncio.sleep(0.01)
            await pilot.press("escape")
            while isinstance(app.screen, PlaysScreen):
                await pilot.pause(0.01)
    return samples


def run(ctx: Context) -> list[Figure]:
    size = ctx.pick(1_000_000, 20_000)
    runs = ctx.runs(9, 2)
    with scratch_dir(ctx.tmp_root, "history") as directory:
        db_path = directory / "aime.db"
        began = time.perf_counter()
        stored = write_history(db_path, generate_plays(size, days=3650, seed=11))
        ctx.say(f"generated {stored:,} plays in {time.perf_counter() - began:.0f} s")

        exports, reads, growth = [], [], []
        for index in range(ctx.runs(3, 1)):
            result = _child(db_path, directory / f"export-{index}.ndjson", "export")
            if result["count"] != stored:
                raise AssertionError(f"exported {result['count']:,} of {stored:,} plays")
            exports.append(result["count"] / result["seconds"])
            growth.append(result["peak"] - result["before"])
            read = _child(db_path, directory / "unused", "read")
            reads.append(read["count"] / read["seconds"])
            (directory / f"export-{index}.ndjson").unlink()

        db = queries.connect_read_only(db_path)
        now = time.time()
        stats_times = _timed(lambda: stats.compute(db, "30d", now=now), runs)
        all_times = _timed(lambda: stats.compute(db, "all", now=now), ctx.runs(2, 1))
        popular = stats.compute(db, "all", now=now).top_artists[0].name
        rare = db.execute(
            "SELECT artist, COUNT(*) c FROM plays GROUP BY artist_key HAVING c BETWEEN 20 AND 200 LIMIT 1"
        ).fetchone()[0]
        searches = {}
        for label, text in (("a popular artist", popular), ("a rare artist", rare), ("a two-letter prefix", "ka")):
            searches[label] = _timed(lambda text=text: queries.page(db, search=text, limit=100), runs)
        db.close()

        paint = asyncio.run(_first_paint(directory, ctx.runs(5, 2)))

    worst_search = [max(pair) for pair in zip(searches["a popular artist"], searches["a rare artist"])]
    export_stats, read_stats = Stats.of(exports), Stats.of(reads)
    figures = [
        Figure("history_data", f"export ndjson, {stored:,} plays", "plays/s", _slow_tail(exports), read_stats,
               "bare read of the same rows", target="≥ 200,000 plays/s", met=export_stats.median >= 200_000,
               notes="child process writing a file; p95/p99 columns are the slow tail"),
        Figure("history_data", "export ndjson: RSS growth", "MB", Stats.of(growth), target="≤ 20 MB",
               met=max(growth) <= 20, judged_on="max"),
        Figure("history_data", "stats --period 30d", "ms", Stats.of([ms(s) for s in stats_times]),
               target="≤ 200 ms", met=Stats.of(stats_times).p95 <= 0.2, judged_on="p95"),
        Figure("history_data", "stats --period all", "ms", Stats.of([ms(s) for s in all_times]),
               notes="for scale: per-day and per-source counts of index ranges, tops from the track index"),
        Figure("history_data", "plays screen: p → first paint", "ms", Stats.of([ms(s) for s in paint]),
               target="≤ 200 ms", met=Stats.of(paint).p95 <= 0.2, judged_on="p95"),
        Figure("history_data", "search, worst of a popular and a rare artist", "ms",
               Stats.of([ms(s) for s in worst_search]), target="≤ 100 ms",
               met=Stats.of(worst_search).p95 <= 0.1, judged_on="p95"),
    ]
    for label, samples in searches.items():
        figures.append(Figure("history_data", f"search: {label}", "ms", Stats.of([ms(s) for s in samples])))
    return figures


def _slow_tail(rates: list[float]) -> Stats:
    from .common import percentile

    base = Stats.of(rates)
    return Stats(base.n, base.median, percentile(rates, 5), percentile(rates, 1), base.min, base.max, base.mean)
