"""The HTTP probes: `/health`, `/ready` and `/metrics` for orchestrators and monitors.

Served only when `[http] listen` is set, on that address alone, by aiohttp's web server
running on a loop of its own in a daemon thread: a storm of probes costs the instance's
loop (the dashboard's, the services') nothing but the building of one answer a second.
aiohttp and prometheus-client are imported in that thread, and only then. What an answer
needs from the instance (its services, its database) is asked for on the instance's loop.

- /health: the `health` report as JSON; 200 when healthy, 503 when degraded or unhealthy.
- /ready: 503 until the launch restoration has finished, then 200.
- /metrics: the Prometheus text format, written by prometheus-client.

The address can change while it runs (a reload): `move()` opens the new listener on the
same server, then closes the old one (the old one first when both use one port, where
they would clash), and takes the old address back if the new one cannot be had.

A probe storm is one report: concurrent probes share one database check and one encoded
answer, which stays fresh for REPORT_FRESH seconds unless the supervisor reports a change
(then the next probe builds a new one). An instance whose loop does not answer within
ASK_TIMEOUT is reported unhealthy. No Textual here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from aime_tui.core.model import Event, LogEvent, RestoreSummary, RunState
from aime_tui.reports.health import HEALTHY, ErrorTally, assess, database_reachable

if TYPE_CHECKING:
    from aime_tui.engine import Engine

log = logging.getLogger(__name__)

REPORT_FRESH = 1.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SHUTDOWN_TIMEOUT = 1.0
ASK_TIMEOUT = 5.0


class ProbesLost(Exception):
    """A move failed and the old address could not be taken back: nothing listens."""


class ProbeServer:
    """Serves one engine's health, readiness and metrics over HTTP until closed."""

    def __init__(
        self, engine: "Engine", host: str, port: int, *, wall=time.time, clock=time.monotonic,
        started: float | None = None, ready: bool = False, last_summary: RestoreSummary | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self._wall = wall
        self._clock = clock
        #: When the instance started (a server turned on by a reload reports its uptime).
        self._started = clock() if started is None else started
        self.errors = ErrorTally(clock=clock)
        #: A server turned on after the launch restoration (by a reload) is ready at once.
        self.last_summary = last_summary
        self.ready = ready
        #: Bumped by every supervisor event: an answer built before one is stale.
        self._generation = 0
        # The rest belongs to the server's thread.
        self._report: asyncio.Future | None = None
        self._report_key: tuple[int, float] = (-1, 0.0)
        self._home: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._site = None
        self._stopped: concurrent.futures.Future = concurrent.futures.Future()
        self._unsubscribe: Callable[[], None] = lambda: None

    def watch(self) -> None:
        """Follow the supervisor's events from now: before the restoration starts, so that
        its summary is seen however long the server takes to load."""
        supervisor = self.engine.supervisor
        assert supervisor is not None
        self._unsubscribe = supervisor.bus.subscribe(self._on_event)

    async def start(self) -> None:
        """Listen, from a thread of its own; OSError if the address cannot be bound."""
        self._home = asyncio.get_running_loop()
        listening: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(target=self._serve, args=(listening,), name="probes", daemon=True).start()
        await asyncio.wrap_future(listening)

    def _serve(self, listening: concurrent.futures.Future) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:
            listening.set_exception(exc)
            loop.close()
            return
        listening.set_result(None)
        try:
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # probes in flight finish first
        finally:
            loop.close()
            self._stopped.set_result(None)

    async def _listen(self) -> None:
        modules = _import_server()
        web = self._web = modules["web"]
        self._metrics = modules["metrics"]
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def move(self, host: str, port: int) -> None:
        """Listen on host:port instead. OSError if it cannot be bound (the old address is
        still served); ProbesLost if the old one could not be taken back either."""
        assert self._loop is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._move(host, port), self._loop))
        self.host, self.port = host, port

    async def _move(self, host: str, port: int) -> None:
        web, old = self._web, self._site
        # 127.0.0.1:P and 0.0.0.0:P clash: on one port the old listener goes first.
        same_port = port == self.port
        if same_port:
            await old.stop()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await site.stop()
            if same_port:
                back = web.TCPSite(self._runner, self.host, self.port)
                try:
                    await back.start()
                except OSError:
                    await back.stop()
                    self._site = None
                    raise ProbesLost(os.strerror(exc.errno) if exc.errno else str(exc)) from exc
                self._site = back
            raise
        if not same_port:
            await old.stop()
        self._site = site

    async def close(self) -> None:
        self._unsubscribe()
        loop, self._loop = self._loop, None
        if loop is None or self._runner is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._stopped), SHUTDOWN_TIMEOUT + 1)
        except asyncio.TimeoutError:
            log.warning("the HTTP probes did not stop within %.0f s", SHUTDOWN_TIMEOUT + 1)

    async def _ask(self, coroutine) -> Any:
        """Run `coroutine` on the instance's loop and wait for it here, for a while."""
        assert self._home is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._home)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), ASK_TIMEOUT)
        except asyncio.TimeoutError:
            future.cancel()
            raise

    def _on_event(self, event: Event) -> None:
        self._generation += 1
        if isinstance(event, RestoreSummary):
            self.last_summary = event
            if event.trigger == "launch":
                self.ready = True
        elif isinstance(event, LogEvent):
            self.errors.note(event.level)

    async def _health(self, request):
        generation, built = self._report_key
        stale = generation != self._generation or time.monotonic() - built >= REPORT_FRESH
        if self._report is None or (self._report.done() and stale):
            self._report_key = (self._generation, time.monotonic())
            self._report = asyncio.ensure_future(self._answer_health())
        body, status = await asyncio.shield(self._report)
        return self._web.Response(body=body, status=status, content_type="application/json")

    async def _answer_health(self) -> tuple[bytes, int]:
        try:
            return await self._ask(self._build_report())
        except asyncio.TimeoutError:
            report = {"status": "unhealthy", "problems": [f"the instance did not answer within {ASK_TIMEOUT:.0f} s"]}
            return json.dumps(report).encode(), 503

    async def _build_report(self) -> tuple[bytes, int]:
        supervisor = self.engine.supervisor
        if supervisor is None:
            return json.dumps({"status": "unhealthy", "problems": ["the instance is shutting down"]}).encode(), 503
        database = await database_reachable(self.engine.store, wall=self._wall)
        report = assess(
            supervisor.views(),
            database=database,
            uptime=self._clock() - self._started,
            errors=self.errors.counts(),
            summary=None if self.last_summary is None else self.last_summary.line(),
            now=self._wall(),
        )
        return json.dumps(report, default=str).encode(), 200 if report["status"] == HEALTHY else 503

    async def _ready(self, request):
        ready = self.ready and self.engine.supervisor is not None
        return self._web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics_page(self, request):
        try:
            families = await self._ask(self._collect())
        except asyncio.TimeoutError:
            return self._web.Response(status=503, text=f"the instance did not answer within {ASK_TIMEOUT:.0f} s")
        text = self._metrics["generate_latest"](_Families(families))
        return self._web.Response(body=text, headers={"Content-Type": METRICS_TYPE})

    async def _collect(self) -> list:
        gauge, counter = self._metrics["gauge"], self._metrics["counter"]
        supervisor = self.engine.supervisor
        views = supervisor.views() if supervisor is not None else []
        now = self._wall()
        up = gauge("aime_service_up", "1 when the service is started and not failing or stopped", labels=["service"])
        wanted = gauge("aime_service_wanted", "1 when the user wants the service running (saved)", labels=["service"])
        state = gauge("aime_service_state", "1 for the state the service is in", labels=["service", "state"])
        restarts = counter("aime_service_restarts", "Restarts after a failure, since launch", labels=["service"])
        age = gauge(
            "aime_service_last_check_age_seconds", "Seconds since the service last checked for plays",
            labels=["service"],
        )
        for view in views:
            running = view.up or view.state is RunState.RUNNING
            up.add_metric([view.name], 1.0 if running else 0.0)
            wanted.add_metric([view.name], 1.0 if view.wanted else 0.0)
            for each in RunState:
                state.add_metric([view.name, each.value], 1.0 if view.state is each else 0.0)
            restarts.add_metric([view.name], float(view.restarts))
            checked = view.status.get("last_check")
            if checked:
                age.add_metric([view.name], max(0.0, now - checked))
        families = [up, wanted, state, restarts, age]
        plays = gauge(
            "aime_service_plays_stored", "Plays stored from the service's source, the whole history", labels=["service"]
        )
        for view in views:
            if view.status.get("plays_total") is not None:
                plays.add_metric([view.name], float(view.status["plays_total"]))
        families.append(plays)
        ready = gauge("aime_ready", "1 once the launch restoration has finished")
        ready.add_metric([], 1.0 if self.ready else 0.0)
        families.append(ready)
        if self.last_summary is not None:
            duration = gauge("aime_restore_duration_seconds", "How long the last restoration took")
            duration.add_metric([], self.last_summary.elapsed)
            failed = gauge("aime_restore_failed_services", "Services the last restoration could not start")
            failed.add_metric([], float(len(self.last_summary.failed)))
            families += [duration, failed]
        size = gauge("aime_database_size_bytes", "Size of the database file and its write-ahead log")
        size.add_metric([], float(_database_size(self.engine.config.db_path)))
        families.append(size)
        return families


class _Families:
    """The families of one scrape, in the shape prometheus-client's writer reads."""

    def __init__(self, families: list) -> None:
        self._families = families

    def collect(self):
        return self._families


def _import_server() -> dict[str, Any]:
    web = importlib.import_module("aiohttp.web")
    core = importlib.import_module("prometheus_client.core")
    exposition = importlib.import_module("prometheus_client.exposition")
    return {
        "web": web,
        "metrics": {
            "gauge": core.GaugeMetricFamily,
            "counter": core.CounterMetricFamily,
            "generate_latest": exposition.generate_latest,
        },
    }


def _database_size(path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except OSError:
            pass
    return total
