"""How durations, times and states read, wherever they are shown.

The CLI, the dashboard, the history (screen and command) and the engine's own log
lines all format through here, so a period, a moment and a state read the same
everywhere. Plain strings only (no Rich, no Textual): the dashboard adds colour from
STATE_COLOUR, and colour never carries meaning alone: every state has a symbol and a word.
"""

from __future__ import annotations

import math
from datetime import datetime

NONE = "–"

# Keyed by the state's value: RunState is a StrEnum, and the wire carries the value.
STATE_SYMBOL = {
    "running": "●", "starting": "◌", "stopping": "◌", "backoff": "◌", "stopped": "○", "needs attention": "✖",
    "not set up": "◇",
}
STATE_COLOUR = {
    "running": "green", "starting": "cyan", "stopping": "cyan", "backoff": "yellow",
    "stopped": "bright_black", "needs attention": "bold red", "not set up": "yellow",
}


def duration(seconds: float) -> str:
    """Durations and periods as people say them: 0.4 s, 8 s, 3 min 05 s, 15 min, 6 h 12 min, 2 h."""
    if seconds < 1:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def countdown(seconds: float) -> str:
    """A wait still to run, rounded up as the state badge rounds it: 4.5 s left reads
    "5 s" beside "backoff 5s", never less than is left."""
    return duration(math.ceil(seconds))


def optional_duration(seconds: float | None) -> str:
    return NONE if seconds is None else duration(seconds)


def clock(epoch: float) -> str:
    """The time of day of a moment of today: log lines, the title bar's clock."""
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def when(epoch: float | None, now: float | None = None) -> str:
    """A moment near now (last check, next run): the time of day, with the date if not today."""
    if not epoch:
        return NONE
    moment = datetime.fromtimestamp(epoch)
    today = datetime.fromtimestamp(now).date() if now is not None else datetime.now().date()
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%m-%d %H:%M")


def stamp(epoch: float) -> str:
    """A moment of record (a transition, a play): date and time in full."""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def count(number: int, noun: str, plural: str | None = None) -> str:
    """'1 warning', '2 warnings', '0 errors': the noun agrees with the number."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def track_position(seconds: float | None) -> str:
    """Where a track is, or how long it is: 2:41, 8:19 (?:?? when unknown)."""
    if seconds is None:
        return "?:??"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def state_label(state: str, retry_in: float | None = None) -> str:
    """The state's word; a backoff says when it retries (never "0s" while it waits)."""
    if state == "backoff" and retry_in is not None:
        return f"backoff {math.ceil(retry_in)}s"
    return str(state)


def state_badge(state: str, retry_in: float | None = None) -> str:
    """Symbol and word: "● running", "◌ backoff 5s"."""
    return f"{STATE_SYMBOL.get(state, '?')} {state_label(state, retry_in)}"
