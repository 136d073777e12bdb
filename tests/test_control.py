"""The control socket and the commands of a second shell, against a real headless instance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from dashboard import cell
from instances import EXECUTABLE, Headless
from waits import wait_until, wait_until_sync

from aime_tui.control.client import ControlError, Unreachable, request
from aime_tui.core.instance import InstanceLock
from aime_tui.ui.widgets.title_bar import TitleBar

pytestmark = pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")


def processes_running(program: str, argument: str) -> list[int]:
    """PIDs of `program` running with `argument` among its arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [arg.decode(errors="replace") for arg in argv]
        if any(arg.endswith(program) for arg in args[:2]) and argument in args:
            found.append(int(entry.name))
    return found


def open_files(pid: int) -> set[Path]:
    files = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            files.add(Path(os.readlink(fd)))
        except OSError:
            pass
    return files


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    headless = Headless(tmp_path_factory.mktemp("control")).start("Restored 3 succeeded")
    yield headless
    assert headless.stop() == 0


def test_the_socket_is_private_to_its_owner(instance):
    mode = (instance.data_dir / "aime.sock").stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_status_lists_the_running_services(instance):
    result = instance.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["instance"]["pid"] == instance.process.pid
    assert answer["instance"]["summary"]["line"].startswith("Restored 3 succeeded")
    states = {view["name"]: (view["state"], view["wanted"]) for view in answer["services"]}
    assert states == {name: ("running", True) for name in ("tracker", "roon_tracker", "scheduler")}

    table = instance.cli("status").stdout.splitlines()
    assert table[0].startswith(f"instance pid {instance.process.pid} · up ")
    assert table[2].split() == ["name", "state", "wanted", "mode", "uptime", "↺", "last", "check", "plays", "(new)", "last", "error"]
    tracker = next(line for line in table if line.startswith("tracker "))
    assert "● running" in tracker and " on " in tracker


def test_a_stop_is_acknowledged_only_once_it_is_saved(instance):
    result = instance.cli("stop", "roon_tracker")
    # The moment the command returns, the database already says so.
    assert instance.desired()["roon_tracker"][0] == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout == "roon_tracker: stop saved; the running instance is stopping it\n"
    wait_until_sync(lambda: instance.ask({"cmd": "status"})["services"][1]["state"] == "stopped", what="roon_tracker stopped")

    result = instance.cli("start", "roon_tracker")
    assert instance.desired()["roon_tracker"][0] == 1
    assert result.returncode == 0, result.stderr


def test_mode_is_saved_and_applied(instance):
    result = instance.cli("mode", "massive")
    assert result.returncode == 0, result.stderr
    assert instance.desired()["scheduler"][1] == "MASSIVE"
    views = {view["name"]: view for view in instance.ask({"cmd": "status"})["services"]}
    assert views["scheduler"]["mode"] == "MASSIVE"
    assert instance.cli("mode", "MAINTENANCE").returncode == 0
    assert instance.desired()["scheduler"][1] == "MAINTENANCE"


def test_wake_answers_with_the_restoration_summary(instance):
    result = instance.cli("wake")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Restored 3 succeeded, 0 failed in ")


def test_bad_requests_get_one_line_refusals(instance):
    with pytest.raises(ControlError, match="no service named 'nope' \\(known: tracker, roon_tracker, scheduler\\)"):
        instance.ask({"cmd": "start", "service": "nope"})
    with pytest.raises(ControlError, match="unknown command 'launch'"):
        instance.ask({"cmd": "launch"})
    with pytest.raises(ControlError, match="MAINTENANCE"):
        instance.ask({"cmd": "mode", "mode": "TURBO"})
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(5)
        raw.connect(str(instance.data_dir / "aime.sock"))
        raw.sendall(b"not json\n")
        answer = json.loads(raw.makefile().readline())
    assert answer["ok"] is False and answer["error"].startswith("bad request")

    for args, error in (
        (("start", "nope"), "aime-tui: unknown service 'nope' (known: tracker, roon_tracker, scheduler)\n"),
        (("mode", "TURBO"), "aime-tui: unknown mode 'TURBO' (modes: MAINTENANCE, MASSIVE)\n"),
    ):
        result = instance.cli(*args)
        assert (result.returncode, result.stderr) == (2, error)
    result = instance.cli("stop")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_a_silent_client_does_not_block_others(instance):
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(str(instance.data_dir / "aime.sock"))
        began = time.monotonic()
        assert len(instance.ask({"cmd": "status"})["services"]) == 3
        assert time.monotonic() - began < 1.0


def test_subscribers_see_events_live(instance):
    with socket.socket(socket.AF_UNIX) as stream:
        stream.settimeout(5)
        stream.connect(str(instance.data_dir / "aime.sock"))
        stream.sendall(b'{"cmd": "subscribe"}\n')
        lines = stream.makefile()
        first = json.loads(lines.readline())
        assert first["ok"] and len(first["services"]) == 3
        recent = [json.loads(lines.readline()) for _ in range(first["recent"])]
        assert any(e["event"] == "summary" and e["line"].startswith("Restored 3 succeeded") for e in recent)
        instance.ask({"cmd": "stop", "service": "tracker"})
        events = [json.loads(lines.readline()) for _ in range(3)]
        instance.ask({"cmd": "start", "service": "tracker"})
    assert {"event": "log", "text": "tracker wanted off (saved)"}.items() <= next(e for e in events if e["event"] == "log").items()
    states = [e["view"]["state"] for e in events if e["event"] == "state"]
    assert states and states[0] == "running" and all(e["view"]["name"] == "tracker" for e in events if e["event"] == "state")


def test_with_no_instance_changes_go_to_the_database_and_apply_at_next_launch(tmp_path):
    headless = Headless(tmp_path)
    result = headless.cli("stop", "roon_tracker")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "roon_tracker: wanted off — no running instance: saved, applies at next launch\n"
    assert headless.cli("mode", "MASSIVE").returncode == 0
    status = headless.cli("status")
    assert status.stdout.startswith(f"no running instance on {headless.data_dir}")
    assert "off" in next(line for line in status.stdout.splitlines() if line.startswith("roon_tracker"))
    assert (headless.cli("wake").returncode, headless.cli("retry", "tracker").returncode) == (1, 1)

    headless.start("Restored 2 succeeded")
    try:
        views = {view["name"]: view for view in headless.ask({"cmd": "status"})["services"]}
        assert views["roon_tracker"]["state"] == "stopped" and not views["roon_tracker"]["wanted"]
        assert views["scheduler"]["mode"] == "MASSIVE"
    finally:
        assert headless.stop() == 0
    # A clean exit takes its socket file with it.
    assert not (headless.data_dir / "aime.sock").exists()


def test_a_stale_socket_file_is_replaced_at_launch(tmp_path, cleanup):
    headless = Headless(tmp_path)
    headless.data_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(headless.data_dir / "aime.sock"))
    stale.close()  # the file stays, nobody listens: what a kill -9 leaves
    assert headless.cli("status").stdout.startswith("no running instance")
    headless.start("Restored 3 succeeded")
    cleanup.callback(headless.stop)
    assert headless.ask({"cmd": "status"})["pid"] == headless.process.pid


def test_a_live_lock_with_a_dead_socket_is_exit_3(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(data_dir / "aime.sock"))
    dead.close()
    with InstanceLock(data_dir / "aime.lock"):
        with pytest.raises(Unreachable, match="dead socket file"):
            request(data_dir / "aime.sock", {"cmd": "status"}, timeout=2)
        for command in (("status",), ("stop", "tracker"), ("health",)):
            result = subprocess.run(
                [str(EXECUTABLE), *command, "--data-dir", str(data_dir)],
                capture_output=True, text=True, timeout=20, env={**os.environ, "AIME_CONFIG": str(tmp_path / "x.toml")},
            )
            assert result.returncode == 3, (command, result.stderr)
            if command != ("health",):
                assert result.stderr.startswith(f"aime-tui: instance pid {os.getpid()} holds {data_dir} but does not answer")
                assert len(result.stderr.splitlines()) == 1


def test_a_client_never_hangs_on_a_server_that_does_not_answer(tmp_path):
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as mute:
        mute.bind(str(path))
        mute.listen(1)
        began = time.monotonic()
        with pytest.raises(Unreachable, match="no answer"):
            request(path, {"cmd": "status"}, timeout=0.5)
        assert time.monotonic() - began < 1.5


def test_headless_notifies_systemd(tmp_path):
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(15)
        headless = Headless(tmp_path, env={"NOTIFY_SOCKET": str(notify_path)})
        headless.process = subprocess.Popen(headless.argv, env=headless.env, stderr=subprocess.DEVNULL)
        try:
            ready = notify.recv(4096).decode()
            assert ready.splitlines()[0] == "READY=1"
            assert ready.splitlines()[1].startswith("STATUS=Restored 3 succeeded, 0 failed")
            # Services are up when READY=1 arrives: systemd may start dependants now.
            assert all(v["state"] == "running" for v in headless.ask({"cmd": "status"})["services"])
        finally:
            assert headless.stop() == 0
        assert notify.recv(4096) == b"STOPPING=1"


async def test_the_dashboard_attaches_to_a_headless_instance_and_detaches_leaving_it_running(tmp_path):

    from aime_tui.config import load_config
    from aime_tui.control.remote import RemoteEngine
    from aime_tui.ui.app import AimeApp

    headless = Headless(tmp_path).start("Restored 3 succeeded")
    try:
        config = load_config(config_path=tmp_path / "no-config.toml", data_dir=headless.data_dir, env={})
        app = AimeApp(RemoteEngine(config), subtitle="attached")
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_until(lambda: cell(app, "scheduler", "state") == "● running")
            await wait_until(lambda: "Restored 3 succeeded" in str(app.query_one("#summary").render()))
            await pilot.press("x")  # the first row, tracker: stopped in the other process
            assert headless.desired()["tracker"][0] == 0
            await wait_until(lambda: cell(app, "tracker", "state") == "○ stopped")
            # Its log lines arrive here too.
            await wait_until(lambda: any("tracker wanted off (saved)" in line.text for line in app.log_view.lines))
            # Retrying a service not wanted is a notice in plain text, as in the instance's own window.
            await pilot.press("r")
            await wait_until(lambda: any("nothing to retry" in entry.plain for entry in app.log_view.entries),
                             what="the refusal in the log")
            (notice,) = [entry for entry in app.log_view.entries if "nothing to retry" in entry.plain]
            assert {str(span.style) for span in notice.spans} <= {"dim", ""}, notice.spans
            await pilot.press("q")
        assert headless.process.poll() is None, "detaching leaves the instance running"
        states = [view["state"] for view in headless.ask({"cmd": "status"})["services"]]
        assert states == ["stopped", "running", "running"]
    finally:
        assert headless.stop() == 0


async def test_an_attached_dashboard_shows_what_the_instance_logged_before(tmp_path):

    from aime_tui.config import load_config
    from aime_tui.control.remote import RemoteEngine
    from aime_tui.ui.app import AimeApp

    headless = Headless(tmp_path).start("Restored 3 succeeded")
    try:
        headless.ask({"cmd": "stop", "service": "roon_tracker"})
        config = load_config(config_path=tmp_path / "no-config.toml", data_dir=headless.data_dir, env={})
        app = AimeApp(RemoteEngine(config), subtitle="attached")
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_until(lambda: any("attached to the running instance" in line.text for line in app.log_view.lines))
            shown = [line.text for line in app.log_view.lines]
            before = [i for i, text in enumerate(shown) if "roon_tracker wanted off (saved)" in text]
            launch = [i for i, text in enumerate(shown) if "Restored 3 succeeded" in text]
            attached = [i for i, text in enumerate(shown) if "attached to the running instance" in text]
            assert launch and before and launch[0] < before[0] < attached[0], shown
            assert "Restored 3 succeeded" in str(app.query_one("#summary").render())
            # The instance says which services have modes; m cycles only those.
            assert app.supervisor.modes("scheduler") == ("MAINTENANCE", "MASSIVE")
            assert app.supervisor.modes("tracker") == ()
            await pilot.press("q")
    finally:
        assert headless.stop() == 0


async def test_an_attached_dashboard_waits_out_a_full_listen_backlog(tmp_path):
    """EAGAIN from a listener whose backlog is full means busy, not gone: tried again, as
    the CLI's client does."""
    import threading

    from aime_tui.control.remote import RemoteSupervisor

    path = tmp_path / "aime.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    while True:  # fill the backlog until the next connect is refused with EAGAIN
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.setblocking(False)
        try:
            waiting.connect(str(path))
        except BlockingIOError:
            waiting.close()
            break
        queued.append(waiting)
    answered = []

    def serve() -> None:
        time.sleep(0.2)  # busy for a while: the request's first attempts meet EAGAIN
        for _ in queued:
            listener.accept()[0].close()
        conn, _ = listener.accept()
        with conn:
            answered.append(json.loads(conn.makefile().readline()))
            conn.sendall(b'{"ok": true}\n')

    server = threading.Thread(target=serve)
    server.start()
    await RemoteSupervisor(path).start("tracker")
    server.join()
    assert answered == [{"cmd": "start", "service": "tracker"}]
    for waiting in queued:
        waiting.close()
    listener.close()


async def test_a_backlog_of_long_lines_reaches_a_dashboard_that_attaches(config, cleanup):
    from scripted import scripted_engine

    from aime_tui.control.protocol import RECENT_LOG_LINES
    from aime_tui.control.remote import RemoteSupervisor
    from aime_tui.core.model import LogEvent

    engine, _ = scripted_engine(config)
    supervisor = await engine.open()
    remote = RemoteSupervisor(config.data_dir / "aime.sock")
    cleanup.push_async_callback(engine.close)
    cleanup.push_async_callback(remote.close)
    await supervisor.restore()
    # Together far more than one protocol line may hold; each one well within it.
    for number in range(RECENT_LOG_LINES + 50):
        supervisor._log(f"line {number}: " + "é" * 400)
    shown = []
    remote.subscribe(lambda event: isinstance(event, LogEvent) and shown.append(event.text))
    await remote.connect()
    await remote.replay_recent()
    lines = [text for text in shown if text.startswith("line ")]
    assert len(lines) == RECENT_LOG_LINES
    assert lines[0].startswith("line 50: ") and lines[-1].startswith(f"line {RECENT_LOG_LINES + 49}: ")
    assert "attached to the running instance" in shown[-1]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_launching_the_dashboard_while_an_instance_runs_attaches_to_it(tmp_path, cleanup):
    from instances import TmuxSession

    headless = Headless(tmp_path).start("Restored 3 succeeded")
    session = TmuxSession(tmp_path)
    cleanup.callback(headless.stop)
    cleanup.callback(session.kill)
    session.launch(
        "--demo", "--data-dir", str(headless.data_dir),
        env={"AIME_DEMO_FAULTS": "0", "AIME_CONFIG": str(tmp_path / "no-config.toml")},
    )
    session.wait_for(f"attached to pid {headless.process.pid}")
    session.wait_for("Restored 3 succeeded")
    # aime.log belongs to the instance: a second writer would rotate it under it.
    on_this_dir = processes_running(str(EXECUTABLE), str(headless.data_dir))
    [attached] = [pid for pid in on_this_dir if pid != headless.process.pid]
    assert open_files(attached), "could not read the attached dashboard's open files"
    assert headless.data_dir / "aime.log" not in open_files(attached)
    assert headless.data_dir / "aime.log" in open_files(headless.process.pid)
    session.tmux("send-keys", "-t", session.name, "q")
    session.wait_gone(timeout=5)
    assert headless.process.poll() is None
    assert all(v["state"] == "running" for v in headless.ask({"cmd": "status"})["services"])


async def test_an_attached_dashboard_says_once_when_the_instance_stops_answering_and_once_when_it_is_back(
    tmp_path, monkeypatch
):
    import asyncio


    from aime_tui.config import load_config
    from aime_tui.control import remote
    from aime_tui.control.remote import RemoteEngine
    from aime_tui.core.model import LogEvent
    from aime_tui.ui.app import AimeApp

    # Many polls and reattach attempts within the test's pauses.
    monkeypatch.setattr(remote, "POLL_EVERY", 0.1)
    monkeypatch.setattr(remote, "REATTACH_EVERY", 0.1)
    headless = Headless(tmp_path).start("Restored 3 succeeded")
    first_pid = headless.process.pid
    socket_file = headless.data_dir / "aime.sock"
    try:
        config = load_config(config_path=tmp_path / "no-config.toml", data_dir=headless.data_dir, env={})
        engine = RemoteEngine(config)
        app = AimeApp(engine, subtitle=engine.subtitle)

        def title() -> str:
            return app.query_one(TitleBar).shown

        async with app.run_test(size=(200, 40)) as pilot:
            await wait_until(lambda: any("attached to the running instance" in line.text for line in app.log_view.lines))
            await wait_until(lambda: title() == f"aime-tui ─ attached to pid {first_pid}")
            said: list[LogEvent] = []  # what the dashboard says of the connection

            def note(event) -> None:
                if isinstance(event, LogEvent) and any(word in event.text for word in ("poll", "went away", "attached")):
                    said.append(event)

            app.supervisor.subscribe(note)

            def in_pane(text: str) -> int:
                return sum(text in line.text for line in app.log_view.lines)

            # The socket file moves away: every status poll fails, the event stream stays.
            socket_file.rename(tmp_path / "moved.sock")
            await wait_until(lambda: in_pane("status poll failed"))
            await pilot.pause(1.0)  # some ten more failed polls
            assert in_pane("status poll failed") == 1
            (tmp_path / "moved.sock").rename(socket_file)
            await wait_until(lambda: in_pane("answers status polls again"))

            # The instance stops, and a new one starts on the data directory.
            await asyncio.to_thread(headless.stop)
            await wait_until(lambda: in_pane(f"the instance (pid {first_pid}) went away"))
            await wait_until(lambda: "gone: attaching again" in title())
            await pilot.pause(1.0)  # some ten more polls and reattach attempts
            await asyncio.to_thread(headless.start, "Restored 3 succeeded")
            second_pid = headless.process.pid
            await wait_until(lambda: in_pane(f"attached to the new instance (pid {second_pid})"), timeout=10)
            await wait_until(lambda: title() == f"aime-tui ─ attached to pid {second_pid}")
            await pilot.pause(0.5)

            assert [(event.level, event.text) for event in said] == [
                (logging.WARNING, "status poll failed: the instance does not answer on "
                 f"{socket_file}: [Errno 2] No such file or directory; the services shown may be out of date"),
                (logging.INFO, f"the instance (pid {first_pid}) answers status polls again"),
                (logging.ERROR, f"the instance (pid {first_pid}) went away: the dashboard shows its last state"
                 " and attaches again when an instance answers"),
                (logging.INFO, f"attached to the new instance (pid {second_pid}); q detaches and leaves it running"),
            ]
            for event in said:  # and the pane shows each once (a long one wraps: its start)
                assert in_pane(event.text[:40]) == 1, [line.text for line in app.log_view.lines]
            # The new instance's launch reached the pane too, and its keys act on it.
            assert in_pane("Restored 3 succeeded") == 2
            await pilot.press("x")  # tracker
            await wait_until(lambda: cell(app, "tracker", "state") == "○ stopped")
            assert headless.desired()["tracker"][0] == 0
            await pilot.press("q")
    finally:
        if (tmp_path / "moved.sock").exists():
            (tmp_path / "moved.sock").rename(socket_file)
        assert headless.stop() == 0
