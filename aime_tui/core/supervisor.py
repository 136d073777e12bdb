"""The supervisor: what each service should be doing, and making it so.

Owns the runtime state machine of every hosted service (stopped, starting, running,
backoff, stopping, needs attention), the user's desired states (committed to the store
before a change is reported), restoration at launch and after a wake (every wanted
service concurrently, each isolated under its own timeout), full-jitter backoff, the
heartbeat, and the events the UI and logs consume. No Textual here.

"Needs attention" comes two ways. A start that raises NeedsAttention leaves the service
down until the user fixes the cause and retries. A service that reports attention
while up (connected to a Roon Core that has not approved the extension yet) stays up:
it shows as needs attention with what to do, and goes to running by itself once it
reports that it no longer needs it. `up` tells the two apart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from aime_tui.core.bus import EventBus
from aime_tui.core.faults import NeedsAttention, NothingToDo, NotSetUp, RetryAfter
from aime_tui.core.ports import ServiceControl
from aime_tui.core.model import (
    Event,
    Listener,
    LogEvent,
    RestoreSummary,
    RunState,
    ServiceView,
    StateEvent,
)
from aime_tui.format import duration
from aime_tui.services.base import Service
from aime_tui.store.database import DiskFull, Store, StoreError

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0
BACKOFF_CAP = 15 * 60.0
HEALTHY_RESET = 60.0
STOP_TIMEOUT = 1.5
HEARTBEAT_DELAY = 5.0
HEARTBEAT_EVERY = 30.0


# How a successful start reads in the log, by what caused it.
_SUCCESS_WORD = {
    "launch": "restored", "wake": "restored", "backoff": "recovered", "heartbeat": "restarted",
    "reload": "restarted with its new settings", "restart": "restarted",
}


def full_jitter_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): uniform in [0, min(5·2ⁿ, 15 min)]."""
    return rng() * min(BACKOFF_BASE * 2**attempt, BACKOFF_CAP)


def describe_failure(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


@dataclass
class _Record:
    service: Service
    wanted: bool = False
    mode: str | None = None
    state: RunState = RunState.STOPPED
    reason: str | None = None
    failures: int = 0
    restarts: int = 0
    running_since: float | None = None
    retry_at: float | None = None
    retry_timer: asyncio.TimerHandle | None = None
    operation: asyncio.Task | None = None
    #: start() returned and no stop or fault since (running, or waiting on the user).
    up: bool = False


class Supervisor(ServiceControl):
    def __init__(
        self,
        store: Store,
        services: Iterable[Service],
        *,
        restore_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        before_start: Callable[[Service], None] = lambda service: None,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        #: Called before every start attempt (the engine reads the config file again there).
        self._before_start = before_start
        self._wall = wall
        self.restore_timeout = restore_timeout
        self._clock = clock
        self._rng = rng
        self._records: dict[str, _Record] = {}
        for service in services:
            service.set_fault_handler(self._on_fault)
            service.set_attention_handler(self._on_attention)
            self._records[service.name] = _Record(service)
        #: Where its events go (the engine's bus, which carries the engine's notices too).
        self.bus = EventBus() if bus is None else bus
        self._transition_queue: asyncio.Queue[tuple[str, str, str, str, str] | None] = asyncio.Queue()
        self._transition_writer: asyncio.Task | None = None
        self._closing = False
        self._wake_lock = asyncio.Lock()
        #: Services a restoration is starting now: their outcome comes in its summary.
        self.restoring: set[str] = set()

    # -- observing -----------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self.bus.subscribe(listener)

    def _emit(self, event: Event) -> None:
        self.bus.emit(event)

    def _log(self, text: str, level: int = logging.INFO, service: str | None = None) -> None:
        log.log(level, text)
        self._emit(LogEvent(text, level, service, self._wall()))

    @property
    def names(self) -> list[str]:
        return list(self._records)

    def service(self, name: str) -> Service:
        return self._record(name).service

    def modes(self, name: str) -> tuple[str, ...]:
        return self._record(name).service.modes

    def view(self, name: str) -> ServiceView:
        record = self._record(name)
        retry_in = None
        if record.state is RunState.BACKOFF and record.retry_at is not None:
            retry_in = max(0.0, record.retry_at - self._clock())
        return ServiceView(
            name=name,
            state=record.state,
            wanted=record.wanted,
            mode=record.mode,
            reason=record.reason,
            retry_in=retry_in,
            restarts=record.restarts,
            status=record.service.status(),
            uptime=None if record.running_since is None else self._clock() - record.running_since,
            up=record.up,
        )

    def views(self) -> list[ServiceView]:
        return [self.view(name) for name in self._records]

    def _record(self, name: str) -> _Record:
        try:
            return self._records[name]
        except KeyError:
            known = ", ".join(self._records)
            raise KeyError(f"no service named {name!r} (known: {known})") from None

    # -- life cycle ----------------------------------------------------------------

    async def load(self) -> None:
        """Read the desired states (the caller has written first-launch defaults)."""
        desired = await self.store.desired_states()
        for name, record in self._records.items():
            if name in desired:
                record.wanted = desired[name].is_active
                record.mode = desired[name].mode or record.mode
            if record.mode is None and record.service.modes:
                record.mode = record.service.modes[0]
            record.service.mode = record.mode
            self._emit(StateEvent(self.view(name)))
        self._transition_writer = asyncio.create_task(self._write_transitions())

    async def close(self) -> None:
        """Stop every service (desired states untouched) and flush the transition log."""
        self._closing = True
        operations = []
        for record in self._records.values():
            self._cancel_retry(record)
            if record.state is not RunState.STOPPED or record.operation is not None:
                operations.append(self._launch(record, self._stop_service(record, "shutdown")))
        if operations:
            await asyncio.wait(operations, timeout=STOP_TIMEOUT + 0.5)
        if self._transition_writer is not None:
            self._transition_queue.put_nowait(None)
            await asyncio.wait({self._transition_writer}, timeout=2.0)
            # Past the timeout what is left goes unwritten: the store closes next.
            self._transition_writer.cancel()
            self._transition_writer = None

    # -- what the user asks for ----------------------------------------------------

    async def start(self, name: str, reason: str = "user") -> None:
        """Commit "wanted", then start in the background. Returns once the commit is durable."""
        record = self._record(name)
        await self._commit_wanted(record, True, reason)
        if record.up or record.state is RunState.STARTING:
            return  # up already (waiting on the user counts: it carries on by itself)
        self._cancel_retry(record)  # this attempt replaces a pending backoff retry
        record.failures = 0
        self._launch(record, self._start_attempt(record, reason))

    async def stop(self, name: str, reason: str = "user") -> None:
        """Commit "not wanted", then stop in the background. Returns once the commit is durable."""
        record = self._record(name)
        await self._commit_wanted(record, False, reason)
        self._cancel_retry(record)
        if record.state in (RunState.STOPPED, RunState.STOPPING) and record.operation is None:
            self._set_state(record, RunState.STOPPED, reason)
            return
        self._launch(record, self._stop_service(record, reason))

    async def retry_now(self, name: str) -> None:
        """Skip the backoff wait, or retry a service that needs attention.

        One that is up while it waits on the user is restarted: it reconnects and asks again.
        A service that is running, starting or not wanted has nothing to retry: NothingToDo
        says so (restart() restarts a running one).
        """
        record = self._record(name)
        if record.state in (RunState.RUNNING, RunState.STARTING):
            raise NothingToDo(f"{name} is {record.state.value}: nothing to retry (use restart to restart it)")
        if not record.wanted:
            raise NothingToDo(f"{name} is not wanted: nothing to retry (use start to start it)")
        self._cancel_retry(record)
        if record.up:
            self._launch(record, self._restart(record, "retry"))
        else:
            self._launch(record, self._start_attempt(record, "retry"))

    async def restart(self, name: str, reason: str) -> None:
        """Stop and start again a service that is up (a reload's new settings); others are
        left alone: they take the settings at their next start anyway."""
        record = self._record(name)
        if not record.wanted or not record.up or self._closing:
            return
        self._cancel_retry(record)
        await self._launch(record, self._restart(record, reason))

    async def restart_now(self, name: str) -> None:
        """Stop and start again, whatever state it is in; wanted on first (committed)."""
        record = self._record(name)
        await self._commit_wanted(record, True, "user")
        self._cancel_retry(record)
        record.failures = 0
        self._log(f"{name} restarting (asked for)", service=name)
        self._launch(record, self._restart(record, "restart"))

    async def set_mode(self, name: str, mode: str, reason: str = "user") -> None:
        """Commit the mode, then apply it to the running service."""
        record = self._record(name)
        if mode not in record.service.modes:
            raise ValueError(f"{name} has no mode {mode!r} (modes: {', '.join(record.service.modes)})")
        await self.store.set_mode(name, mode, reason)
        record.mode = mode
        if record.up:
            await record.service.set_mode(mode)
        else:
            record.service.mode = mode
        self._log(f"{name} mode → {mode} (saved)", service=name)
        self._emit(StateEvent(self.view(name)))

    # -- restoration -----------------------------------------------------------------

    async def restore(self, trigger: str = "launch") -> RestoreSummary:
        """Start every wanted service concurrently, each under its own timeout, and sum up."""
        began = self._clock()
        wanted = [
            record
            for record in self._records.values()
            if record.wanted and not record.up and record.state is not RunState.STARTING
        ]
        if wanted:
            self._log(f"restoring {', '.join(r.service.name for r in wanted)} ({trigger})")
        for record in wanted:
            self._cancel_retry(record)
            record.failures = 0
        names = {record.service.name for record in wanted}
        self.restoring |= names
        attempts = [self._launch(r, self._start_attempt(r, trigger)) for r in wanted]
        try:
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        finally:
            self.restoring -= names
        succeeded = []
        failed = {}
        not_set_up = {}
        for record, outcome in zip(wanted, outcomes):
            if outcome is None:
                succeeded.append(record.service.name)
            elif isinstance(outcome, str) and record.state is RunState.NOT_SET_UP:
                not_set_up[record.service.name] = outcome
            elif isinstance(outcome, str):
                failed[record.service.name] = outcome
            # a CancelledError means the user stopped it meanwhile: neither.
        summary = RestoreSummary(
            self._wall(), trigger, tuple(succeeded), failed, self._clock() - began, not_set_up
        )
        log.info(summary.line())
        self._emit(summary)
        return summary

    async def wake(self, slept: float | None = None) -> RestoreSummary:
        """Recover after a sleep: fresh connections, then stop and restore what is wanted."""
        async with self._wake_lock:  # a second wake waits for the first recovery
            if slept is None:
                self._log("wake requested — recovering")
            else:
                self._log(f"wake detected (slept {duration(slept)}) — recovering")
            await asyncio.gather(
                *(self._stop_for_wake(record) for record in self._records.values() if record.wanted)
            )
            try:
                await self.store.reopen()
            except StoreError as exc:
                # The connection it had still works, and services matter more.
                self._log(f"{exc}; carrying on with the connection it had", logging.WARNING)
            return await self.restore("wake")

    async def _stop_for_wake(self, record: _Record) -> None:
        self._cancel_retry(record)
        if record.state is not RunState.STOPPED:
            await self._launch(record, self._stop_service(record, "wake"))
        try:
            await asyncio.wait_for(record.service.reset_connections(), STOP_TIMEOUT)
        except Exception as exc:
            self._log(f"{record.service.name}: reset failed: {describe_failure(exc)}", logging.WARNING)

    async def run_heartbeat(
        self, delay: float = HEARTBEAT_DELAY, every: float = HEARTBEAT_EVERY
    ) -> None:
        """After `delay`, every `every` s restart wanted services that are not running.

        Catches what no fault report did: a service the supervisor believes running whose
        own status says otherwise, or a wanted service left stopped. Backoff and needs
        attention are left alone: they already have a plan (a service up and waiting on
        the user is only checked, like a running one, for work that died unreported).
        """
        await asyncio.sleep(delay)
        while not self._closing:
            for record in self._records.values():
                if not record.wanted or record.operation is not None:
                    continue
                name = record.service.name
                if record.up and not record.service.status().get("running", True):
                    self._on_fault(record.service, RuntimeError("found not running by the heartbeat"))
                elif record.state is RunState.STOPPED:
                    self._log(f"{name}: wanted but stopped — restarting", logging.WARNING, name)
                    self._launch(record, self._start_attempt(record, "heartbeat"))
            await asyncio.sleep(every)

    # -- the state machine -------------------------------------------------------------

    def _launch(self, record: _Record, operation) -> asyncio.Task:
        """Run `operation` as this service's one current operation, after the previous one."""
        previous = record.operation
        if previous is not None and not previous.done() and record.state is RunState.STARTING:
            previous.cancel()  # a start in progress gives way to whatever comes next

        async def run():
            if previous is not None and not previous.done():
                await asyncio.wait({previous}, timeout=STOP_TIMEOUT)
            return await operation

        task = asyncio.create_task(run(), name=f"supervisor:{record.service.name}")
        record.operation = task
        task.add_done_callback(lambda t: self._operation_done(record, t))
        return task

    def _operation_done(self, record: _Record, task: asyncio.Task) -> None:
        if record.operation is task:
            record.operation = None
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: supervisor operation failed", record.service.name, exc_info=task.exception())

    async def _start_attempt(self, record: _Record, reason: str) -> str | None:
        """Start under the restore timeout. Returns None on success, else the failure reason."""
        name = record.service.name
        record.retry_at = None
        self._set_state(record, RunState.STARTING, reason)
        try:
            self._before_start(record.service)
        except Exception:  # a start goes ahead with what the service has
            log.exception("%s: preparing the start failed", name)
        record.service.mode = record.mode
        record.service.clear_attention()  # whatever a previous run waited for, this one asks anew
        starting = asyncio.create_task(record.service.start(), name=f"{name}:start")
        try:
            done, _ = await asyncio.wait({starting}, timeout=self.restore_timeout)
        except asyncio.CancelledError:
            starting.cancel()
            await self._cleanup_after_failed_start(record)
            self._set_state(record, RunState.STOPPED, "cancelled")
            raise
        if not done:
            # Never await a hung start: cancel it and move on so nothing else waits for it.
            starting.cancel()
            failure: BaseException = TimeoutError(f"start timed out after {self.restore_timeout:.1f} s")
        else:
            failure = starting.exception()
        if failure is None:
            record.up = True
            attention = record.service.attention
            if attention is not None:
                # Up, connected, and waiting on the user: not running yet, not failing either.
                self._need_attention(record, attention)
                return attention
            record.running_since = self._clock()
            record.reason = None
            self._set_state(record, RunState.RUNNING, reason)
            self._log(f"{name} {_SUCCESS_WORD.get(reason, 'started')}", service=name)
            return None
        await self._cleanup_after_failed_start(record)
        return self._fail(record, failure)

    async def _cleanup_after_failed_start(self, record: _Record) -> None:
        try:
            await asyncio.wait_for(record.service.stop(), STOP_TIMEOUT)
        except Exception as exc:
            log.warning("%s: cleanup after failed start: %s", record.service.name, exc)

    def _fail(self, record: _Record, failure: BaseException) -> str:
        """Move a failed service to needs attention or backoff; returns the reason shown."""
        name = record.service.name
        why = describe_failure(failure)
        record.reason = why
        record.running_since = None
        if isinstance(failure, NotSetUp):
            # Not a failure: down until the user sets what it needs, then retries (r).
            self._set_state(record, RunState.NOT_SET_UP, "error")
            self._log(f"{name} not set up: {why}", service=name)
            return why
        if isinstance(failure, NeedsAttention):
            self._set_state(record, RunState.NEEDS_ATTENTION, "error")
            self._log(f"{name} needs attention: {why}", logging.ERROR, name)
            return why
        # A fault the user can fix (a full disk, a file) is a line, not a traceback.
        if not isinstance(failure, (TimeoutError, RetryAfter, OSError, StoreError)):
            log.error("%s failed", name, exc_info=failure)
        if isinstance(failure, RetryAfter):
            delay = failure.delay
        else:
            delay = full_jitter_delay(record.failures, self._rng)
        record.failures += 1
        if not record.wanted or self._closing:
            self._set_state(record, RunState.STOPPED, "error")
            return why
        record.retry_at = self._clock() + delay
        record.retry_timer = asyncio.get_running_loop().call_later(delay, self._retry, record)
        self._set_state(record, RunState.BACKOFF, "backoff")
        # A full disk is said (then counted) by the store; each retry is not news.
        if not isinstance(failure, DiskFull):
            self._log(f"{name}: {why}, retry in {duration(delay)}", logging.WARNING, name)
        return why

    def _retry(self, record: _Record) -> None:
        record.retry_timer = None
        if record.wanted and record.state is RunState.BACKOFF and not self._closing:
            record.restarts += 1
            self._launch(record, self._start_attempt(record, "backoff"))

    def _cancel_retry(self, record: _Record) -> None:
        if record.retry_timer is not None:
            record.retry_timer.cancel()
            record.retry_timer = None
        record.retry_at = None

    async def _stop_service(self, record: _Record, reason: str) -> None:
        name = record.service.name
        self._cancel_retry(record)
        if record.state is RunState.STOPPED:
            return
        was_running = record.state is RunState.RUNNING
        record.up = False
        self._set_state(record, RunState.STOPPING, reason)
        try:
            await asyncio.wait_for(record.service.stop(), STOP_TIMEOUT)
        except Exception as exc:
            self._log(f"{name}: stop did not finish cleanly: {describe_failure(exc)}", logging.WARNING, name)
        record.service.clear_attention()
        record.running_since = None
        if reason == "user":
            record.reason = None
        self._set_state(record, RunState.STOPPED, reason)
        if was_running and reason not in ("shutdown", "wake"):
            self._log(f"{name} stopped", service=name)

    async def _restart(self, record: _Record, reason: str) -> str | None:
        await self._stop_service(record, reason)
        if not record.wanted or self._closing:
            return None
        return await self._start_attempt(record, reason)

    def _on_fault(self, service: Service, exc: BaseException) -> None:
        """A service that is up (running, or waiting on the user) reported that its work broke."""
        record = self._records.get(service.name)
        if record is None or not record.up or self._closing:
            return
        if record.running_since is not None and self._clock() - record.running_since >= HEALTHY_RESET:
            record.failures = 0

        async def recover():
            await self._cleanup_after_failed_start(record)
            record.service.clear_attention()
            self._fail(record, exc)

        record.up = False
        self._set_state(record, RunState.STOPPING, "error")
        self._launch(record, recover())

    def _on_attention(self, service: Service, reason: str | None, done: str | None) -> None:
        """A service that is up started or stopped waiting on the user.

        While it starts, what it reported is read once start() returns; once stopping or
        down, it no longer matters.
        """
        record = self._records.get(service.name)
        if record is None or not record.up or self._closing:
            return
        if reason is not None:
            if record.state is RunState.RUNNING or record.reason != reason:
                self._need_attention(record, reason)
            return
        if record.state is RunState.NEEDS_ATTENTION:
            name = service.name
            record.reason = None
            record.running_since = self._clock()
            self._set_state(record, RunState.RUNNING, "resolved")
            self._log(f"{name} {done or 'no longer needs attention'}: running", service=name)

    def _need_attention(self, record: _Record, reason: str) -> None:
        """Show an up service as needing attention, saying what to do; logged once per reason."""
        name = record.service.name
        record.reason = reason
        record.running_since = None
        self._set_state(record, RunState.NEEDS_ATTENTION, "error")
        self._log(f"{name} needs attention: {reason}", logging.WARNING, name)

    async def _commit_wanted(self, record: _Record, wanted: bool, reason: str) -> None:
        await self.store.set_desired(record.service.name, wanted, reason)
        changed = record.wanted != wanted
        record.wanted = wanted
        if changed:
            self._log(f"{record.service.name} wanted {'on' if wanted else 'off'} (saved)", service=record.service.name)
        self._emit(StateEvent(self.view(record.service.name)))

    def _set_state(self, record: _Record, state: RunState, reason: str) -> None:
        before = record.state
        record.state = state
        if before is not state:
            # A failure's own words go beside its category, for the history screen.
            failing = state in (RunState.BACKOFF, RunState.NEEDS_ATTENTION)
            detail = (record.reason or "") if failing else ""
            self._transition_queue.put_nowait((record.service.name, before.value, state.value, reason, detail))
        self._emit(StateEvent(self.view(record.service.name)))

    async def _write_transitions(self) -> None:
        """One writer for runtime transitions, so state changes never wait on the disk."""
        while True:
            item = await self._transition_queue.get()
            if item is None:
                return
            try:
                await self.store.record_transition(*item)
            except DiskFull:
                pass  # said and counted by the store
            except Exception as exc:
                log.warning("could not record transition %s: %s", item, exc)

