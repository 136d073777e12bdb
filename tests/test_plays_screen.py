"""The plays screen (`p`) under Pilot, on a real database holding a generated history,
and its SVG snapshots with frozen clocks."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from scripted import scripted_engine
from waits import wait_until

from aime_tui.config import load_config
from aime_tui.demo.history import generate_plays, write_history
from aime_tui.store.database import Play
from aime_tui.ui.app import AimeApp
from aime_tui.ui.screens import plays as plays_module
from aime_tui.ui.screens.plays import PlaysScreen
from aime_tui.ui.widgets.key_bar import KeyBar

FROZEN = 1_795_461_857.0  # 2026-11-23 19:24:17 UTC (conftest pins TZ=UTC)
SIZE = (100, 30)


@pytest.fixture
def app(tmp_path, monkeypatch) -> AimeApp:
    # A relative data dir keeps the temporary path out of the screen.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plays_module, "WATCH_EVERY", 0.2)
    config = load_config(config_path=Path("config.toml"), data_dir=Path("data"), env={})
    write_history(config.db_path, generate_plays(3000, end=FROZEN - 60, days=60, seed=3, artists=40))
    db = sqlite3.connect(config.db_path)
    with db:  # the generated Roon plays' account is this Core's id
        db.execute("INSERT INTO roon_cores (core_id, name, last_seen) VALUES ('core', 'Nucleus', 0)")
    db.close()
    engine, _ = scripted_engine(config, engine={"clock": lambda: 100.0, "wall": lambda: FROZEN})
    return AimeApp(engine, now=lambda: FROZEN)


def sql(app: AimeApp, query: str, args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(app.engine.config.db_path)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


async def open_plays(pilot) -> PlaysScreen:
    await wait_until(lambda: pilot.app.last_summary is not None, timeout=5, what="restoration")
    await pilot.press("p")
    await wait_until(lambda: isinstance(pilot.app.screen, PlaysScreen), timeout=5, what="the plays screen")
    screen = pilot.app.screen
    await wait_until(lambda: screen.table.row_count == plays_module.PAGE, timeout=5, what="the first page")
    await wait_until(lambda: screen._overview is not None and "all" in screen._overview.top, timeout=5,
                     what="top artists over everything")
    return screen


def titles(screen: PlaysScreen) -> list[str]:
    table = screen.table
    return [table.get_row_at(index)[3] for index in range(table.row_count)]


async def test_the_plays_screen_lists_charts_and_searches_the_history(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plays(pilot)
        newest = sql(app, "SELECT title FROM plays ORDER BY played_at DESC, id DESC LIMIT 100")
        assert titles(screen) == [title for (title,) in newest]

        # The chart: plays on each of the last 30 local days, today last.
        first = datetime(2026, 11, 23) - timedelta(days=29)
        expected = [
            sql(app, "SELECT COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ?",
                ((first + timedelta(days=day)).timestamp(), (first + timedelta(days=day + 1)).timestamp()))[0][0]
            for day in range(30)
        ]
        sparkline = screen.query_one("#plays-sparkline")
        assert list(sparkline.data) == expected and sum(expected) > 0
        (top_all,) = sql(app, "SELECT COUNT(*) c FROM plays GROUP BY artist_key ORDER BY c DESC LIMIT 1")
        assert screen._overview.top["all"][0].plays == top_all[0]
        # A Roon play says which Core by its name, not by the core_id stored as its account.
        (roon_row,) = sql(app, "SELECT id FROM plays WHERE source = 'roon' ORDER BY played_at DESC, id DESC LIMIT 1")
        assert screen.table.get_row(str(roon_row[0]))[1] == "roon · Nucleus"

        await pilot.press("slash")
        await pilot.press(*"bjork")
        await wait_until(lambda: screen._search == "bjork", timeout=5, what="the search to start")
        expected_rows = sql(app, "SELECT title FROM plays WHERE artist = 'Björk' ORDER BY played_at DESC, id DESC LIMIT 100")
        await wait_until(lambda: titles(screen) == [title for (title,) in expected_rows], timeout=5, what="Björk's plays")
        assert {screen.table.get_row_at(i)[2] for i in range(screen.table.row_count)} == {"Björk"}
        detail = screen.query_one("#plays-detail")
        await wait_until(lambda: str(detail.render()).startswith("Björk – "), timeout=5, what="the play in full")

        await pilot.press(*"zzqx")  # matches nothing: no play is described any more
        await wait_until(lambda: screen._search == "bjorkzzqx" and screen.table.row_count == 0, timeout=5,
                         what="an empty result")
        await wait_until(lambda: str(detail.render()) == "", timeout=5, what="the line under the list cleared")

        await pilot.press("escape")  # clears the search
        await wait_until(lambda: titles(screen) == [title for (title,) in newest], timeout=5, what="the whole list again")
        await pilot.press("escape")  # back to the dashboard
        await wait_until(lambda: not isinstance(app.screen, PlaysScreen), timeout=5, what="back")


async def test_scrolling_loads_the_next_page_and_new_plays_appear(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plays(pilot)
        await pilot.press("x")  # would stop the tracker on the dashboard: not from here
        await pilot.press("ctrl+end")
        await wait_until(lambda: screen.table.row_count == 2 * plays_module.PAGE, timeout=5, what="the second page")
        newest = sql(app, "SELECT title FROM plays ORDER BY played_at DESC, id DESC LIMIT 200")
        assert titles(screen) == [title for (title,) in newest]  # only what was scrolled through
        assert app.supervisor.view("tracker").wanted is True

        await pilot.press("r")  # back to the top
        await wait_until(lambda: screen.table.cursor_row == 0, timeout=5, what="the cursor at the top")
        await app.engine.store.insert_plays([Play("roon", "core", int(FROZEN) - 5, "Nils Frahm", "Says", "Spaces",
                                                  zone="Living Room", length=499.0)])
        await wait_until(lambda: titles(screen)[:1] == ["Says"], timeout=5, what="the new play on top")
        today = sql(app, "SELECT COUNT(*) FROM plays WHERE played_at >= ?", (datetime(2026, 11, 23).timestamp(),))
        await wait_until(lambda: screen._overview.per_day[-1] == today[0][0], timeout=5, what="today's count")


# -- snapshots -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_plays_screen_snapshot(snap_compare, app, size):
    """Columns fit the width (album goes first); at 60×20 the chart gives way to the top
    artists and the key bar keeps back, search and help."""

    async def run_before(pilot):
        screen = await open_plays(pilot)
        keys = [key for key, _ in screen.query_one(KeyBar).shown()]
        assert {"esc", "/", "?"} <= set(keys), keys
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_plays_screen_search_snapshot(snap_compare, app):
    async def run_before(pilot):
        screen = await open_plays(pilot)
        await pilot.press("slash", *"sigur", "enter")  # enter: the result kept, the list focused
        await wait_until(lambda: screen._search == "sigur" and {screen.table.get_row_at(i)[2] for i in
                                 range(screen.table.row_count)} == {"Sigur Rós"}, timeout=5, what="the search")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
