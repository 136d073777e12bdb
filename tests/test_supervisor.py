"""Supervisor against a real SQLite file, with scripted services for faults on cue."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from scripted import ScriptedService, count_status_reads
from waits import wait_until

from aime_tui.core.faults import NeedsAttention, RetryAfter
from aime_tui.core.model import LogEvent, RunState, StateEvent
from aime_tui.core.supervisor import Supervisor, full_jitter_delay
from aime_tui.reports.health import DEGRADED, HEALTHY, assess
from aime_tui.store.database import Store
from aime_tui.ui.cells import detail_text

NAMES = ("alpha", "beta", "gamma")


async def open_supervisor(path, services, *, wanted=NAMES, timeout=0.5, rng=lambda: 0.5):
    store = await Store.open(path)
    await store.ensure_defaults({s.name: (s.name in wanted, s.modes[0] if s.modes else None) for s in services})
    supervisor = Supervisor(store, services, restore_timeout=timeout, rng=rng)
    await supervisor.load()
    return store, supervisor


async def close(store, supervisor):
    await supervisor.close()
    await store.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "aime.db"


async def test_restore_starts_every_wanted_service(db_path):
    services = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, services)
    summary = await supervisor.restore()
    assert sorted(summary.succeeded) == sorted(NAMES)
    assert summary.failed == {}
    assert summary.line().startswith("Restored 3 succeeded, 0 failed in ")
    assert all(supervisor.view(n).state is RunState.RUNNING for n in NAMES)
    assert all(s.running for s in services)
    await close(store, supervisor)
    assert not any(s.running for s in services), "close stops what runs"


async def test_one_failure_is_reported_with_its_reason_and_others_run(db_path):
    services = [ScriptedService(n) for n in NAMES]
    services[1].failures.append(ConnectionRefusedError("connect to 127.0.0.1:9 refused"))
    store, supervisor = await open_supervisor(db_path, services)
    summary = await supervisor.restore()
    assert sorted(summary.succeeded) == ["alpha", "gamma"]
    assert summary.failed == {"beta": "connect to 127.0.0.1:9 refused"}
    assert "beta: connect to 127.0.0.1:9 refused" in summary.line()
    view = supervisor.view("beta")
    assert view.state is RunState.BACKOFF
    assert view.retry_in is not None and 0 < view.retry_in <= 5.0
    await close(store, supervisor)


async def test_a_hung_service_times_out_without_delaying_the_others(db_path):
    services = [ScriptedService(n, start_delay=0.05) for n in NAMES]
    services[0].hang = True
    store, supervisor = await open_supervisor(db_path, services, timeout=0.4)
    loop = asyncio.get_running_loop()
    began = loop.time()
    summary = await supervisor.restore()
    elapsed = loop.time() - began
    assert summary.failed == {"alpha": "start timed out after 0.4 s"}
    for service in services[1:]:
        # They finished on their own time, not the hung one's.
        assert service.started_at[0] - began < 0.3
    assert 0.4 <= elapsed < 1.5
    assert supervisor.view("alpha").state is RunState.BACKOFF
    await close(store, supervisor)


async def test_stopped_stays_stopped_and_restart_restores_the_same_set(db_path):
    services = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, services)
    await supervisor.restore()
    await supervisor.stop("beta")
    await wait_until(lambda: supervisor.view("beta").state is RunState.STOPPED, timeout=3.0)
    assert not services[1].running
    await close(store, supervisor)

    again = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, again)
    summary = await supervisor.restore()
    assert sorted(summary.succeeded) == ["alpha", "gamma"]
    assert again[1].starts == 0
    assert supervisor.view("beta").wanted is False
    assert supervisor.view("beta").state is RunState.STOPPED
    await close(store, supervisor)


async def test_a_toggle_is_committed_before_it_returns(db_path):
    services = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, services)
    await supervisor.toggle("gamma")
    # A second connection (as after a kill -9) already sees it.
    with sqlite3.connect(db_path) as other:
        (active,) = other.execute(
            "SELECT is_active FROM service_states WHERE service_name = 'gamma'"
        ).fetchone()
    assert active == 0
    await supervisor.toggle("gamma")
    with sqlite3.connect(db_path) as other:
        rows = other.execute(
            "SELECT from_state, to_state, reason FROM transitions"
            " WHERE service = 'gamma' AND to_state IN ('wanted', 'unwanted') ORDER BY id"
        ).fetchall()
    assert rows == [("wanted", "unwanted", "user"), ("unwanted", "wanted", "user")]
    await wait_until(lambda: supervisor.view("gamma").state is RunState.RUNNING, timeout=3.0)
    await close(store, supervisor)


async def test_mode_survives_a_restart(db_path):
    services = [ScriptedService("scheduler", modes=("MAINTENANCE", "MASSIVE"))]
    store, supervisor = await open_supervisor(db_path, services, wanted=("scheduler",))
    await supervisor.restore()
    assert await supervisor.cycle_mode("scheduler") == "MASSIVE"
    assert services[0].mode == "MASSIVE"
    with pytest.raises(ValueError):
        await supervisor.set_mode("scheduler", "TURBO")
    await close(store, supervisor)

    again = [ScriptedService("scheduler", modes=("MAINTENANCE", "MASSIVE"))]
    store, supervisor = await open_supervisor(db_path, again, wanted=("scheduler",))
    assert supervisor.view("scheduler").mode == "MASSIVE"
    await supervisor.restore()
    assert again[0].mode == "MASSIVE"
    await close(store, supervisor)


async def test_needs_attention_is_not_retried(db_path):
    services = [ScriptedService("alpha"), ScriptedService("beta")]
    services[0].failures.append(NeedsAttention("set lastfm.api_key in /etc/aime.toml"))
    services[1].failures.append(OSError("down"))  # a fault that is retried, for comparison
    store, supervisor = await open_supervisor(
        db_path, services, wanted=("alpha", "beta"), rng=lambda: 0.0
    )
    summary = await supervisor.restore()
    assert summary.failed == {"alpha": "set lastfm.api_key in /etc/aime.toml", "beta": "down"}
    view = supervisor.view("alpha")
    assert view.state is RunState.NEEDS_ATTENTION
    assert view.reason == "set lastfm.api_key in /etc/aime.toml"
    # rng 0: a retry is due at once. Beta's has run, so one for alpha would have run too.
    await wait_until(lambda: supervisor.view("beta").state is RunState.RUNNING, timeout=3.0)
    assert services[1].starts == 2
    assert services[0].starts == 1, "no automatic retry"
    await supervisor.retry_now("alpha")
    await wait_until(lambda: supervisor.view("alpha").state is RunState.RUNNING, timeout=3.0)
    await close(store, supervisor)


async def test_backoff_retries_until_the_service_comes_up(db_path):
    services = [ScriptedService("alpha")]
    services[0].failures += [OSError("network is unreachable")] * 2
    # rng 0.01: full jitter picks 1% of the cap, so the retries come quickly.
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.01)
    await supervisor.restore()
    await wait_until(lambda: supervisor.view("alpha").state is RunState.RUNNING, timeout=3.0)
    assert services[0].starts == 3
    assert supervisor.view("alpha").restarts == 2
    await close(store, supervisor)


async def test_retry_after_is_honoured(db_path):
    services = [ScriptedService("alpha")]
    services[0].failures.append(RetryAfter("rate limited", 42.0))
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",))
    await supervisor.restore()
    view = supervisor.view("alpha")
    assert view.state is RunState.BACKOFF
    assert 41.0 < view.retry_in <= 42.0
    await close(store, supervisor)


async def test_a_fault_while_running_backs_off_and_restarts(db_path):
    services = [ScriptedService("alpha")]
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.01)
    await supervisor.restore()
    services[0].break_now(ConnectionResetError("socket dropped"))
    await wait_until(lambda: supervisor.view("alpha").state is RunState.BACKOFF, timeout=3.0)
    assert supervisor.view("alpha").reason == "socket dropped"
    await wait_until(lambda: supervisor.view("alpha").state is RunState.RUNNING, timeout=3.0)
    assert services[0].starts == 2
    await close(store, supervisor)


async def test_stop_during_backoff_cancels_the_retry(db_path):
    # Beta fails the same way at the same time and is left alone, for comparison.
    services = [ScriptedService("alpha"), ScriptedService("beta")]
    for service in services:
        service.failures.append(OSError("down"))
    store, supervisor = await open_supervisor(
        db_path, services, wanted=("alpha", "beta"), rng=lambda: 0.02
    )
    await supervisor.restore()  # both retries are due 0.1 s from now
    await supervisor.stop("alpha")
    await wait_until(lambda: supervisor.view("beta").state is RunState.RUNNING, timeout=3.0)  # beta's retry has run
    assert supervisor.view("alpha").state is RunState.STOPPED
    assert services[0].starts == 1
    await close(store, supervisor)


async def test_wake_stops_and_restores_the_wanted_services(db_path):
    services = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha", "gamma"))
    await supervisor.restore()
    summary = await supervisor.wake()
    assert summary.trigger == "wake"
    assert sorted(summary.succeeded) == ["alpha", "gamma"]
    assert [s.starts for s in services] == [2, 0, 2]
    assert [s.stops >= 1 for s in services] == [True, False, True]
    await close(store, supervisor)


async def test_runtime_transitions_are_recorded(db_path):
    services = [ScriptedService("alpha")]
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",))
    await supervisor.restore()
    await close(store, supervisor)
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT from_state, to_state, reason FROM transitions ORDER BY id").fetchall()
    assert rows == [
        ("stopped", "starting", "launch"),
        ("starting", "running", "launch"),
        ("running", "stopping", "shutdown"),
        ("stopping", "stopped", "shutdown"),
    ]


def test_full_jitter_delay_is_bounded_by_the_capped_exponential():
    assert full_jitter_delay(0, lambda: 1.0) == 5.0
    assert full_jitter_delay(3, lambda: 1.0) == 40.0
    assert full_jitter_delay(20, lambda: 1.0) == 900.0
    assert full_jitter_delay(4, lambda: 0.0) == 0.0
    assert full_jitter_delay(4, lambda: 0.5) == 40.0


async def test_a_user_start_during_backoff_replaces_the_pending_retry(db_path):
    services = [ScriptedService("alpha")]
    services[0].failures += [OSError("down")] * 5
    # rng 0.06: retries wait 0.3 s, 0.6 s, 1.2 s… after each failure.
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.06)
    loop = asyncio.get_running_loop()
    await supervisor.restore()  # failure 1 at t=0: a retry is due at t=0.3
    await asyncio.sleep(0.1)
    assert services[0].starts == 1, "the first retry came before the start it is meant to race"
    asked = loop.time()
    await supervisor.start("alpha")  # failure 2 at t=0.1: its retry is due at t=0.4
    await wait_until(lambda: services[0].starts >= 3, timeout=3.0, what="a retry")
    # The stale t=0.3 retry would have come 0.2 s after the start, the right one 0.3 s after.
    assert loop.time() - asked >= 0.29, "the stale retry ran"
    assert (services[0].starts, supervisor.view("alpha").restarts) == (3, 1)
    await close(store, supervisor)


async def test_uptime_counts_from_the_last_start(db_path):
    now = [100.0]
    store = await Store.open(db_path)
    await store.ensure_defaults({"alpha": (True, None)})
    supervisor = Supervisor(store, [ScriptedService("alpha")], clock=lambda: now[0])
    await supervisor.load()
    assert supervisor.view("alpha").uptime is None
    await supervisor.restore()
    now[0] = 160.0
    assert supervisor.view("alpha").uptime == 60.0
    await supervisor.stop("alpha")
    await wait_until(lambda: supervisor.view("alpha").state is RunState.STOPPED, timeout=3.0)
    assert supervisor.view("alpha").uptime is None
    await close(store, supervisor)


class WaitingService(ScriptedService):
    """Comes up, then waits on the user while staying up (a Roon extension not yet approved)."""

    def __init__(self, name: str, ask: str | None) -> None:
        super().__init__(name)
        self.ask = ask  # what each start reports, if anything

    async def start(self) -> None:
        await super().start()
        if self.ask is not None:
            self.report_attention(self.ask)


ASK = "approve it over there"
REACHABLE = {"reachable": True, "checked_at": 0.0, "error": None}


def health(supervisor: Supervisor) -> dict:
    return assess(supervisor.views(), database=REACHABLE, uptime=1.0, errors={}, summary=None, now=0.0)


async def test_attention_reported_while_up_clears_by_itself(db_path):
    service = WaitingService("alpha", ASK)
    store, supervisor = await open_supervisor(db_path, [service], wanted=("alpha",))
    logged: list[str] = []
    supervisor.subscribe(lambda event: isinstance(event, LogEvent) and logged.append(event.text))
    summary = await supervisor.restore()
    assert summary.failed == {"alpha": ASK}
    view = supervisor.view("alpha")
    assert (view.state, view.reason, view.up, view.uptime) == (RunState.NEEDS_ATTENTION, ASK, True, None)
    assert service.running and service.stops == 0
    # Not healthy, not failing either; the dashboard says no retry is needed.
    assert health(supervisor)["status"] == DEGRADED
    assert health(supervisor)["problems"] == [f"alpha is up but needs attention: {ASK}"]
    assert detail_text(view) == f"alpha needs attention: {ASK}"

    # Saying it again is no news; the heartbeat leaves it alone, and so does a start.
    service.report_attention(ASK)
    reads = count_status_reads(service)
    heartbeat = asyncio.create_task(supervisor.run_heartbeat(delay=0, every=0.01))
    await supervisor.start("alpha")
    after_start = reads()
    await wait_until(lambda: reads() >= after_start + 3, timeout=3.0, what="three heartbeat passes after the start")
    heartbeat.cancel()
    assert (service.starts, service.stops) == (1, 0)
    assert [line for line in logged if "needs attention" in line] == [
        f"alpha needs attention: {ASK}"
    ]

    service.report_attention(None, "approved")
    view = supervisor.view("alpha")
    assert (view.state, view.reason, view.up) == (RunState.RUNNING, None, True)
    assert view.uptime is not None
    assert "alpha approved: running" in logged
    assert health(supervisor)["status"] == HEALTHY

    # Asked again while running: back to needs attention, still up, still no restart.
    service.report_attention("renew the permission")
    view = supervisor.view("alpha")
    assert (view.state, view.reason, view.up) == (RunState.NEEDS_ATTENTION, "renew the permission", True)
    service.report_attention(None)
    assert supervisor.view("alpha").state is RunState.RUNNING
    assert "alpha no longer needs attention: running" in logged
    assert (service.starts, service.stops) == (1, 0)
    await close(store, supervisor)
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT from_state, to_state, reason FROM transitions"
            " WHERE to_state NOT IN ('wanted', 'unwanted') ORDER BY id"
        ).fetchall()
    assert rows == [
        ("stopped", "starting", "launch"),
        ("starting", "needs attention", "error"),
        ("needs attention", "running", "resolved"),
        ("running", "needs attention", "error"),
        ("needs attention", "running", "resolved"),
        ("running", "stopping", "shutdown"),
        ("stopping", "stopped", "shutdown"),
    ]


async def test_attention_while_up_then_retry_fault_and_stop(db_path):
    service = WaitingService("alpha", ASK)
    store, supervisor = await open_supervisor(db_path, [service], wanted=("alpha",), rng=lambda: 0.01)
    try:
        await supervisor.restore()
        states: list[RunState] = []

        def note(event) -> None:
            if isinstance(event, StateEvent) and (not states or states[-1] is not event.view.state):
                states.append(event.view.state)

        supervisor.subscribe(note)

        async def seen(*expected: RunState) -> None:
            """Wait until the states since the last call are `expected` (none missed, however brief)."""

            await wait_until(lambda: len(states) >= len(expected), timeout=3, what=f"states {expected}")
            assert states == list(expected)
            states.clear()

        # r restarts it: it reconnects and asks again.
        await supervisor.retry_now("alpha")
        await seen(RunState.STOPPING, RunState.STOPPED, RunState.STARTING, RunState.NEEDS_ATTENTION)
        assert (service.starts, service.stops) == (2, 1)
        assert supervisor.view("alpha").up

        # Its work dying while it waits is a fault like any other: backoff, then a new start.
        service.ask = None  # meanwhile the user did what was asked
        service.break_now(ConnectionResetError("socket dropped"))
        await seen(RunState.STOPPING, RunState.BACKOFF, RunState.STARTING, RunState.RUNNING)
        assert service.starts == 3 and service.attention is None
        assert supervisor.view("alpha").restarts == 1

        service.report_attention(ASK)
        await supervisor.stop("alpha")
        await seen(RunState.NEEDS_ATTENTION, RunState.STOPPING, RunState.STOPPED)
        view = supervisor.view("alpha")
        assert (view.up, view.reason, service.running, service.attention) == (False, None, False, None)
        # Stopped, what it reports is nobody's concern.
        service.report_attention(None)
        assert supervisor.view("alpha").state is RunState.STOPPED
    finally:
        await close(store, supervisor)


async def test_a_failures_own_words_are_kept_beside_its_transition(db_path):
    services = [ScriptedService(n) for n in NAMES]
    services[1].failures.append(ConnectionRefusedError("connect to 127.0.0.1:9 refused"))
    services[2].failures.append(NeedsAttention("set lastfm.api_key in config.toml"))
    store, supervisor = await open_supervisor(db_path, services)
    await supervisor.restore()
    await close(store, supervisor)  # flushes the transition log
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT service, to_state, reason, detail FROM transitions"
            " WHERE to_state IN ('backoff', 'needs attention', 'running') ORDER BY id"
        ).fetchall()
    assert ("beta", "backoff", "backoff", "connect to 127.0.0.1:9 refused") in rows
    assert ("gamma", "needs attention", "error", "set lastfm.api_key in config.toml") in rows
    assert ("alpha", "running", "launch", "") in rows


async def test_a_wake_after_the_database_was_replaced_restores_into_a_fresh_one(db_path):
    services = [ScriptedService(n) for n in NAMES]
    store, supervisor = await open_supervisor(db_path, services)
    await supervisor.restore()
    said = []
    store.say = lambda text, level: said.append(text)
    moved = db_path.with_name("moved.db")
    db_path.rename(moved)
    db_path.mkdir()  # the file is gone where the next launch will look
    summary = await supervisor.wake()
    assert sorted(summary.succeeded) == sorted(NAMES)
    assert any("was replaced while in use: moved aside to" in text for text in said)
    await supervisor.stop("alpha")  # acknowledged in the file the next launch reads
    await close(store, supervisor)
    with sqlite3.connect(db_path) as db:
        rows = dict(db.execute("SELECT service_name, is_active FROM service_states").fetchall())
    assert rows == {name: int(name != "alpha") for name in NAMES}
