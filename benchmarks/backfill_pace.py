"""Backfill pace: plays per second the MASSIVE backfill stores at the default 1 request/s.

The loopback Last.fm fake (in its own process) answers every page 0.5 s late, as a far
server does. The backfill is the real scheduler on a real store; its pace is measured
between the first page stored and the last, as a share of the ceiling the rate allows
(200 plays a request, 1 request a second: 200 plays/s). The same-run baseline is the
same backfill spaced by a fixed 2 s per page (`backfill_interval = 2`, the old default).
"""

from __future__ import annotations

import asyncio
import time

from aime_tui.clients.lastfm import MAX_PAGE_SIZE
from aime_tui.config import LastfmConfig, SchedulerConfig
from aime_tui.services.scheduler import MASSIVE, CollectionScheduler
from aime_tui.store.database import Store

from .common import Figure, Stats, scratch_dir
from .context import Context
from .lastfm_server import API_KEY, USER, lastfm_server

LATENCY = 0.5
RATE = 1.0
CEILING = RATE * MAX_PAGE_SIZE


async def pace(url: str, directory, name: str, pages: int, interval: float | None) -> float:
    """Plays per second between the first page stored and the `pages`-th."""
    store = await Store.open(directory / f"{name}.db")
    scheduler = CollectionScheduler(
        SchedulerConfig(mode=MASSIVE, backfill_interval=interval),
        LastfmConfig(api_url=url, api_key=API_KEY, user=USER, rate=RATE),
        store, backup_dir=directory / "backups",
    )
    marks: list[tuple[float, int]] = []
    try:
        await scheduler.start()
        while len(marks) < pages:
            done = scheduler.pages_done
            if done > len(marks):
                marks.append((time.perf_counter(), scheduler.status()["backfill_plays"]))
            await asyncio.sleep(0.005)
    finally:
        await scheduler.stop()
        await store.close()
    (first_at, first_plays), (last_at, last_plays) = marks[0], marks[-1]
    return (last_plays - first_plays) / (last_at - first_at)


async def _measure(ctx: Context) -> list[Figure]:
    pages = ctx.pick(40, 3)
    baseline_pages = ctx.pick(10, 2)
    runs = ctx.runs(3, 1)
    plays = (pages + 2) * MAX_PAGE_SIZE * (runs + 1)
    rates, baseline = [], []
    with lastfm_server(plays, LATENCY) as url, scratch_dir(ctx.tmp_root, "backfill-pace") as directory:
        for run in range(runs):
            ctx.say(f"backfill pace run {run + 1}/{runs}: {pages} pages")
            # Each run starts with a free slot, as a fresh start does.
            await asyncio.sleep(1.0 / RATE)
            rates.append(await pace(url, directory, f"bucket-{run}", pages, None))
            await asyncio.sleep(1.0 / RATE)
            baseline.append(await pace(url, directory, f"fixed-{run}", baseline_pages, 2.0))
    value, base = Stats.of([r / CEILING * 100 for r in rates]), Stats.of([r / CEILING * 100 for r in baseline])
    return [
        Figure(
            "backfill_pace", f"backfill pace, {LATENCY:g} s per page, {RATE:g} request/s", "% of ceiling",
            value, base, "fixed 2 s per page", target="≥ 90 % of 200 plays/s", met=value.median >= 90,
            notes=f"{pages} pages per run; {Stats.of(rates).median:,.0f} plays/s",
        ),
    ]


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
