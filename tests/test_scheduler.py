"""The collection scheduler on a real loop, a real store and the loopback Last.fm fake."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from waits import wait_until

from aime_tui.clients.lastfm import LastfmError
from aime_tui.config import LastfmConfig, SchedulerConfig
from aime_tui.core.faults import NeedsAttention, RetryAfter
from aime_tui.core.model import RunState, ServiceView
from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.services import scheduler as scheduler_module
from aime_tui.services.scheduler import BACKUPS_KEPT, CollectionScheduler
from aime_tui.services.tracker import LastfmTracker
from aime_tui.ui.cells import detail_text

NEWEST = 1_700_000_000


@pytest.fixture
async def lastfm():
    fake = FakeLastfm(plays=1000, newest=NEWEST)
    await fake.start()
    yield fake
    await fake.stop()


def lastfm_config(fake: FakeLastfm) -> LastfmConfig:
    return LastfmConfig(api_url=fake.url, api_key=fake.api_key, user=fake.user, interval=3600, rate=1000)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries in place wait milliseconds here, not half seconds."""
    monkeypatch.setattr(CollectionScheduler, "retry_wait", 0.005)
    monkeypatch.setattr(LastfmTracker, "retry_wait", 0.005)


def make_scheduler(fake, store, tmp_path, mode="MASSIVE", **options):
    config = SchedulerConfig(
        mode=mode,
        backfill_interval=options.pop("interval", 0.05),
        catchup_interval=options.pop("catchup_interval", 900.0),
    )
    return CollectionScheduler(config, lastfm_config(fake), store, backup_dir=tmp_path / "backups", **options)


def stored_times(store):
    with sqlite3.connect(store.path) as db:
        return [t for (t,) in db.execute("SELECT played_at FROM plays ORDER BY played_at")]


def backfill_bounds(fake: FakeLastfm, since: int = 0) -> list[str | None]:
    """The `to` of each backfill page asked for, in order (the tracker's polls carry
    `from`, reconciliation's counts ask for one play)."""
    return [r.get("to") for r in fake.requests[since:] if r["limit"] == "200" and "from" not in r]


def expected_bounds(fake: FakeLastfm) -> list[str | None]:
    """The bounds a backfill of the fake's history asks for: each page ends just above
    the oldest second fetched so far, which it asks for again."""
    times = [play.played_at for play in fake.history]
    bounds, index = [None], 0
    while len(times) - index > 200:
        index += 199
        bounds.append(str(times[index] + 1))
    return bounds


def let_through(fake: FakeLastfm, requests: int) -> None:
    """Answer the next `requests` requests normally, whatever comes injected after them.

    Faults apply to the next requests in injection order, and a zero-second "slow" answers
    as usual: a fault injected after this lands on an exact request, decided before the
    backfill starts. Waiting for a page count and then injecting races the backfill,
    which may be fetching the next page already on a loaded machine.
    """
    fake.inject("slow", times=requests, delay=0)


DUTIES = {"catchup", "optimize", "backup", "reconcile"}


def counted_catch_up(tracker: LastfmTracker):
    """The tracker's poll as the catch-up, and the plays each run found, in order.

    It asks the same fake as the backfill (here one request a run, without `to`): a
    catch-up answered while the backfill should be quiet is a request the backfill
    would have had time to make as well.
    """
    runs: list[int] = []

    async def catch_up(credit):
        runs.append(await tracker.poll_once(credit=credit))
        return runs[-1]

    return catch_up, runs


def job_ids(scheduler: CollectionScheduler) -> set[str]:
    return {job.id for job in scheduler._scheduler.get_jobs()}


def run_now(scheduler: CollectionScheduler, *jobs: str) -> None:
    """Make real scheduled jobs due now, as if their time had come."""
    for job in jobs:
        scheduler._scheduler.get_job(job).modify(next_run_time=datetime.now(timezone.utc))


async def run_again(scheduler: CollectionScheduler, job: str, ran, timeout: float = 10.0) -> None:
    """Make a job due again until it has run. The run just before may still be finishing
    (it records itself as its last step), and APScheduler skips a job due while an
    instance of it runs; a skipped run does nothing, so asking again is safe."""
    deadline = time.monotonic() + timeout
    while not ran():
        assert time.monotonic() < deadline, f"{job} did not run again within {timeout} s"
        run_now(scheduler, job)
        try:
            await wait_until(ran, timeout=0.5)
        except AssertionError:
            continue


def scheduler_detail(scheduler: CollectionScheduler) -> list[str]:
    """The scheduler's detail line on the dashboard, fact by fact."""
    view = ServiceView(
        name="scheduler", state=RunState.RUNNING, wanted=True, mode=scheduler.mode, reason=None,
        retry_in=None, restarts=0, status=scheduler.status(),
    )
    return detail_text(view).split(" · ")


# -- MASSIVE -------------------------------------------------------------------------


async def test_massive_backfill_stores_the_whole_history_exactly(lastfm, store, tmp_path):
    lastfm.now_playing = True  # on the first page, dateless: never a play
    scheduler = make_scheduler(lastfm, store, tmp_path)
    await scheduler.start()
    await wait_until(lambda: scheduler.status()["backfill_reconciled"], timeout=10.0)
    await scheduler.stop()
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)
    status = scheduler.status()
    assert status["pages_done"] == status["total_pages"] == 6
    assert (status["backfill_plays"], status["backfill_total"], status["tracks_found"]) == (1000, 1000, 1000)
    assert (status["cursor"], status["eta"], status["last_error"]) == ("complete", None, None)
    # Newest first, each page bounded by the oldest second already fetched; then one
    # count of the backfilled range, which matches.
    assert backfill_bounds(lastfm) == expected_bounds(lastfm)
    assert all(r["page"] == "1" for r in lastfm.requests)
    assert lastfm.requests[-1] == {**lastfm.requests[-1], "limit": "1", "from": "0", "to": str(NEWEST + 1)}
    assert len(lastfm.requests) == 7


async def test_progress_shows_pages_plays_and_an_eta(lastfm, store, tmp_path, cleanup):
    # The probe and pages 5 and 4 are answered; page 3 never is, so the backfill holds
    # still at two pages for as long as the test looks, however loaded the machine.
    let_through(lastfm, 2)
    lastfm.inject("hang")
    scheduler = make_scheduler(lastfm, store, tmp_path, interval=0.2)
    began = time.monotonic()
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    await wait_until(lambda: len(backfill_bounds(lastfm)) == 3, timeout=10.0)
    elapsed = time.monotonic() - began
    status = scheduler.status()
    assert (status["pages_done"], status["total_pages"]) == (2, 6)
    assert (status["backfill_plays"], status["backfill_total"]) == (398, 1000)
    before = datetime.fromtimestamp(int(expected_bounds(lastfm)[2]), timezone.utc)
    assert status["cursor"] == f"page 3 of 6, plays before {before:%Y-%m-%d %H:%M} UTC"
    # Four pages to go at this run's pace: one page per 0.2 s interval (fetching is
    # faster here), never faster than the interval, never slower than it really went.
    assert 4 * 0.2 <= status["eta"] <= 4 * max(0.2, elapsed / 2)
    await scheduler.stop()
    assert scheduler.status()["next_run"] is None


async def test_next_run_is_the_next_page_while_the_backfill_waits(lastfm, store, tmp_path, cleanup):
    scheduler = make_scheduler(lastfm, store, tmp_path, interval=60)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    # The newest page is in (it sets the page count): the next waits its turn, 60 s later.
    await wait_until(lambda: scheduler.total_pages is not None, timeout=10.0)
    status = scheduler.status()
    assert 0 < status["next_run"] - time.time() <= 60
    assert (status["pages_done"], status["total_pages"]) == (1, 6)
    assert status["cursor"].startswith("page 2 of 6, plays before ")
    assert status["eta"] == pytest.approx(5 * 60)  # never faster than the spacing
    assert backfill_bounds(lastfm) == [None]

    # The waiting page goes with the backfill when the mode changes: the next run is a duty's.
    await scheduler.set_mode("MAINTENANCE")
    duties = min(job.next_run_time.timestamp() for job in scheduler._scheduler.get_jobs())
    assert scheduler.status()["next_run"] == pytest.approx(duties)
    await scheduler.stop()
    assert scheduler.status()["next_run"] is None


async def test_a_stopped_backfill_resumes_from_its_cursor(lastfm, store, tmp_path):
    # Stopped while page 3 is in flight (it never answers), so there is something to resume.
    let_through(lastfm, 2)
    lastfm.inject("hang")
    scheduler = make_scheduler(lastfm, store, tmp_path)
    await scheduler.start()
    await wait_until(lambda: len(backfill_bounds(lastfm)) == 3, timeout=10.0)
    await scheduler.stop()
    cursor = json.loads(await store.get_cursor(scheduler.cursor_name))
    assert cursor["pages_done"] == scheduler.pages_done == 2
    stored_before = len(stored_times(store))
    assert stored_before == 199 * cursor["pages_done"]
    expected = expected_bounds(lastfm)
    requests_before = len(lastfm.requests)

    lastfm.add_plays(30)  # new plays after the backfill's upper bound are not the backfill's
    resumed = make_scheduler(lastfm, store, tmp_path, interval=0.05)
    await resumed.start()
    await wait_until(lambda: resumed.status()["backfill_done"], timeout=10.0)
    await resumed.stop()
    # Only the page in flight at the stop is asked for again.
    assert backfill_bounds(lastfm, since=requests_before) == expected[2:]
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history[30:])
    assert resumed.status()["backfill_plays"] == 1000  # over both runs
    assert resumed.status()["tracks_found"] == 1000 - stored_before  # this run's


@pytest.mark.parametrize(
    "kind, params, expected, message",
    [
        ("error", {"code": 10, "message": "Invalid API key"}, NeedsAttention, "lastfm.api_key"),
        ("http_429", {"retry_after": 0.25}, RetryAfter, "rate limit"),
        ("http_500", {"times": 3}, LastfmError, "HTTP 500"),
        ("bad_json", {"times": 3}, LastfmError, "not valid JSON"),
        ("html", {"times": 3}, LastfmError, "HTTP 503"),
        ("truncated", {"times": 3}, LastfmError, "cannot reach Last.fm"),
        ("error", {"code": 11, "message": "Service Offline", "times": 3}, LastfmError, "error 11"),
    ],
)
async def test_a_failed_page_reaches_the_supervisor_and_the_restart_resumes(
    lastfm, store, tmp_path, kind, params, expected, message
):
    faults = []
    scheduler = make_scheduler(lastfm, store, tmp_path)
    scheduler.set_fault_handler(lambda service, exc: faults.append(exc))
    let_through(lastfm, 2)  # the first two pages
    lastfm.inject(kind, **params)  # every try of the third
    await scheduler.start()
    await wait_until(lambda: faults, timeout=10.0)
    await scheduler.stop()  # what the supervisor does before it retries
    assert scheduler.pages_done == 2
    [fault] = faults
    assert type(fault) is expected and message in str(fault)
    assert lastfm.api_key not in str(fault)
    assert scheduler.status()["last_error"] == str(fault)
    if expected is RetryAfter:
        assert fault.delay == 0.25  # and the shared bucket holds every request back as long
    expected_pages = expected_bounds(lastfm)
    tries = params.get("times", 1)
    assert backfill_bounds(lastfm) == expected_pages[:2] + [expected_pages[2]] * tries
    asked = len(lastfm.requests)

    await scheduler.start()
    await wait_until(lambda: scheduler.status()["backfill_done"], timeout=10.0)
    await scheduler.stop()
    assert backfill_bounds(lastfm, since=asked) == expected_pages[2:]
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)


async def test_massive_without_lastfm_needs_attention_and_keeps_its_duties(store, tmp_path, cleanup):
    from aime_tui.core.model import RunState
    from aime_tui.core.supervisor import Supervisor
    from aime_tui.ui.cells import detail_text

    scheduler = CollectionScheduler(
        SchedulerConfig(mode="MASSIVE"), LastfmConfig(), store,
        backup_dir=tmp_path / "b", config_path=tmp_path / "config.toml",
    )
    await store.ensure_defaults({"scheduler": (True, "MASSIVE")})
    supervisor = Supervisor(store, [scheduler])
    await supervisor.load()
    cleanup.push_async_callback(supervisor.close)
    summary = await supervisor.restore()
    # Not the work asked for, so not healthy; but up, so the backups still happen.
    assert "set lastfm.api_key in" in summary.failed["scheduler"]
    assert str(tmp_path / "config.toml") in summary.failed["scheduler"]
    view = supervisor.view("scheduler")
    assert (view.state, view.up) == (RunState.NEEDS_ATTENTION, True)
    assert set(job_ids(scheduler)) == {"optimize", "backup"}, "no catch-up or backfill without Last.fm"
    # The dashboard's detail line is the scheduler's own words: a retry is needed once
    # the file is fixed, and nothing claims it is connected and will carry on by itself.
    detail = detail_text(view)
    assert detail.startswith("scheduler needs attention: MASSIVE backfill needs Last.fm")
    assert "then retry (r)" in detail and "connected" not in detail
    assert scheduler.status()["running"]

    # Back to MAINTENANCE: nothing missing for what it does, so running.
    await supervisor.set_mode("scheduler", "MAINTENANCE")
    assert supervisor.view("scheduler").state is RunState.RUNNING
    # And to MASSIVE again while running: told at once, still up.
    await supervisor.set_mode("scheduler", "MASSIVE")
    view = supervisor.view("scheduler")
    assert (view.state, view.up) == (RunState.NEEDS_ATTENTION, True)
    assert "MASSIVE backfill needs Last.fm" in view.reason


async def test_mode_switch_reschedules_the_work(lastfm, store, tmp_path, cleanup):
    catch_up, catch_ups = counted_catch_up(LastfmTracker(lastfm_config(lastfm), store))
    scheduler = make_scheduler(
        lastfm, store, tmp_path, mode="MAINTENANCE", catch_up=catch_up, interval=0.1, catchup_interval=0.1
    )
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    assert job_ids(scheduler) == DUTIES
    assert scheduler.status()["next_run"] is not None
    assert lastfm.requests == []

    await scheduler.set_mode("MASSIVE")
    assert job_ids(scheduler) == DUTIES, "the duties carry on beside the backfill"
    await wait_until(lambda: scheduler.pages_done >= 2, timeout=10.0)

    await scheduler.set_mode("MAINTENANCE")
    assert job_ids(scheduler) == DUTIES
    asked, pages, ran = len(lastfm.requests), scheduler.pages_done, len(catch_ups)
    # Three catch-ups answered, a backfill interval apart: a page would have been asked too.
    await wait_until(lambda: len(catch_ups) >= ran + 3, timeout=10.0)
    assert backfill_bounds(lastfm, since=asked) == [], "the backfill stopped with the mode"
    assert scheduler.pages_done == pages
    await scheduler.stop()
    assert scheduler.status()["running"] is False


# -- MASSIVE keeps up the maintenance duties -------------------------------------------


async def test_massive_optimizes_and_backs_up_beside_the_backfill_and_after_it(lastfm, store, tmp_path, cleanup):
    """A backfill may take days: it never costs a nightly optimize or backup, nor does its end."""
    backups = tmp_path / "backups"
    # The second page hangs: the backfill is caught mid-history while the nightly jobs come due.
    let_through(lastfm, 1)
    lastfm.inject("hang")
    scheduler = make_scheduler(lastfm, store, tmp_path)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    await wait_until(lambda: len(backfill_bounds(lastfm)) == 2, timeout=10.0)
    assert job_ids(scheduler) == {"optimize", "backup", "reconcile"}  # no catch-up given to this one
    run_now(scheduler, "optimize")
    await wait_until(lambda: "optimize" in scheduler._last_runs, timeout=10.0)
    run_now(scheduler, "backup")
    await wait_until(lambda: "backup" in scheduler._last_runs, timeout=10.0)
    await scheduler.stop()
    [during] = backups.glob("aime-*.db")
    with sqlite3.connect(during) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM plays").fetchone() == (199,)  # the first page, whole
        # ANALYZE ran before this copy was taken: the planner's statistics are in it.
        assert db.execute("SELECT COUNT(*) FROM sqlite_stat1").fetchone()[0] > 0
    during.rename(backups / "aime-00000000-000000.db")  # older than any stamp from now

    # Started again, it resumes and completes, and stays MASSIVE with its duties: the
    # backup taken after the end holds the whole history.
    resumed = make_scheduler(lastfm, store, tmp_path)
    await resumed.start()
    cleanup.push_async_callback(resumed.stop)
    await wait_until(lambda: resumed.backfill_done, timeout=10.0)
    assert resumed.mode == resumed.status()["mode"] == "MASSIVE"
    assert job_ids(resumed) == {"optimize", "backup", "reconcile"}
    run_now(resumed, "backup")
    await wait_until(lambda: resumed._last_runs["backup"] > scheduler._last_runs["backup"], timeout=10.0)
    await resumed.stop()
    after = max(backups.glob("aime-*.db"))
    with sqlite3.connect(after) as db:
        assert db.execute("SELECT COUNT(*) FROM plays").fetchone() == (1000,)
    assert abs(float(await store.get_cursor("scheduler:last_run:backup")) - time.time()) < 60


async def test_after_the_backfill_massive_carries_on_catching_up(lastfm, store, tmp_path, cleanup):
    tracker = LastfmTracker(lastfm_config(lastfm), store)  # not started: the catch-up polls on its own
    scheduler = make_scheduler(lastfm, store, tmp_path, catch_up=tracker.poll_once, catchup_interval=0.2)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    assert job_ids(scheduler) == DUTIES
    await wait_until(lambda: scheduler.backfill_done, timeout=10.0)
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)

    # Plays after the backfill's upper bound are the catch-up's to fetch, time after time.
    for added, expected in ((3, 1003), (2, 1005)):
        new = lastfm.add_plays(added)
        await wait_until(lambda: scheduler.tracks_found == expected, timeout=10.0)
        assert {p.played_at for p in new} <= set(stored_times(store))
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)

    status = scheduler.status()
    assert (status["mode"], status["backfill_done"], status["cursor"]) == ("MASSIVE", True, "complete")
    assert status["catchup_every"] == 0.2 and status["next_run"] is not None
    assert job_ids(scheduler) == DUTIES
    facts = scheduler_detail(scheduler)
    assert facts[:3] == ["scheduler running", "backfill complete", "catching up every 0.2 s"]
    assert facts[3].startswith("next run ")
    await scheduler.stop()
    assert len(stored_times(store)) == 1005
    assert scheduler.status()["catchup_every"] is None  # stopped: nothing scheduled


async def test_plays_scrobbled_during_the_backfill_are_caught_up_as_it_completes(lastfm, store, tmp_path, cleanup):
    tracker = LastfmTracker(lastfm_config(lastfm), store)
    scheduler = make_scheduler(lastfm, store, tmp_path, catch_up=tracker.poll_once, catchup_interval=900)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    # The probe is in: the backfill's upper bound is frozen, later plays are not its own.
    await wait_until(lambda: scheduler.total_pages is not None, timeout=10.0)
    during = lastfm.add_plays(4)
    await wait_until(lambda: scheduler.backfill_done, timeout=10.0)
    # Caught up at once, not 15 minutes later: the next catch-up is an interval away.
    await wait_until(lambda: scheduler.tracks_found == 1004, timeout=10.0)
    next_catchup = scheduler._scheduler.get_job("catchup").next_run_time
    assert 800 < (next_catchup - datetime.now(timezone.utc)).total_seconds() <= 900
    assert scheduler_detail(scheduler)[:3] == [
        "scheduler running", "backfill complete", "catching up every 15 min"
    ]
    await scheduler.stop()
    assert {p.played_at for p in during} <= set(stored_times(store))
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)


async def test_a_completed_backfill_is_not_redone_on_restart(lastfm, store, tmp_path, cleanup):
    catch_up, catch_ups = counted_catch_up(LastfmTracker(lastfm_config(lastfm), store))
    first = make_scheduler(lastfm, store, tmp_path)
    await first.start()
    await wait_until(lambda: first.status()["backfill_reconciled"], timeout=10.0)
    await first.stop()
    asked = len(lastfm.requests)

    again = make_scheduler(lastfm, store, tmp_path, catch_up=catch_up)
    await again.start()
    cleanup.push_async_callback(again.stop)
    assert job_ids(again) == DUTIES
    status = again.status()
    assert (status["mode"], status["cursor"], status["catchup_every"]) == ("MASSIVE", "complete", 900.0)
    # A backfill would ask at once; a catch-up brought forward after the start has been answered.
    run_now(again, "catchup")
    await wait_until(lambda: catch_ups, timeout=10.0)
    # Nothing left to backfill or reconcile: only the catch-up asked.
    assert len(lastfm.requests) == asked + 1


# -- MAINTENANCE ---------------------------------------------------------------------


async def test_catch_up_counts_its_plays_once_and_only_as_its_own(lastfm, store, tmp_path, cleanup):
    tracker = LastfmTracker(lastfm_config(lastfm), store)
    await tracker.start()  # stores the newest page: 200 plays, its own
    catch_up, catch_ups = counted_catch_up(tracker)
    scheduler = make_scheduler(
        lastfm, store, tmp_path, mode="MAINTENANCE", catch_up=catch_up, catchup_interval=0.1
    )
    cleanup.push_async_callback(tracker.stop)
    cleanup.push_async_callback(scheduler.stop)
    lastfm.add_plays(5)
    await scheduler.start()
    await wait_until(lambda: len(catch_ups) >= 3, timeout=10.0)  # more catch-ups after the one that found them
    assert catch_ups[:3] == [5, 0, 0]
    assert scheduler.status()["tracks_found"] == 5
    await scheduler.stop()
    lastfm.add_plays(2)
    assert await tracker.poll_once() == 2  # the tracker's own poll
    await scheduler.stop()
    await tracker.stop()
    assert tracker.status()["tracks_found"] == 202
    assert scheduler.status()["tracks_found"] == 5
    assert len(stored_times(store)) == 207 == 202 + 5
    assert scheduler.status()["last_check"] is not None


async def test_backups_keep_the_last_seven(lastfm, store, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    for day in range(1, 10):
        (backups / f"aime-202601{day:02d}-040000.db").write_bytes(b"old")
    scheduler = make_scheduler(lastfm, store, tmp_path, mode="MAINTENANCE")
    await scheduler.start()
    scheduler._scheduler.get_job("backup").modify(next_run_time=datetime.now().astimezone())
    scheduler._scheduler.wakeup()
    await wait_until(lambda: len(list(backups.glob("aime-*.db"))) == BACKUPS_KEPT and scheduler.last_check, timeout=10.0)
    await scheduler.stop()
    names = sorted(p.name for p in backups.glob("aime-*.db"))
    assert len(names) == BACKUPS_KEPT
    newest = backups / names[-1]
    with sqlite3.connect(newest) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def backup_due_hours_ago(monkeypatch, hours: float) -> None:
    """Move the nightly backup to the minute `hours` ago (conftest pins the zone to UTC)."""
    due = datetime.now(timezone.utc) - timedelta(hours=hours)
    monkeypatch.setattr(scheduler_module, "BACKUP_AT", (due.hour, due.minute))


async def test_a_nightly_run_missed_while_stopped_runs_once_on_start(lastfm, store, tmp_path, monkeypatch, cleanup):
    backup_due_hours_ago(monkeypatch, 2)
    # The last backup was 3 h ago: the one due 2 h ago was missed (asleep, or not running).
    await store.set_cursor("scheduler:last_run:backup", repr(time.time() - 3 * 3600))
    scheduler = make_scheduler(lastfm, store, tmp_path, mode="MAINTENANCE")
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    await wait_until(lambda: list((tmp_path / "backups").glob("aime-*.db")), timeout=10.0)
    await asyncio.sleep(0.2)
    assert len(list((tmp_path / "backups").glob("aime-*.db"))) == 1
    next_backup = scheduler._scheduler.get_job("backup").next_run_time
    assert timedelta(hours=21) < next_backup - datetime.now(timezone.utc) <= timedelta(hours=22)
    await scheduler.stop()
    assert abs(float(await store.get_cursor("scheduler:last_run:backup")) - time.time()) < 5


async def test_a_run_missed_beyond_the_grace_is_logged_not_run(lastfm, store, tmp_path, monkeypatch, caplog, cleanup):
    caplog.set_level(logging.WARNING, logger="aime_tui.services.scheduler")
    backup_due_hours_ago(monkeypatch, 2)
    monkeypatch.setattr(scheduler_module, "DAILY_GRACE", 3600)
    await store.set_cursor("scheduler:last_run:backup", repr(time.time() - 3 * 3600))
    scheduler = make_scheduler(lastfm, store, tmp_path, mode="MAINTENANCE")
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    await wait_until(lambda: "missed its run" in caplog.text, timeout=10.0)
    await scheduler.stop()
    assert not list((tmp_path / "backups").glob("aime-*.db"))
    [record] = [r for r in caplog.records if "missed its run" in r.getMessage()]
    assert "job backup" in record.getMessage() and record.levelno == logging.WARNING


@pytest.mark.parametrize("last_run_ago", [1800, 3 * 3600])
async def test_missed_catch_ups_run_once(lastfm, store, tmp_path, caplog, last_run_ago, cleanup):
    """Every 60 s and the last run long ago: dozens of runs owed, coalesced into one.

    An interval job's newest owed run is always less than an interval old, so unlike a
    nightly job it is never beyond the grace: a catch-up after any sleep runs, once.
    """
    caplog.set_level(logging.WARNING, logger="aime_tui.services.scheduler")
    runs = []

    async def catch_up(credit):
        runs.append(time.monotonic())
        return 0

    await store.set_cursor("scheduler:last_run:catchup", repr(time.time() - last_run_ago))
    scheduler = make_scheduler(lastfm, store, tmp_path, mode="MAINTENANCE", catch_up=catch_up,
                               catchup_interval=60)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    await wait_until(lambda: runs, timeout=10.0)
    await asyncio.sleep(0.3)
    next_run = scheduler._scheduler.get_job("catchup").next_run_time
    await scheduler.stop()
    assert len(runs) == 1
    assert "missed" not in caplog.text
    assert 0 < (next_run - datetime.now(timezone.utc)).total_seconds() <= 60


# -- history exactness -----------------------------------------------------------------


def stored_keys(store) -> list[tuple[int, str, str]]:
    with sqlite3.connect(store.path) as db:
        return sorted(db.execute("SELECT played_at, artist_key, title_key FROM plays"))


def served_keys(fake: FakeLastfm) -> list[tuple[int, str, str]]:
    """The fake's history as the store keys it: an identical same-second duplicate is one play."""
    from aime_tui.store.database import normalise

    return sorted({(p.played_at, normalise(p.artist), normalise(p.title)) for p in fake.history})


async def test_late_scrobbles_inside_the_window_during_a_backfill_are_all_stored(store, tmp_path, cleanup):
    # With every other page, a play lands somewhere in the whole history, pages already
    # read included, as offline scrobbles synced late do (all while the backfill pages).
    fake = FakeLastfm(plays=1000, newest=NEWEST, late_every=2, late_window=1000 * 180, late_limit=3)
    await fake.start()
    cleanup.push_async_callback(fake.stop)
    scheduler = make_scheduler(fake, store, tmp_path)
    await scheduler.start()
    await wait_until(lambda: scheduler.status()["backfill_reconciled"], timeout=10.0)
    await scheduler.stop()
    await fake.stop()
    assert len(fake.late_plays) == 3
    assert stored_keys(store) == served_keys(fake)
    assert len(stored_keys(store)) == len(fake.history)


async def test_a_spurious_error_6_during_the_backfill_costs_nothing(lastfm, store, tmp_path):
    faults = []
    scheduler = make_scheduler(lastfm, store, tmp_path)
    scheduler.set_fault_handler(lambda service, exc: faults.append(exc))
    let_through(lastfm, 3)
    lastfm.inject("error", code=6, message="User not found", status=404)
    await scheduler.start()
    await wait_until(lambda: scheduler.status()["backfill_reconciled"], timeout=10.0)
    await scheduler.stop()
    assert faults == []
    assert stored_times(store) == sorted(p.played_at for p in lastfm.history)


async def test_error_6_that_repeats_needs_attention_with_the_reason(lastfm, store, tmp_path):
    faults = []
    scheduler = make_scheduler(lastfm, store, tmp_path)
    scheduler.set_fault_handler(lambda service, exc: faults.append(exc))
    let_through(lastfm, 2)
    lastfm.inject("error", times=2, code=6, message="User not found", status=404)
    await scheduler.start()
    await wait_until(lambda: faults, timeout=10.0)
    await scheduler.stop()
    [fault] = faults
    assert isinstance(fault, NeedsAttention) and "check lastfm.user" in str(fault)


async def test_reconciliation_fetches_again_the_window_where_a_late_play_landed(lastfm, store, tmp_path, cleanup):
    tracker = LastfmTracker(lastfm_config(lastfm), store)
    await tracker.start()  # the newest 200 plays: ten hours, all inside the last 14 days
    await tracker.stop()
    late = lastfm.insert_play(NEWEST - 3 * 3600 + 7)  # synced late, three hours back
    scheduler = make_scheduler(lastfm, store, tmp_path, mode="MAINTENANCE", catch_up=tracker.poll_once)
    await scheduler.start()
    cleanup.push_async_callback(scheduler.stop)
    asked = len(lastfm.requests)
    run_now(scheduler, "reconcile")
    await wait_until(lambda: "reconcile" in scheduler._last_runs, timeout=10.0)
    requests = lastfm.requests[asked:]
    assert requests[0]["limit"] == "1"  # the count first: it differs by one
    assert late.played_at in stored_times(store)
    assert scheduler.status()["tracks_found"] == 1
    with sqlite3.connect(store.path) as db:
        [(stored,)] = db.execute("SELECT COUNT(*) FROM plays WHERE played_at >= ?",
                                 (NEWEST - 14 * 86400,)).fetchall()
    assert stored == 201

    # Next time the counts agree: one request, nothing fetched again.
    asked = len(lastfm.requests)
    last = scheduler._last_runs["reconcile"]
    await run_again(scheduler, "reconcile", lambda: scheduler._last_runs["reconcile"] > last)
    assert len(lastfm.requests) == asked + 1


async def test_an_identical_same_second_duplicate_is_stored_once_and_reconciles_once(store, tmp_path, cleanup):
    fake = FakeLastfm(plays=600, newest=NEWEST)
    twin = fake.history[250]
    fake.insert_play(twin.played_at, like=twin)  # Last.fm serves it twice
    await fake.start()
    cleanup.push_async_callback(fake.stop)
    scheduler = make_scheduler(fake, store, tmp_path)
    await scheduler.start()
    await wait_until(lambda: scheduler.status()["backfill_reconciled"], timeout=10.0)
    # The range's count (601) differs from the 600 stored plays once: that window is
    # fetched again, and the store learns that this play is served twice.
    assert stored_keys(store) == served_keys(fake) and len(stored_keys(store)) == 600
    assert await store.count_served("lastfm", fake.user, 0, NEWEST + 1) == 601

    tracker = LastfmTracker(lastfm_config(fake), store)
    await tracker.poll_once()  # gives the trailing window its upper bound
    asked = len(fake.requests)
    run_now(scheduler, "reconcile")
    await wait_until(lambda: "reconcile" in scheduler._last_runs, timeout=10.0)
    assert len(fake.requests) == asked + 1, "the duplicate no longer makes the window differ"
    await scheduler.stop()
