"""The `tracker` service: polls Last.fm for new plays and stores them.

Owns the per-account cursor `lastfm:{account}` (the newest stored `played_at`) and the
gaps still to fetch below it, `lastfm-gaps:{account}` (account in lower case: Last.fm
names are case-insensitive). A poll asks for the newest page above the cursor; when more
new plays wait than a page holds, the rest becomes a gap, swept newest first by time
(see lastfm_history) one page per request, each page committed with the gaps left, so
a crash or stop resumes with no gap and no duplicate. `start()` makes that one poll
only, which proves the account answers; any gap is caught up afterwards in the
service's own loop, never under the start timeout, with `catching_up` showing the plays
still to fetch. Full-history backfill is the scheduler's job.

A failed request is retried in place by the client; a fault that persists is classified
and raised, and the supervisor backs off.

`tracks_found` is the new plays this service's own polls stored since aime-tui started;
a poll run for someone else (the scheduler's catch-up) credits them instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

from aime_tui.clients.lastfm import SOURCE, LastfmClient, classify
from aime_tui.config import Config, LastfmConfig
from aime_tui.core.faults import NotSetUp
from aime_tui.services.base import Service
from aime_tui.services.lastfm_history import Sweep, sweep_step
from aime_tui.services.registry import setting_hint
from aime_tui.store.database import Store


class LastfmTracker(Service):
    name = "tracker"
    #: Seconds one Last.fm request may take.
    request_timeout = 10.0
    #: About how long the client waits before trying a failed request again.
    retry_wait = 0.5

    def __init__(
        self,
        config: LastfmConfig,
        store: Store,
        *,
        config_path: Path | None = None,
        clock=time.time,
    ) -> None:
        super().__init__()
        self._config = config
        self._store = store
        self._config_path = config_path
        self._clock = clock
        self._client: LastfmClient | None = None
        self._poll_task: asyncio.Task | None = None
        # The poll loop and the scheduler's catch-up job may both poll; one at a time.
        self._poll_lock = asyncio.Lock()
        self._last_check: float | None = None
        self._tracks_found = 0
        self._last_error: str | None = None
        self._now_playing: str | None = None
        #: Sweeps still to fetch below the cursor, newest first (persisted with each page).
        self._gaps: list[Sweep] = []
        #: The gaps as last committed (what is really still missing from the store).
        self._committed_gaps: list[Sweep] = []
        #: The account as Last.fm spells it, once it has answered.
        self._account: str | None = None

    def reconfigure(self, config: Config) -> None:
        self._config = config.lastfm

    @property
    def cursor_name(self) -> str:
        return f"lastfm:{self._config.user.lower()}"

    @property
    def gaps_name(self) -> str:
        return f"lastfm-gaps:{self._config.user.lower()}"

    @property
    def catching_up(self) -> int | None:
        """Plays Last.fm last said were still to fetch in the gaps; None when there are none."""
        if not self._committed_gaps:
            return None
        return sum(gap.remaining or 0 for gap in self._committed_gaps)

    def _check_config(self) -> None:
        missing = self._config.missing()
        if missing:
            self._last_error = setting_hint(missing, self._config_path)
            raise NotSetUp(self._last_error)

    def _new_client(self) -> LastfmClient:
        return LastfmClient(
            self._config.api_url, self._config.api_key, self._config.user,
            timeout=self.request_timeout, rate=self._config.rate, retry_wait=self.retry_wait,
        )

    async def start(self) -> None:
        self._check_config()
        await self.stop()  # a restart after a fault must not leak the previous client
        self._client = self._new_client()
        try:
            # One request proves the account answers; a gap it finds is the loop's.
            await self._step(self._poll_newest, self._credit)
        except BaseException:
            # Includes cancellation by the supervisor's start timeout.
            await self._close_client()
            raise
        self._poll_task = self.spawn(self._poll_loop(), "poll")

    async def stop(self) -> None:
        await self.cancel_tasks()
        self._poll_task = None
        self._now_playing = None  # a stopped tracker does not know what is playing
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def reset_connections(self) -> None:
        if self._client is not None:
            await self._client.reset()

    def status(self) -> dict[str, Any]:
        return {
            "running": self._poll_task is not None and not self._poll_task.done(),
            "interval": self._config.interval,
            "last_check": self._last_check,
            "tracks_found": self._tracks_found,
            "plays_total": self._store.play_total(SOURCE),
            "last_error": self._last_error,
            "account": self._account or self._config.user,
            "now_playing": self._now_playing,
            "catching_up": self.catching_up,
        }

    async def _poll_loop(self) -> None:
        # A classified failure escapes to the supervisor.
        while True:
            if self._gaps:
                await self._step(self._sweep_gaps, self._credit)
            await asyncio.sleep(self._config.interval)
            await self._step(self._poll_newest, self._credit)

    async def poll_once(self, *, credit: Callable[[int], None] | None = None) -> int:
        """Fetch and store every play newer than the cursor, gaps included; returns how
        many were new.

        `credit` is told of each stored batch's new plays as it commits (so a pass cut
        short still counts what it stored); by default this service's `tracks_found`.
        Failures come out classified (NeedsAttention, RetryAfter or transient). Works
        while the service is stopped too, with a client of its own.
        """
        credit = credit or self._credit
        added = await self._step(self._poll_newest, credit)
        if self._gaps:
            added += await self._step(self._sweep_gaps, credit)
        return added

    async def _step(self, work: Callable[..., Any], credit: Callable[[int], None]) -> int:
        """One request's worth of `work`, one at a time, failures classified."""
        self._check_config()
        async with self._poll_lock:
            try:
                if self._client is not None:
                    added = await work(self._client, credit)
                else:
                    async with self._new_client() as client:
                        added = await work(client, credit)
            except Exception as exc:
                fault = classify(exc)
                self._last_error = str(fault)
                if fault is exc:
                    raise
                raise fault from exc
        self._last_error = None
        self._last_check = self._clock()
        return added

    async def _load_cursor(self, client: LastfmClient) -> int | None:
        value = await self._store.get_cursor(self.cursor_name)
        gaps = await self._store.get_cursor(self.gaps_name)
        self._gaps = [Sweep.load(gap) for gap in json.loads(gaps)] if gaps else []
        self._committed_gaps = list(self._gaps)
        if value is not None:
            client.answered = True  # its history is here: it has answered before
        return int(value) if value is not None else None

    async def _poll_newest(self, client: LastfmClient, credit: Callable[[int], None]) -> int:
        """Store the newest page above the cursor; more new plays than that become a gap."""
        since = await self._load_cursor(client)
        plays, rest, page = await sweep_step(client, Sweep(since, None))
        await self._adopt(page.user)
        playing = page.now_playing
        self._now_playing = f"{playing.artist} – {playing.title}" if playing else None
        if since is None:
            # No cursor yet: the newest page is all this service wants; older history
            # is the backfill's.
            plays, rest = page.plays, None
        newest = max((play.played_at for play in page.plays), default=since)
        if not plays and rest is None and newest == since:
            return 0  # nothing new
        if rest is not None:
            self._gaps.insert(0, rest)
        cursors = [(self.gaps_name, _dump(self._gaps))]
        if newest is not None:
            cursors.append((self.cursor_name, str(newest)))
        added = await self._store.insert_plays(plays, cursors=cursors)
        self._committed_gaps = list(self._gaps)
        credit(added)
        return added

    async def _sweep_gaps(self, client: LastfmClient, credit: Callable[[int], None]) -> int:
        """Store the gaps' pages, newest first, until none is left.

        Each page is stored with the gaps left after it, while the next is fetched: its
        bounds come from the page itself, so fetching need not wait for the commit, and
        the commits keep their order (the store's write lock is first come, first served).
        """
        added = 0
        storing: asyncio.Task | None = None
        try:
            while self._gaps:
                plays, rest, page = await sweep_step(client, self._gaps[0])
                await self._adopt(page.user)
                self._gaps = ([rest] if rest is not None else []) + self._gaps[1:]
                if storing is not None:
                    added += await storing
                storing = asyncio.ensure_future(self._store_swept(plays, list(self._gaps), credit))
        finally:
            # A fault or a stop while fetching: what was fetched before it is stored.
            if storing is not None:
                added += await storing
        return added

    async def _store_swept(self, plays, gaps: list[Sweep], credit: Callable[[int], None]) -> int:
        added = await self._store.insert_plays(plays, cursors=[(self.gaps_name, _dump(gaps))])
        self._committed_gaps = gaps
        credit(added)
        return added

    async def _adopt(self, account: str) -> None:
        """Plays stored under another case of the account take Last.fm's spelling."""
        if account != self._account:
            await self._store.adopt_account(SOURCE, account)
            self._account = account

    def _credit(self, added: int) -> None:
        self._tracks_found += added


def _dump(gaps: list[Sweep]) -> str | None:
    return json.dumps([gap.dump() for gap in gaps]) if gaps else None
