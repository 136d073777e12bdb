"""History and availability: what the transitions table says each service did.

Owns the arithmetic behind "was it running last night?": availability over a window is
the share of the time a service was wanted during which it was actually running,
replayed from the transitions table (runtime rows `stopped → starting → running …` and
desired-state rows `unwanted → wanted`). It also picks out restarts and failures, and
reads everything through its own read-only connection, so the CLI and the history
screen (in a thread) share one code path. No Textual here.

A window starts no earlier than the service's first row. Time a wanted service spent
"not set up" (missing a setting, such as the API key) is counted apart, as the dashboard
and `health` say it apart from failures: it is not downtime, and not in the share. Time
the records cannot vouch for is counted apart as "unrecorded", never guessed: where the instance went away
without recording its services stopping (kill -9, power loss), seen as a row whose
`from` state is not the state the previous row left, or as a service still "running"
when no instance runs.
"""

from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from aime_tui.core.model import RunState
from aime_tui.format import duration, stamp
from aime_tui.store.database import Transition
from aime_tui.store.queries import connect_read_only

DAY = 86400.0
WINDOWS = (("24 h", DAY), ("7 d", 7 * DAY))
WANT_STATES = ("wanted", "unwanted")
RUNTIME_STATES = tuple(state.value for state in RunState)
# A start the supervisor made on its own to bring a service back.
RESTART_REASONS = ("backoff", "heartbeat")
FAILURE_STATES = (RunState.BACKOFF.value, RunState.NEEDS_ATTENTION.value)
_COLUMNS = "service, from_state, to_state, reason, at"
#: The reason of the stops a clean quit records; OFF marks the time until the next launch.
SHUTDOWN = "shutdown"
OFF = "off"
#: Marks the time a service waited for a setting (see RunState.NOT_SET_UP).
NOT_SET_UP = RunState.NOT_SET_UP.value


@dataclass(frozen=True)
class Availability:
    label: str
    seconds: float
    #: Time wanted with a known runtime state, and the part of it spent running.
    wanted: float
    running: float
    #: Time wanted for which the records cannot say whether it ran.
    unrecorded: float
    #: Time wanted while aime-tui itself was not running (after a clean quit, until the
    #: next launch): not the service's downtime, so not in `wanted`.
    not_running: float = 0.0
    #: Time wanted while it lacked a setting it needs: not a failure, so not in `wanted`.
    not_set_up: float = 0.0

    @property
    def share(self) -> float | None:
        return self.running / self.wanted if self.wanted > 0 else None


@dataclass
class ServiceHistory:
    name: str
    windows: list[Availability]
    restarts: dict[str, int]
    failures: list[Transition] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


# -- the arithmetic -----------------------------------------------------------------------


def _steps(initial, changes: Iterable[tuple[float, object]]) -> tuple[list[float], list]:
    """A step function as (times, values): values[i] holds from times[i] on."""
    times, values = [float("-inf")], [initial]
    for at, value in changes:
        times.append(at)
        values.append(value)
    return times, values


def _value_at(steps: tuple[list[float], list], at: float):
    times, values = steps
    return values[bisect.bisect_right(times, at) - 1]


def availability(
    rows: Sequence[Transition],
    *,
    start: float,
    end: float,
    prior_runtime: Transition | None,
    prior_wanted: Transition | None,
    wanted_now: bool,
    alive: bool,
    label: str = "",
) -> Availability:
    """Replay one service's rows (ordered, none after `end`) over [start, end].

    `prior_runtime` / `prior_wanted` are the last rows of each kind before the rows given
    (None if there are none); `wanted_now` is the stored desired state, which held all
    along if no desired-state row exists; `alive` says whether an instance runs now.
    """
    runtime_rows = [row for row in rows if row.to_state in RUNTIME_STATES]
    wanted_rows = [row for row in rows if row.to_state in WANT_STATES]

    # Runtime: True running, False not running, None unrecorded. Every supervisor begins
    # with its services stopped, so with no earlier row the first row's `from` held before.
    if prior_runtime is not None:
        state = prior_runtime.to_state
    elif runtime_rows:
        state = runtime_rows[0].from_state
    else:
        state = RunState.STOPPED.value
    # Runtime: True running, False not running, None unrecorded, OFF aime-tui not running,
    # NOT_SET_UP waiting for a setting.
    initially = NOT_SET_UP if state == NOT_SET_UP else state == RunState.RUNNING.value
    if prior_runtime is not None and prior_runtime.reason == SHUTDOWN and state == RunState.STOPPED.value:
        initially = OFF
    changes: list[list] = [[float("-inf"), initially]]
    for row in runtime_rows:
        if row.from_state != state:
            # The previous instance stopped without saying so: since its last row, unknown.
            changes[-1][1] = None
        if row.to_state == RunState.STOPPED.value and row.reason == SHUTDOWN:
            changes.append([row.at, OFF])  # a clean quit: aime-tui is away until the next launch
        elif row.to_state == NOT_SET_UP:
            if row.from_state == RunState.STARTING.value and changes[-1][1] is False:
                changes[-1][1] = NOT_SET_UP  # the start that found the setting missing
            changes.append([row.at, NOT_SET_UP])
        elif row.from_state == NOT_SET_UP and row.to_state == RunState.STOPPING.value:
            changes.append([row.at, NOT_SET_UP])  # a stop of one that never ran: still not set up
        else:
            changes.append([row.at, row.to_state == RunState.RUNNING.value])
        state = row.to_state
    if not alive and state != RunState.STOPPED.value:
        changes[-1][1] = None  # no instance runs, yet the last row says it does
    running_steps = ([at for at, _ in changes], [value for _, value in changes])

    if prior_wanted is not None:
        initially = prior_wanted.to_state == "wanted"
    elif wanted_rows:
        initially = wanted_rows[0].from_state == "wanted"
    else:
        initially = wanted_now
    wanted_steps = _steps(initially, ((row.at, row.to_state == "wanted") for row in wanted_rows))

    bounds = sorted({start, end, *(at for at in running_steps[0] + wanted_steps[0] if start < at < end)})
    wanted = running = unrecorded = not_running = not_set_up = 0.0
    for lo, hi in zip(bounds, bounds[1:]):
        if not _value_at(wanted_steps, lo):
            continue
        is_running = _value_at(running_steps, lo)
        if is_running is OFF:
            not_running += hi - lo
        elif is_running is NOT_SET_UP:
            not_set_up += hi - lo
        elif is_running is None:
            unrecorded += hi - lo
        else:
            wanted += hi - lo
            if is_running:
                running += hi - lo
    return Availability(label, end - start, wanted, running, unrecorded, not_running, not_set_up)


# -- reading the database -------------------------------------------------------------------


def _columns(db: sqlite3.Connection) -> str:
    """The transition columns to read: a database an older version wrote has no detail."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    return _COLUMNS + (", detail" if version >= 2 else ", ''")


def _one(db: sqlite3.Connection, sql: str, args: tuple) -> Transition | None:
    row = db.execute(sql, args).fetchone()
    return Transition(*row) if row else None


def service_history(
    db: sqlite3.Connection, name: str, *, now: float, alive: bool, limit: int = 20
) -> ServiceHistory:
    """Availability over the last 24 h and 7 d, restarts, failures and recent rows of one service."""
    widest = max(seconds for _, seconds in WINDOWS)
    since = now - widest
    columns = _columns(db)
    rows = [
        Transition(*row)
        for row in db.execute(
            f"SELECT {columns} FROM transitions WHERE service = ? AND at >= ? AND at <= ?"
            " ORDER BY at, id",
            (name, since, now),
        )
    ]
    kind_before = (
        f"SELECT {columns} FROM transitions WHERE service = ? AND at < ? AND to_state IN ({{}})"
        " ORDER BY at DESC, id DESC LIMIT 1"
    )
    runtime_marks = ", ".join("?" * len(RUNTIME_STATES))
    prior_runtime = _one(db, kind_before.format(runtime_marks), (name, since, *RUNTIME_STATES))
    prior_wanted = _one(db, kind_before.format("?, ?"), (name, since, *WANT_STATES))
    (first_at,) = db.execute("SELECT MIN(at) FROM transitions WHERE service = ?", (name,)).fetchone()
    stored = db.execute("SELECT is_active FROM service_states WHERE service_name = ?", (name,)).fetchone()
    wanted_now = bool(stored and stored[0])

    windows = []
    restarts = {}
    for label, seconds in WINDOWS:
        # Before a service's first row there is nothing to replay: the window starts there.
        start = max(now - seconds, first_at if first_at is not None else now)
        windows.append(
            availability(
                rows, start=start, end=now, prior_runtime=prior_runtime, prior_wanted=prior_wanted,
                wanted_now=wanted_now, alive=alive, label=label,
            )
        )
        restarts[label] = sum(
            1 for row in rows
            if row.at >= now - seconds and row.to_state == RunState.STARTING.value and row.reason in RESTART_REASONS
        )
    failures = [row for row in rows if row.to_state in FAILURE_STATES]
    recent = [
        Transition(*row)
        for row in db.execute(
            f"SELECT {columns} FROM transitions WHERE service = ? ORDER BY at DESC, id DESC LIMIT ?",
            (name, limit),
        )
    ]
    return ServiceHistory(name, windows, restarts, failures[-5:], list(reversed(recent)))


def load(
    path: Path, names: Sequence[str], *, now: float, alive: bool, limit: int = 20
) -> list[ServiceHistory]:
    db = connect_read_only(path)
    try:
        return [service_history(db, name, now=now, alive=alive, limit=limit) for name in names]
    finally:
        db.close()


# -- how it reads ---------------------------------------------------------------------------


def percent(window: Availability) -> str:
    """Rounded, except that it says 100.0 % only when the service never was down."""
    share = window.share
    if share is None:
        return "–"
    tenths = round(share * 1000)
    if tenths == 1000 and share < 1:
        tenths = 999
    return f"{tenths / 10:.1f} %"


def transition_parts(row: Transition) -> tuple[str, str, str]:
    """When, what changed, and why: the screen styles them apart, the CLI joins them."""
    why = f"({row.reason}): {row.detail}" if row.detail else f"({row.reason})"
    return stamp(row.at), f"{row.from_state} → {row.to_state}", why


def transition_line(row: Transition) -> str:
    return "  ".join(transition_parts(row))


def window_line(window: Availability, restarts: int) -> str:
    if window.seconds <= 0:
        return f"last {window.label}: nothing recorded"
    text = f"last {window.label}: available {percent(window)}"
    if window.wanted:
        running, wanted = duration(window.running), duration(window.wanted)
        if running == wanted and window.running < window.wanted:
            # Rounded alike, they would say "12 s of 12 s" beside 97.3 %: say the gap.
            text += f" (running all but {duration(window.wanted - window.running)} of {wanted} wanted)"
        else:
            text += f" (running {running} of {wanted} wanted)"
    elif not window.unrecorded and not window.not_running and not window.not_set_up:
        text += " (not wanted)"
    if window.not_set_up >= 1:
        text += f", not set up {duration(window.not_set_up)}"
    if window.not_running >= 1:
        text += f", aime-tui not running {duration(window.not_running)}"
    if window.unrecorded >= 1:
        text += f", {duration(window.unrecorded)} unrecorded"
    return text + f", {restarts} restart{'s' if restarts != 1 else ''}"


def report_lines(history: ServiceHistory) -> list[str]:
    lines = [history.name]
    lines += [f"  {window_line(window, history.restarts[window.label])}" for window in history.windows]
    if history.failures:
        lines.append("  recent failures:")
        lines += [f"    {transition_line(row)}" for row in history.failures]
    lines.append("  transitions:" if history.transitions else "  no transitions recorded")
    lines += [f"    {transition_line(row)}" for row in history.transitions]
    return lines
