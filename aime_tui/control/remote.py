"""Attach the dashboard to an instance already running (usually headless) on this data dir.

`RemoteEngine` and `RemoteSupervisor` implement what the dashboard needs of an engine
(core/ports.py) by speaking the control protocol (protocol.py): one subscription
carries state changes, log lines, notices and restoration summaries as they happen, onto
this side's event bus; a status poll every second refreshes what services report (last
check, counts, countdowns), and keys become requests. A refusal raises ControlError and
no answer Unreachable, as with the CLI's client. Closing detaches: the services keep
running.

The dashboard has no log file of its own (aime.log is the instance's), so what goes
wrong on this side is said in its log pane, once: a poll that keeps failing, an instance
that goes away, and once more when it answers again. While the instance is gone the
dashboard shows its last state and looks for one every second; a new instance on the
data directory (a service restart) is attached to again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aime_tui.config import SOCKET_FILE, Config
from aime_tui.control.client import ControlError, Unreachable, open_stream
from aime_tui.control.protocol import (
    peer_uid,
    CLIENT_TIMEOUT,
    WAKE_CLIENT_TIMEOUT,
    encode,
    summary_from_wire,
    view_from_wire,
)
from aime_tui.core.bus import EventBus
from aime_tui.core.faults import NothingToDo
from aime_tui.core.model import Listener, LogEvent, RestoreSummary, ServiceView, StateEvent
from aime_tui.core.ports import EngineHost, ServiceControl
from aime_tui.services.registry import SERVICES

POLL_EVERY = 1.0
# While the instance is gone: how often to look for one again.
REATTACH_EVERY = 1.0


class RemoteSupervisor(ServiceControl):
    def __init__(self, path: Path, bus: EventBus | None = None, *, wall=time.time) -> None:
        self.path = path
        self.bus = EventBus() if bus is None else bus
        self._wall = wall  # stamps what this side says in the log
        self._views: dict[str, ServiceView] = {}
        self._tasks: list[asyncio.Task] = []
        self._writer: asyncio.StreamWriter | None = None
        self.pid: int | None = None
        self.summary: RestoreSummary | None = None
        self._modes: dict[str, tuple[str, ...]] | None = None  # None: the instance did not say
        self._recent: list[dict[str, Any]] = []
        self._last_at = 0.0  # when the newest log line or summary shown was made
        self._streaming = False  # the event stream is open
        self._failing_since: float | None = None  # when the status polls began to fail
        # What the log last said is wrong ("poll", "stream"), until it says it is over.
        self._trouble: str | None = None
        self._unreadable_said = False

    # -- the connection ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The instance's event stream is open (it is gone, or not attached yet, if not)."""
        return self._streaming

    async def connect(self) -> None:
        reader, self._recent = await self._subscribe()
        self._tasks = [
            asyncio.create_task(self._follow(reader), name="remote-events"),
            asyncio.create_task(self._poll(), name="remote-poll"),
        ]

    async def _subscribe(self) -> tuple[asyncio.StreamReader, list[dict[str, Any]]]:
        """Open the event stream: the instance's status, then its recent log lines."""
        reader, writer = await asyncio.wait_for(open_stream(self.path, CLIENT_TIMEOUT), CLIENT_TIMEOUT)
        _check_peer(writer, self.path)
        try:
            writer.write(encode({"cmd": "subscribe"}))
            first = await self._read(reader)
            recent = [await self._read(reader) for _ in range(int(first.get("recent") or 0))]
            self._take_status(first)
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        self._streaming = True
        return reader, recent

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
        line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
        if not line:
            raise ValueError("the instance closed the connection")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"not a JSON object: {line[:80]!r}")
        return message

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _take_status(self, answer: dict[str, Any]) -> None:
        self.pid = answer.get("pid")
        if answer.get("summary"):
            self.summary = summary_from_wire(answer["summary"])
        for wire in answer.get("services", []):
            self._views[wire["name"]] = view_from_wire(wire)
        if "modes" in answer:
            self._modes = {name: tuple(modes) for name, modes in answer["modes"].items()}

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        """Take the instance's events; when it goes, say so, and attach again once one answers."""
        while True:
            try:
                while line := await reader.readline():
                    self._take_line(line)
                why = "went away"
            except (OSError, ValueError) as exc:  # a reset connection, a line beyond MAX_LINE
                why = f"stopped talking ({_describe(exc)})"
            self._streaming = False
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._trouble_begins(
                "stream",
                f"the instance (pid {self.pid}) {why}: the dashboard shows its last state"
                " and attaches again when an instance answers",
                logging.ERROR,
            )
            reader = await self._reattach()

    async def _reattach(self) -> asyncio.StreamReader:
        was = self.pid
        while True:
            await asyncio.sleep(REATTACH_EVERY)
            try:
                reader, recent = await self._subscribe()
            except (OSError, asyncio.TimeoutError, ValueError, KeyError, TypeError):
                continue  # still gone: said already
            break
        for view in self._views.values():
            self._emit(StateEvent(view))
        # What the instance logged while this dashboard was away (a new instance's
        # launch and restoration): the lines not shown yet.
        for event in recent:
            if isinstance(event, dict) and (event.get("at") or 0) > self._last_at:
                self._take_wire(event)
        self._failing_since = None
        if self.pid == was:
            self._trouble_ends(f"attached again to the instance (pid {self.pid})")
        else:
            self._trouble_ends(f"attached to the new instance (pid {self.pid}); q detaches and leaves it running")
        return reader

    def _take_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError as exc:
            self._unreadable(exc)
            return
        self._take_wire(event)

    def _take_wire(self, event: Any) -> None:
        """One event; one the dashboard cannot read (another version's?) is skipped, said once."""
        try:
            self._take_event(dict(event))
        except (KeyError, TypeError, ValueError) as exc:
            self._unreadable(exc)

    def _unreadable(self, exc: Exception) -> None:
        if not self._unreadable_said:
            self._unreadable_said = True
            text = f"skipped an event from the instance this dashboard cannot read ({_describe(exc)})"
            self._say(text, logging.WARNING)

    def _take_event(self, event: dict[str, Any]) -> None:
        kind = event.pop("event", None)
        if kind == "state":
            view = view_from_wire(event["view"])
            self._views[view.name] = view
            self._emit(StateEvent(view))
        elif kind == "log":
            self._emit(LogEvent(event["text"], event["level"], event.get("service"), event["at"]))
            self._last_at = max(self._last_at, event["at"])
        elif kind == "summary":
            self.summary = summary_from_wire(event)
            self._emit(self.summary)
            self._last_at = max(self._last_at, self.summary.at)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_EVERY)
            if not self._streaming:
                continue  # the instance is gone: _follow looks for it
            began = time.monotonic()
            try:
                self._take_status(await self._request({"cmd": "status"}))
            except (Unreachable, ControlError, ValueError, KeyError, TypeError) as exc:  # no answer, a refusal, an odd answer
                # Said once it has lasted a poll interval: not a single miss, nor an instance
                # on its way out (its event stream ends a moment later, which says more).
                self._failing_since = self._failing_since or began
                if time.monotonic() - self._failing_since >= POLL_EVERY:
                    self._trouble_begins(
                        "poll", f"status poll failed: {_describe(exc)}; the services shown may be out of date",
                        logging.WARNING,
                    )
                continue
            self._failing_since = None
            if self._trouble == "poll":
                self._trouble_ends(f"the instance (pid {self.pid}) answers status polls again")

    # -- saying what goes wrong, once ------------------------------------------------------

    def _say(self, text: str, level: int = logging.INFO) -> None:
        self._emit(LogEvent(text, level, at=self._wall()))

    def _trouble_begins(self, kind: str, text: str, level: int) -> None:
        """Say what is wrong unless the log already says so, or says something worse:
        a lost instance outranks its failing polls."""
        if self._trouble == kind or self._trouble == "stream":
            return
        self._trouble = kind
        self._say(text, level)

    def _trouble_ends(self, text: str) -> None:
        if self._trouble is not None:
            self._trouble = None
            self._say(text)

    async def _request(self, message: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
        """One request on its own connection: Unreachable if no answer, ControlError if refused."""
        try:
            reader, writer = await asyncio.wait_for(open_stream(self.path, timeout), timeout)
            _check_peer(writer, self.path)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unreachable(f"the instance does not answer on {self.path}: {exc}") from None
        try:
            writer.write(encode(message))
            answer = json.loads(await asyncio.wait_for(reader.readline(), timeout))
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            raise Unreachable(f"no answer to {message['cmd']} from the instance: {str(exc) or 'timed out'}") from None
        finally:
            writer.close()
        if not answer.pop("ok", False):
            if answer.get("nothing_to_do"):  # already so: said as a notice, not an error
                raise NothingToDo(answer.get("error") or f"nothing to {message['cmd']}")
            raise ControlError(answer.get("error") or f"{message['cmd']} refused")
        return answer

    # -- what the dashboard reads --------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self.bus.subscribe(listener)

    def _emit(self, event) -> None:
        self.bus.emit(event)

    @property
    def names(self) -> list[str]:
        return list(self._views)

    def view(self, name: str) -> ServiceView:
        return self._views[name]

    def views(self) -> list[ServiceView]:
        return list(self._views.values())

    def modes(self, name: str) -> tuple[str, ...]:
        if self._modes is not None or name not in self._views:
            return (self._modes or {}).get(name, ())
        # An instance too old to list its modes: a service with a mode on the wire has its usual ones.
        if not self._views[name].mode:
            return ()
        return next((spec.modes for spec in SERVICES if spec.name == name), ())

    # -- what the keys do ----------------------------------------------------------------

    async def replay_recent(self) -> RestoreSummary | None:
        """Attaching restores nothing: show the running instance's recent log and summary."""
        summary_shown = False
        for event in self._recent:
            summary_shown |= event.get("event") == "summary"
            self._take_event(dict(event))
        self._recent = []
        if self.summary is not None and not summary_shown:
            self._emit(self.summary)
        self._say(f"attached to the running instance (pid {self.pid}); q detaches and leaves it running")
        return self.summary

    async def start(self, name: str) -> None:
        await self._request({"cmd": "start", "service": name})

    async def stop(self, name: str) -> None:
        await self._request({"cmd": "stop", "service": name})

    async def retry_now(self, name: str) -> None:
        await self._request({"cmd": "retry", "service": name})

    async def restart_now(self, name: str) -> None:
        await self._request({"cmd": "restart", "service": name})

    async def set_mode(self, name: str, mode: str) -> None:
        await self._request({"cmd": "mode", "service": name, "mode": mode})

    async def shutdown(self) -> int | None:
        """Ask the instance to stop; its pid. A refusal or a silence is a ValueError."""
        answer = await self._request({"cmd": "shutdown"})
        return answer.get("pid", self.pid)

    async def wake(self) -> RestoreSummary | None:
        # Runs as a worker: a refusal goes to the log rather than ending the dashboard.
        try:
            answer = await self._request({"cmd": "wake"}, timeout=WAKE_CLIENT_TIMEOUT)
        except (ControlError, Unreachable) as exc:
            self._say(str(exc), logging.ERROR)
            return None
        return summary_from_wire(answer["summary"])


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class RemoteEngine(EngineHost):
    """The engine's face for the dashboard, backed by another process's engine."""

    def __init__(self, config: Config, *, wall=time.time) -> None:
        self.config = config
        self.bus = EventBus()
        self._wall = wall
        self.demo = None  # the demo's fakes live in the other process
        self.supervisor: RemoteSupervisor | None = None

    async def open(self) -> RemoteSupervisor:
        supervisor = RemoteSupervisor(self.config.data_dir / SOCKET_FILE, self.bus, wall=self._wall)
        try:
            await supervisor.connect()
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            await supervisor.close()
            raise OSError(f"cannot attach to the running instance: {exc}") from None
        self.supervisor = supervisor
        return supervisor

    def subtitle(self) -> str:
        """What the title bar says: which instance this dashboard shows, or that it is gone."""
        remote = self.supervisor
        if remote is None or remote.pid is None:
            return "attached"
        if not remote.connected:
            return f"pid {remote.pid} gone: attaching again when an instance answers"
        return f"attached to pid {remote.pid}"

    async def launch(self) -> RestoreSummary | None:
        """The instance launched already (its heartbeat and wake detection run there)."""
        assert self.supervisor is not None
        return await self.supervisor.replay_recent()

    async def simulate_slow_wake(self) -> RestoreSummary | None:
        raise ControlError("a slow wake is simulated only by the demo's own instance")

    async def shutdown(self) -> int | None:
        """Stop the instance (`aime-tui shutdown`); its pid."""
        if self.supervisor is None:
            raise ValueError("not attached to an instance")
        return await self.supervisor.shutdown()

    async def close(self) -> None:
        """Detach; the instance and its services keep running."""
        if self.supervisor is not None:
            await self.supervisor.close()
            self.supervisor = None


def _check_peer(writer: asyncio.StreamWriter, path: Path) -> None:
    """Send nothing to an instance that is not the user's own (a swapped socket)."""
    uid = peer_uid(writer.get_extra_info("socket"))
    if uid != os.geteuid():
        writer.close()
        raise PermissionError(f"{path} is served by uid {uid}, not by you")
