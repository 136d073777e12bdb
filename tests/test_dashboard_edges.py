"""The dashboard as a first-time user meets it: help, the key bar, the log's wrapping,
the table at common terminal sizes, and the question before stopping everything."""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from rich.text import Text
from instances import headless_demo
from scripted import scripted_engine
from waits import wait_until

from aime_tui.core.faults import NeedsAttention
from aime_tui.ui.app import AimeApp, AttachedApp
from aime_tui.ui.screens.confirm import ConfirmScreen
from aime_tui.ui.screens.help import HelpScreen
from aime_tui.ui.screens.history import HistoryScreen
from aime_tui.ui.widgets.key_bar import KeyBar
from aime_tui.ui.widgets.services_table import fit_columns

SIZES = [(120, 35), (80, 24), (60, 20)]
EXECUTABLE = Path(sys.executable).parent / "aime-tui"


def wanted(config) -> dict[str, int]:
    with sqlite3.connect(config.db_path) as db:
        return dict(db.execute("SELECT service_name, is_active FROM service_states"))


async def restored(app) -> None:
    await wait_until(lambda: app.last_summary is not None, what="the restoration summary")


def help_text(app) -> str:
    assert isinstance(app.screen, HelpScreen)
    return "\n".join(f"{key} {text}" for _, keys in app.screen.groups for key, text in keys)


def bar_text(screen) -> str:
    return "  ".join(f"{key} {text}" for key, text in screen.query_one(KeyBar).shown())


def visible_log_text(app) -> list[str]:
    log = app.log_view
    return [log.render_line(y).text for y in range(log.scrollable_content_region.height)]


def chars(text: str) -> str:
    return "".join(text.split())


# -- help (?) ------------------------------------------------------------------------------


async def test_help_lists_this_apps_keys_for_the_focused_part_and_closes_with_either_key(config):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await restored(app)
        await pilot.press("question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        text = help_text(app)
        assert "select a service" in text  # the table's keys, in this app's words
        assert "stop every service (asks first)" in text
        assert "quit: services stop" in text
        for internal in ("Cursor left", "Page Left", "Select", "Focus Next", "Copy selected text"):
            assert internal not in text, f"{internal!r} is Textual's, not this app's"
        assert "slow wake" not in text, "the demo's slow wake is not offered outside the demo"
        await pilot.press("question_mark")
        await wait_until(lambda: not isinstance(app.screen, HelpScreen), what="? to close the help")

        # The palette's Keys is this help, and its Quit says what quitting does here.
        commands = list(app.get_system_commands(app.screen))
        titles = [command.title for command in commands]
        assert titles.count("Keys") == 1 and titles.count("Quit") == 1, titles
        (keys,) = [command for command in commands if command.title == "Keys"]
        keys.callback()
        await wait_until(lambda: isinstance(app.screen, HelpScreen), what="the palette's Keys to open the help")
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, HelpScreen), what="esc to close the help")
        (quit_command,) = [command for command in commands if command.title == "Quit"]
        assert "Stop the services" in quit_command.help

        await pilot.press("tab")  # the log has its own keys
        await pilot.press("question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        text = help_text(app)
        assert "scroll a page" in text and "select a service" not in text
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, HelpScreen), what="esc to close the help")

        await pilot.press("h", "question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), what="the help over the history")
        text = help_text(app)
        assert "back to the dashboard" in text
        assert "stop the selected service" not in text, "service keys do nothing over the history"
        await pilot.press("escape")
        await wait_until(lambda: isinstance(app.screen, HistoryScreen), what="back on the history screen")


async def test_service_keys_do_nothing_behind_the_help(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await restored(app)
        await pilot.press("question_mark", "x", "space")
        assert isinstance(app.screen, HelpScreen)
        assert wanted(config)["tracker"] == 1 and services["tracker"].running


# -- the key bar ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_the_key_bar_keeps_help_and_quit_at_every_size(config, size):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=size) as pilot:
        await restored(app)
        await pilot.pause()
        bar = app.screen.query_one(KeyBar)
        text = bar_text(app.screen)
        assert "? help" in text and "q quit" in text
        assert len(text) <= bar.content_region.width
        assert text.startswith("space toggle"), "the most used key comes first"


# -- the log wraps without losing a character ------------------------------------------------


LONG_LINES = [
    "roon_tracker: Roon Core at 127.0.0.1:43351: no answer for registry info (handshake timed out after 2.75 s), retry in 3 s",
    "Restored 2 succeeded, 1 failed in 2.78 s — roon_tracker: Roon Core at 127.0.0.1:44739: no answer for registry info",
    "a-single-word-longer-than-any-pane-is-wide-so-it-must-be-folded-and-not-cut-anywhere-along-the-way-0123456789",
]


@pytest.mark.parametrize("size", [(120, 60), (80, 60), (60, 60), (42, 60)])
async def test_every_character_of_each_log_line_is_on_screen_in_order(config, size):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=size) as pilot:
        await restored(app)
        await pilot.pause()
        app.log_view.write_lines([Text(line) for line in LONG_LINES], scroll_end=True)
        await pilot.pause()
        shown = chars("".join(visible_log_text(app)))
        for line in LONG_LINES:
            assert chars(line) in shown, f"{line!r} lost characters at {size}"


async def test_the_log_wraps_again_when_its_width_changes(config):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(120, 60)) as pilot:
        await restored(app)
        app.log_view.write_lines([Text(line) for line in LONG_LINES], scroll_end=True)
        await pilot.pause()
        for width in (70, 52, 120):
            await pilot.resize_terminal(width, 60)
            await wait_until(
                lambda: app.log_view.scrollable_content_region.width == width - 5, what=f"the log at {width}"
            )
            await pilot.pause()
            lines = visible_log_text(app)
            assert all(len(line.rstrip()) <= width - 5 for line in lines)
            shown = chars("".join(lines))
            for line in LONG_LINES:
                assert chars(line) in shown, f"{line!r} lost characters after a resize to {width}"


async def test_a_reader_at_the_tail_stays_there_when_the_terminal_shrinks(config):
    engine, _ = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(120, 35)) as pilot:
        await restored(app)
        app.log_view.write_lines([Text(f"line {n} of a long log") for n in range(200)], scroll_end=True)
        await wait_until(lambda: app.log_view.is_vertical_scroll_end, what="the log at its tail")
        await pilot.resize_terminal(60, 20)  # narrower and shorter at once: every line wrapped again
        await wait_until(lambda: app.log_view.scrollable_content_region.width == 55, what="the log at 60 columns")
        await pilot.pause()
        assert "line 199 of a long log" in "".join(visible_log_text(app))


# -- the table at common sizes ------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_the_table_fits_whole_at_common_sizes(config, size):
    engine, _ = scripted_engine(
        config, roon_tracker={"failures": (NeedsAttention("approve aime-tui in Roon → Settings → Extensions"),)}
    )
    app = AimeApp(engine)
    async with app.run_test(size=size) as pilot:
        await restored(app)
        await pilot.pause()
        table = app.table
        assert table.max_scroll_x == 0, "no column hides behind a horizontal scrollbar"
        keys = table.layout_keys
        assert keys[:2] == ("service", "state")
        for key in keys:  # every heading and cell shown whole
            column = table.columns[key]
            assert column.content_width >= len(str(column.label))
            for row in table.rows:
                assert len(Text.from_markup(str(table.get_cell(row, key))).plain) <= column.width
        if size[0] >= 80:
            assert "restarts" in keys and "last_check" in keys
        if size[0] == 60:  # the short forms first, before any column goes
            assert "✖ attention" in str(table.get_cell("roon_tracker", "state"))
            assert str(table.columns["last_check"].label) == "Checked"


def test_columns_are_dropped_least_needed_first():
    columns = [("service", "Service"), ("state", "State"), ("want", "Want"), ("mode", "Mode"),
               ("last_check", "Last check"), ("plays", "Plays"), ("restarts", "↺")]
    row = {"service": "roon_tracker", "state": "● running", "want": "on", "mode": "MAINTENANCE",
           "last_check": "08:29:34", "plays": "61,204", "restarts": "0"}
    full = fit_columns(columns, [row], 200)
    assert full.keys == tuple(key for key, _ in columns) and not full.short
    assert [width for _, _, width in full.columns] == [12, 9, 4, 11, 10, 6, 1]
    assert fit_columns(columns, [row], sum(w + 2 for _, _, w in full.columns)).short is False
    narrow = fit_columns(columns, [row], 58)
    assert narrow.short and "restarts" not in narrow.keys and "mode" in narrow.keys
    assert ("last_check", "Checked", 8) in narrow.columns
    assert fit_columns(columns, [row], 30).keys == ("service", "state")


# -- X asks first ----------------------------------------------------------------------------------


async def test_stopping_everything_asks_once_and_no_leaves_everything_running(config):
    engine, services = scripted_engine(config)
    app = AimeApp(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await restored(app)
        await pilot.press("X")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.question == "stop all 3 services?"
        assert "stop all 3 services? y/n" in str(app.screen.query_one("#question").render())
        await pilot.press("s", "x", "n")  # other keys are not answers
        await wait_until(lambda: not isinstance(app.screen, ConfirmScreen), what="n to answer")
        assert wanted(config) == {"tracker": 1, "roon_tracker": 1, "scheduler": 1}
        assert all(service.running for service in services.values())

        await pilot.press("x")  # tracker off; then only two are wanted
        await wait_until(lambda: wanted(config)["tracker"] == 0, what="tracker saved off")
        await pilot.press("X")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.question == "stop 2 services?"
        await pilot.press("y")
        await wait_until(lambda: set(wanted(config).values()) == {0}, what="everything saved off")
        await wait_until(lambda: not any(service.running for service in services.values()), what="all stopped")

        await pilot.press("X")  # nothing left to stop: said, not asked
        await wait_until(
            lambda: any("nothing to stop" in entry.plain for entry in app.log_view.entries), what="the log line"
        )
        assert not isinstance(app.screen, ConfirmScreen)


# -- the summary says what has recovered since ------------------------------------------------------


async def test_the_summary_says_when_a_failure_has_since_recovered(config):
    engine, services = scripted_engine(
        config, roon_tracker={"failures": (ConnectionError("connection refused by 127.0.0.1:9330"),)},
        engine={"rng": lambda: 0.0},  # back off 0 s: the retry comes at once
    )
    app = AimeApp(engine)
    async with app.run_test(size=(120, 35)) as pilot:
        await restored(app)
        assert app.last_summary.failed == {"roon_tracker": "connection refused by 127.0.0.1:9330"}
        await wait_until(lambda: services["roon_tracker"].running, what="the recovery")
        await wait_until(lambda: "roon_tracker recovered" in str(app.query_one("#summary").render()), what="the summary")
        shown = str(app.query_one("#summary").render())
        # What went wrong is no longer the news: the log keeps it, the summary gives its room back.
        assert re.search(r"1 failed in [\d.]+ s \(roon_tracker recovered \d\d:\d\d:\d\d\)$", shown), shown
        logged = [entry.plain for entry in app.log_view.entries if "Restored" in entry.plain]
        assert len(logged) == 1 and "recovered" not in logged[0], "the log keeps the line as it was said"
        assert "roon_tracker: connection refused by 127.0.0.1:9330" in logged[0]
        await pilot.pause()


# -- an attached dashboard ------------------------------------------------------------------------


@pytest.fixture
def headless(tmp_path):
    env = {**os.environ, "AIME_DEMO_FAULTS": "0", "AIME_CONFIG": str(tmp_path / "none.toml")}
    with headless_demo(env, "--data-dir", str(tmp_path / "instance")) as (process, _):
        yield process


@pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")
async def test_an_attached_dashboard_says_q_detach_and_shows_its_lines_in_time_order(tmp_path, headless):
    from aime_tui.config import load_config
    from aime_tui.control.remote import RemoteEngine

    config = load_config(config_path=tmp_path / "none.toml", data_dir=tmp_path / "instance", env={})
    app = AttachedApp(RemoteEngine(config), subtitle="attached")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(
            lambda: any("attached to the running instance" in entry.plain for entry in app.log_view.entries),
            what="the attach line",
        )
        await pilot.pause()
        assert "? help" in bar_text(app.screen) and bar_text(app.screen).endswith("q detach")
        stamps = [entry.plain[:8] for entry in app.log_view.entries]
        assert stamps == sorted(stamps), "replayed lines come before this dashboard's own, in time order"
        assert any("restoring tracker" in entry.plain for entry in app.log_view.entries[:5])
        await pilot.press("question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), what="the help")
        assert "the instance and its services keep running" in help_text(app) and "quit:" not in help_text(app)
        await pilot.press("escape", "q")
    assert headless.poll() is None, "q detached: the instance still runs"
