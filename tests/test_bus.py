"""One event bus: the engine's notices travel with the supervisor's events, to the
control socket and an attached dashboard too, and count in health's tally."""

from __future__ import annotations

import asyncio
import logging

import pytest
from scripted import scripted_engine
from waits import wait_until

from aime_tui.config import load_config
from aime_tui.control.client import ControlError, request
from aime_tui.control.remote import RemoteEngine, RemoteSupervisor
from aime_tui.core.model import LogEvent, StateEvent


@pytest.fixture
async def engine(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[roon]\nenabled = true\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "aime.db").write_bytes(b"not a database at all" * 200)  # moved aside at open
    engine, _ = scripted_engine(load_config(config_path=path, data_dir=data, env={}))
    await engine.open()
    await engine.supervisor.restore()
    yield engine
    await engine.close()


def texts(events) -> list[str]:
    return [event.text for event in events if isinstance(event, LogEvent)]


async def test_notices_reach_an_attached_dashboard_and_the_health_tally(engine, cleanup):
    socket_file = engine.config.data_dir / "aime.sock"
    remote = RemoteEngine(engine.config)
    heard = []
    remote.bus.subscribe(heard.append)
    await remote.open()
    cleanup.push_async_callback(remote.close)
    await remote.launch()
    # Said before the socket opened, yet shown to a dashboard attaching later.
    assert any("the database was unreadable: moved aside" in text for text in texts(heard)), texts(heard)

    # Said while attached: the config file goes, and the next start says so.
    engine.config.config_path.unlink()
    await engine.supervisor.stop("tracker")
    await engine.supervisor.start("tracker")
    gone = f"config file {engine.config.config_path} is gone (keeping the settings read before)"
    await wait_until(lambda: gone in texts(heard), what="the notice over the socket")
    [notice] = [event for event in heard if isinstance(event, LogEvent) and event.text == gone]
    assert notice.level == logging.WARNING

    health = await asyncio.to_thread(request, socket_file, {"cmd": "health"})
    assert health["errors"]["errors_total"] == 1  # the database moved aside
    assert health["errors"]["warnings_total"] >= 1  # the config file gone


async def test_a_listener_that_fails_is_logged_and_the_others_still_hear_on_both_sides(engine, caplog, cleanup):
    remote = RemoteSupervisor(engine.config.data_dir / "aime.sock")

    def broken(event) -> None:
        raise RuntimeError("a listener bug")

    local_heard, remote_heard = [], []
    engine.bus.subscribe(broken)
    engine.bus.subscribe(local_heard.append)
    remote.subscribe(broken)
    remote.subscribe(remote_heard.append)
    await remote.connect()
    cleanup.push_async_callback(remote.close)
    with caplog.at_level(logging.ERROR, logger="aime_tui.core.bus"):
        await engine.supervisor.stop("scheduler")

        def stopped(events) -> bool:
            return any(isinstance(e, StateEvent) and e.view.name == "scheduler" and not e.view.wanted for e in events)

        await wait_until(lambda: stopped(local_heard) and stopped(remote_heard), what="both sides hearing the stop")
    failures = [record for record in caplog.records if record.getMessage() == "event listener failed"]
    assert len(failures) >= 2 and all(record.exc_info[0] is RuntimeError for record in failures)


async def test_the_remote_side_refuses_with_the_clients_error(engine, cleanup):
    remote = RemoteSupervisor(engine.config.data_dir / "aime.sock")
    await remote.connect()
    cleanup.push_async_callback(remote.close)
    with pytest.raises(ControlError, match="no service named 'nope'"):
        await remote.start("nope")
    with pytest.raises(ControlError, match="scheduler has no mode 'TURBO'"):
        await remote.set_mode("scheduler", "TURBO")
    # The shared commands run on the remote primitives: the mode goes round and is saved.
    assert await remote.cycle_mode("scheduler") == "MASSIVE"
    assert (await engine.store.desired_states())["scheduler"].mode == "MASSIVE"
    with pytest.raises(ValueError, match="tracker has no modes"):
        await remote.cycle_mode("tracker")
