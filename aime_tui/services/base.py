"""The contract every hosted service follows, and the faults it can report.

A service knows how to start, stop and describe itself. Everything about wanting,
retrying, timing out and persisting belongs to the supervisor. No Textual here.

Two ways to tell the supervisor something went wrong: a fault (`report_fault`, or
raising from `start()`) means the service is down; attention (`report_attention`)
means it stays up and connected but waits on the user (an extension not yet approved
in Roon), and clearing it means it carries on by itself, no retry needed.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Coroutine

if TYPE_CHECKING:
    from aime_tui.config import Config

log = logging.getLogger(__name__)


FaultHandler = Callable[["Service", BaseException], None]
#: Told of (service, what the user should do, or None once done, how it got done).
AttentionHandler = Callable[["Service", "str | None", "str | None"], None]


class Service(ABC):
    """A background service hosted on the app's asyncio loop."""

    name: str = ""
    #: Modes the service can run in, if any (the scheduler's MAINTENANCE/MASSIVE).
    modes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._fault_handler: FaultHandler | None = None
        self._attention_handler: AttentionHandler | None = None
        self._tasks: set[asyncio.Task] = set()
        self.mode: str | None = None
        #: What the user must do for the service, which is up and waiting meanwhile; or None.
        self.attention: str | None = None

    @abstractmethod
    async def start(self) -> None:
        """Return once the service is up; raise if it cannot come up."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop background work and release resources. Must be safe to call twice."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """A snapshot of what the service reports (see the design's services table)."""

    def reconfigure(self, config: "Config") -> None:
        """Take the settings to start with: called just before each start, with the config
        file as it is then (a running service is never reconfigured)."""

    async def set_mode(self, mode: str) -> None:
        """Switch mode while running; services with modes override this."""
        if mode not in self.modes:
            raise ValueError(f"{self.name} has no mode {mode!r}")
        self.mode = mode

    async def reset_connections(self) -> None:
        """Drop pooled connections (after a wake, pooled sockets are dead but look fresh)."""

    # -- plumbing shared by every service --------------------------------------------

    def set_fault_handler(self, handler: FaultHandler | None) -> None:
        self._fault_handler = handler

    def report_fault(self, exc: BaseException) -> None:
        """Tell the supervisor the running service broke; it decides about retrying."""
        if self._fault_handler is not None:
            self._fault_handler(self, exc)
        else:
            log.error("%s failed: %s", self.name, exc, exc_info=exc)

    def set_attention_handler(self, handler: AttentionHandler | None) -> None:
        self._attention_handler = handler

    def report_attention(self, reason: str | None, done: str | None = None) -> None:
        """Say the service, still up, waits on the user for `reason`; None once it no longer does.

        `done` says how it got resolved, for the log ("approved in Roon"). A service reports
        this from `start()` (which then returns: it is up) or from its background work.
        Repeating the current value tells nobody anything.
        """
        if reason == self.attention:
            return
        self.attention = reason
        if self._attention_handler is not None:
            self._attention_handler(self, reason, done)
        elif reason is not None:
            log.warning("%s needs attention: %s", self.name, reason)
        else:
            log.info("%s %s", self.name, done or "no longer needs attention")

    def clear_attention(self) -> None:
        """Forget the attention quietly: for `stop()`, where nobody waits any more."""
        self.attention = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run background work; an exception escaping it is reported, never lost."""
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.report_fault(exc)

    async def cancel_tasks(self) -> None:
        """Cancel background work and wait for it to finish unwinding."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
