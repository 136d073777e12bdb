"""Backfill ingest: plays per second stored with dedupe, pages of 200 from the Last.fm fake.

Pages are fetched once from the loopback fake (in its own process) through the real
client, then stored the way the MASSIVE backfill stores them: one `insert_plays`
transaction per page, `INSERT OR IGNORE` against the unique key, the cursor advancing
in the same transaction; the clock stops once the search index holds every play. The baseline stores the same plays naively, one transaction
and commit per row. A second pass over the same pages (all duplicates) checks that
nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiosqlite

from aime_tui.clients.lastfm import LastfmClient
from aime_tui.store.database import Play, Store, normalise

from .common import Figure, Stats, percentile, scratch_dir
from .context import Context
from .lastfm_server import API_KEY, USER, lastfm_server

PAGE = 200
INSERT_ONE = (
    "INSERT OR IGNORE INTO plays (source, account, played_at, artist, title, album,"
    " artist_key, title_key, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def fetch_pages(url: str, count: int) -> tuple[list[list[Play]], float]:
    """Every page, oldest first, and the seconds fetching and parsing took."""
    async with LastfmClient(url, API_KEY, USER) as client:
        began = time.perf_counter()
        pages = [(await client.recent_tracks(page=number, limit=PAGE)).plays for number in range(count, 0, -1)]
        return pages, time.perf_counter() - began


async def store_pages(store: Store, pages: list[list[Play]]) -> tuple[int, float]:
    began = time.perf_counter()
    added = 0
    for index, plays in enumerate(pages):
        cursor = json.dumps({"next_page": len(pages) - index - 1, "pages_done": index + 1})
        added += await store.insert_plays(plays, cursor=(f"backfill:lastfm:{USER}", cursor))
    await store.index_search()  # timed too: stored means searchable
    return added, time.perf_counter() - began


async def store_naively(store: Store, plays: list[Play]) -> float:
    began = time.perf_counter()
    for play in plays:
        row = (play.source, play.account, play.played_at, play.artist, play.title, play.album,
               normalise(play.artist), normalise(play.title), time.time())

        async def insert(db: aiosqlite.Connection, row=row) -> None:
            await db.execute(INSERT_ONE, row)

        await store.write(insert)
    return time.perf_counter() - began


async def _measure(ctx: Context) -> list[Figure]:
    page_count = ctx.pick(100, 8)
    runs = ctx.runs(7, 1)
    naive_plays = ctx.pick(3000, 400)
    total = page_count * PAGE
    with lastfm_server(total) as url, scratch_dir(ctx.tmp_root, "ingest") as directory:
        pages, fetch_seconds = await fetch_pages(url, page_count)
        fetched = sum(len(plays) for plays in pages)
        if fetched != total:
            raise AssertionError(f"fetched {fetched} plays, expected {total}")
        flat = [play for plays in pages for play in plays]
        rates, naive_rates, dup_rates = [], [], []
        for run in range(runs):
            store = await Store.open(directory / f"batched-{run}.db")
            try:
                added, seconds = await store_pages(store, pages)
                if added != total:
                    raise AssertionError(f"stored {added} of {total} new plays")
                rates.append(added / seconds)
                again, seconds = await store_pages(store, pages)
                if again != 0 or await store.count_plays() != total:
                    raise AssertionError(f"re-storing the same pages added {again} plays")
                dup_rates.append(total / seconds)
            finally:
                await store.close()
            store = await Store.open(directory / f"naive-{run}.db")
            try:
                seconds = await store_naively(store, flat[:naive_plays])
                naive_rates.append(naive_plays / seconds)
            finally:
                await store.close()
    value, baseline = Stats.of(rates), Stats.of(naive_rates)
    ratio = value.median / baseline.median
    # For rates the bad tail is the low end: report it as p95/p99 of the slowness, i.e. p5/p1.
    return [
        Figure(
            "ingest", f"backfill ingest, {PAGE}/page, dedupe", "plays/s", _low_tail(rates), baseline,
            "one commit per row", target="≥ 20,000/s and ≥ 4×", judged_on="median",
            met=value.median >= 20_000 and ratio >= 4.0,
            notes=f"{total:,} plays in {page_count} pages; p95/p99 columns are the slow tail (p5/p1)",
            extra={"ratio": ratio},
        ),
        Figure("ingest", "re-storing the same pages (all duplicates)", "plays/s", _low_tail(dup_rates),
               notes="nothing stored twice"),
        Figure("ingest", "fetch + parse from the fake (loopback HTTP)", "plays/s",
               Stats.of([fetched / fetch_seconds]), notes="once per run, for scale"),
    ]


def _low_tail(rates: list[float]) -> Stats:
    """Stats of a rate, with p95/p99 taken at the slow end (p5/p1)."""
    base = Stats.of(rates)
    return Stats(base.n, base.median, percentile(rates, 5), percentile(rates, 1), base.min, base.max, base.mean)


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
