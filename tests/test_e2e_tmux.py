"""End to end: the installed `aime-tui --demo` in tmux, driven by keys, read off the screen."""

from __future__ import annotations

import re
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


def test_a_first_time_user_at_80x24_meets_no_cut_text_and_no_dead_key(tmux, tmp_path):
    """The installed demo at 80×24, read off the screen as a user over SSH would."""
    env = {
        "AIME_DEMO_FAULTS": "1",  # the Roon Core answers late at first: a failure, then a recovery
        "AIME_CONFIG": str(tmp_path / "no-config.toml"),
        "TERM": "xterm-256color",
    }
    tmux.launch("--demo", "--data-dir", str(tmp_path / "demo-data"), env=env, size=(80, 24))
    screen = tmux.wait_for("roon_tracker recovered", timeout=30)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if "Service" in line and "State" in line)
    for heading in ("Want", "Mode", "Last check", "Plays", "↺"):
        assert heading in header, f"{heading!r} cut from the table at 80×24:\n{screen}"
    assert lines[-1].rstrip().endswith("? help  q quit"), f"the key bar lost ? or q:\n{screen}"
    summary = tmux.wait_for("(roon_tracker recovered", timeout=10)
    assert re.search(r"roon_tracker recovered \d\d:\d\d:\d\d\)", " ".join(summary.split()))
    assert "Errno" not in summary

    # Every character of the log's lines is on screen, in order, wrapped at word boundaries.
    log = [line[2:-2] for line in summary.splitlines() if line.startswith("│ ") and line.rstrip().endswith("│")]
    shown = "".join("".join(line.split()) for line in log).translate({ord(c): None for c in "▁▂▃▄▅▆▇█"})
    for expected in ("noanswerforregistryinfo(handshaketimedoutafter2.75s),retryin", "Restored2succeeded,1failedin"):
        assert expected in shown, f"{expected!r} not whole in the log:\n{summary}"

    tmux.keys("?")  # help: this app's keys, and ? closes it
    screen = tmux.wait_for("select a service")
    assert "Cursor left" not in screen and "Page Left" not in screen
    tmux.keys("?")
    tmux.wait_gone_text("select a service")

    tmux.keys("X")  # asks once; n leaves everything running
    tmux.wait_for("stop all 3 services? y/n")
    tmux.keys("n")
    tmux.wait_gone_text("y/n")
    assert "wanted off" not in tmux.screen()

    tmux.keys("r")  # tracker is running: the key says so rather than doing nothing
    tmux.wait_for("nothing to retry")
    tmux.keys("q")
    tmux.wait_gone()
