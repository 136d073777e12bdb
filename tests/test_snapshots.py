"""SVG snapshots of the dashboard with frozen clocks (wall, monotonic and the title clock)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from frozen import FROZEN, frozen_config, frozen_engine
from waits import wait_until, wait_until_sync

from aime_tui.control.client import ControlError, Unreachable, request
from aime_tui.control.remote import RemoteEngine
from aime_tui.core.faults import NeedsAttention
from aime_tui.store.database import Store
from aime_tui.ui.app import AimeApp, AttachedApp
from aime_tui.ui.screens.history import HistoryScreen
from aime_tui.ui.widgets.title_bar import TitleBar

SIZE = (110, 30)
HOUR = 3600.0
APPROVE = NeedsAttention("approve aime-tui in Roon → Settings → Extensions")
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in the temporary directory: the frozen config's relative paths land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def frozen_app(**behaviour) -> AimeApp:
    behaviour.setdefault("roon_tracker", {"failures": (APPROVE,)})
    engine, _ = frozen_engine(frozen_config(), **behaviour)
    return AimeApp(engine, now=lambda: FROZEN)


async def restored(pilot) -> None:
    await wait_until(lambda: pilot.app.last_summary is not None, what="the restoration summary")
    await pilot.pause(0.3)


#: The sizes people meet it at: a roomy terminal, the classic 80×24, a small split pane.
SIZES = [(120, 35), (80, 24), (60, 20)]


def test_dashboard_after_restoration(snap_compare, here):
    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=restored)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_dashboard_at_common_sizes(snap_compare, here, size):
    assert snap_compare(frozen_app(), terminal_size=size, run_before=restored)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_help_over_the_dashboard(snap_compare, here, size):
    async def open_help(pilot):
        await restored(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.3)

    assert snap_compare(frozen_app(), terminal_size=size, run_before=open_help)


def test_dashboard_after_stop_and_mode_change(snap_compare, here):
    async def stop_tracker_and_switch_mode(pilot):
        await restored(pilot)
        await pilot.press("x", "down", "down", "m")
        await pilot.pause(0.3)

    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=stop_tracker_and_switch_mode)


def test_a_service_in_backoff(snap_compare, here):
    """The tracker's first start fails: backoff, its countdown in the table and the detail."""
    app = frozen_app(tracker={"failures": (ConnectionError("ws.audioscrobbler.com unreachable"),)})

    async def in_backoff(pilot):
        await restored(pilot)
        assert pilot.app.supervisor.view("tracker").state.value == "backoff"

    assert snap_compare(app, terminal_size=SIZE, run_before=in_backoff)


def test_a_service_needing_attention(snap_compare, here):
    """Roon waits for the user to approve the extension; selected, the detail says how."""
    async def select_roon(pilot):
        await restored(pilot)
        await pilot.press("down")
        await pilot.pause(0.3)
        assert pilot.app.selected_service == "roon_tracker"

    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=select_roon)


async def seed_a_past_outage(db_path: Path) -> None:
    """Ten hours of tracker history before this launch: an error, an hour in backoff, a
    recovery, a shutdown an hour before the launch."""
    at = {"now": 0.0}
    store = await Store.open(db_path, clock=lambda: at["now"])
    steps = [
        (-10 * HOUR, "tracker", "stopped", "starting", "launch"),
        (-10 * HOUR, "tracker", "starting", "running", "launch"),
        (-4 * HOUR, "tracker", "running", "stopping", "error"),
        (-4 * HOUR, "tracker", "stopping", "backoff", "backoff"),
        (-3 * HOUR, "tracker", "backoff", "starting", "backoff"),
        (-3 * HOUR + 30, "tracker", "starting", "running", "backoff"),
        (-1 * HOUR, "tracker", "running", "stopping", "shutdown"),
        (-1 * HOUR, "tracker", "stopping", "stopped", "shutdown"),
    ]
    for offset, service, before, after, reason in steps:
        at["now"] = FROZEN + offset
        await store.record_transition(service, before, after, reason)
    await store.close()


def test_the_history_screen(snap_compare, here):
    config = frozen_config()
    config.data_dir.mkdir(mode=0o700)

    async def open_history(pilot):
        await restored(pilot)
        await pilot.press("h")
        assert isinstance(pilot.app.screen, HistoryScreen)

        def loaded() -> bool:
            return all("loading" not in str(panel.render()) for panel in pilot.app.screen.query(".history-service"))

        await wait_until(loaded, what="every service's history")
        await pilot.pause(0.1)

    asyncio.run(seed_a_past_outage(config.db_path))
    app = frozen_app()
    assert snap_compare(app, terminal_size=(110, 40), run_before=open_history)


@pytest.fixture
def frozen_instance(here):
    """A frozen instance in another process, alone in a PID namespace so that its pid
    (1) reads the same every run; stopped with SIGTERM after the test."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a PID namespace needs root and unshare")
    # --kill-child: should this process die, the instance goes with it.
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, str(TESTS / "frozen_instance.py")]
    )
    yield frozen_config().data_dir / "aime.sock"
    # unshare ignores SIGTERM: signal its child, the instance, directly.
    for instance in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split():
        os.kill(int(instance), signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def restoration_said(socket_path: Path) -> bool:
    try:
        return request(socket_path, {"cmd": "status"}, timeout=1).get("summary") is not None
    except (ControlError, Unreachable, OSError):
        return False


def test_an_attached_dashboard(snap_compare, frozen_instance):
    """The dashboard attached over the real control socket to an instance in another process."""
    wait_until_sync(lambda: restoration_said(frozen_instance), timeout=15, what="the instance's restoration")
    engine = RemoteEngine(frozen_config(), wall=lambda: FROZEN)
    app = AttachedApp(engine, now=lambda: FROZEN, subtitle=engine.subtitle)  # what `aime-tui` runs

    async def attached(pilot):
        await restored(pilot)
        await wait_until(
            lambda: any("attached to the running instance" in line.text for line in pilot.app.log_view.lines),
            what="the attach line",
        )
        # The title bar names the instance at its next once-a-second redraw.
        title = pilot.app.query_one(TitleBar)
        await wait_until(lambda: title.shown == "aime-tui ─ attached to pid 1", what="the instance's pid")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=attached)
