"""The event bus: one channel for everything the engine tells its front ends.

State changes, log lines, restoration summaries and the engine's notices (a config
file gone, a database moved aside, a lock being waited for) all go out here, to the
in-process dashboard, the headless runner and the control socket alike. A listener
that raises is logged and the others still hear the event. The bus keeps the most
recent log lines and summaries, so a front end that comes later (a dashboard
attaching over the socket) sees what happened before it came.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from aime_tui.core.model import Event, Listener, StateEvent

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, keep: int = 0) -> None:
        self._listeners: list[Listener] = []
        #: The newest log lines and summaries, oldest first (state changes are not kept).
        self.recent: deque[Event] = deque(maxlen=keep)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every event from now on; returns what unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: Event) -> None:
        if not isinstance(event, StateEvent):
            self.recent.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")
