"""The one way tests wait: poll for evidence until a deadline, then fail saying what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

POLL = 0.02


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str | None = None) -> Any:
    """Await until `predicate()` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or _describe(predicate)}")
        await asyncio.sleep(POLL)


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 5.0, what: str | None = None) -> Any:
    """The same for code with no event loop (subprocesses, tmux panes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or _describe(predicate)}")
        time.sleep(POLL)


def _describe(predicate: Callable[[], Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
