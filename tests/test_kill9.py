"""kill -9 at random moments while toggling: no acknowledged change is ever lost.

The child and the check are the kill -9 soak's (benchmarks/kill9.py); this runs them
fewer times, at a gentler pace, on every test run.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from waits import wait_until_sync

from benchmarks.common import REPO
from benchmarks.kill9 import allowed_values, check_after_kill, run_until_killed

KILLS = 50
#: The longest pause between two of the child's changes, in seconds.
PAUSE = 0.01


@pytest.mark.xdist_group("cpu")  # busy on a core: one such test at a time
def test_no_acknowledged_toggle_is_lost_across_repeated_kill_9(tmp_path):
    rng = random.Random(20261123)
    data_dir = tmp_path / "data"
    known: dict[str, object] = {}
    acknowledged = mode_changes = 0
    for kill in range(KILLS):
        life = run_until_killed(data_dir, seed=kill, delay=rng.uniform(0.0, 0.25), pause=PAUSE)
        check = check_after_kill(data_dir / "aime.db", life.lines, known, kill)
        assert not check.failures, "\n".join(check.failures)
        acknowledged += check.acknowledged
        mode_changes += check.mode_changes
        known = check.stored
    assert acknowledged > KILLS, "the kills landed while toggles were being acknowledged"
    assert mode_changes > 10, "mode changes were part of the run"


def test_a_kill_during_the_first_change_allows_what_the_database_held_at_open():
    # The first-launch default (wanted) is what a fresh directory holds until the
    # child's first change commits; a kill before its ack may leave either.
    history = ["had scheduler 1", "had scheduler.mode MAINTENANCE", "ready 0.2", "want 1 scheduler 0"]
    assert allowed_values(history, {}) == {"scheduler": {1, 0}, "scheduler.mode": {"MAINTENANCE"}}
    acknowledged = history + ["ack 1", "want 2 scheduler.mode MASSIVE", "ack 2"]
    assert allowed_values(acknowledged, {}) == {"scheduler": {0}, "scheduler.mode": {"MASSIVE"}}


@pytest.fixture
def child(tmp_path):
    """A toggle child on a fresh directory, its output piped to the test; killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.toggle_child", str(tmp_path / "data"), "1", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_child_nobody_reads_any_more_ends(child):
    """A benchmark run killed takes the reading end of the child's output along: the
    child's next line fails, and it ends instead of running on for ever."""
    assert any(line.startswith("ready") for line in iter(child.stdout.readline, "")), "child started"
    child.stdout.close()
    wait_until_sync(lambda: child.poll() is not None, timeout=10, what="the child to end")
