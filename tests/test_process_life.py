"""Process life with real processes: the services outlive the terminal (tmux killed, as
an SSH drop), `d` detaches, `aime-tui shutdown` stops, the headless runner answers
signals at once even mid-restoration, and SIGHUP reloads only what changed."""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import time

import pytest
from instances import (
    EXECUTABLE,
    Fakes,
    Terminal,
    cli,
    holder,
    instance_env,
    kill_quietly,
    log_text,
    roon_plays,
    running,
    stop_within,
)
from waits import wait_until_sync

pytestmark = [
    pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def fakes():
    running_fakes = Fakes().start()
    yield running_fakes
    running_fakes.stop()


@pytest.fixture
def instance(tmp_path, fakes):
    """A config pointing at the fakes, a data dir, and whatever instance ran there killed at the end."""
    config = tmp_path / "config.toml"
    config.write_text(fakes.config_text())
    data_dir = tmp_path / "data"
    terminals: list[Terminal] = []
    yield config, data_dir, terminals
    for terminal in terminals:
        terminal.kill()
    if (data_dir / "aime.lock").exists() and running(pid := holder(data_dir)):
        kill_quietly(pid)


def clean_stop_recorded(data_dir) -> bool:
    with sqlite3.connect(data_dir / "aime.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        last = db.execute(
            "SELECT to_state, reason FROM transitions WHERE service = 'roon_tracker' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        wanted = db.execute("SELECT SUM(is_active) FROM service_states").fetchone()[0]
    return last == ("stopped", "shutdown") and wanted == 3


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "log-streaming"])
def test_losing_the_terminal_leaves_every_service_running(instance, busy):
    config, data_dir, terminals = instance
    env = instance_env(config)
    terminal = Terminal("lost")
    terminals.append(terminal)
    terminal.launch(["--data-dir", str(data_dir)], env)
    terminal.wait_for("Restored 3 succeeded")
    pid = holder(data_dir)
    if busy:
        terminal.keys(*["m"] * 40)  # each mode change is a log line, saved and shown
    terminal.kill()
    lost_at = time.monotonic()
    wait_until_sync(lambda: "running on in the background" in log_text(data_dir), 5, "the detach logged")
    before = roon_plays(data_dir)
    wait_until_sync(lambda: roon_plays(data_dir) > before, 15, "a Roon play stored after the terminal went")
    status = cli("status", "--data-dir", str(data_dir), env=env)
    assert status.returncode == 0, status.stderr
    assert f"instance pid {pid}" in status.stdout and status.stdout.count("● running") == 3

    # A dashboard attached since loses its terminal too: the instance is unmoved.
    attached = Terminal("lost")
    terminals.append(attached)
    attached.launch(["--data-dir", str(data_dir)], env)
    attached.wait_for("attached to the running instance")
    attached.kill()
    time.sleep(max(0.0, 5.0 - (time.monotonic() - lost_at)))
    assert running(pid), "alive 5 s after its terminal went"
    assert holder(data_dir) == pid
    assert stop_within(pid, signal.SIGTERM, 2.0) < 2.0
    assert clean_stop_recorded(data_dir)
    assert "Traceback" not in log_text(data_dir), log_text(data_dir)


def test_a_new_dashboard_attaches_q_detaches_and_shutdown_stops(instance):
    config, data_dir, terminals = instance
    env = instance_env(config)
    first = Terminal("first")
    terminals.append(first)
    first.launch(["--data-dir", str(data_dir)], env)
    first.wait_for("Restored 3 succeeded")
    pid = holder(data_dir)
    first.kill()
    wait_until_sync(lambda: "running on in the background" in log_text(data_dir), 5, "the detach logged")

    again = Terminal("again")
    terminals.append(again)
    again.launch(["--data-dir", str(data_dir)], env, then="; echo EXITED $?; sleep 30")
    screen = again.wait_for(f"attached to pid {pid}")
    assert "q detach" in screen and "q quit" not in screen
    again.keys("x")  # acts on the instance: tracker wanted off, saved there
    again.wait_for("tracker wanted off (saved)")
    again.keys("q")
    left = again.wait_for("EXITED 0")
    assert running(pid), "q in an attached dashboard leaves the instance running"
    assert f"detached; the instance (pid {pid}) and its services keep running" in left, left

    stopped = cli("shutdown", "--data-dir", str(data_dir), env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the instance (pid {pid})" in stopped.stdout
    assert not running(pid), "shutdown returns once the process is gone"
    with sqlite3.connect(data_dir / "aime.db") as db:
        wanted = dict(db.execute("SELECT service_name, is_active FROM service_states"))
    assert wanted == {"tracker": 0, "roon_tracker": 1, "scheduler": 1}
    nothing = cli("shutdown", "--data-dir", str(data_dir), env=env)
    assert nothing.returncode == 1 and "no running instance" in nothing.stderr


def test_d_gives_the_prompt_back_and_the_services_keep_running(instance):
    config, data_dir, terminals = instance
    env = instance_env(config)
    terminal = Terminal("detach")
    terminals.append(terminal)
    terminal.launch(["--data-dir", str(data_dir)], env, then="; echo EXITED $?; sleep 30")
    terminal.wait_for("Restored 3 succeeded")
    pid = holder(data_dir)
    terminal.keys("d")
    screen = terminal.wait_for("EXITED 0")
    assert f"detached; the services keep running in the background (pid {pid})" in screen
    assert f"aime-tui shutdown --data-dir {data_dir}" in screen
    before = roon_plays(data_dir)
    wait_until_sync(lambda: roon_plays(data_dir) > before, 15, "a Roon play stored after detaching")
    terminal.kill()  # the shell that launched it goes too
    status = cli("status", "--data-dir", str(data_dir), env=env)
    assert status.returncode == 0 and f"instance pid {pid}" in status.stdout
    assert stop_within(pid, signal.SIGINT, 2.0) < 2.0
    assert clean_stop_recorded(data_dir)


# -- headless ---------------------------------------------------------------------------


@pytest.fixture
def silent_server():
    """Accepts connections and never answers: a service that hangs in its start."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def headless(config, data_dir, env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EXECUTABLE), "--headless", "--data-dir", str(data_dir), "--config", str(config)],
        env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_headless_stops_within_2_s_while_a_service_hangs_in_its_launch_restoration(
    tmp_path, fakes, silent_server, signum
):
    config = tmp_path / "config.toml"
    config.write_text(fakes.config_text(restore_timeout=60).replace(str(fakes.roon.port), str(silent_server)))
    data_dir = tmp_path / "data"
    process = headless(config, data_dir, instance_env(config))
    wait_until_sync(lambda: "tracker restored" in log_text(data_dir), 20, "the tracker restored")
    assert "Restored" not in log_text(data_dir), "roon_tracker still hangs in its start"
    began = time.monotonic()
    process.send_signal(signum)
    assert process.wait(5) == 0
    assert time.monotonic() - began < 2.0
    with sqlite3.connect(data_dir / "aime.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT SUM(is_active) FROM service_states").fetchone() == (3,)


def test_headless_sighup_mid_restoration_reloads_and_sigterm_still_stops(tmp_path, fakes, silent_server):
    config = tmp_path / "config.toml"
    config.write_text(fakes.config_text(restore_timeout=60).replace(str(fakes.roon.port), str(silent_server)))
    data_dir = tmp_path / "data"
    process = headless(config, data_dir, instance_env(config))
    wait_until_sync(lambda: "tracker restored" in log_text(data_dir), 20, "the tracker restored")
    process.send_signal(signal.SIGHUP)
    wait_until_sync(lambda: "reload: read" in log_text(data_dir), 5, "the reload logged")
    assert process.poll() is None, "SIGHUP reloads, it does not stop"
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0
    assert time.monotonic() - began < 2.0


def test_sighup_restarts_only_the_services_whose_settings_changed(tmp_path, fakes):
    config = tmp_path / "config.toml"
    config.write_text(fakes.config_text(catchup_interval=900))
    data_dir = tmp_path / "data"
    process = headless(config, data_dir, instance_env(config))
    try:
        wait_until_sync(lambda: "Restored 3 succeeded" in log_text(data_dir), 20, "the launch restoration")
        process.send_signal(signal.SIGHUP)  # nothing changed
        wait_until_sync(lambda: "no running service's settings changed" in log_text(data_dir), 5)
        config.write_text(fakes.config_text(catchup_interval=600))  # [scheduler] changed; [lastfm], [roon] not
        process.send_signal(signal.SIGHUP)
        wait_until_sync(lambda: "scheduler restarted with its new settings" in log_text(data_dir), 10)
        assert "restarting scheduler (settings changed)" in log_text(data_dir)
        with sqlite3.connect(data_dir / "aime.db") as db:
            reloaded = db.execute("SELECT DISTINCT service FROM transitions WHERE reason = 'reload'").fetchall()
        assert reloaded == [("scheduler",)]
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
