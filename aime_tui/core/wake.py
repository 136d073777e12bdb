"""Wake-from-sleep detection by clock drift.

The monotonic clock stops while the machine is suspended; the boot clock (Linux
CLOCK_BOOTTIME) and wall time keep counting. So the gap between them grows by about
the time slept. A 1 s poll that sees the gap grow by more than 2 s has seen a wake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

POLL_EVERY = 1.0
WAKE_THRESHOLD = 2.0


def suspend_gap() -> float:
    """Seconds the monotonic clock has lagged behind a clock that runs during suspend."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    # Elsewhere wall time is the best we have (it also jumps when the clock is set).
    return time.time() - time.monotonic()


class WakeDetector:
    def __init__(
        self,
        on_wake: Callable[[float], Awaitable[object]],
        *,
        gap: Callable[[], float] = suspend_gap,
        threshold: float = WAKE_THRESHOLD,
    ) -> None:
        self._on_wake = on_wake
        self._gap = gap
        self.threshold = threshold
        self._last = gap()

    def check(self) -> float | None:
        """Take one reading; return how long the machine slept if this is a wake."""
        gap = self._gap()
        grown, self._last = gap - self._last, gap
        return grown if grown > self.threshold else None

    async def run(self, every: float = POLL_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            slept = self.check()
            if slept is not None:
                log.info("wake detected after %.1f s asleep", slept)
                try:
                    await self._on_wake(slept)
                except Exception:
                    log.exception("wake recovery failed")
