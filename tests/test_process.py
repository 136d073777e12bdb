"""The real process: one instance per data dir, clean exits on signals, kill -9 safety."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import sqlite3
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from instances import EXECUTABLE, TmuxSession, row, running
from waits import wait_until_sync

from aime_tui.core.instance import AlreadyRunning, InstanceLock

pytestmark = pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIME_DEMO_FAULTS": "0",
        "AIME_CONFIG": str(tmp_path / "no-config.toml"),
    }


def test_the_lock_names_the_holder(tmp_path):
    path = tmp_path / "aime.lock"
    with InstanceLock(path):
        with pytest.raises(AlreadyRunning, match=f"already running \\(pid {os.getpid()}\\)"):
            InstanceLock(path).acquire()
    InstanceLock(path).acquire().release()  # free again once released


def test_a_second_instance_exits_naming_the_first(tmp_path):
    data_dir = tmp_path / "data"
    first = subprocess.Popen(
        [str(EXECUTABLE), "--demo", "--headless", "--data-dir", str(data_dir)],
        env=env_for(tmp_path), stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_line(first, "Restored 3 succeeded")
        second = subprocess.run(
            [str(EXECUTABLE), "--demo", "--headless", "--data-dir", str(data_dir)],
            env=env_for(tmp_path), capture_output=True, text=True, timeout=20,
        )
        assert second.returncode == 1
        assert f"already running (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(10)
    assert first.returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_headless_stops_cleanly_on_signals(tmp_path, signum):
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [str(EXECUTABLE), "--demo", "--headless", "--data-dir", str(data_dir)],
        env=env_for(tmp_path), stderr=subprocess.PIPE, text=True,
    )
    wait_for_line(process, "Restored 3 succeeded")
    began = time.monotonic()
    process.send_signal(signum)
    process.wait(10)
    assert process.returncode == 0
    assert time.monotonic() - began < 2.5
    assert_clean_database(data_dir / "aime.db")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_dashboard_in_tmux_stops_cleanly_on_signals(tmp_path, signum, cleanup):
    session = TmuxSession(tmp_path)
    data_dir = tmp_path / "data"
    cleanup.callback(session.kill)
    session.launch(
        "--demo", "--data-dir", str(data_dir),
        env={"AIME_DEMO_FAULTS": "0", "AIME_CONFIG": str(tmp_path / "none.toml")},
    )
    screen = session.wait_for("Restored 3 succeeded")
    assert "● running" in row(screen, "scheduler")
    pid = int((data_dir / "aime.lock").read_text())
    began = time.monotonic()
    os.kill(pid, signum)
    session.wait_gone(timeout=5)
    wait_until_sync(lambda: not running(pid), what=f"pid {pid} gone after the signal")
    assert time.monotonic() - began < 2.5
    assert_clean_database(data_dir / "aime.db")
    # The services were stopped, not forgotten: all still wanted.
    with sqlite3.connect(data_dir / "aime.db") as db:
        assert db.execute("SELECT SUM(is_active) FROM service_states").fetchone() == (3,)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never logged; saw:\n{''.join(seen[-20:])}")


def assert_clean_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        last = db.execute(
            "SELECT to_state, reason FROM transitions WHERE service = 'tracker' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert last == ("stopped", "shutdown"), "services were stopped and the stop recorded"


def test_losing_the_terminal_without_a_signal_leaves_the_services_running(tmp_path):
    """An SSH drop can hang up the terminal with no SIGHUP: let go of it, don't spin, run on."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 35, 120, 0, 0))
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [str(EXECUTABLE), "--demo", "--data-dir", str(data_dir)],
        stdin=slave, stdout=slave, stderr=slave, env={**env_for(tmp_path), "TERM": "xterm-256color"},
        start_new_session=True,  # the pty is its controlling terminal: its hang-up signals nobody here
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 20
    while b"Restored 3 succeeded" not in screen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            screen += os.read(master, 65536)
    assert b"Restored 3 succeeded" in screen
    host = int((data_dir / "aime.lock").read_text())
    assert host != process.pid, "the process the shell waits for is not the one hosting the engine"
    os.close(master)  # the terminal goes away
    try:
        assert process.wait(5) == 0, "the launching process lets the shell go"
        log = data_dir / "aime.log"
        wait_until_sync(lambda: "running on in the background" in log.read_text(), what="the hand-over logged")
        # Seen by a failed write or by the terminal check, whichever comes first: no signal.
        assert "terminal lost (" in log.read_text() and "SIGHUP" not in log.read_text()
        before = _cpu_ticks(host)
        time.sleep(1.0)
        assert _cpu_ticks(host) - before <= 5, "idle once the terminal is gone (no spinning input thread)"
        assert all(os.readlink(f"/proc/{host}/fd/{fd}") == "/dev/null" for fd in (0, 1, 2))
        began = time.monotonic()
        os.kill(host, signal.SIGTERM)
        wait_until_sync(lambda: not running(host), what=f"pid {host} gone after SIGTERM")
        assert time.monotonic() - began < 2.0
    finally:
        if process.poll() is None:
            process.kill()
        try:
            os.kill(host, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert_clean_database(data_dir / "aime.db")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_an_unusable_data_directory_is_one_line_and_a_non_zero_exit(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [str(EXECUTABLE), "--headless", "--data-dir", str(blocker / "data")],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"aime-tui: data directory {blocker / 'data'} cannot be created: Not a directory — fix: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[scheduler]\nmode = "TURBO"\n')
    result = subprocess.run(
        [str(EXECUTABLE), "--headless", "--config", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"aime-tui: {config} [scheduler] mode: expected MAINTENANCE or MASSIVE, got 'TURBO'"
    )
