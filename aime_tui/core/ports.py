"""What a front end needs of an engine, whether it runs in this process or another.

`ServiceControl` is what the dashboard drives: the supervisor here, or
control/remote.py's stand-in for one in another process. Each provides the
primitives (views, start, stop, retry, set a mode, wake); the commands built from
them (toggle, start all, stop all, cycle the mode) are written here, once.
`EngineHost` is the engine around it: its config, its event bus, opening, the launch
and closing. A command the engine refuses raises ValueError or KeyError here, and
ControlError (control/client.py) over the socket, with the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aime_tui.core.bus import EventBus
from aime_tui.core.model import RestoreSummary, ServiceView

if TYPE_CHECKING:
    from aime_tui.config import Config


class ServiceControl(Protocol):
    @property
    def names(self) -> list[str]: ...

    def view(self, name: str) -> ServiceView: ...

    def views(self) -> list[ServiceView]: ...

    def modes(self, name: str) -> tuple[str, ...]:
        """The modes `name` can run in (none for most services)."""
        ...

    async def start(self, name: str) -> None:
        """Want `name` running; returns once that is committed."""
        ...

    async def stop(self, name: str) -> None: ...

    async def retry_now(self, name: str) -> None:
        """Skip a backoff wait or try again after a fix; NothingToDo (a ValueError) when
        there is nothing to retry (running, starting, not wanted)."""
        ...

    async def restart_now(self, name: str) -> None:
        """Want `name` running, stop it and start it again."""
        ...

    async def set_mode(self, name: str, mode: str) -> None: ...

    async def wake(self) -> RestoreSummary | None:
        """Recover as after a sleep; the summary, or None if it could not be asked for."""
        ...

    # -- the commands built from those, the same for every engine -----------------------

    async def toggle(self, name: str) -> bool:
        """Flip what the user wants; returns the new desired state."""
        if self.view(name).wanted:
            await self.stop(name)
            return False
        await self.start(name)
        return True

    async def start_all(self) -> None:
        for name in self.names:
            await self.start(name)

    async def stop_all(self) -> None:
        for name in self.names:
            await self.stop(name)

    async def cycle_mode(self, name: str) -> str:
        """Switch to the next mode (the first, from none); returns it."""
        modes = self.modes(name)
        if not modes:
            raise ValueError(f"{name} has no modes")
        current = self.view(name).mode
        mode = modes[(modes.index(current) + 1) % len(modes)] if current in modes else modes[0]
        await self.set_mode(name, mode)
        return mode


class EngineHost(Protocol):
    config: "Config"
    #: Everything the engine tells its front ends; subscribe before open() to hear all of it.
    bus: EventBus
    #: The demo's loopback fakes, when this process runs them.
    demo: object | None

    async def open(self) -> ServiceControl: ...

    async def launch(self) -> RestoreSummary | None:
        """After open(): bring the services up as at launch (or show those of the instance attached to)."""
        ...

    async def simulate_slow_wake(self) -> RestoreSummary | None:
        """Demo only (when `demo` is set): a wake on a network slow to come back."""
        ...

    async def close(self) -> None: ...
