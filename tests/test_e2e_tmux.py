"""End to end: the installed `aime-tui --demo` in tmux, driven by keys, read off the screen."""

from __future__ import annotations

import shutil
import sqlite3
import sys

import pytest
from instances import EXECUTABLE, TmuxSession, row

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


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
