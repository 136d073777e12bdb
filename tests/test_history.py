"""Availability arithmetic, replayed from a real transitions table with known timestamps."""

from __future__ import annotations

import subprocess

import pytest
from instances import EXECUTABLE
from waits import wait_until

from aime_tui.reports import history

HOUR = 3600.0
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_clock():
    return Clock()


@pytest.fixture
async def store(store, store_clock):
    """The shared store, every service wanted, on a clock the test moves."""
    await store.ensure_defaults({"tracker": (True, None), "roon_tracker": (True, None), "scheduler": (True, "MAINTENANCE")})
    store.clock = store_clock
    return store


async def at(store, when: float, service: str, before: str, after: str, reason: str) -> None:
    store.clock.now = when
    await store.record_transition(service, before, after, reason)


async def want(store, when: float, service: str, wanted: bool) -> None:
    store.clock.now = when
    await store.set_desired(service, wanted, "user")


async def run(store, when: float, service: str, reason: str = "launch") -> None:
    await at(store, when, service, "stopped", "starting", reason)
    await at(store, when, service, "starting", "running", reason)


async def halt(store, when: float, service: str, reason: str = "shutdown") -> None:
    await at(store, when, service, "running", "stopping", reason)
    await at(store, when, service, "stopping", "stopped", reason)


def load(store, name: str, *, alive: bool = True):
    (item,) = history.load(store.path, [name], now=NOW, alive=alive)
    return {window.label: window for window in item.windows}, item


async def test_an_outage_with_a_backoff_recovery(store):
    start = NOW - 10 * HOUR
    await run(store, start, "tracker")
    await at(store, NOW - 4 * HOUR, "tracker", "running", "stopping", "error")
    await at(store, NOW - 4 * HOUR, "tracker", "stopping", "backoff", "backoff")
    await at(store, NOW - 3 * HOUR, "tracker", "backoff", "starting", "backoff")
    await at(store, NOW - 3 * HOUR + 30, "tracker", "starting", "running", "backoff")

    windows, item = load(store, "tracker")
    day = windows["24 h"]
    # Tracked since its first row, 10 h ago: wanted all along, down 1 h 30 s of it.
    assert day.seconds == 10 * HOUR
    assert day.wanted == 10 * HOUR and day.unrecorded == 0
    assert day.running == 9 * HOUR - 30
    assert day.share == pytest.approx((9 * HOUR - 30) / (10 * HOUR))
    assert item.restarts == {"24 h": 1, "7 d": 1}
    assert [(row.from_state, row.to_state) for row in item.failures] == [("stopping", "backoff")]
    assert item.transitions[0].to_state == "starting" and item.transitions[-1].to_state == "running"


async def test_time_not_wanted_does_not_count_against_it(store):
    await run(store, NOW - 8 * HOUR, "roon_tracker")
    await want(store, NOW - 6 * HOUR, "roon_tracker", False)
    await halt(store, NOW - 6 * HOUR, "roon_tracker", "user")
    await want(store, NOW - 2 * HOUR, "roon_tracker", True)
    await at(store, NOW - 2 * HOUR, "roon_tracker", "stopped", "starting", "user")
    await at(store, NOW - 1 * HOUR, "roon_tracker", "starting", "running", "user")

    windows, _ = load(store, "roon_tracker")
    day = windows["24 h"]
    # Wanted 8 h − 4 h off = 4 h; running 2 h then 1 h.
    assert day.wanted == 4 * HOUR
    assert day.running == 3 * HOUR
    assert day.share == pytest.approx(0.75)


async def test_the_time_aime_tui_was_not_running_is_counted_apart_not_as_downtime(store):
    await run(store, NOW - 12 * HOUR, "scheduler")
    await halt(store, NOW - 9 * HOUR, "scheduler")  # aime-tui quit overnight
    await run(store, NOW - 1 * HOUR, "scheduler")
    windows, _ = load(store, "scheduler")
    day = windows["24 h"]
    assert day.wanted == 4 * HOUR and day.running == 4 * HOUR and day.share == 1.0
    assert day.not_running == 8 * HOUR and day.unrecorded == 0
    assert history.window_line(day, 0) == (
        "last 24 h: available 100.0 % (running 4 h of 4 h wanted), aime-tui not running 8 h, 0 restarts"
    )


async def test_time_not_set_up_is_counted_apart_not_as_downtime(store):
    # Launched without an API key: not set up for 6 h, then set up (r), then a 1 h outage.
    await at(store, NOW - 10 * HOUR, "tracker", "stopped", "starting", "launch")
    await at(store, NOW - 10 * HOUR, "tracker", "starting", "not set up", "error")
    await at(store, NOW - 4 * HOUR, "tracker", "not set up", "starting", "user")
    await at(store, NOW - 4 * HOUR, "tracker", "starting", "running", "user")
    await at(store, NOW - 2 * HOUR, "tracker", "running", "backoff", "error")
    await at(store, NOW - HOUR, "tracker", "backoff", "starting", "backoff")
    await at(store, NOW - HOUR, "tracker", "starting", "running", "backoff")

    windows, item = load(store, "tracker")
    day = windows["24 h"]
    assert day.seconds == 10 * HOUR
    assert (day.not_set_up, day.wanted, day.running) == (6 * HOUR, 4 * HOUR, 3 * HOUR)
    assert day.share == 0.75, "its downtime is the outage, not the hours it waited for a key"
    assert history.window_line(day, item.restarts["24 h"]) == (
        "last 24 h: available 75.0 % (running 3 h of 4 h wanted), not set up 6 h, 1 restart"
    )
    assert [row.to_state for row in item.failures] == ["backoff"], "not set up is no failure"

    # Never set up at all: nothing to rate, and said so rather than "not wanted"; the
    # start that found the setting missing is part of that time, not downtime.
    await at(store, NOW - 5 * HOUR, "roon_tracker", "stopped", "starting", "launch")
    await at(store, NOW - 5 * HOUR + 0.2, "roon_tracker", "starting", "not set up", "error")
    await at(store, NOW - 3 * HOUR, "roon_tracker", "not set up", "stopping", "shutdown")  # a quit
    await at(store, NOW - 3 * HOUR + 0.2, "roon_tracker", "stopping", "stopped", "shutdown")
    await at(store, NOW - 2 * HOUR, "roon_tracker", "stopped", "starting", "launch")
    await at(store, NOW - 2 * HOUR + 0.2, "roon_tracker", "starting", "not set up", "error")
    windows, item = load(store, "roon_tracker")
    day = windows["24 h"]
    assert (day.wanted, day.share) == (0, None), "its starts and its stop for the quit are not downtime"
    assert day.not_set_up == pytest.approx(4 * HOUR + 0.2) and day.not_running == pytest.approx(HOUR - 0.2)
    assert history.window_line(day, 0) == "last 24 h: available –, not set up 4 h, aime-tui not running 1 h, 0 restarts"


def test_rounded_durations_never_contradict_the_percentage():
    window = history.Availability("24 h", 12.0, wanted=12.0, running=11.68, unrecorded=0.0)
    assert history.window_line(window, 1) == (
        "last 24 h: available 97.3 % (running all but 0.3 s of 12 s wanted), 1 restart"
    )
    nearly = history.Availability("7 d", 7 * 86400.0, wanted=7 * 86400.0, running=7 * 86400.0 - 30, unrecorded=0.0)
    assert history.percent(nearly) == "99.9 %", "never 100.0 % while it was down"


async def test_an_unrecorded_death_is_not_guessed(store):
    await run(store, NOW - 10 * HOUR, "tracker")
    # kill -9 at some unknown moment: the next launch starts from "stopped" while the
    # last row said "running".
    await run(store, NOW - 2 * HOUR, "tracker")
    windows, _ = load(store, "tracker")
    day = windows["24 h"]
    assert day.unrecorded == 8 * HOUR
    assert day.wanted == 2 * HOUR and day.running == 2 * HOUR
    assert day.share == 1.0


async def test_running_with_no_instance_alive_is_unrecorded_since_the_last_row(store):
    await run(store, NOW - 5 * HOUR, "tracker")
    windows, _ = load(store, "tracker", alive=False)
    assert windows["24 h"].unrecorded == 5 * HOUR
    assert windows["24 h"].share is None
    windows, _ = load(store, "tracker", alive=True)
    assert windows["24 h"].running == 5 * HOUR and windows["24 h"].share == 1.0


async def test_the_week_window_sees_what_the_day_window_does_not(store):
    await run(store, NOW - 10 * 24 * HOUR, "tracker")  # before the 7-day window
    await at(store, NOW - 3 * 24 * HOUR, "tracker", "running", "stopping", "error")
    await at(store, NOW - 3 * 24 * HOUR, "tracker", "stopping", "needs attention", "error")
    await at(store, NOW - 3 * 24 * HOUR + 6 * HOUR, "tracker", "needs attention", "starting", "retry")
    await at(store, NOW - 3 * 24 * HOUR + 6 * HOUR, "tracker", "starting", "running", "retry")

    windows, item = load(store, "tracker")
    assert windows["24 h"].share == 1.0 and windows["24 h"].wanted == 24 * HOUR
    week = windows["7 d"]
    # The state at the window's start comes from the row before it.
    assert week.wanted == 7 * 24 * HOUR
    assert week.running == 7 * 24 * HOUR - 6 * HOUR
    assert item.restarts == {"24 h": 0, "7 d": 0}  # a user's retry is not an automatic restart
    assert [row.to_state for row in item.failures] == ["needs attention"]


async def test_a_failure_shows_what_went_wrong(store):
    await run(store, NOW - 2 * HOUR, "tracker")
    store.clock.now = NOW - HOUR
    await store.record_transition("tracker", "running", "backoff", "backoff", "no answer from Last.fm within 10 s")
    [tracker] = history.load(store.path, ["tracker"], now=NOW, alive=True)
    [failure] = tracker.failures
    assert history.transition_line(failure).endswith("running → backoff  (backoff): no answer from Last.fm within 10 s")


def test_a_database_from_before_details_reads_the_same(tmp_path):
    import sqlite3

    from aime_tui.store.database import MIGRATIONS

    path = tmp_path / "aime.db"
    with sqlite3.connect(path) as db:  # an instance of the first release still runs on it
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO transitions (service, from_state, to_state, reason, at) VALUES ('tracker', 'running', 'backoff', 'backoff', ?)", (NOW - 60,))
    [tracker] = history.load(path, ["tracker"], now=NOW, alive=True)
    assert history.transition_line(tracker.failures[0]).endswith("running → backoff  (backoff)")


async def test_a_service_with_no_rows_has_nothing_recorded(store):
    windows, item = load(store, "roon_tracker")
    assert windows["24 h"].seconds == 0 and windows["24 h"].share is None
    assert history.report_lines(item)[1:] == [
        "  last 24 h: nothing recorded", "  last 7 d: nothing recorded", "  no transitions recorded",
    ]


@pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")
async def test_the_history_command_prints_the_same(store, tmp_path):
    import time

    now = time.time()
    await run(store, now - 4 * HOUR, "tracker")
    await at(store, now - 2 * HOUR, "tracker", "running", "stopping", "error")
    await at(store, now - 2 * HOUR, "tracker", "stopping", "backoff", "backoff")
    await at(store, now - 1 * HOUR, "tracker", "backoff", "starting", "backoff")
    await at(store, now - 1 * HOUR, "tracker", "starting", "running", "backoff")
    result = subprocess.run(
        [str(EXECUTABLE), "history", "tracker", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=20, env={"AIME_CONFIG": str(tmp_path / "none.toml"), "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "tracker"
    # No instance runs and the last row says running: the last hour is unrecorded.
    assert lines[1] == "  last 24 h: available 66.7 % (running 2 h of 3 h wanted), 1 h unrecorded, 1 restart"
    assert "  recent failures:" in lines
    assert any(line.endswith("running → stopping  (error)") for line in lines)


@pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")
def test_the_history_command_refuses_an_unknown_service(tmp_path):
    result = subprocess.run(
        [str(EXECUTABLE), "history", "trakcer", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=20, env={"AIME_CONFIG": str(tmp_path / "none.toml")},
    )
    assert result.returncode == 2
    assert result.stderr == "aime-tui: unknown service 'trakcer' (known: tracker, roon_tracker, scheduler)\n"


async def test_h_opens_the_history_screen_and_escape_closes_it(config):
    from scripted import scripted_engine

    from aime_tui.ui.app import AimeApp
    from aime_tui.ui.screens.history import HistoryScreen

    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(110, 40)) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await pilot.press("x")  # the user stops the tracker
        await wait_until(lambda: app.supervisor.view("tracker").state.value == "stopped")

        async def stop_written() -> bool:  # runtime rows are written just after the change
            rows = await engine.store.transitions("tracker")
            return any((row.from_state, row.to_state, row.reason) == ("stopping", "stopped", "user") for row in rows)

        await wait_until(stop_written, what="the stop's row written")
        await pilot.press("h")
        assert isinstance(app.screen, HistoryScreen)

        def shown(name: str) -> str:
            return str(app.screen.query_one(f"#history-{name}").render())

        await wait_until(lambda: "stopping → stopped  (user)" in shown("tracker"))
        tracker = shown("tracker")
        assert "last 24 h  available " in tracker
        assert "wanted → unwanted  (user)" in tracker
        assert "starting → running  (launch)" in shown("scheduler")
        await pilot.press("escape")
        assert not isinstance(app.screen, HistoryScreen)


async def test_service_keys_do_nothing_over_the_history_screen(config):
    from scripted import scripted_engine

    from aime_tui.ui.app import AimeApp
    from aime_tui.ui.screens.history import HistoryScreen

    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(110, 40)) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await pilot.press("h")
        await wait_until(lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("x", "space")
        await pilot.pause(0.1)
        assert app.supervisor.view("tracker").wanted and services["tracker"].running
        await pilot.press("escape")
        # Popping a screen finishes after the key is handled: x goes to the table once it is back.
        await wait_until(lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.press("x")
        await wait_until(lambda: not app.supervisor.view("tracker").wanted)
