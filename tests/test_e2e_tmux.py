"""End to end: the installed `aime-tui --demo` in tmux, driven by keys, read off the screen."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

EXECUTABLE = Path(sys.executable).parent / "aime-tui"


class TmuxSession:
    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"aime-test-{os.getpid()}"
        self.name = "aime"
        self.tmp_path = tmp_path

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def launch(self, *argv: str, env: dict[str, str]) -> None:
        assignments = [f"{key}={value}" for key, value in env.items()]
        command = " ".join(["env", *assignments, str(EXECUTABLE), *argv])
        self.tmux("new-session", "-d", "-s", self.name, "-x", "120", "-y", "35", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            try:
                screen = self.screen()
            except subprocess.CalledProcessError:
                screen = "(session ended)"
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on screen after {timeout} s:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", self.name], capture_output=True
        ).returncode == 0

    def wait_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"aime-tui still running {timeout} s after q:\n{self.screen()}")
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def row(screen: str, service: str) -> str:
    return next(line for line in screen.splitlines() if f" {service} " in line)


@pytest.fixture
def tmux(tmp_path):
    session = TmuxSession(tmp_path)
    yield session
    session.kill()


def test_toggle_survives_a_relaunch_of_the_installed_demo(tmux, tmp_path):
    assert EXECUTABLE.exists(), f"aime-tui is not installed beside {sys.executable}"
    data_dir = tmp_path / "demo-data"
    env = {
        "AIME_DEMO_FAULTS": "0",
        "AIME_CONFIG": str(tmp_path / "no-config.toml"),
        "TERM": "xterm-256color",
    }
    tmux.launch("--demo", "--data-dir", str(data_dir), env=env)
    screen = tmux.wait_for("Restored 3 succeeded, 0 failed")
    assert "● running" in row(screen, "tracker")

    tmux.keys("x")  # the first row, tracker, is selected
    screen = tmux.wait_for("tracker wanted off (saved)")
    tmux.wait_for("○ stopped")
    tmux.keys("q")
    tmux.wait_gone()

    with sqlite3.connect(data_dir / "aime.db") as db:
        wanted = dict(db.execute("SELECT service_name, is_active FROM service_states"))
    assert wanted == {"tracker": 0, "roon_tracker": 1, "scheduler": 1}

    tmux.launch("--demo", "--data-dir", str(data_dir), env=env)
    screen = tmux.wait_for("Restored 2 succeeded, 0 failed")
    tracker = row(screen, "tracker")
    assert "○ stopped" in tracker and " off " in tracker
    assert "● running" in row(screen, "roon_tracker")
    assert "● running" in row(screen, "scheduler")
    tmux.keys("q")
    tmux.wait_gone()
