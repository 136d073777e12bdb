"""The control server: a running instance answers a second shell on `aime.sock`.

Every running instance (dashboard or headless) serves its engine here, speaking the
protocol of protocol.py: a subscriber hears everything on the engine's event bus, the
engine's notices included, as an in-process dashboard does. The socket file is created
mode 0600 in the data directory, and each peer's uid is checked (SO_PEERCRED): only its
owner may talk to it, and root, as systemd's user manager and tmux serve theirs (root can
read the database and trace the process anyway: refusing it would protect nothing). Both sides time out, so neither a stuck peer nor a slow command
hangs the other. A malformed request (not JSON, too long, nested too deep) gets an answer
saying so, and is nobody's error but the sender's. No Textual here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aime_tui.control.protocol import (
    BACKLOG,
    COMMAND_TIMEOUT,
    MAX_LINE,
    REQUEST_TIMEOUT,
    SUBSCRIBER_BACKLOG,
    WRITE_TIMEOUT,
    encode,
    peer_uid,
    event_to_wire,
    summary_to_wire,
    view_to_wire,
)
from aime_tui.core.faults import NothingToDo
from aime_tui.core.model import Event, LogEvent, RestoreSummary
from aime_tui.reports.health import ErrorTally, assess, database_reachable
from aime_tui.store.database import StoreError

if TYPE_CHECKING:
    from aime_tui.engine import Engine

log = logging.getLogger(__name__)
#: Served besides the owner (see the module's docstring).
ROOT = 0


# -- server -----------------------------------------------------------------------------


class ControlServer:
    """Serves one engine's supervisor on a Unix socket until closed."""

    def __init__(self, engine: "Engine", path: Path, *, wall=time.time, clock=time.monotonic) -> None:
        self.engine = engine
        self.path = path
        self._wall = wall
        self._clock = clock
        self.started_at = wall()
        self._started_mono = clock()
        self.errors = ErrorTally(clock=clock)
        self.last_summary: RestoreSummary | None = None
        self._server: asyncio.AbstractServer | None = None
        #: Servers whose socket file was deleted: their clients are still served.
        self._orphans: list[asyncio.AbstractServer] = []
        self._subscribers: set[asyncio.Queue] = set()
        self._wake: asyncio.Task | None = None

    async def start(self) -> None:
        bus = self.engine.bus
        # What the engine said before the socket opened counts too (a database moved aside).
        for event in bus.recent:
            self._note(event)
        bus.subscribe(self._on_event)
        await self._listen()

    async def listen_again(self) -> None:
        """The socket file was deleted (with the data directory): listen on a new one.
        Clients connected to the old one (an attached dashboard) carry on there."""
        if self._server is None:
            return
        old = self._server
        await self._listen()
        self._orphans.append(old)

    async def _listen(self) -> None:
        # The instance lock is held: a socket file left here belongs to a dead process.
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux takes the new file's mode from the socket: 0600 from the first instant,
            # not after a chmod that a fast client could race.
            os.fchmod(listener.fileno(), 0o600)
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            listener.listen(BACKLOG)
            listener.setblocking(False)
            # The backlog again: asyncio listens once more, with its own default of 100.
            self._server = await asyncio.start_unix_server(
                self._serve, sock=listener, limit=MAX_LINE, backlog=BACKLOG
            )
        except BaseException:
            listener.close()
            self.path.unlink(missing_ok=True)
            raise

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        servers, self._orphans = [server, *self._orphans], []
        for each in servers:
            each.close()
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        self.path.unlink(missing_ok=True)
        try:
            await asyncio.wait_for(asyncio.gather(*(each.wait_closed() for each in servers)), 1.0)
        except asyncio.TimeoutError:
            pass  # a client mid-answer; its connection goes with the process

    @property
    def uptime(self) -> float:
        return self._clock() - self._started_mono

    def _note(self, event: Event) -> None:
        if isinstance(event, RestoreSummary):
            self.last_summary = event
        elif isinstance(event, LogEvent):
            self.errors.note(event.level)

    def _on_event(self, event: Event) -> None:
        self._note(event)
        if not self._subscribers:
            return  # events are frequent: serialise them only for a listener
        wire = event_to_wire(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= SUBSCRIBER_BACKLOG:
                self._subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(wire)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid not in (os.geteuid(), ROOT):
                log.warning("control socket: refused a connection from uid %s", uid)
                await self._send(writer, {"ok": False, "error": f"refused: uid {uid} does not own this instance"})
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                except (asyncio.TimeoutError, ConnectionError):
                    return  # silent, or gone
                except ValueError:  # longer than MAX_LINE: the rest of it is unread
                    await self._send(writer, {"ok": False, "error": f"bad request: longer than {MAX_LINE} bytes"})
                    return
                if not line:
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                except (ValueError, RecursionError) as exc:
                    why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    await self._send(writer, {"ok": False, "error": f"bad request: {why}"})
                    return
                if request.get("cmd") == "subscribe":
                    await self._stream(writer)
                    return
                await self._send(writer, await self._answer(request))
        except (ConnectionError, asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(encode(message))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("cmd")
        handler = getattr(self, f"_cmd_{command}", None) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}"}
        try:
            # Shielded: a client that gives up does not cancel a half-done change.
            answer = await asyncio.wait_for(asyncio.shield(handler(request)), COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            return {"ok": False, "error": f"{command} did not finish within {COMMAND_TIMEOUT:.0f} s"}
        except KeyError as exc:
            return {"ok": False, "error": str(exc.args[0]) if exc.args else "unknown name"}
        except NothingToDo as exc:  # already so: the client says it as a notice, not an error
            return {"ok": False, "error": str(exc), "nothing_to_do": True}
        except (ValueError, StoreError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, **answer}

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            # The recent log as lines of their own: one line each stays within MAX_LINE
            # however long the lines were.
            recent = [event_to_wire(event) for event in self.engine.bus.recent]
            status = await self._cmd_status({})
            writer.write(encode({"ok": True, **status, "recent": len(recent)}))
            for wire in recent:
                writer.write(encode(wire))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            while (item := await queue.get()) is not None:
                writer.write(encode(item))
                # Drain only when the buffer fills: a burst of events is one write.
                if queue.empty():
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        finally:
            self._subscribers.discard(queue)

    def _supervisor(self):
        supervisor = self.engine.supervisor
        if supervisor is None:
            raise ValueError("the instance is shutting down")
        return supervisor

    def _service_name(self, request: dict[str, Any]) -> str:
        name = request.get("service")
        if not isinstance(name, str) or not name:
            raise ValueError("which service? (a \"service\" field is required)")
        self._supervisor().view(name)  # KeyError naming the known services
        return name

    # -- commands -----------------------------------------------------------------------

    async def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        supervisor = self._supervisor()
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime": self.uptime,
            "data_dir": str(self.engine.config.data_dir),
            "demo": self.engine.config.demo,
            # Its line says which failures have recovered since (the views are as of now).
            "summary": None if self.last_summary is None else summary_to_wire(
                self.last_summary, supervisor.views(), self._wall()
            ),
            "services": [view_to_wire(view) for view in supervisor.views()],
            "modes": {name: list(supervisor.modes(name)) for name in supervisor.names if supervisor.modes(name)},
        }

    async def _cmd_start(self, request: dict[str, Any]) -> dict[str, Any]:
        name = self._service_name(request)
        await self._supervisor().start(name)  # returns once the commit is durable
        return {"service": name, "wanted": True}

    async def _cmd_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        name = self._service_name(request)
        await self._supervisor().stop(name)
        return {"service": name, "wanted": False}

    async def _cmd_retry(self, request: dict[str, Any]) -> dict[str, Any]:
        name = self._service_name(request)
        await self._supervisor().retry_now(name)
        return {"service": name}

    async def _cmd_restart(self, request: dict[str, Any]) -> dict[str, Any]:
        name = self._service_name(request)
        await self._supervisor().restart_now(name)  # returns once "wanted" is durable
        return {"service": name}

    async def _cmd_mode(self, request: dict[str, Any]) -> dict[str, Any]:
        supervisor = self._supervisor()
        mode = request.get("mode")
        if not isinstance(mode, str):
            raise ValueError("which mode? (a \"mode\" field is required)")
        if request.get("service"):
            name = self._service_name(request)
        else:
            moded = [n for n in supervisor.names if supervisor.modes(n)]
            if len(moded) != 1:
                raise ValueError("which service? (a \"service\" field is required)")
            name = moded[0]
        await supervisor.set_mode(name, mode.upper())
        return {"service": name, "mode": mode.upper()}

    async def _cmd_wake(self, request: dict[str, Any]) -> dict[str, Any]:
        # One recovery at a time, and it finishes even if the asking client goes away.
        if self._wake is None or self._wake.done():
            self._wake = asyncio.ensure_future(self._supervisor().wake())
        summary = await asyncio.shield(self._wake)
        return {"summary": summary_to_wire(summary)}

    async def _cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        # As SIGHUP does: for an instance that cannot be sent one (a dashboard, where it
        # means the terminal went). Shielded by the caller: it finishes if the client goes.
        said = await self.engine.reload()
        return {"lines": [text for text, _ in said], "failed": any(level >= logging.ERROR for _, level in said)}

    async def _cmd_shutdown(self, request: dict[str, Any]) -> dict[str, Any]:
        # Answered first; whoever hosts the engine then stops the services and exits.
        self.engine.request_shutdown()
        return {"pid": os.getpid()}

    async def _cmd_health(self, request: dict[str, Any]) -> dict[str, Any]:
        supervisor = self._supervisor()
        database = await database_reachable(self.engine.store, wall=self._wall)
        return assess(
            supervisor.views(),
            database=database,
            uptime=self.uptime,
            errors=self.errors.counts(),
            summary=None if self.last_summary is None else self.last_summary.line(supervisor.views(), self._wall()),
            now=self._wall(),
        )
