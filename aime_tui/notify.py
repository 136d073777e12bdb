"""Notifications: telling the user, through Apprise, what needs them, and when it is fixed.

Owns what is worth a message: a restoration that ends with failures (one message for the
whole restoration), a wanted service that needs attention (with what to do), one that has
not run steadily for `[notify] after`, and the recovery of each of those once the service
has run for SETTLE seconds (so a flapping service is one problem, not a message a flap).

Messages are rate-limited by coalescing: at most one per SPACING seconds, and whatever
happens meanwhile joins the next one. Sending happens in daemon threads (one per URL, so
a dead server never holds up another), never on the event loop, and each URL is tried
len(RETRY_DELAYS) + 1 times at most. Apprise itself is imported in a thread, and only
when URLs are configured: a launch without [notify] never loads it. URLs appear in logs
only as Apprise's own privacy form, or masked.

The URLs can change while it runs (a reload): what it is tracking carries on, the next
message goes to the new ones. Closing sends what is still waiting at once, without the
usual pauses, for FLUSH_TIMEOUT seconds at most, and says in one line what it could not.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from aime_tui.config import mask_url
from aime_tui.core.model import Event, RestoreSummary, RunState, ServiceView, StateEvent
from aime_tui.core.supervisor import Supervisor
from aime_tui.format import duration

log = logging.getLogger(__name__)

SETTLE = 60.0
SPACING = 30.0
GATHER = 1.0
RETRY_DELAYS = (5.0, 30.0)
#: At shutdown, how long what is still waiting may take to be sent (beside the services'
#: own stop, so a SIGTERM still ends the process within 2 s).
FLUSH_TIMEOUT = 1.0
MAX_LINES = 20
FAILURE, SUCCESS, INFO = "failure", "success", "info"


# -- sending (plain functions: the instance uses them in a thread, `notify --test` directly) --


@dataclass
class Target:
    """One configured URL: the Apprise plugin that sends to it, and how it may be shown."""

    shown: str
    plugin: Any = None  # None: Apprise does not know the URL


def build_targets(urls: Sequence[str]) -> list[Target]:
    """Parse each URL with Apprise (imported here: the first use pays for it)."""
    import apprise

    # Apprise logs a URL it cannot parse in full, secrets and all; we say it ourselves, masked.
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    targets = []
    for url in urls:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            targets.append(Target(mask_url(url)))
        else:
            targets.append(Target(plugin.url(privacy=True).split("?", 1)[0], plugin))
    return targets


def send(targets: Sequence[Target], title: str, body: str, kind: str = INFO) -> list[Target]:
    """Send to every target that parsed; returns those that failed. Blocks: run it off the loop."""
    failed = []
    for target in targets:
        if target.plugin is None:
            continue
        try:
            ok = target.plugin.notify(body=body, title=title, notify_type=kind)
        except Exception:  # a plugin's bug is one failed delivery, not a dead notifier
            ok = False
        if not ok:
            failed.append(target)
    return failed


def _in_thread(function: Callable, *args) -> asyncio.Future:
    """Run a blocking call in a daemon thread: one stuck on a dead server never holds up exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(outcome)

    def work() -> None:
        try:
            outcome, error = function(*args), None
        except BaseException as exc:  # handed to the loop, raised there
            outcome, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, outcome, error)
        except RuntimeError:
            pass  # the loop closed meanwhile: nobody waits for the answer

    threading.Thread(target=work, name="notify", daemon=True).start()
    return future


# -- what is worth telling ----------------------------------------------------------------


@dataclass
class _Problem:
    since: float
    reason: str | None = None
    announced: bool = False
    #: The needs-attention reason already told (a new reason is told again).
    attention: str | None = None
    timer: asyncio.TimerHandle | None = None
    settling: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        for handle in (self.timer, self.settling):
            if handle is not None:
                handle.cancel()
        self.timer = self.settling = None


@dataclass
class _Outbox:
    lines: list[str] = field(default_factory=list)
    dropped: int = 0
    failing: bool = False


class Notifier:
    """Watches one supervisor's events and sends what is worth telling to the URLs."""

    def __init__(
        self,
        supervisor: Supervisor,
        urls: Sequence[str],
        *,
        after: float,
        settle: float = SETTLE,
        spacing: float = SPACING,
        gather: float = GATHER,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        on_notice: Callable[[str, int], None] = lambda text, level: None,
        title: str | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._urls = tuple(urls)
        self._after = after
        self._settle = settle
        self._spacing = spacing
        self._gather = gather
        self._retry_delays = tuple(retry_delays)
        self._on_notice = on_notice
        self.title = title or f"aime-tui on {socket.gethostname()}"
        self._problems: dict[str, _Problem] = {}
        self._outbox = _Outbox()
        self._pending = asyncio.Event()
        #: Set by close(): send what waits now, with no more pauses or retries.
        self._closing = asyncio.Event()
        #: The message being delivered, and the targets that have not had it yet.
        self._in_flight: _Outbox | None = None
        self._awaiting: list[Target] = []
        self._task: asyncio.Task | None = None
        self._targets: asyncio.Future | None = None
        self._unsubscribe: Callable[[], None] = lambda: None

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    @property
    def after(self) -> float:
        return self._after

    def start(self) -> None:
        self._build_targets()
        self._unsubscribe = self._supervisor.bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="notifier")

    def retarget(self, urls: Sequence[str], *, after: float) -> None:
        """Send to `urls` from the next message on; `after` counts for problems that start
        from now. What is being tracked (a service failing, a recovery to tell) carries on."""
        self._after = after
        if tuple(urls) != self._urls:
            self._urls = tuple(urls)
            self._build_targets()

    def _build_targets(self) -> None:
        self._targets = _in_thread(build_targets, self._urls)
        self._targets.add_done_callback(self._targets_built)

    async def close(self, flush_within: float = FLUSH_TIMEOUT) -> None:
        """Stop watching; send what still waits, for `flush_within` seconds at most."""
        self._unsubscribe()
        for problem in self._problems.values():
            problem.cancel()
        task, self._task = self._task, None
        if task is None:
            return
        self._closing.set()
        self._pending.set()
        done, _ = await asyncio.wait({task}, timeout=flush_within)
        if done:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._say_unsent(flush_within)

    def _say_unsent(self, waited: float) -> None:
        """One line for what could not be sent before closing: which lines, to where."""
        unsent: list[tuple[str, list[str]]] = []
        if self._in_flight is not None and self._awaiting:
            unsent.append((_body(self._in_flight), [t.shown for t in self._awaiting]))
        if self._outbox.lines:
            targets = self._targets.result() if self._targets is not None and self._targets.done() \
                and self._targets.exception() is None else []
            shown = [t.shown for t in targets if t.plugin is not None] or [mask_url(url) for url in self._urls]
            unsent.append((_body(self._outbox), shown))
        if not unsent:
            return
        parts = [f"to {', '.join(shown)}: {body.replace(chr(10), ' / ')}" for body, shown in unsent]
        self._notice(f"notification not sent before closing (no answer within {waited:g} s) {'; '.join(parts)}",
                     logging.WARNING)

    def _targets_built(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            self._notice(f"notifications off: Apprise did not load ({future.exception()})", logging.ERROR)
            return
        for target in future.result():
            if target.plugin is None:
                self._notice(f"notify: {target.shown} is not a URL Apprise knows; skipped", logging.WARNING)

    def _notice(self, text: str, level: int) -> None:
        log.log(level, text)
        self._on_notice(text, level)

    # -- events ---------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StateEvent):
            self._on_state(event.view)
        elif isinstance(event, RestoreSummary) and event.failed:
            self._on_failed_restoration(event)

    def _on_failed_restoration(self, summary: RestoreSummary) -> None:
        now = self._now()
        for name, why in summary.failed.items():
            problem = self._problems.setdefault(name, _Problem(since=now))
            problem.announced = True
            problem.reason = why
            if self._supervisor.view(name).state is RunState.NEEDS_ATTENTION:
                problem.attention = why
        total = len(summary.succeeded) + len(summary.failed)
        failures = "; ".join(f"{name}: {why}" for name, why in summary.failed.items())
        self._say(
            f"Restoration after {summary.trigger}: {len(summary.failed)} of {total} services failed — {failures}",
            failing=True,
        )

    def _on_state(self, view: ServiceView) -> None:
        name = view.name
        problem = self._problems.get(name)
        if not view.wanted:
            if problem is not None:  # the user stopped it: nothing left to tell
                problem.cancel()
                del self._problems[name]
            return
        if view.state is RunState.RUNNING:
            if problem is not None and problem.settling is None:
                problem.settling = self._later(self._settle, self._settled, name)
            return
        if problem is not None:
            self._unsettle(problem)  # it left running before it had settled
        if view.state not in (RunState.BACKOFF, RunState.NEEDS_ATTENTION):
            return
        if problem is None:
            problem = self._problems[name] = _Problem(since=self._now())
            problem.timer = self._later(self._after, self._overdue, name)
        problem.reason = view.reason
        if view.state is RunState.NEEDS_ATTENTION and view.reason != problem.attention:
            problem.attention = view.reason
            if name not in self._supervisor.restoring:  # else the restoration's message says it
                problem.announced = True
                self._say(f"{name} needs attention: {view.reason}", failing=True)

    def _unsettle(self, problem: _Problem) -> None:
        if problem.settling is not None:
            problem.settling.cancel()
            problem.settling = None

    def _overdue(self, name: str) -> None:
        problem = self._problems.get(name)
        if problem is None:
            return
        problem.timer = None
        if problem.announced:
            return
        problem.announced = True
        failing = duration(self._now() - problem.since)
        why = f": {problem.reason}" if problem.reason else ""
        self._say(f"{name} has not run steadily for {failing} (still retrying){why}", failing=True)

    def _settled(self, name: str) -> None:
        problem = self._problems.pop(name, None)
        if problem is None:
            return
        problem.cancel()
        if problem.announced:
            self._say(f"{name} recovered: running again after {duration(self._now() - problem.since)}")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _later(self, delay: float, callback: Callable[[str], None], name: str) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback, name)

    # -- the outbox -----------------------------------------------------------------------

    def _say(self, line: str, *, failing: bool = False) -> None:
        outbox = self._outbox
        outbox.lines.append(line)
        outbox.failing |= failing
        if len(outbox.lines) > MAX_LINES:  # keep the newest: they say how things stand now
            del outbox.lines[0]
            outbox.dropped += 1
        self._pending.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_sent = None
        while True:
            await self._pending.wait()
            await self._pause(self._gather)  # what happens together goes together
            if last_sent is not None:
                await self._pause(last_sent + self._spacing - loop.time())
            outbox, self._outbox = self._outbox, _Outbox()
            self._pending.clear()
            if outbox.lines:
                self._in_flight = outbox
                await self._deliver(outbox)
                self._in_flight = None
                last_sent = loop.time()
            if self._closing.is_set() and not self._outbox.lines:
                return

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless closing: then what waits goes now."""
        if seconds <= 0 or self._closing.is_set():
            return
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _deliver(self, outbox: _Outbox) -> None:
        body = _body(outbox)
        kind = FAILURE if outbox.failing else SUCCESS
        assert self._targets is not None
        self._awaiting = []
        try:
            targets = [t for t in await self._targets if t.plugin is not None]
        except Exception:
            return  # said once, when Apprise failed to load
        delays = iter(self._retry_delays)
        attempts = 0
        while targets:
            targets = await self._attempt(targets, body, kind)
            attempts += 1
            delay = next(delays, None)
            if not targets:
                break
            if delay is None or self._closing.is_set():
                shown = ", ".join(t.shown for t in targets)
                closing = " (closing)" if self._closing.is_set() and delay is not None else ""
                self._notice(f"notification not delivered to {shown} after {attempts} attempt"
                             f"{'s' if attempts != 1 else ''}{closing}", logging.WARNING)
                break
            await self._pause(delay)

    async def _attempt(self, targets: list[Target], body: str, kind: str) -> list[Target]:
        """Send to each target in a thread of its own; returns those that failed."""
        awaiting = self._awaiting = list(targets)

        async def one(target: Target) -> None:
            if not await _in_thread(send, [target], self.title, body, kind):
                awaiting.remove(target)

        await asyncio.gather(*(one(target) for target in targets))
        return list(awaiting)


def _body(outbox: _Outbox) -> str:
    lines = list(outbox.lines)
    if outbox.dropped:
        lines.insert(0, f"({outbox.dropped} earlier events left out)")
    return "\n".join(lines)
