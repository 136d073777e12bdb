"""Health: is the running instance doing what it was asked to do?

Owns the verdict and the report `aime-tui health` prints:

- healthy: the database answers and every wanted service is running (nothing wanted
  counts as healthy: there is nothing to be failing at);
- degraded: some wanted service is not running (starting, in backoff, needs attention),
  including one that is up but waits on the user (a Roon extension not yet approved):
  not healthy, but not failing either. A service that is merely not set up (no API key,
  no Core address) is not counted: it is listed apart, with the setting it needs;
- unhealthy: the database does not answer, no wanted service is running or up and
  waiting, or no instance runs at all.

Also the tally of warnings and errors the engine logged, for counts and a rate.
No Textual here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Iterable

from aime_tui.core.model import RunState, ServiceView

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
DATABASE_TIMEOUT = 2.0
QUICK_CHECK_EVERY = 300.0
RATE_WINDOW = 3600.0
# Enough to count an hour of a service failing every second; older ones are only totals.
TALLY_KEEP = 4096


class ErrorTally:
    """Counts warnings and errors logged by the engine, in total and over the last hour."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._recent: dict[str, deque[float]] = {"errors": deque(maxlen=TALLY_KEEP), "warnings": deque(maxlen=TALLY_KEEP)}
        self._total = {"errors": 0, "warnings": 0}

    def note(self, level: int) -> None:
        if level >= logging.ERROR:
            kind = "errors"
        elif level >= logging.WARNING:
            kind = "warnings"
        else:
            return
        self._total[kind] += 1
        self._recent[kind].append(self._clock())

    def counts(self) -> dict[str, int]:
        since = self._clock() - RATE_WINDOW
        counts = {}
        for kind, stamps in self._recent.items():
            counts[f"{kind}_total"] = self._total[kind]
            counts[f"{kind}_last_hour"] = sum(1 for at in stamps if at >= since)
        return counts


async def database_reachable(store, *, wall=time.time) -> dict[str, Any]:
    """Check the file on disk is the one open and sound, then ask it a trivial question.

    A file replaced, deleted or damaged under the instance is recovered by the store
    (moved aside, a fresh one carrying on); the report says so.
    """
    checked_at = wall()
    recovered = None
    try:
        if store is None:
            raise RuntimeError("the database is closed")

        async def ask():
            nonlocal recovered
            # Never half a recovery; a probe polled often reads the whole file at most
            # once per QUICK_CHECK_EVERY (the file's identity is checked every time).
            recovered = await asyncio.shield(store.verify(quick_check_within=QUICK_CHECK_EVERY))
            async with store.db.execute("SELECT 1") as cursor:
                return await cursor.fetchone()

        await asyncio.wait_for(ask(), DATABASE_TIMEOUT)
    except asyncio.TimeoutError:
        return {"reachable": False, "checked_at": checked_at, "error": f"no answer within {DATABASE_TIMEOUT:.0f} s"}
    except Exception as exc:  # whatever it is, the answer is "not reachable" and why
        return {"reachable": False, "checked_at": checked_at, "error": str(exc) or type(exc).__name__}
    return {
        "reachable": True, "checked_at": checked_at, "error": None, "recovered": recovered,
        "disk_full": store.disk.full, "refused_writes": store.disk.refused,
    }


def assess(
    views: Iterable[ServiceView],
    *,
    database: dict[str, Any],
    uptime: float,
    errors: dict[str, int],
    summary: str | None,
    now: float,
) -> dict[str, Any]:
    """The health report of a running instance, as plain data."""
    views = list(views)
    # A service that is not set up is not failing: it is reported apart, with what to set.
    not_set_up = {view.name: view.reason or "" for view in views if view.wanted and view.state is RunState.NOT_SET_UP}
    wanted = [view for view in views if view.wanted and view.name not in not_set_up]
    running = [view for view in wanted if view.state is RunState.RUNNING]
    up = [view for view in wanted if view.up or view.state is RunState.RUNNING]
    problems = [
        f"{view.name} is {'up but' if view.up else 'wanted but'} {view.state.value}"
        + (f": {view.reason}" if view.reason else "")
        for view in wanted
        if view.state is not RunState.RUNNING
    ]
    if not database.get("reachable"):
        status = UNHEALTHY
        problems.insert(0, f"database unreachable: {database.get('error')}")
    elif (wanted or not_set_up) and not up:
        status = UNHEALTHY  # nothing wanted is up, or nothing wanted is set up
        if not wanted:
            problems.append("no wanted service is set up")
    elif len(running) < len(wanted):
        status = DEGRADED
    else:
        status = HEALTHY
    if database.get("disk_full"):
        # Reachable, but nothing new can be saved: never healthy.
        status = UNHEALTHY if status == UNHEALTHY else DEGRADED
        problems.insert(0, f"disk full: {database.get('refused_writes')} writes refused so far")
    return {
        "status": status,
        "timestamp": now,
        "uptime": uptime,
        "database": database,
        "services": {
            view.name: {
                "state": view.state.value,
                "wanted": view.wanted,
                "uptime": view.uptime,
                "restarts": view.restarts,
                "last_error": view.last_error,
                # The whole history stored from the service's source, and this session's part.
                "plays_total": view.status.get("plays_total"),
                "plays_new": view.status.get("tracks_found"),
            }
            for view in views
        },
        "errors": errors,
        "problems": problems,
        "not_set_up": not_set_up,
        "summary": summary,
    }


def no_instance(reason: str, *, now: float) -> dict[str, Any]:
    """The report when no instance answers: unhealthy, and why."""
    return {"status": UNHEALTHY, "timestamp": now, "instance": None, "problems": [reason]}
