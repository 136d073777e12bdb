"""The engine's vocabulary: runtime states, what a service looks like at one moment,
and the events the supervisor tells its listeners (the UI, the logs, the control socket).

Plain data, shared by the supervisor, the control protocol on both sides of the wire,
the reports and the front ends. No behaviour beyond how a summary reads (with the
services as they are now: which failures have recovered since).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterable

from aime_tui.format import clock


class RunState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    NEEDS_ATTENTION = "needs attention"
    #: Wanted, but missing a setting it cannot run without: not a failure (see NotSetUp).
    NOT_SET_UP = "not set up"


@dataclass(frozen=True)
class ServiceView:
    """What the UI and the CLI show of one service, at one moment."""

    name: str
    state: RunState
    wanted: bool
    mode: str | None
    reason: str | None
    retry_in: float | None
    restarts: int
    status: dict[str, Any]
    uptime: float | None = None
    #: Started and not stopped: running, or needing attention while staying up (it then
    #: carries on by itself once the user has done what `reason` says).
    up: bool = False

    @property
    def last_error(self) -> str | None:
        """What went wrong last: the supervisor's reason, else the service's own report."""
        return self.reason or self.status.get("last_error")


@dataclass(frozen=True)
class LogEvent:
    text: str
    level: int = logging.INFO
    service: str | None = None
    at: float = 0.0


@dataclass(frozen=True)
class StateEvent:
    view: ServiceView


@dataclass(frozen=True)
class RestoreSummary:
    at: float
    trigger: str
    succeeded: tuple[str, ...]
    failed: dict[str, str]
    elapsed: float
    #: Wanted services missing a setting, with what to set: counted apart, not as failures.
    not_set_up: dict[str, str] = field(default_factory=dict)

    def line(
        self, views: Iterable[ServiceView] = (), now: float | None = None, *, recovered_reasons: bool = True
    ) -> str:
        """The summary; given the services as they are `now`, it also says which failed
        services have recovered since, and when (without what went wrong with them, if not
        `recovered_reasons`: the dashboard's short form, its log keeping the full one)."""
        counts = f"Restored {len(self.succeeded)} succeeded, {len(self.failed)} failed"
        if self.not_set_up:
            counts += f", {len(self.not_set_up)} not set up"
        text = f"{counts} in {self.elapsed:.2f} s"
        recovered = self.recovered(views, now)
        reasons = {**self.failed, **self.not_set_up}
        if not recovered_reasons:
            reasons = {name: why for name, why in reasons.items() if name not in recovered}
        if reasons:
            text += " — " + "; ".join(f"{name}: {why}" for name, why in reasons.items())
        if recovered:
            text += " (" + ", ".join(f"{name} recovered {clock(at)}" for name, at in recovered.items()) + ")"
        return text

    def recovered(self, views: Iterable[ServiceView], now: float | None) -> dict[str, float]:
        """The failed (or not set up) services running now, and since when (wall clock)."""
        if now is None:
            return {}
        recovered = {}
        for view in views:
            if view.name in self.failed or view.name in self.not_set_up:
                if view.state is RunState.RUNNING and view.uptime is not None:
                    recovered[view.name] = now - view.uptime
        return recovered


Event = LogEvent | StateEvent | RestoreSummary
Listener = Callable[[Event], None]
