"""Reading a stretch of Last.fm history exactly: time-anchored sweeps and window reconciliation.

Last.fm pages count from the newest play, and plays appear inside any window while it is
read (scrobbles synced late, up to 14 days old): a page number is not a position. So a
stretch is swept newest first by time alone. Each request asks for the plays before the
oldest second already fetched (`to` is exclusive, `from` inclusive), and that boundary
second is asked for again whole with the next request, since a page may end in its
middle; a second holding more plays than a page is paged through on its own. Whatever
is inserted meanwhile cannot push a play past a bound already set.

Reconciliation compares Last.fm's count for a window (`@attr.total`) with what the store
holds for it, splits a window that differs until the parts are small, and fetches those
parts again whole, remembering the plays Last.fm serves more (or less) than once so
that a window holding an identical same-second duplicate does not differ forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from aime_tui.clients.lastfm import MAX_PAGE_SIZE, SOURCE, LastfmClient, RecentTracksPage
from aime_tui.store.database import Play, Store

#: A differing window holding at most this many plays is fetched again whole.
LEAF_PLAYS = 5 * MAX_PAGE_SIZE
#: The trailing window where late scrobbles land (Last.fm takes them up to 14 days late).
LATE_WINDOW = 14 * 24 * 3600


@dataclass(frozen=True)
class Sweep:
    """Plays with `low` <= played_at < `high` still to fetch (None: unbounded).

    `second_page` > 1 while paging through the second `high - 1`, which holds more plays
    than one page; `remaining` is what Last.fm last said was left.
    """

    low: int | None
    high: int | None
    second_page: int = 0
    remaining: int | None = None

    def dump(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "second_page": self.second_page,
                "remaining": self.remaining}

    @classmethod
    def load(cls, data: dict[str, Any]) -> "Sweep":
        return cls(data.get("low"), data.get("high"), int(data.get("second_page") or 0),
                   data.get("remaining"))


async def sweep_step(client: LastfmClient, sweep: Sweep) -> tuple[list[Play], Sweep | None, RecentTracksPage]:
    """Fetch the newest page still to fetch.

    Returns the plays to store now (the boundary second held back when the next request
    serves it again whole), the sweep left (None when this was the last page) and the page.
    """
    if sweep.second_page:
        second = sweep.high - 1
        page = await client.recent_tracks(page=sweep.second_page, from_ts=second, to_ts=sweep.high)
        if sweep.second_page >= page.total_pages or len(page.plays) < MAX_PAGE_SIZE:
            rest = Sweep(sweep.low, second, remaining=None)
            return page.plays, (None if _empty(rest) else rest), page
        return page.plays, Sweep(sweep.low, sweep.high, sweep.second_page + 1, sweep.remaining), page

    page = await client.recent_tracks(from_ts=sweep.low, to_ts=sweep.high)
    plays = page.plays
    if not plays or page.total <= len(plays):
        return plays, None, page
    oldest = min(play.played_at for play in plays)
    newest = max(play.played_at for play in plays)
    if oldest < newest:
        kept = [play for play in plays if play.played_at > oldest]
        rest = Sweep(sweep.low, oldest + 1, remaining=page.total - len(kept))
        return kept, rest, page
    # A whole page within one second: page through that second, then go on below it.
    return plays, Sweep(sweep.low, oldest + 1, 2, page.total - len(plays)), page


def _empty(sweep: Sweep) -> bool:
    return sweep.low is not None and sweep.high is not None and sweep.high <= sweep.low


async def fetch_window(
    client: LastfmClient, store: Store, since: int, until: int, credit: Callable[[int], None]
) -> list[Play]:
    """Fetch and store every play of [since, until); returns them as served (duplicates kept)."""
    served: list[Play] = []
    sweep: Sweep | None = Sweep(since, until)
    while sweep is not None:
        plays, sweep, _ = await sweep_step(client, sweep)
        served.extend(plays)
        credit(await store.insert_plays(plays))
    return served


async def reconcile(
    client: LastfmClient, store: Store, since: int, until: int, credit: Callable[[int], None]
) -> int:
    """Make the stored window [since, until) hold what Last.fm serves for it; returns how
    many windows were fetched again."""
    if until <= since:
        return 0
    probe = await client.recent_tracks(limit=1, from_ts=since, to_ts=until)
    account = probe.user
    await store.adopt_account(SOURCE, account)
    return await _reconcile(client, store, account, since, until, probe.total, credit)


async def _reconcile(
    client: LastfmClient, store: Store, account: str, since: int, until: int, served: int,
    credit: Callable[[int], None],
) -> int:
    if served == await store.count_served(SOURCE, account, since, until):
        return 0
    if served <= LEAF_PLAYS or until - since <= 1:
        plays = await fetch_window(client, store, since, until, credit)
        await store.record_served(SOURCE, account, since, until, plays)
        return 1
    middle = (since + until) // 2
    fetched = 0
    for low, high in ((middle, until), (since, middle)):
        part = await client.recent_tracks(limit=1, from_ts=low, to_ts=high)
        fetched += await _reconcile(client, store, account, low, high, part.total, credit)
    return fetched
