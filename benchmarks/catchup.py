"""Tracker catch-up: a 1,000,000-play gap caught up by the running engine.

The engine (in a child process, so that its memory is its own) restores a tracker whose
cursor is a whole history behind, against the loopback Last.fm fake (its own process,
no latency, no rate cap: the engine's pace is measured, not Last.fm's). The start must
succeed within the restore timeout, every play of the gap must be stored, and the RSS
stay bounded. The same-run baseline is the bare loop, the same time-anchored pages
fetched and stored with no engine, supervisor or service around them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from aime_tui.clients.lastfm import LastfmClient
from aime_tui.services.lastfm_history import Sweep, sweep_step
from aime_tui.store.database import Store

from .common import REPO, Figure, Stats, scratch_dir
from .context import Context
from .lastfm_server import API_KEY, NEWEST, USER, lastfm_server


async def bare_loop(url: str, directory, plays: int) -> float:
    """Plays per second of the sweep alone, fetch then store, for `plays` plays."""
    store = await Store.open(directory / "bare.db")
    try:
        async with LastfmClient(url, API_KEY, USER, rate=100_000) as client:
            sweep: Sweep | None = Sweep(NEWEST - plays * 180, None)
            stored, began = 0, time.perf_counter()
            while sweep is not None and stored < plays:
                batch, sweep, _ = await sweep_step(client, sweep)
                stored += await store.insert_plays(batch)
            return stored / (time.perf_counter() - began)
    finally:
        await store.close()


def engine_catch_up(ctx: Context, directory, url: str, gap: int) -> dict:
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.catchup_child", str(directory), url, str(gap)],
        capture_output=True, text=True, cwd=REPO, timeout=1800,
    )
    if child.returncode != 0:
        raise RuntimeError(f"catch-up child failed: {child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _measure(ctx: Context) -> list[Figure]:
    gap = ctx.pick(1_000_000, 5_000)
    bare_plays = ctx.pick(100_000, 2_000)
    with lastfm_server(gap + 1) as url, scratch_dir(ctx.tmp_root, "catchup") as directory:
        ctx.say(f"catch-up of a {gap:,}-play gap through the engine")
        result = engine_catch_up(ctx, directory, url, gap)
        ctx.say(f"bare fetch-and-store loop, {bare_plays:,} plays")
        bare = asyncio.run(bare_loop(url, directory, bare_plays))
    rate = result["plays"] / result["seconds"]
    complete = result["plays"] == gap + 1 and result["state"] == "running"
    notes = (f"{result['plays']:,} plays in {result['seconds']:.1f} s; start {result['start_seconds']:.2f} s"
             f" ({'succeeded' if result['started'] else 'FAILED: ' + result['summary']})")
    return [
        Figure("catchup", f"tracker catch-up of a {gap:,}-play gap, running engine", "plays/s",
               Stats.of([rate]), Stats.of([bare]), "bare fetch+store loop",
               target="completes, ≥ 10,000/s, no start timeout",
               met=complete and result["started"] and rate >= 10_000, notes=notes),
        Figure("catchup", "RSS during the catch-up (peak)", "MB", Stats.of([result["peak_mb"]]),
               Stats.of([result["restored_mb"]]), "just restored", target="≤ 100 MB",
               met=result["peak_mb"] <= 100),
    ]


def run(ctx: Context) -> list[Figure]:
    return _measure(ctx)
