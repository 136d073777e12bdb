"""Fix a setting in the config file, retry the service: it starts with the new settings.

A real engine (no demo), a real config file and database, and the Last.fm fake on loopback.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest
from waits import wait_until

from aime_tui.config import load_config
from aime_tui.core.faults import NothingToDo
from aime_tui.core.model import LogEvent, RunState
from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.engine import Engine

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def lastfm():
    fake = FakeLastfm(api_key=KEY, plays=450, newest=1_700_000_000)
    await fake.start()
    yield fake
    await fake.stop()


def config_notice(event, path) -> bool:
    """What the engine itself says about the config file (not a service's own report)."""
    return isinstance(event, LogEvent) and event.service is None and str(path) in event.text


def write_config(path, lastfm: FakeLastfm, *, key: str = "") -> None:
    path.write_text(
        f'[lastfm]\napi_url = "{lastfm.url}"\nuser = "{lastfm.user}"\nrate = 5\n'
        + (f'api_key = "{key}"\n' if key else "")
        + '[roon]\nenabled = false\n[scheduler]\nmode = "MASSIVE"\nbackfill_interval = 0.2\n'
    )


async def test_a_fixed_config_file_applies_at_the_retry(tmp_path, lastfm):
    path = tmp_path / "config.toml"
    write_config(path, lastfm)  # no API key yet
    config = load_config(config_path=path, data_dir=tmp_path / "data", env={})
    engine = Engine(config, env={})
    notices: list[tuple[str, int]] = []
    engine.bus.subscribe(lambda event: config_notice(event, path) and notices.append((event.text, event.level)))
    supervisor = await engine.open()
    try:
        summary = await supervisor.restore("launch")
        assert summary.not_set_up["tracker"] == f"set lastfm.api_key in {path}"
        scheduler = supervisor.view("scheduler")
        assert (scheduler.state, scheduler.up) == (RunState.NEEDS_ATTENTION, True)
        assert f"in {path}, then retry (r)" in scheduler.reason
        assert lastfm.requests == []

        # Retrying before the file changes reads nothing and changes nothing: the retry
        # runs (a second failure is logged) and fails the same way.
        failures = []
        supervisor.subscribe(
            lambda event: isinstance(event, LogEvent) and event.text.startswith("tracker not set up")
            and failures.append(event.text)
        )
        await supervisor.retry_now("tracker")
        await wait_until(lambda: failures, timeout=3.0, what="the retry failing again")
        assert failures == [f"tracker not set up: set lastfm.api_key in {path}"]
        assert notices == [] and lastfm.requests == []

        write_config(path, lastfm, key=KEY)
        await supervisor.retry_now("tracker")
        await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, timeout=3.0)
        assert [text for text, _ in notices] == [
            f"read {path} again: each service takes its settings at its next start"
        ]
        assert lastfm.requests and all(request["api_key"] == KEY for request in lastfm.requests)

        # The scheduler is up and waiting: a retry restarts it, and it backfills now.
        await supervisor.retry_now("scheduler")
        await wait_until(lambda: supervisor.view("scheduler").state is RunState.RUNNING, timeout=3.0)
        await wait_until(lambda: supervisor.view("scheduler").status["pages_done"] >= 1, timeout=3.0, what="a backfill page stored")
        assert supervisor.view("scheduler").status["mode"] == "MASSIVE"

        # A file that no longer reads is said once; the settings read before stay.
        path.write_text("[lastfm\napi_key = \n")
        await supervisor.stop("tracker")
        await supervisor.start("tracker")
        with pytest.raises(NothingToDo):  # running: nothing to retry, nothing read
            await supervisor.retry_now("scheduler")
        await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, timeout=3.0)
        errors = [text for text, level in notices if level == logging.ERROR]
        assert len(errors) == 1 and f"{path}: not valid TOML" in errors[0]
        assert "keeping the settings read before" in errors[0]
        assert engine.config.lastfm.api_key == KEY
        assert all(KEY not in text for text, _ in notices)
    finally:
        await engine.close()
    with sqlite3.connect(config.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM plays").fetchone()[0] > 0


async def test_a_running_service_keeps_its_settings_and_a_bad_file_changes_nothing(tmp_path, lastfm, cleanup):
    path = tmp_path / "config.toml"
    write_config(path, lastfm, key=KEY)
    config = load_config(config_path=path, data_dir=tmp_path / "data", env={})
    engine = Engine(config, env={})
    notices: list[tuple[str, int]] = []
    engine.bus.subscribe(lambda event: config_notice(event, path) and notices.append((event.text, event.level)))
    supervisor = await engine.open()
    scheduler = supervisor.service("scheduler")
    cleanup.push_async_callback(engine.close)
    await supervisor.restore("launch")
    await wait_until(lambda: supervisor.view("scheduler").status["pages_done"] >= 1, timeout=3.0, what="the backfill under way")
    cursor = scheduler.cursor_name
    assert cursor == f"backfill:lastfm:{lastfm.user}"

    # A new poll interval in the file, then the tracker restarts: it takes it; the
    # scheduler, running meanwhile, keeps what it started with (and its cursor).
    path.write_text(path.read_text().replace(f'user = "{lastfm.user}"\n', f'user = "{lastfm.user}"\ninterval = 77\n'))
    await supervisor.stop("tracker")
    await supervisor.start("tracker")
    await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, timeout=3.0)
    assert supervisor.view("tracker").status["interval"] == 77
    assert scheduler.lastfm.interval == 120 and scheduler.cursor_name == cursor
    assert supervisor.view("scheduler").state is RunState.RUNNING

    # A file that is not UTF-8: said once, and the start goes ahead on what was read before.
    path.write_bytes(path.read_bytes() + "# Zoé\n".encode("latin-1"))
    await supervisor.stop("tracker")
    await supervisor.start("tracker")
    await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, timeout=3.0)
    assert supervisor.view("tracker").status["interval"] == 77
    text, level = notices[-1]
    assert level == logging.ERROR and text.startswith(f"{path}: not UTF-8 text")
    assert text.endswith("(keeping the settings read before)")

    # A file gone (deleted, or caught mid-save): the settings read before stay.
    path.unlink()
    await supervisor.stop("tracker")
    await supervisor.start("tracker")
    await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, timeout=3.0)
    assert supervisor.view("tracker").status["interval"] == 77
    assert notices[-1] == (f"config file {path} is gone (keeping the settings read before)", logging.WARNING)
    assert engine.config.lastfm.api_key == KEY
