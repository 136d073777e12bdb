"""The collection scheduler (`scheduler`): APScheduler 3 jobs on the app's own asyncio loop.

The maintenance duties run in both modes: an incremental Last.fm catch-up every
`catchup_interval`, a nightly ANALYZE/optimize and a daily backup (the last 7 kept).
Jobs coalesce and have a misfire grace, and each job's last successful run is kept in
the store: a run missed while the machine slept, or while the service was stopped or
restarting, runs once when it comes back within the grace, and a run missed beyond it
is logged as missed.

MAINTENANCE is just those duties, plus an hourly reconciliation of the trailing 14 days
(where late scrobbles land): Last.fm's count for the window is compared with what is
stored, and the parts that differ are fetched again (see lastfm_history). MASSIVE adds
a full-history Last.fm backfill, anchored in time, not in page numbers: its upper bound
is the newest play when it begins, and each page asks for the plays before the oldest
second already fetched, so plays inserted meanwhile cannot shift one out of reach. Its
cursor is saved in the same transaction as each page: a crash, stop or wake resumes
exactly where it left off, with no gap and no duplicate. Pages come as fast as
`[lastfm] rate` lets (the token bucket the tracker shares), at least `backfill_interval`
apart if that is set. A request that fails is retried in place by the client; a fault
that persists ends the backfill with the classified fault, the supervisor backs off (or
asks for attention) and the restart resumes from the cursor. Plays scrobbled since the
backfill began are the catch-up's: one runs as soon as the backfill completes, then the
whole backfilled range is reconciled once, and the service carries on with its duties
in MASSIVE (the mode the user chose stays saved), its status saying "backfill complete"
and how often it catches up. A backfill that takes days never costs a nightly backup.

Counts in `status()`: `tracks_found` is the new plays this service's own work (catch-up
and backfill) stored since aime-tui started; the tracker counts only what its own polls
store, so no play is counted twice. `backfill_plays` is the plays the backfill has
fetched over all its runs out of `backfill_total` (the history Last.fm reported when it
began), kept with its cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from aime_tui.clients.lastfm import MAX_PAGE_SIZE, SOURCE, LastfmClient, classify
from aime_tui.config import Config, LastfmConfig, SchedulerConfig
from aime_tui.format import duration, when
from aime_tui.services.base import Service
from aime_tui.services.lastfm_history import LATE_WINDOW, Sweep, reconcile, sweep_step
from aime_tui.services.registry import MASSIVE, SCHEDULER_MODES, setting_hint
from aime_tui.store.database import DiskFull, Store, StoreError

log = logging.getLogger(__name__)

BACKUPS_KEPT = 7
#: Local (hour, minute) of the nightly jobs.
OPTIMIZE_AT = (3, 30)
BACKUP_AT = (4, 0)
#: How late a missed catch-up may still run.
MISFIRE_GRACE = 3600
#: How late a missed nightly job may still run: a box asleep at 4:00 backs up on waking.
DAILY_GRACE = 12 * 3600
#: Seconds between reconciliations of the trailing window.
RECONCILE_EVERY = 3600
#: The backfill cursor's format (1: page numbers, before the backfill was anchored in time).
BACKFILL_FORMAT = 2

#: Polls Last.fm for new plays, calling `credit(n)` as each batch of n new plays is stored.
CatchUp = Callable[..., Awaitable[int]]


class CollectionScheduler(Service):
    name = "scheduler"
    modes = SCHEDULER_MODES
    #: About how long the client waits before trying a failed request again.
    retry_wait = 0.5

    def __init__(
        self,
        config: SchedulerConfig,
        lastfm: LastfmConfig,
        store: Store,
        *,
        backup_dir: Path,
        config_path: Path | None = None,
        catch_up: CatchUp | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.config = config
        self.lastfm = lastfm
        self.store = store
        self.backup_dir = backup_dir
        self.config_path = config_path
        self.mode = config.mode
        self._catch_up = catch_up
        self._clock = clock
        self._scheduler: AsyncIOScheduler | None = None
        self._client: LastfmClient | None = None
        self._last_runs: dict[str, float] = {}
        self.tracks_found = 0
        self.last_check: float | None = None
        self.last_error: str | None = None
        # The backfill's persisted cursor, and this run's pace (monotonic seconds).
        self._backfill_state: dict[str, Any] = {}
        self._run_began: float | None = None
        self._run_pages = 0
        self._per_page: float | None = None
        self._next_page_at: float | None = None

    @property
    def cursor_name(self) -> str:
        return f"backfill:lastfm:{self.lastfm.user.lower()}"

    def reconfigure(self, config: Config) -> None:
        # Its mode stays: that is the user's, kept in the store (the file's is a first-launch default).
        self.config = config.scheduler
        self.lastfm = config.lastfm

    @property
    def pages_done(self) -> int:
        return self._backfill_state.get("pages_done", 0)

    @property
    def total_pages(self) -> int | None:
        return self._backfill_state.get("total_pages")

    @property
    def backfill_done(self) -> bool:
        return self._backfill_state.get("done", False)

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.stop()  # a restart after a fault must not leak the previous client
        await self._load_progress()
        if not self.lastfm.missing():
            self._client = LastfmClient(
                self.lastfm.api_url, self.lastfm.api_key, self.lastfm.user,
                rate=self.lastfm.rate, retry_wait=self.retry_wait,
            )
            # A backfill under way means the account has answered before.
            self._client.answered = bool(self._backfill_state)
        scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE, "max_instances": 1}
        )
        scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        # start() only arms a timer on the running loop: it never blocks, so no executor.
        scheduler.start()
        self._scheduler = scheduler
        self._apply_mode()

    async def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)  # cancels in-flight job tasks
        # Stopping the backfill mid-page is safe: a page's transaction is whole or absent.
        await self.cancel_tasks()
        self.clear_attention()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def set_mode(self, mode: str) -> None:
        await super().set_mode(mode)
        if self._scheduler is None:
            return
        await self.cancel_tasks()
        self._apply_mode()

    async def reset_connections(self) -> None:
        if self._client is not None:
            await self._client.reset()

    def status(self) -> dict[str, Any]:
        return {
            "running": self._scheduler is not None and self._scheduler.running,
            "mode": self.mode,
            "next_run": self._next_run(),
            "pages_done": self.pages_done,
            "total_pages": self.total_pages,
            "backfill_plays": self._backfill_state.get("plays", 0),
            "backfill_total": self._backfill_state.get("total"),
            "backfill_done": self.backfill_done,
            # The backfilled range checked once more against Last.fm's counts, once complete.
            "backfill_reconciled": bool(self._backfill_state.get("reconciled")),
            "eta": self._eta(),
            # Seconds between catch-ups while they are scheduled (in either mode), else None.
            "catchup_every": self.config.catchup_interval if self._job("catchup") else None,
            # A duty that is off, and why in words: the catch-up needs Last.fm set up.
            "duties_off": self._duties_off(),
            "next_job": self._next_job(),
            "cursor": self._cursor_text(),
            "last_check": self.last_check,
            "tracks_found": self.tracks_found,
            "plays_total": self.store.play_total(SOURCE),
            "last_error": self.last_error,
        }

    def _lastfm_missing(self) -> str:
        return (
            f"MASSIVE backfill needs Last.fm: {setting_hint(self.lastfm.missing() or '', self.config_path)}, then"
            " retry (r); optimize and backup run meanwhile"
        )

    async def _load_progress(self) -> None:
        raw = await self.store.get_cursor(self.cursor_name)
        self._backfill_state = _current_format(json.loads(raw)) if raw else {}
        for job in ("catchup", "optimize", "backup", "reconcile"):
            value = await self.store.get_cursor(_last_run_cursor(job))
            if value is not None:
                self._last_runs[job] = float(value)

    # -- jobs ------------------------------------------------------------------------

    def _apply_mode(self) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        scheduler.remove_all_jobs()
        self._run_began = self._per_page = None
        self._run_pages = 0
        # The duties run in both modes: a backfill, however long, never costs a backup,
        # and once it is complete MASSIVE carries on with them instead of idling.
        self._schedule_duties(scheduler)
        log.info("%s", self.duties_line())
        if self.mode == MASSIVE and self.lastfm.missing():
            # Up for the optimize and backup, but not doing the work the user asked for:
            # that must not look healthy.
            self.report_attention(self._lastfm_missing())
            return
        self.report_attention(None)
        if self.mode == MASSIVE and not (self.backfill_done and self._backfill_state.get("reconciled")):
            self.spawn(self._backfill(), "backfill")

    def _schedule_duties(self, scheduler: AsyncIOScheduler) -> None:
        if self._catch_up is not None and not self.lastfm.missing():
            last = self._last_runs.get("catchup")
            interval = self.config.catchup_interval
            scheduler.add_job(
                self._run_catch_up, "interval", seconds=interval, id="catchup",
                next_run_time=_aware(last + interval if last is not None else self._clock() + interval),
            )
        if self._client is not None:
            last = self._last_runs.get("reconcile")
            scheduler.add_job(
                self._reconcile_recent, "interval", seconds=RECONCILE_EVERY, id="reconcile",
                next_run_time=_aware(
                    last + RECONCILE_EVERY if last is not None else self._clock() + RECONCILE_EVERY
                ),
            )
        for job, (hour, minute), run in (
            ("optimize", OPTIMIZE_AT, self._optimize), ("backup", BACKUP_AT, self._backup)
        ):
            trigger = CronTrigger(hour=hour, minute=minute)
            last = self._last_runs.get(job)
            # The first run owed since the last one: in the past if missed, and then
            # APScheduler runs it once (within the grace) or reports it missed.
            since = _aware(last if last is not None else self._clock())
            scheduler.add_job(
                run, trigger, id=job, misfire_grace_time=DAILY_GRACE,
                next_run_time=trigger.get_next_fire_time(None, since),
            )

    def _duties_off(self) -> list[str]:
        if self._scheduler is None or not self.lastfm.missing():
            return []
        hint = setting_hint(self.lastfm.missing(), self.config_path)
        return [f"catch-up off: Last.fm not set up ({hint})"]

    def _next_job(self) -> str | None:
        """What runs at next_run, in words."""
        if self._scheduler is None or not self._scheduler.running:
            return None
        if self._next_page_at is not None:
            return "backfill page"
        jobs = [job for job in self._scheduler.get_jobs() if job.next_run_time]
        if not jobs:
            return None
        first = min(jobs, key=lambda job: job.next_run_time)
        return {"catchup": "catch-up", "optimize": "optimise", "backup": "backup"}.get(first.id, first.id)

    def duties_line(self) -> str:
        """What the scheduler will do, in words (APScheduler's own job lines are not logged)."""
        duties = []
        catchup = self._job("catchup")
        if catchup is not None:
            duties.append(
                f"catch-up every {duration(self.config.catchup_interval)}"
                f" (next {_next(catchup)})"
            )
        for job, what in (("optimize", "database optimise"), ("backup", "backup")):
            scheduled = self._job(job)
            if scheduled is not None:
                duties.append(f"{what} next at {_next(scheduled)}")
        if self.mode == MASSIVE and not self.lastfm.missing():
            interval = self.config.backfill_interval
            pace = f"one page every {duration(interval)}" if interval else "paced by the request rate"
            duties.append("backfill complete" if self.backfill_done else f"backfill {pace}")
        return f"scheduler in {self.mode}: " + ", ".join(duties + self._duties_off())

    def _job(self, job_id: str):
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return None
        return scheduler.get_job(job_id)

    def _catch_up_now(self) -> None:
        """Bring the catch-up forward to now (it then keeps its interval from there)."""
        job = self._job("catchup")
        if job is not None:
            job.modify(next_run_time=datetime.now(timezone.utc))

    def _on_job_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            late = datetime.now(timezone.utc) - event.scheduled_run_time
            log.warning(
                "scheduler: job %s missed its run at %s (%.0f s late, beyond its grace); "
                "it runs again at its next time",
                event.job_id, event.scheduled_run_time.isoformat(timespec="seconds"),
                late.total_seconds(),
            )
        elif isinstance(event.exception, asyncio.CancelledError):
            pass  # a run cut short by stop(): expected, its transaction is whole or absent
        elif event.exception is not None:
            self.last_error = str(event.exception) or type(event.exception).__name__
            if isinstance(event.exception, DiskFull):
                return  # said, then counted, by the store
            # A fault the user can fix (a file, the disk) is a line; anything else a traceback.
            trace = None if isinstance(event.exception, StoreError) else event.exception
            log.error("scheduler: job %s failed: %s", event.job_id, self.last_error, exc_info=trace)

    async def _ran(self, job: str) -> None:
        now = self._clock()
        self.last_check = now
        self._last_runs[job] = now
        await self.store.set_cursor(_last_run_cursor(job), repr(now))

    def _credit(self, added: int) -> None:
        self.tracks_found += added

    async def _run_catch_up(self) -> None:
        assert self._catch_up is not None
        try:
            await self._catch_up(credit=self._credit)
        except Exception as exc:
            # The tracker shows its own faults; here a failed catch-up just waits for the next.
            self.last_error = str(exc) or type(exc).__name__
            log.warning("scheduler: catch-up failed, next one as scheduled: %s", self.last_error)
            return
        self.last_error = None
        await self._ran("catchup")

    async def _reconcile_recent(self) -> None:
        """Fetch again what differs in the trailing 14 days below the tracker's cursor (and
        above the oldest play stored: older history is the backfill's)."""
        client = self._client
        newest = await self.store.get_cursor(f"lastfm:{self.lastfm.user.lower()}")
        oldest = await self.store.oldest_play("lastfm", self.lastfm.user)
        if client is None or newest is None or oldest is None:
            return  # nothing stored yet
        until = int(newest)
        try:
            fetched = await reconcile(
                client, self.store, max(until - LATE_WINDOW, oldest), until, self._credit
            )
        except Exception as exc:
            self.last_error = str(classify(exc)) or type(exc).__name__
            log.warning("scheduler: reconciliation failed, next one as scheduled: %s", self.last_error)
            return
        if fetched:
            log.info("scheduler: reconciled the last 14 days: %d windows fetched again", fetched)
        self.last_error = None
        await self._ran("reconcile")

    async def _optimize(self) -> None:
        await self.store.optimize()
        await self._ran("optimize")
        log.info("scheduler: database statistics refreshed")

    async def _backup(self) -> None:
        stamp = datetime.fromtimestamp(self._clock()).strftime("%Y%m%d-%H%M%S")
        destination = self.backup_dir / f"aime-{stamp}.db"
        await self.store.backup_to(destination)
        for old in sorted(self.backup_dir.glob("aime-*.db"))[:-BACKUPS_KEPT]:
            old.unlink()
        await self._ran("backup")
        log.info("scheduler: backup written to %s", destination)

    # -- the MASSIVE backfill ----------------------------------------------------------

    async def _backfill(self) -> None:
        """Store one page per request, newest first, until the whole history is in, then
        reconcile the backfilled range once.

        A failure escapes classified (NeedsAttention, RetryAfter or transient), so the
        supervisor shows it and restarts the service, which resumes from the cursor.
        """
        client = self._client
        assert client is not None
        self._run_began = time.monotonic()
        try:
            await self._backfill_pages(client)
            if not self._backfill_state.get("reconciled"):
                await self._guarded(self._reconcile_backfilled(client))
        finally:  # done, failed, or cancelled by a mode switch or a stop: no page is due
            self._next_page_at = None

    async def _guarded(self, work):
        try:
            return await work
        except Exception as exc:
            fault = classify(exc)
            self.last_error = str(fault) or type(fault).__name__
            if fault is exc:
                raise
            raise fault from exc

    async def _backfill_pages(self, client: LastfmClient) -> None:
        interval = self.config.backfill_interval
        while not self.backfill_done:
            began = time.monotonic()
            state, plays = await self._guarded(self._next_page(client, dict(self._backfill_state)))
            added = await self.store.insert_plays(plays, cursor=(self.cursor_name, json.dumps(state)))
            self._run_pages += 1
            self._per_page = (time.monotonic() - self._run_began) / self._run_pages
            self._backfill_state = state
            self.tracks_found += added
            self.last_check = self._clock()
            self.last_error = None
            if self.backfill_done:
                log.info("scheduler: backfill complete (%d pages, %d plays)", self.pages_done, state["plays"])
                # Plays scrobbled since the backfill began are the catch-up's: fetch them
                # now rather than an interval from now.
                self._catch_up_now()
                break
            if interval:
                self._next_page_at = began + interval
                await asyncio.sleep(max(0.0, self._next_page_at - time.monotonic()))

    async def _next_page(self, client: LastfmClient, state: dict[str, Any]):
        """The cursor after the next page and the plays to store with it."""
        if "sweep" not in state:
            # The first page is the newest: it sets the upper bound, Last.fm's newest play
            # (its clock, not ours); plays scrobbled later are the tracker's.
            plays, rest, page = await sweep_step(client, Sweep(None, None))
            upper = max((play.played_at for play in page.plays), default=0) + 1
            state = {"format": BACKFILL_FORMAT, "upper": upper, "pages_done": 0, "plays": 0,
                     "total": page.total}
        else:
            plays, rest, page = await sweep_step(client, Sweep.load(state["sweep"]))
        state["sweep"] = rest.dump() if rest is not None else None
        state["pages_done"] += 1
        state["plays"] += len(plays)
        remaining = rest.remaining or 0 if rest is not None else 0
        # Late scrobbles make the history grow as it is read: the totals follow.
        state["total"] = state["plays"] + remaining
        state["total_pages"] = state["pages_done"] + math.ceil(remaining / MAX_PAGE_SIZE)
        state["done"] = rest is None
        return state, plays

    async def _reconcile_backfilled(self, client: LastfmClient) -> None:
        """Once complete: fetch again whatever arrived late inside the backfilled range."""
        fetched = await reconcile(client, self.store, 0, self._backfill_state["upper"], self._credit)
        log.info("scheduler: backfilled range reconciled (%d windows fetched again)", fetched)
        state = dict(self._backfill_state, reconciled=True)
        await self.store.set_cursor(self.cursor_name, json.dumps(state))
        self._backfill_state = state

    def _eta(self) -> float | None:
        """Seconds until the backfill is done, at this run's pace (never faster than the interval)."""
        if self.mode != MASSIVE or self.backfill_done or self._per_page is None or self.total_pages is None:
            return None
        remaining = max(self.total_pages - self.pages_done, 0)
        return remaining * max(self._per_page, self.config.backfill_interval or 0.0)

    def _cursor_text(self) -> str | None:
        if not self._backfill_state:
            return None
        if self.backfill_done:
            return "complete"
        sweep = self._backfill_state.get("sweep") or {}
        if sweep.get("high") is None:
            return f"page {self.pages_done + 1} of {self.total_pages}"
        before = datetime.fromtimestamp(sweep["high"], timezone.utc).strftime("%Y-%m-%d %H:%M")
        return f"page {self.pages_done + 1} of {self.total_pages}, plays before {before} UTC"

    def _next_run(self) -> float | None:
        if self._scheduler is None or not self._scheduler.running:
            return None
        times = [job.next_run_time.timestamp() for job in self._scheduler.get_jobs() if job.next_run_time]
        if self._next_page_at is not None:
            times.append(self._clock() + max(0.0, self._next_page_at - time.monotonic()))
        return min(times) if times else None


def _current_format(state: dict[str, Any]) -> dict[str, Any]:
    """A backfill cursor in today's format. One kept by page numbers (format 1) starts
    again, anchored in time, unless it had completed: its plays are all stored already."""
    if state.get("format") == BACKFILL_FORMAT:
        return state
    if state.get("done"):
        return {"format": BACKFILL_FORMAT, "upper": int(state.get("to", 0)) + 1, "sweep": None,
                "pages_done": state.get("pages_done", 0), "total_pages": state.get("total_pages"),
                "plays": state.get("plays", 0), "total": state.get("total"), "done": True}
    return {}


def _last_run_cursor(job: str) -> str:
    return f"scheduler:last_run:{job}"


def _next(job) -> str:
    return when(job.next_run_time.timestamp() if job.next_run_time else None)


def _aware(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)
