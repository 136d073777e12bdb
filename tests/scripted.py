"""A service whose behaviour a test scripts: start ok, fail, hang, or break later; and
a count of any service's status reads (the heartbeat's evidence).

It follows the real Service contract, so the supervisor and the UI treat it exactly like
the Last.fm, Roon and scheduler services; tests use it where they need a fault on cue.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from aime_tui.engine import Engine
from aime_tui.services.base import Service


class ScriptedService(Service):
    def __init__(
        self, name: str, *, start_delay: float = 0.0, modes: tuple[str, ...] = (), hang: bool = False,
        failures: tuple[BaseException, ...] = (),
    ) -> None:
        super().__init__()
        self.name = name
        self.modes = modes
        self.start_delay = start_delay
        self.failures: list[BaseException] = list(failures)  # raised by the next starts, in order
        self.hang = hang  # start never returns
        self.running = False
        self.starts = 0
        self.stops = 0
        self.started_at: list[float] = []

    async def start(self) -> None:
        self.starts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if self.failures:
            raise self.failures.pop(0)
        self.running = True
        self.started_at.append(asyncio.get_running_loop().time())

    async def stop(self) -> None:
        self.stops += 1
        self.running = False

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "tracks_found": 0, "last_check": None}

    def break_now(self, exc: BaseException) -> None:
        """Simulate the service's background work dying."""
        self.running = False
        self.report_fault(exc)


def scripted_engine(config, **behaviour) -> tuple[Engine, dict[str, ScriptedService]]:
    """A real engine (store, supervisor) hosting scripted services named like the real ones.

    `behaviour` maps a service name to ScriptedService keyword arguments.
    """
    made: dict[str, ScriptedService] = {}
    engine_options = behaviour.pop("engine", {})

    def build(config, store):
        for name in ("tracker", "roon_tracker", "scheduler"):
            modes = ("MAINTENANCE", "MASSIVE") if name == "scheduler" else ()
            made[name] = ScriptedService(name, modes=modes, **behaviour.get(name, {}))
        return list(made.values())

    return Engine(config, services=build, **engine_options), made


def count_status_reads(service: Service) -> Callable[[], int]:
    """Counts `service.status()` calls from now on. The heartbeat reads each wanted service's
    status once a pass; otherwise only a state change does (its event carries a view)."""
    reads = 0
    real = service.status

    def status() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return real()

    service.status = status
    return lambda: reads
