"""The request pace towards one API: a token bucket shared by everything that calls it.

Last.fm suspends API keys that make more than 5 requests a second, so every request of a
process to one endpoint and key (the tracker's polls and the scheduler's backfill alike)
takes a slot from the same bucket. The bucket holds one token: requests start at most
`rate` times a second, with no burst, and no fixed sleep besides. A rate limit answered
by the server (HTTP 429, Last.fm error 29) holds every caller back for the wait asked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class TokenBucket:
    """Hands out request slots `1 / rate` seconds apart (monotonic clock)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next_slot = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for this request's slot; slots are taken in the order they are asked for."""
        async with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """No slot before `seconds` from now: the server asked us to slow down."""
        self._next_slot = max(self._next_slot, self._clock() + seconds)


_buckets: dict[tuple[str, str], TokenBucket] = {}


def bucket_for(api_url: str, api_key: str, rate: float) -> TokenBucket:
    """The process's one bucket for this endpoint and key, at the rate configured last."""
    key = (api_url, api_key)
    bucket = _buckets.get(key)
    if bucket is None:
        bucket = _buckets[key] = TokenBucket(rate)
    bucket.rate = rate
    return bucket
