"""The engine: config, store, services, supervisor and control socket wired together, with no UI.

It is the composition root, so it sits above the layers it wires (core, store, services,
control) and below the front ends that host it.

The TUI, headless mode and the tests all host the same engine on their asyncio loop.
In demo mode it also starts the loopback fakes and points the services at them.

Notifications ([notify]) and the HTTP probes ([http]) follow the config file: a reload
(SIGHUP), or the file read again before a start, turns them on or off, sends to the new
URLs, or moves the probes to the new address, each change said in one line.

A data directory deleted whole while running (rm -rf) is noticed where a replaced
database is (a write, a wake, a health check, and a look every FILE_CHECK_EVERY seconds,
so that an idle instance takes its lock again before a second launch could start beside
it): the store makes it again with a fresh database holding what the instance held, and
the engine makes the rest again (the log file, the instance lock, the control socket),
all said in one line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from aime_tui.config import SOCKET_FILE, Config, ConfigError, load_config, mask_url
from aime_tui.control.protocol import RECENT_LOG_LINES
from aime_tui.control.server import ControlServer
from aime_tui.core.bus import EventBus
from aime_tui.core.files import UnsafeDataDir, ensure_private_dir, tighten
from aime_tui.core.instance import AlreadyRunning, InstanceLock
from aime_tui.core.logfile import PrivateLogHandler
from aime_tui.core.model import LogEvent, RestoreSummary
from aime_tui.core.ports import EngineHost
from aime_tui.core.supervisor import Supervisor
from aime_tui.core.wake import WakeDetector
from aime_tui.format import duration
from aime_tui.services.base import Service
from aime_tui.services.registry import build_services, settings_of
from aime_tui.store.database import Store, StoreError

if TYPE_CHECKING:
    from aime_tui.control.probes import ProbeServer
    from aime_tui.demo.environment import DemoEnvironment
    from aime_tui.notify import Notifier

log = logging.getLogger(__name__)

#: How long closing waits for the HTTP probes to finish loading (then closes them).
PROBES_START_TIMEOUT = 5.0
#: Seconds between looks at the data directory's files (two stat calls) while running.
FILE_CHECK_EVERY = 30.0


class Engine(EngineHost):
    def __init__(
        self,
        config: Config,
        *,
        services: Callable[[Config, Store], list[Service]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        env: Mapping[str, str] | None = None,
        file_check_every: float = FILE_CHECK_EVERY,
    ) -> None:
        self.config = config
        self._file_check_every = file_check_every
        #: The environment the config was read with, to read it again the same way.
        self._env = os.environ if env is None else env
        self._config_stamp = _stamp(config.config_path)
        #: Everything the engine tells its front ends: the supervisor's events and the
        #: engine's own notices, some from before the supervisor exists (a locked or moved
        #: database). Its recent lines are what a dashboard attaching later is shown first.
        self.bus = EventBus(keep=RECENT_LOG_LINES)
        self._build_services = services or build_services
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self.demo: DemoEnvironment | None = None
        self.store: Store | None = None
        self.supervisor: Supervisor | None = None
        self.control: ControlServer | None = None
        self.notifier: Notifier | None = None
        self.probes: ProbeServer | None = None
        self._probes_starting: asyncio.Task | None = None
        #: One change of [notify] / [http] at a time; none once closing.
        self._telling = asyncio.Lock()
        self._applying: set[asyncio.Task] = set()
        self._closing = False
        self._opened_at = clock()
        #: The last restoration's summary, and whether the launch one has finished:
        #: what probes turned on later report.
        self.last_summary: RestoreSummary | None = None
        self.launch_restored = False
        self.bus.subscribe(self._note_summary)
        self._background: list[asyncio.Task] = []
        #: The instance lock taken again on a data directory made again (the first one is
        #: the launcher's, on a file that is gone).
        self._lock_again: InstanceLock | None = None
        self._lock_notice_at = 0.0
        #: The settings each service last started with, to tell which a reload changes.
        self._started_with: dict[str, object] = {}
        #: Set by `aime-tui shutdown` (or a signal): whoever hosts the engine then closes it.
        self.shutdown_requested = asyncio.Event()

    def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    async def open(self) -> Supervisor:
        """Open the store and load desired states; restoration is a separate step."""
        asyncio.get_running_loop().set_exception_handler(_log_unhandled)
        if self.config.demo:
            # Imported here: the fakes (a WebSocket server among them) cost a real
            # launch some 80 ms of imports for nothing.
            from aime_tui.demo.environment import DemoEnvironment

            self.demo = DemoEnvironment(faults=self.config.demo_faults)
            self.config = await self.demo.start(self.config)
        self._secure_data_dir()
        for warning in self.config.warnings:
            self._notice(warning, logging.WARNING)
        self.store = await Store.open(self.config.db_path, clock=self._wall, on_wait=self._waiting_for_lock)
        self.store.say = self._notice  # a full disk, a replaced file
        self.store.after_recovery = self._remake_files
        if self.store.moved_aside is not None:
            self._notice(
                f"the database was unreadable: moved aside to {self.store.moved_aside}; "
                "started a fresh one",
                logging.ERROR,
            )
        if not self.config.demo and not self.config.config_path.exists():
            self._notice(
                f"no config file at {self.config.config_path}: `aime-tui init` writes one to"
                " fill in; `aime-tui --demo` shows everything working without an account"
            )
        await self.store.ensure_defaults(self.config.first_launch_defaults())
        self.supervisor = Supervisor(
            self.store,
            self._build_services(self.config, self.store),
            restore_timeout=self.config.restore_timeout,
            clock=self._clock,
            wall=self._wall,
            rng=self._rng,
            before_start=self._configure_for_start,
            bus=self.bus,
        )
        await self.supervisor.load()
        await self._serve_control()
        self._start_telling()
        return self.supervisor

    def _secure_data_dir(self) -> None:
        """Refuse a data directory others own or can write; narrow modes wider than private."""
        try:
            ensure_private_dir(self.config.data_dir)
        except UnsafeDataDir as exc:
            raise StoreError(str(exc)) from None
        changed = tighten(self.config.data_dir)
        if changed:
            self._notice(
                f"made private (others could read them): {', '.join(changed)}", logging.WARNING
            )

    async def _serve_control(self) -> None:
        """Answer a second shell on aime.sock; an instance without it still runs."""
        path = self.config.data_dir / SOCKET_FILE
        server = ControlServer(self, path, wall=self._wall, clock=self._clock)
        try:
            await server.start()
        except OSError as exc:
            self._notice(f"control socket {path} unavailable: {exc}", logging.WARNING)
            return
        self.control = server

    def _note_summary(self, event) -> None:
        if isinstance(event, RestoreSummary):
            self.last_summary = event
            self.launch_restored |= event.trigger == "launch"

    def _start_telling(self) -> None:
        """Notifications and the HTTP probes, each only when configured: a launch without
        them imports neither Apprise nor a web server."""
        if self.config.notify.urls:
            self._start_notifier()
        if self.config.http.enabled:
            server = self._probe_server()
            self._probes_starting = asyncio.create_task(self._serve_probes(server), name="probes")

    def _start_notifier(self) -> None:
        from aime_tui.notify import Notifier

        assert self.supervisor is not None
        self.notifier = Notifier(
            self.supervisor,
            self.config.notify.urls,
            after=self.config.notify.after,
            # It logs its notices itself: to the bus only, not the log a second time.
            on_notice=lambda text, level: self.bus.emit(LogEvent(text, level, at=self._wall())),
        )
        self.notifier.start()

    def _probe_server(self) -> ProbeServer:
        """A server for [http] listen, following the supervisor's events from now."""
        from aime_tui.control.probes import ProbeServer

        http = self.config.http
        server = ProbeServer(
            self, http.host, http.port, wall=self._wall, clock=self._clock, started=self._opened_at,
            ready=self.launch_restored, last_summary=self.last_summary,
        )
        server.watch()
        return server

    async def _serve_probes(self, server: ProbeServer, said: str = "") -> None:
        """Listen on [http] listen: beside the restoration, so it does not wait for the import."""
        address = server.address
        try:
            await server.start()
        except OSError as exc:
            await server.close()
            self._notice(f"{said}http {address} unavailable: {_why(exc)}; no probes served", logging.ERROR)
            return
        except ImportError as exc:
            await server.close()
            self._notice(f"{said}http {address} off: {exc} (pip install aiohttp prometheus-client)", logging.ERROR)
            return
        self.probes = server
        self._notice(f"{said}serving /health, /ready and /metrics on http://{address}")

    async def _apply_telling(self, said: str = "") -> None:
        """Bring notifications and the probes to what the config says now."""
        async with self._telling:
            if self._closing:
                return
            await self._apply_notify(said)
            await self._apply_http(said)

    def _apply_later(self) -> None:
        self._in_background(self._apply_telling())

    def _in_background(self, work) -> None:
        """Run `work` beside the caller; close() gives what is still running a second."""
        task = asyncio.ensure_future(work)
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)

    async def _apply_notify(self, said: str) -> None:
        wanted, notifier = self.config.notify, self.notifier
        if notifier is None:
            if wanted.urls:
                self._start_notifier()
                self._notice(f"{said}notifications on: sent to {_masked(wanted.urls)}")
            return
        if not wanted.urls:
            self.notifier = None
            self._notice(f"{said}notifications off ([notify] urls is empty)")
            await notifier.close()  # what was still waiting goes to the URLs it was meant for
            return
        changes = []
        if wanted.urls != notifier.urls:
            changes.append(f"now sent to {_masked(wanted.urls)}")
        if wanted.after != notifier.after:
            changes.append(f"told after {duration(wanted.after)} of failing (was {duration(notifier.after)})")
        if changes:
            notifier.retarget(wanted.urls, after=wanted.after)
            self._notice(f"{said}notifications {'; '.join(changes)}")

    async def _apply_http(self, said: str) -> None:
        wanted = self.config.http
        if self._probes_starting is not None:  # the launch's server, still loading
            await asyncio.wait({self._probes_starting}, timeout=PROBES_START_TIMEOUT)
            self._probes_starting = None
        probes = self.probes
        if probes is None:
            if wanted.enabled:
                await self._serve_probes(self._probe_server(), said)
            return
        if not wanted.enabled:
            self.probes = None
            await probes.close()
            self._notice(f"{said}http probes off (no longer served on {probes.address})")
            return
        if (wanted.host, wanted.port) == (probes.host, probes.port):
            return
        from aime_tui.control.probes import ProbesLost  # loaded already: probes are on

        before = probes.address
        try:
            await probes.move(wanted.host, wanted.port)
        except ProbesLost as exc:
            self.probes = None
            await probes.close()
            self._notice(
                f"{said}http {wanted.address} unavailable: {exc}; {before} (closed first: same port)"
                " could not be taken back: no probes served", logging.ERROR,
            )
        except OSError as exc:
            self._notice(f"{said}http {wanted.address} unavailable: {_why(exc)}; still serving on {before}",
                         logging.ERROR)
        else:
            self._notice(f"{said}http probes moved from {before} to {wanted.address}")

    def _remake_files(self) -> str:
        """After the store recovered: make again what else of ours is gone from the data
        directory (deleted with it). Returns what it did, in words, for the store's line."""
        remade, missing = [], []
        log_path = os.path.abspath(self.config.log_path)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, PrivateLogHandler) and handler.baseFilename == log_path:
                if handler.reopen_if_gone():
                    remade.append(self.config.log_path.name)
        lock_path = self.config.lock_path
        if not os.path.lexists(lock_path):
            try:
                lock = InstanceLock(lock_path).acquire()
            except AlreadyRunning as exc:
                missing.append(f"{lock_path.name} is another instance's now ({exc})")
            except OSError as exc:
                missing.append(f"{lock_path.name} could not be made: {exc.strerror or exc}")
            else:
                if self._lock_again is not None:
                    self._lock_again.release()
                self._lock_again = lock
                remade.append(lock_path.name)
        control = self.control
        if control is not None and not os.path.lexists(control.path):
            self._in_background(self._listen_again(control))
            remade.append(control.path.name)
        words = [f"made {', '.join(remade)} again"] if remade else []
        return "; ".join(words + missing)

    async def _listen_again(self, control: ControlServer) -> None:
        try:
            await control.listen_again()
        except OSError as exc:
            self._notice(f"control socket {control.path} unavailable: {exc.strerror or exc}", logging.WARNING)

    def _configure_for_start(self, service: Service) -> None:
        """Before each start: the service starts with the config file as it is now, so
        that fixing a setting then retrying (r) just works. Services already running keep
        the settings they started with."""
        self._reread_config()
        service.reconfigure(self.config)
        self._started_with[service.name] = settings_of(self.config, service.name)

    async def reload(self) -> list[tuple[str, int]]:
        """Read the config file again now (SIGHUP, `aime-tui reload`), restart the services
        that are up and whose settings changed, and apply [notify] and [http]; returns the
        lines it said, with their levels. A file that does not read is said, and the settings
        read before are kept."""
        said: list[tuple[str, int]] = []
        unsubscribe = self.bus.subscribe(
            lambda event: isinstance(event, LogEvent) and event.text.startswith("reload: ")
            and said.append((event.text, event.level))
        )
        try:
            await self._reload()
        finally:
            unsubscribe()
        return said

    async def _reload(self) -> None:
        supervisor = self.supervisor
        if supervisor is None:
            return
        path = self.config.config_path
        if self.config.demo:
            self._notice("reload: the demo's settings are its own; nothing to read again")
            return
        try:
            fresh = load_config(config_path=path, data_dir=self.config.data_dir, env=self._env)
        except ConfigError as exc:
            self._notice(f"reload: {exc} (keeping the settings read before)", logging.ERROR)
            return
        self._config_stamp = _stamp(path)
        self.config = fresh
        supervisor.restore_timeout = fresh.restore_timeout
        changed = [
            view.name
            for view in supervisor.views()
            if view.name in self._started_with
            and self._started_with[view.name] != settings_of(fresh, view.name)
            and view.state not in ("stopped", "stopping", "backoff")
        ]
        if changed:
            self._notice(f"reload: read {path} again; restarting {', '.join(changed)} (settings changed)")
        else:
            self._notice(f"reload: read {path} again; no running service's settings changed")
        await asyncio.gather(
            *(supervisor.restart(name, "reload") for name in changed), self._apply_telling("reload: ")
        )

    def _reread_config(self) -> None:
        """Read the config file again if it changed. One that is gone or no longer reads is
        said once, and the settings read before are kept."""
        if self.config.demo:
            return  # the demo's settings point at its fakes, not at the file
        path = self.config.config_path
        stamp = _stamp(path)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        if stamp is None:  # deleted, or an editor's save caught halfway
            self._notice(f"config file {path} is gone (keeping the settings read before)", logging.WARNING)
            return
        try:
            fresh = load_config(config_path=path, data_dir=self.config.data_dir, env=self._env)
        except ConfigError as exc:
            self._notice(f"{exc} (keeping the settings read before)", logging.ERROR)
            return
        for warning in fresh.warnings:
            if warning not in self.config.warnings:
                self._notice(warning, logging.WARNING)
        self.config = fresh
        assert self.supervisor is not None
        self.supervisor.restore_timeout = fresh.restore_timeout
        self._notice(f"read {path} again: each service takes its settings at its next start")
        self._apply_later()  # [notify] and [http] are the instance's, not a service's: now

    def _notice(self, text: str, level: int = logging.INFO) -> None:
        log.log(level, text)
        self.bus.emit(LogEvent(text, level, at=self._wall()))

    def _waiting_for_lock(self, waited: float) -> None:
        if waited - self._lock_notice_at >= 5.0 or self._lock_notice_at == 0.0:
            self._lock_notice_at = max(waited, 0.001)
            self._notice(
                f"database {self.config.db_path} is locked by another process — waiting"
                f" ({waited:.0f} s so far)",
                logging.WARNING,
            )

    async def launch(self) -> RestoreSummary:
        """Start the heartbeat and the wake detector (both run until close()), then
        restore every wanted service."""
        supervisor = self.supervisor
        assert supervisor is not None
        detector = WakeDetector(supervisor.wake)
        self._background = [
            asyncio.create_task(supervisor.run_heartbeat(), name="heartbeat"),
            asyncio.create_task(detector.run(), name="wake-detector"),
            asyncio.create_task(self._watch_files(), name="file-watch"),
        ]
        return await supervisor.restore("launch")

    async def _watch_files(self) -> None:
        """Check the files on disk are the ones open (identity only: quick_check is the
        health check's), recovering as a write would; a failure is said once."""
        said = None
        while self.store is not None:
            await asyncio.sleep(self._file_check_every)
            try:
                await self.store.verify(quick_check_within=math.inf)
            except StoreError as exc:
                if str(exc) != said:
                    said = str(exc)
                    self._notice(said, logging.ERROR)
            else:
                said = None

    async def simulate_slow_wake(self, unreachable: float = 5.0) -> RestoreSummary:
        """Demo: a wake on a slow network; the Roon fake stays unreachable for a while."""
        assert self.supervisor is not None
        if self.demo is not None and self.demo.roon is not None:
            self.demo.roon.set_silent(unreachable)
            self._notice(f"demo: Roon Core unreachable for {unreachable:.0f} s after this wake")
        return await self.supervisor.wake()

    async def close(self) -> None:
        """Stop services, flush and close the database, stop the fakes. Safe to call twice.

        Notifications still waiting are sent meanwhile, for a second at most (beside the
        services' stop, not after it)."""
        for task in self._background:
            task.cancel()
        self._background = []
        self._closing = True  # a change of [notify] / [http] not begun yet will not begin
        if self._applying:
            await asyncio.wait(set(self._applying), timeout=1.0)
        flushing = None
        async with self._telling:  # one under way ends first
            if self._probes_starting is not None:
                # Let a server still loading finish and be closed below: cancelled halfway, its
                # thread would go on to listen with nobody left to stop it.
                await asyncio.wait({self._probes_starting}, timeout=PROBES_START_TIMEOUT)
                self._probes_starting.cancel()
                self._probes_starting = None
            if self.probes is not None:
                await self.probes.close()
                self.probes = None
            if self.notifier is not None:
                flushing = asyncio.ensure_future(self.notifier.close())
                self.notifier = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.supervisor is not None:
            await self.supervisor.close()
            self.supervisor = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self._lock_again is not None:
            self._lock_again.release()
            self._lock_again = None
        if flushing is not None:
            await flushing
        if self.demo is not None:
            await self.demo.stop()
            self.demo = None


def _why(exc: OSError) -> str:
    """An address that cannot be bound, in the system's words ("Address already in use"),
    without asyncio's wrapping of them."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _masked(urls) -> str:
    return ", ".join(mask_url(url) for url in urls)


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a changed config file: its modification time and size (None: absent)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _log_unhandled(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Whatever escapes a task or callback goes to the log file with its traceback."""
    log.error("unhandled: %s", context.get("message"), exc_info=context.get("exception"))
