"""The dashboard under Pilot: keys change the table, the log and the database."""

from __future__ import annotations

import dataclasses
import gc
import sqlite3

from dashboard import cell
from scripted import scripted_engine
from waits import wait_until

from aime_tui.core.model import LogEvent, RunState
from aime_tui.engine import Engine
from aime_tui.ui.app import AimeApp
from aime_tui.ui.widgets.log_view import MAX_LINES as LOG_MAX_LINES

SIZE = (110, 32)


def desired(config, name):
    with sqlite3.connect(config.db_path) as db:
        return db.execute(
            "SELECT is_active, mode FROM service_states WHERE service_name = ?", (name,)
        ).fetchone()


async def test_launch_restores_and_shows_the_summary(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await wait_until(lambda: all(cell(app, name, "state") == "● running" for name in services), what="every row running")
        assert app.last_summary.line().startswith("Restored 3 succeeded, 0 failed")
        for name in services:
            assert cell(app, name, "want") == "on"
        assert "Restored 3 succeeded, 0 failed" in str(app.query_one("#summary").render())
    assert not any(s.running for s in services.values()), "quitting stops the services"


async def test_the_collector_paused_for_launch_is_back_on_and_startup_objects_frozen(config, cleanup):
    """The launcher pauses the garbage collector for the imports and the launch; the app
    must turn it back on once the summary is shown, with what startup built frozen."""
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    gc.disable()
    cleanup.callback(gc.unfreeze)
    cleanup.callback(gc.enable)
    async with app.run_test(size=SIZE):
        await wait_until(lambda: app.last_summary is not None)
        await wait_until(lambda: gc.get_freeze_count() > 0)
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0, "quitting unfreezes"


async def test_keys_start_stop_and_toggle_and_the_database_agrees(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await pilot.press("x")  # first row: tracker
        assert desired(config, "tracker") == (0, None)
        await wait_until(lambda: cell(app, "tracker", "state") == "○ stopped")
        assert cell(app, "tracker", "want") == "off"
        assert not services["tracker"].running

        await pilot.press("space")
        assert desired(config, "tracker") == (1, None)
        await wait_until(lambda: cell(app, "tracker", "state") == "● running")

        await pilot.press("down", "enter")  # enter toggles too: roon_tracker off
        assert desired(config, "roon_tracker") == (0, None)
        await wait_until(lambda: cell(app, "roon_tracker", "want") == "off")

        await pilot.press("s")
        assert desired(config, "roon_tracker") == (1, None)
        await wait_until(lambda: cell(app, "roon_tracker", "state") == "● running")


async def test_all_off_all_on_and_mode(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await pilot.press("X", "y")  # X asks first (see test_dashboard_edges.py)
        await wait_until(lambda: all(desired(config, name)[0] == 0 for name in services))
        await wait_until(lambda: all(cell(app, n, "state") == "○ stopped" for n in services))
        await pilot.press("A")
        for name in services:
            assert desired(config, name)[0] == 1
        await wait_until(lambda: all(cell(app, n, "state") == "● running" for n in services))

        await pilot.press("m")
        assert desired(config, "scheduler") == (1, "MASSIVE")
        await wait_until(lambda: cell(app, "scheduler", "mode") == "MASSIVE")
        assert services["scheduler"].mode == "MASSIVE"
        await pilot.press("m")
        assert desired(config, "scheduler") == (1, "MAINTENANCE")


async def test_wake_key_restores_through_the_same_path_with_its_own_summary(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        first = app.last_summary
        await pilot.press("w")
        await wait_until(lambda: app.last_summary is not first)
        assert app.last_summary.trigger == "wake"
        assert app.last_summary.line().startswith("Restored 3 succeeded, 0 failed")
        assert all(s.starts == 2 for s in services.values())
        await wait_until(lambda: any("wake requested — recovering" in line.text for line in app.log_view.lines))


async def test_the_ui_answers_keys_while_a_hung_service_is_restoring(config):
    config = config.with_overrides(restore_timeout=2.0)
    engine, services = scripted_engine(config, roon_tracker={"hang": True})
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: cell(app, "tracker", "state") == "● running")
        assert app.last_summary is None, "restoration still running"
        await pilot.press("x")
        assert desired(config, "tracker") == (0, None)
        await wait_until(lambda: cell(app, "tracker", "state") == "○ stopped", timeout=1.0)
        assert app.last_summary is None, "the key acted before restoration ended"
        await wait_until(lambda: app.last_summary is not None)
        assert app.last_summary.failed == {"roon_tracker": "start timed out after 2.0 s"}
        await wait_until(lambda: cell(app, "roon_tracker", "state").startswith("◌ backoff"))


async def test_the_log_is_bounded_and_does_not_yank_a_reader(config):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        emit = app.supervisor._emit
        for i in range(LOG_MAX_LINES + 500):
            emit(LogEvent(f"line {i}", at=0.0))
        log = app.log_view
        await wait_until(lambda: log.lines[-1].text.endswith(f"line {LOG_MAX_LINES + 499}"), what="the last line shown")
        assert len(log.lines) == LOG_MAX_LINES
        assert log.lines[-1].text.endswith(f"line {LOG_MAX_LINES + 499}")

        log.focus()
        await pilot.press("home")  # the reader goes back to the top to read
        await wait_until(lambda: log.scroll_y == 0, what="the reader at the top")
        for i in range(50):
            emit(LogEvent(f"more {i}", at=0.0))
        await wait_until(lambda: log.lines[-1].text.endswith("more 49"), what="the new lines shown")
        await pilot.pause()  # and drawn, with whatever scrolling they would cause
        assert log.scroll_y == 0, "a reader scrolled up keeps their place"


async def test_command_palette_lists_the_actions(config):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE):
        await wait_until(lambda: app.last_summary is not None)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Start tracker", "Stop roon_tracker", "Start all services",
                         "Stop all services", "Cycle scheduler mode", "Simulate wake"):
            assert expected in titles
        stop_tracker = next(c for c in app.get_system_commands(app.screen) if c.title == "Stop tracker")
        await stop_tracker.callback()
        assert desired(config, "tracker") == (0, None)
        await wait_until(lambda: app.supervisor.view("tracker").state is RunState.STOPPED)


async def test_a_toggle_that_cannot_be_saved_is_not_shown_as_done(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await engine.store.db.execute("PRAGMA query_only = 1")  # every write now fails
        await pilot.press("x")
        await wait_until(lambda: any("cannot write to database" in line.text for line in app.log_view.lines))
        assert cell(app, "tracker", "want") == "on"
        assert cell(app, "tracker", "state") == "● running"
        assert services["tracker"].running
        await engine.store.db.execute("PRAGMA query_only = 0")
    assert desired(config, "tracker") == (1, None)


async def test_first_run_without_a_config_says_what_to_do(config):
    app = AimeApp(Engine(config))  # the real services, nothing configured
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.last_summary is not None)
        await pilot.pause(0.2)
        # Not set up is not failed: counted apart, with the key to set.
        assert app.last_summary.failed == {}
        assert app.last_summary.not_set_up == {
            "tracker": f"set lastfm.api_key in {config.config_path}",
            "roon_tracker": f"set roon.host in {config.config_path}",
        }
        assert app.last_summary.line().startswith("Restored 1 succeeded, 0 failed, 2 not set up in ")
        assert cell(app, "tracker", "state") == "◇ not set up"
        assert cell(app, "scheduler", "state") == "● running"
        assert str(app.query_one("#detail").render()) == (
            f"tracker not set up: set lastfm.api_key in {config.config_path}, then r (or try aime-tui --demo)"
        )
        await pilot.press("down", "down")  # the scheduler says which duty is off, and why
        await wait_until(lambda: "catch-up off" in str(app.query_one("#detail").render()))
        assert f"catch-up off: Last.fm not set up (set lastfm.api_key in {config.config_path})" in str(
            app.query_one("#detail").render()
        )
        text = "\n".join(line.text for line in app.log_view.lines)
        assert "aime-tui init" in text and "aime-tui --demo" in text


def test_scheduler_detail_shows_backfill_progress():
    from aime_tui.core.model import ServiceView
    from aime_tui.ui.cells import detail_text

    view = ServiceView(
        name="scheduler", state=RunState.RUNNING, wanted=True, mode="MASSIVE", reason=None,
        retry_in=None, restarts=0,
        status={"pages_done": 120, "total_pages": 250, "backfill_plays": 24000,
                "backfill_total": 50000, "eta": 240.0, "running": True},
    )
    assert detail_text(view) == (
        "scheduler running · backfill 120/250 pages, 24,000 of 50,000 plays, ETA 4 min"
    )
    stopped = dataclasses.replace(view, state=RunState.STOPPED, wanted=False)
    assert detail_text(stopped) == "scheduler stopped · backfill paused at 120/250 pages, 24,000 of 50,000 plays"


def test_durations_read_as_people_say_them():
    from aime_tui.format import duration

    cases = {
        0.25: "0.2 s", 0.5: "0.5 s", 8: "8 s", 59.4: "59 s", 59.6: "1 min", 90: "1 min 30 s",
        185: "3 min 05 s", 900: "15 min", 3600: "1 h", 5400: "1 h 30 min", 22320: "6 h 12 min",
    }
    assert {seconds: duration(seconds) for seconds in cases} == cases
