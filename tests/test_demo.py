"""The demo engine: real services against the loopback fakes, faults and recovery."""

from __future__ import annotations

import asyncio

from waits import wait_until

from aime_tui.core.model import RunState, StateEvent
from aime_tui.engine import Engine


async def test_demo_first_start_fails_with_a_reason_then_recovers_by_itself(config, cleanup):
    # Jitter pinned low: the first retry comes 0.5 s after the failure (its bound, 5 s, is
    # test_supervisor's).
    engine = Engine(config.with_overrides(demo=True, demo_faults=True), rng=lambda: 0.1)
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    summary = await supervisor.restore()
    assert sorted(summary.succeeded) == ["scheduler", "tracker"]
    assert list(summary.failed) == ["roon_tracker"]
    assert "no answer" in summary.failed["roon_tracker"] or "timed out" in summary.failed["roon_tracker"]
    assert supervisor.view("roon_tracker").state is RunState.BACKOFF
    await wait_until(lambda: supervisor.view("roon_tracker").state is RunState.RUNNING, timeout=8)
    assert supervisor.view("roon_tracker").restarts == 1
    tracker = supervisor.view("tracker").status
    assert tracker["tracks_found"] == 200, "the first poll stores the newest page"
    assert await engine.store.count_plays("lastfm") == 200


async def test_slow_wake_keeps_roon_out_then_it_comes_back(config, cleanup):
    # Jitter pinned to the middle: the first retry comes 2.5 s after the failure, after
    # the 1.5 s outage, so "comes back by itself" does not depend on luck.
    engine = Engine(config.with_overrides(demo=True, demo_faults=False, restore_timeout=1.0), rng=lambda: 0.5)
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    first = await supervisor.restore()
    assert first.failed == {}
    ready_at = {}
    loop = asyncio.get_running_loop()
    supervisor.subscribe(
        lambda event: isinstance(event, StateEvent) and event.view.state is RunState.RUNNING
        and ready_at.setdefault(event.view.name, loop.time())
    )
    began = loop.time()
    summary = await engine.simulate_slow_wake(unreachable=1.5)
    assert summary.trigger == "wake"
    assert sorted(summary.succeeded) == ["scheduler", "tracker"]
    # The Core never answers: Roon reports its own timeout, within the restore budget.
    assert "handshake timed out" in summary.failed["roon_tracker"], summary.failed
    assert 0.8 < summary.elapsed < 1.5
    assert max(ready_at["tracker"], ready_at["scheduler"]) - began < 0.5, "the others waited for Roon"
    assert supervisor.view("roon_tracker").state is RunState.BACKOFF
    await wait_until(lambda: supervisor.view("roon_tracker").state is RunState.RUNNING, timeout=8)


async def test_heartbeat_restarts_a_wanted_service_found_not_running(config, cleanup):
    engine = Engine(config.with_overrides(demo=True, demo_faults=False))
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    await supervisor.restore()
    # The scheduler dies without telling anyone: the supervisor still thinks it runs.
    await supervisor.service("scheduler").stop()
    assert supervisor.view("scheduler").state is RunState.RUNNING
    heartbeat = asyncio.create_task(supervisor.run_heartbeat(delay=0.05, every=0.05))
    await wait_until(lambda: supervisor.view("scheduler").status["running"], timeout=8)
    assert supervisor.view("scheduler").state is RunState.RUNNING
    assert supervisor.view("scheduler").restarts == 1
    heartbeat.cancel()
