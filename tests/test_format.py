"""How moments, track positions and states read, the same in the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime

from aime_tui.core.model import RunState
from aime_tui.format import countdown, state_badge, stamp, track_position, when

NOON = datetime(2026, 11, 23, 12, 0, 0).timestamp()


def test_a_moment_of_today_reads_as_a_time_and_another_days_with_its_date():
    assert when(NOON - 3600, now=NOON) == "11:00:00"
    assert when(NOON - 86400, now=NOON) == "11-22 12:00"
    assert when(NOON + 86400 - 60, now=NOON) == "11-24 11:59"  # a next run tomorrow
    assert when(None, now=NOON) == when(0, now=NOON) == "–"
    assert stamp(NOON) == "2026-11-23 12:00:00"


def test_track_positions_read_as_minutes_and_seconds():
    assert [track_position(s) for s in (0, 59.9, 161, 499, None)] == ["0:00", "0:59", "2:41", "8:19", "?:??"]


def test_every_state_has_a_symbol_and_a_word_and_a_backoff_never_says_0s():
    assert {state: state_badge(state) for state in RunState} == {
        RunState.STOPPED: "○ stopped", RunState.STARTING: "◌ starting", RunState.RUNNING: "● running",
        RunState.BACKOFF: "◌ backoff", RunState.STOPPING: "◌ stopping",
        RunState.NEEDS_ATTENTION: "✖ needs attention", RunState.NOT_SET_UP: "◇ not set up",
    }
    assert state_badge(RunState.BACKOFF, 0.2) == "◌ backoff 1s"
    assert state_badge("backoff", 12.0) == "◌ backoff 12s"  # a wire view's state reads the same


def test_a_countdown_rounds_up_as_the_badge_does():
    """The detail line's "retrying in" and the table's badge stand side by side."""
    for left in (0.2, 4.5, 30.0, 58.1):
        assert state_badge("backoff", left) == f"◌ backoff {countdown(left).replace(' s', 's')}"
    assert countdown(4.5) == "5 s" and countdown(60.4) == "1 min 01 s"


def test_counts_agree_with_their_noun():
    from aime_tui.format import count

    assert [count(n, "warning") for n in (0, 1, 2, 1500)] == ["0 warnings", "1 warning", "2 warnings", "1,500 warnings"]
