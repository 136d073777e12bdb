"""The `tracker` service: polls Last.fm for new plays and stores them.

Owns the per-account cursor `lastfm:{user}` (the newest stored `played_at`, everything
older than it down to the previous cursor being stored) and the incremental poll.
Full-history backfill is the scheduler's job; this service only fetches what is newer
than its cursor (the newest page when it has none yet). It never retries by itself: a
failed poll is classified and raised, and the supervisor backs off.

`tracks_found` is the new plays this service's own polls stored since aime-tui started;
a poll run for someone else (the scheduler's catch-up) credits them instead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable

from aime_tui.clients.lastfm import MAX_PAGE_SIZE, SOURCE, LastfmClient, classify
from aime_tui.config import Config, LastfmConfig
from aime_tui.core.faults import NeedsAttention
from aime_tui.services.base import Service
from aime_tui.services.registry import setting_hint
from aime_tui.store.database import Play, Store


class LastfmTracker(Service):
    name = "tracker"
    #: Seconds one Last.fm request may take.
    request_timeout = 10.0

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

    def reconfigure(self, config: Config) -> None:
        self._config = config.lastfm

    @property
    def cursor_name(self) -> str:
        return f"lastfm:{self._config.user}"

    def _check_config(self) -> None:
        missing = self._config.missing()
        if missing:
            self._last_error = setting_hint(missing, self._config_path)
            raise NeedsAttention(self._last_error)

    def _new_client(self) -> LastfmClient:
        return LastfmClient(
            self._config.api_url, self._config.api_key, self._config.user, timeout=self.request_timeout
        )

    async def start(self) -> None:
        self._check_config()
        await self.stop()  # a restart after a fault must not leak the previous client
        self._client = self._new_client()
        try:
            await self.poll_once()
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
            "account": self._config.user,
            "now_playing": self._now_playing,
        }

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.interval)
            await self.poll_once()  # a classified failure escapes to the supervisor

    async def poll_once(self, *, credit: Callable[[int], None] | None = None) -> int:
        """Fetch and store plays newer than the cursor; returns how many were new.

        `credit` is told of each stored batch's new plays as it commits (so a pass cut
        short still counts what it stored); by default this service's `tracks_found`.
        Failures come out classified (NeedsAttention, RetryAfter or transient). Works
        while the service is stopped too, with a client of its own for the one poll.
        """
        self._check_config()
        credit = credit or self._credit
        async with self._poll_lock:
            try:
                if self._client is not None:
                    added = await self._fetch_new(self._client, credit)
                else:
                    async with self._new_client() as client:
                        added = await self._fetch_new(client, credit)
            except Exception as exc:
                fault = classify(exc)
                self._last_error = str(fault)
                if fault is exc:
                    raise
                raise fault from exc
        self._last_error = None
        self._last_check = self._clock()
        return added

    async def _fetch_new(self, client: LastfmClient, credit: Callable[[int], None]) -> int:
        """Store the plays newer than the cursor; the cursor moves with every page stored.

        The first page (newest first) gives the newest play and the now-playing track.
        With no cursor yet that page is all this service wants. With a cursor and more
        than one page to catch up, the window [cursor, newest] is then stored from its
        oldest page up, `to` pinned so that plays arriving meanwhile do not shift the
        pages: a pass cut short (crash, fault, start timeout) has moved the cursor only
        over what it stored, so the next pass resumes there with no gap. Overlaps are
        harmless: the store ignores duplicates.
        """
        cursor_value = await self._store.get_cursor(self.cursor_name)
        since = int(cursor_value) if cursor_value is not None else None
        first = await client.recent_tracks(limit=MAX_PAGE_SIZE, from_ts=since)
        playing = first.now_playing
        self._now_playing = f"{playing.artist} – {playing.title}" if playing else None

        added = 0
        if since is not None and first.total_pages > 1:
            until = max(play.played_at for play in first.plays)
            for page_number in range(first.total_pages, 0, -1):
                page = await client.recent_tracks(
                    page=page_number, limit=MAX_PAGE_SIZE, from_ts=since, to_ts=until
                )
                added += await self._store_page(page.plays, credit)
        # Last, so that the cursor reaches the newest play only once all older ones are in.
        added += await self._store_page(first.plays, credit)
        return added

    async def _store_page(self, plays: list[Play], credit: Callable[[int], None]) -> int:
        newest = max((play.played_at for play in plays), default=None)
        cursor = (self.cursor_name, str(newest)) if newest is not None else None
        stored = await self._store.insert_plays(plays, cursor=cursor)
        credit(stored)
        return stored

    def _credit(self, added: int) -> None:
        self._tracks_found += added
