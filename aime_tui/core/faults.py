"""The faults a service or a protocol client can report, and what each means to the supervisor.

A `NeedsAttention` is a fault no retry fixes (the message says what to do); a `RetryAfter`
is a transient fault with the wait the other side asked for; anything else is transient.
"""

from __future__ import annotations


class NeedsAttention(Exception):
    """A fault that no retry fixes and the service cannot stay up with (a bad API key, a
    missing setting): the message says what to do. A service that can stay up while the
    user acts (an extension awaiting approval) reports attention instead."""


class NotSetUp(NeedsAttention):
    """A service missing a setting it cannot run without (no API key, no Core address):
    not set up rather than failed. The message says which setting to set, and where."""


class NothingToDo(ValueError):
    """A request that finds nothing to act on (retrying a service that is running): said
    to the user, who asked for something else, and nothing changes."""


class RetryAfter(Exception):
    """A transient fault with a wait the other side asked for (HTTP 429, Last.fm error 29)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay
