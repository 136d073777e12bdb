"""Supervisor against a real SQLite file, with scripted services for faults on cue."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from aime_tui.services.base import NeedsAttention, RetryAfter
from aime_tui.store import Store
from aime_tui.supervisor import RunState, Supervisor, full_jitter_delay
from scripted import ScriptedService

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


async def wait_for_state(supervisor, name, state, timeout=3.0):
    async def poll():
        while supervisor.view(name).state is not state:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


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
    await wait_for_state(supervisor, "beta", RunState.STOPPED)
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
    await wait_for_state(supervisor, "gamma", RunState.RUNNING)
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
    services = [ScriptedService("alpha")]
    services[0].failures.append(NeedsAttention("set lastfm.api_key in /etc/aime.toml"))
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.0)
    summary = await supervisor.restore()
    assert summary.failed == {"alpha": "set lastfm.api_key in /etc/aime.toml"}
    view = supervisor.view("alpha")
    assert view.state is RunState.NEEDS_ATTENTION
    assert view.reason == "set lastfm.api_key in /etc/aime.toml"
    await asyncio.sleep(0.1)
    assert services[0].starts == 1, "no automatic retry"
    await supervisor.retry_now("alpha")
    await wait_for_state(supervisor, "alpha", RunState.RUNNING)
    await close(store, supervisor)


async def test_backoff_retries_until_the_service_comes_up(db_path):
    services = [ScriptedService("alpha")]
    services[0].failures += [OSError("network is unreachable")] * 2
    # rng 0.01: full jitter picks 1% of the cap, so the retries come quickly.
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.01)
    await supervisor.restore()
    await wait_for_state(supervisor, "alpha", RunState.RUNNING)
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
    await wait_for_state(supervisor, "alpha", RunState.BACKOFF)
    assert supervisor.view("alpha").reason == "socket dropped"
    await wait_for_state(supervisor, "alpha", RunState.RUNNING)
    assert services[0].starts == 2
    await close(store, supervisor)


async def test_stop_during_backoff_cancels_the_retry(db_path):
    services = [ScriptedService("alpha")]
    services[0].failures.append(OSError("down"))
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.02)
    await supervisor.restore()
    await supervisor.stop("alpha")
    await asyncio.sleep(0.3)
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
    # rng 0.04: retries wait 0.2 s, 0.4 s, 0.8 s… after each failure.
    store, supervisor = await open_supervisor(db_path, services, wanted=("alpha",), rng=lambda: 0.04)
    await supervisor.restore()  # failure 1 at t=0: a retry is due at t=0.2
    await asyncio.sleep(0.1)
    await supervisor.start("alpha")  # failure 2 at t=0.1: its retry is due at t=0.3
    await asyncio.sleep(0.35)  # t=0.45: only the t=0.3 retry may have run
    assert services[0].starts == 3, "the stale t=0.2 retry did not run as well"
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
    await wait_for_state(supervisor, "alpha", RunState.STOPPED)
    assert supervisor.view("alpha").uptime is None
    await close(store, supervisor)
