"""The engine's vocabulary: runtime states, what a service looks like at one moment,
and the events the supervisor tells its listeners (the UI, the logs, the control socket).

Plain data, shared by the supervisor, the control protocol on both sides of the wire,
the reports and the front ends. No behaviour beyond how a summary reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable


class RunState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    NEEDS_ATTENTION = "needs attention"


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

    def line(self) -> str:
        text = (
            f"Restored {len(self.succeeded)} succeeded, {len(self.failed)} failed"
            f" in {self.elapsed:.2f} s"
        )
        if self.failed:
            text += " — " + "; ".join(f"{name}: {why}" for name, why in self.failed.items())
        return text


Event = LogEvent | StateEvent | RestoreSummary
Listener = Callable[[Event], None]
