"""Wake detection with an injected clock, and a wake recovered end to end by the engine."""

from __future__ import annotations

import asyncio

from scripted import scripted_engine
from waits import wait_until

from aime_tui.core.wake import WakeDetector, suspend_gap


class FakeGapClock:
    """The boot-minus-monotonic gap, moved by hand: a suspend adds the time slept."""

    def __init__(self) -> None:
        self.gap = 1000.0
        self.readings = 0  # one per check the detector makes

    def __call__(self) -> float:
        self.readings += 1
        return self.gap


async def never(slept):
    raise AssertionError("no wake expected")


def test_small_drift_is_not_a_wake():
    clock = FakeGapClock()
    detector = WakeDetector(never, gap=clock)
    for _ in range(10):
        clock.gap += 0.3  # NTP slew, scheduling jitter
        assert detector.check() is None


def test_a_jump_in_the_gap_is_a_wake_of_that_length():
    clock = FakeGapClock()
    detector = WakeDetector(never, gap=clock)
    clock.gap += 6 * 3600 + 12 * 60
    assert detector.check() == 6 * 3600 + 12 * 60
    assert detector.check() is None, "reported once"


def test_the_real_gap_is_stable_while_awake():
    first = suspend_gap()
    assert abs(suspend_gap() - first) < 0.5


async def test_the_detector_loop_triggers_recovery(config):
    clock = FakeGapClock()
    woken = []

    async def on_wake(slept):
        woken.append(slept)

    async def checks(count: int) -> None:
        """Wait until the detector has made `count` more checks."""
        target = clock.readings + count
        await wait_until(lambda: clock.readings >= target, timeout=3, what=f"{count} more checks")

    detector = WakeDetector(on_wake, gap=clock)
    runner = asyncio.create_task(detector.run(every=0.01))
    await checks(3)
    assert woken == [], "no wake while the gap holds still"
    clock.gap += 30
    await checks(3)  # the first of them sees the jump and recovers before the next
    runner.cancel()
    assert woken == [30], "reported once"


async def test_a_detected_wake_restores_the_wanted_services(config):
    engine, services = scripted_engine(config)
    supervisor = await engine.open()
    await supervisor.restore()
    summary = await supervisor.wake(slept=3600.0)
    assert summary.trigger == "wake"
    assert sorted(summary.succeeded) == ["roon_tracker", "scheduler", "tracker"]
    assert all(s.starts == 2 for s in services.values())
    await engine.close()
