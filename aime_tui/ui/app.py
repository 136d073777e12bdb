"""The dashboard: services table, now playing, restoration summary, live log, keys.

The app hosts an engine (core/ports.py's EngineHost: the engine itself, or one attached
over the control socket) on its own asyncio loop. Engine events are queued and applied
in one refresh pass every 100 ms, so a burst of events costs one repaint, not hundreds.
The widgets (ui/widgets/) render themselves from views and events; the app keeps the
keys, the actions and the composition.

The engine's life is not the window's: `q` quits (the engine closes with the app), while
`d` and a lost terminal end the app with `outcome` "detach" or "lost" and leave the engine
running for its host (cli/dashboard.py) to carry on headless. The first frame is painted
before the engine is made (`engine` may be a factory), so it comes as fast as any
Textual app's; service keys pressed meanwhile wait for it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable

from aime_tui.core.faults import NothingToDo
from aime_tui.core.model import Event, LogEvent, RestoreSummary, StateEvent
from aime_tui.core.ports import EngineHost, ServiceControl
from aime_tui.ui.driver import TerminalDriver
from aime_tui.ui.widgets.key_bar import KeyBar
from aime_tui.ui.widgets.lines import DetailLine, NowPlaying, SummaryLine
from aime_tui.ui.widgets.log_view import LogView
from aime_tui.ui.widgets.services_table import ServicesTable
from aime_tui.ui.widgets.title_bar import TitleBar

if TYPE_CHECKING:
    from aime_tui.ui.screens.help import HelpGroups

SERVICE_ACTIONS = {"toggle", "start", "stop", "start_all", "stop_all", "wake", "slow_wake", "mode", "retry", "restart"}
REFRESH_EVERY = 0.1
FREEZE_AFTER = 0.5
#: A terminal shorter than this (60×20) gives the services table's frame to the log.
SHORT_BELOW = 24
STYLES = Path(__file__).resolve().parent / "styles"


def _refusals() -> tuple[type[Exception], ...]:
    """What an engine call raises for something the user can read (and maybe fix): said in
    the log, never a crash. Imported late: these modules would delay the first frame."""
    from aime_tui.control.client import ControlError, Unreachable
    from aime_tui.store.database import StoreError

    return (ValueError, KeyError, StoreError, ControlError, Unreachable)


def _freeze_long_lived() -> None:
    gc.collect()  # garbage first, or it would be kept forever
    gc.freeze()
    gc.enable()


def _terminal_attached() -> bool:
    try:
        return os.isatty(sys.__stdin__.fileno()) and os.isatty(sys.__stdout__.fileno())
    except (AttributeError, ValueError, OSError):
        return False


# The help screen's groups, by action (Binding.group would also group them in a footer).
SELECTED, EVERY, SCREENS = "The selected service", "All services", "Screens and the app"
HELP_GROUP = {
    **dict.fromkeys(("toggle", "start", "stop", "retry", "restart"), SELECTED),
    **dict.fromkeys(("start_all", "stop_all", "mode", "wake", "slow_wake"), EVERY),
    **dict.fromkeys(("history", "plays", "help", "detach", "quit", "shutdown"), SCREENS),
}


class AimeApp(App):
    TITLE = "aime-tui"
    # The other screens load their own styles when first shown.
    CSS_PATH = STYLES / "app.tcss"
    # The tooltip is what the help screen (?) says; the description is the key bar's word.
    BINDINGS = [
        Binding("space", "toggle", "toggle", tooltip="want the selected service on / off"),
        Binding("s", "start", "start", tooltip="start the selected service"),
        Binding("x", "stop", "stop", tooltip="stop the selected service"),
        Binding("r", "retry", "retry", tooltip="retry now: skip a backoff wait, or after fixing the config"),
        Binding("p", "plays", "plays", tooltip="the plays: newest first, search (/), plays per day, top artists"),
        Binding("h", "history", "history", tooltip="availability, restarts and failures (esc back)"),
        Binding("A", "start_all", "all on", show=False, tooltip="start every service"),
        Binding("X", "stop_all", "all off", show=False, tooltip="stop every service (asks first)"),
        Binding("m", "mode", "mode", tooltip="scheduler mode: MAINTENANCE ↔ MASSIVE (saved)"),
        Binding("w", "wake", "wake", tooltip="recover as after a sleep: stop and restore what is wanted"),
        Binding("W", "slow_wake", "slow wake", show=False, tooltip="demo only: a wake on a slow network"),
        Binding("question_mark", "help", "help", tooltip="these keys (? or esc closes)"),
        Binding("d", "detach", "detach", tooltip="detach: close the window, the services keep running"),
        Binding("q", "quit", "quit", tooltip="quit: services stop, what you want is remembered"),
    ]

    def __init__(
        self,
        engine: EngineHost | Callable[[], EngineHost],
        *,
        now: Callable[[], float] = time.time,
        subtitle: str | Callable[[], str] = "home server",
    ) -> None:
        super().__init__()
        #: The engine, or what makes it once the first frame is painted.
        self._make_engine = engine if callable(engine) else None
        self.engine: EngineHost | None = None if self._make_engine else engine
        #: How the app ended: "quit" (the engine closed with it), "detach" or "lost"
        #: (the engine left running).
        self.outcome = "quit"
        #: Why the terminal is gone, once it is.
        self.lost_terminal: str | None = None
        #: Opening the engine, then the launch restoration: outlives the app when detached.
        self.engine_started: asyncio.Task | None = None
        #: Why the engine could not open, if it could not.
        self.engine_error: Exception | None = None
        self._engine_ready = asyncio.Event()
        self._terminal_gone = asyncio.Event()
        self._unsubscribe: Callable[[], None] = lambda: None
        self._now = now
        self._subtitle = subtitle
        self._pending_log: list[LogEvent | RestoreSummary] = []
        self._dirty: set[str] = set()
        self.supervisor: ServiceControl | None = None
        self.last_summary: RestoreSummary | None = None
        self._services_table: ServicesTable | None = None

    # -- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield TitleBar(self._subtitle, self._now, id="title-bar")
        # The class is set here rather than by breakpoints: a class that changes on the
        # first resize restyles the whole screen before the first frame.
        yield ServicesTable(id="services", classes="-short" if self.size.height < SHORT_BELOW else "")
        yield DetailLine("", id="detail")
        yield NowPlaying(id="now-playing")
        yield SummaryLine(id="summary")
        yield LogView(id="log")
        yield KeyBar(id="keys")

    def on_resize(self, event: events.Resize) -> None:
        if self._services_table is not None:
            self._services_table.set_class(event.size.height < SHORT_BELOW, "-short")

    @property
    def table(self) -> ServicesTable:
        assert self._services_table is not None, "the table exists once mounted"
        return self._services_table

    @property
    def log_view(self) -> LogView:
        return self.query_one("#log", LogView)

    async def on_mount(self) -> None:
        self._services_table = self.query_one("#services", ServicesTable)
        self.set_interval(REFRESH_EVERY, self._refresh_from_engine)
        self.set_interval(1.0, self._tick)
        if _terminal_attached():
            # An SSH drop can leave us with a hung-up terminal and no SIGHUP; Textual's
            # input thread would then spin.
            self.set_interval(0.5, self._check_terminal)
        # After the first frame: the engine's imports and opening cost more than the
        # whole paint. Not a worker: it goes on if the app ends and leaves the engine.
        self.call_after_refresh(self.begin_engine)

    def get_driver_class(self):
        driver = super().get_driver_class()
        return TerminalDriver if issubclass(TerminalDriver, driver) else driver

    def begin_engine(self) -> None:
        """Make the engine (if given a factory) and open it, then launch, in a task."""
        if self.engine_started is not None:
            return
        if self.engine is None:
            assert self._make_engine is not None
            self.engine = self._make_engine()
        # Before opening: the engine's notices while it opens (a locked database) count too.
        self._unsubscribe = self.engine.bus.subscribe(self._on_engine_event)
        self.engine_started = asyncio.create_task(self._start_engine(), name="engine")

    async def _start_engine(self) -> None:
        assert self.engine is not None
        from aime_tui.store.database import StoreError

        try:
            # Opening may wait for a locked database: keep the UI (and q) alive meanwhile.
            supervisor = await self.engine.open()
        except (StoreError, OSError) as exc:
            gc.enable()
            self.engine_error = exc
            self._engine_ready.set()
            self.exit(return_code=2, message=f"aime-tui: {exc}")
            return
        self.supervisor = supervisor
        if not self._widgets_gone():
            self.table.show(supervisor.views(), self._now())
            self.table.focus()
            self._show_detail()
        self._engine_ready.set()
        self._pending_log.append(LogEvent(f"data in {self.engine.config.data_dir}", at=self._now()))
        # Restoration runs beside the UI: keys work while services are still starting.
        try:
            await self.engine.launch()
        finally:
            # The launcher paused the collector (cli/dashboard.py) for the imports and the
            # objects of the launch. What is alive now lives as long as the app, and moving
            # it out of the collector's view halves the worst full-collection pauses once
            # the log holds thousands of lines. Not at once: the collection holds the
            # interpreter ~40 ms, and the summary must reach the terminal first.
            if self.is_running:
                self.set_timer(FREEZE_AFTER, _freeze_long_lived)
            else:
                gc.enable()

    async def _supervisor_ready(self) -> ServiceControl | None:
        """The supervisor, once the engine is open: a key pressed before waits for it."""
        await self._engine_ready.wait()
        return self.supervisor

    # -- the terminal, and leaving ----------------------------------------------------------

    def _check_terminal(self) -> None:
        if not _terminal_attached():
            self.terminal_lost("the terminal hung up")

    def drop_output(self) -> None:
        """Write nothing more to the terminal; safe from a signal handler or any thread."""
        driver = self._driver
        if isinstance(driver, TerminalDriver):
            driver.lose()

    def terminal_lost(self, why: str) -> None:
        """The terminal is gone: end the app without touching it, and leave the engine running."""
        if self.lost_terminal is not None:
            return
        self.lost_terminal = why
        self.drop_output()
        logging.getLogger(__name__).warning("terminal lost (%s): closing the window, the services keep running", why)
        self.outcome = "lost"
        self._terminal_gone.set()
        self.exit()

    async def wait_for_lost_terminal(self) -> None:
        await self._terminal_gone.wait()

    def action_detach(self) -> None:
        """Close the window; the services keep running in the background."""
        self.outcome = "detach"
        self.exit()

    def stop_listening(self) -> None:
        """The window is gone: the engine no longer reports here."""
        self._unsubscribe()
        self._unsubscribe = lambda: None

    async def on_unmount(self) -> None:
        gc.enable()
        gc.unfreeze()
        self.stop_listening()
        if self.outcome == "quit":
            if self.engine_started is not None:
                self.engine_started.cancel()  # a start still under way is abandoned
            if self.engine is not None:
                await self.engine.close()

    # -- engine events -------------------------------------------------------------------

    def _on_engine_event(self, event: Event) -> None:
        if isinstance(event, StateEvent):
            self._dirty.add(event.view.name)
        else:
            self._pending_log.append(event)
            if isinstance(event, RestoreSummary):
                # The line the user waits for: show it now, not at the next refresh pass
                # (as a message, which Textual drops once the app is closing).
                self.call_later(self._refresh_from_engine)

    def _widgets_gone(self) -> bool:
        # While quitting, the screen's widgets are removed before the refresh timers
        # stop and before the services have stopped (their events keep coming).
        return self._services_table is None or not self._services_table.is_attached

    def _refresh_from_engine(self) -> None:
        if self.supervisor is None or self._widgets_gone():
            return
        dirty, self._dirty = self._dirty, set()
        if dirty:
            with self.batch_update():
                self.table.show([self.supervisor.view(name) for name in dirty], self._now())
                self._show_detail()
        pending, self._pending_log = self._pending_log, []
        if pending:
            self._write_log(pending)

    def _tick(self) -> None:
        """Once a second: countdowns, last-check times, counts and now playing."""
        if self.supervisor is None or self._widgets_gone():
            return
        with self.batch_update():
            self.table.show(self.supervisor.views(), self._now())
            self._show_detail()
            roon = self.supervisor.view("roon_tracker").status if "roon_tracker" in self.supervisor.names else {}
            self.query_one(NowPlaying).show(roon)
            self._show_summary()

    def _write_log(self, events: list[LogEvent | RestoreSummary]) -> None:
        # In time order: an attached dashboard's replay of older lines arrives after its own first line.
        events = sorted(events, key=lambda event: event.at)
        for event in events:
            if isinstance(event, RestoreSummary):
                self.last_summary = event
        self._show_summary()
        self.log_view.append(events)

    def _show_summary(self) -> None:
        """The last summary, saying which of its failures have recovered since (the log
        keeps the line as it was said)."""
        if self.last_summary is not None and self.supervisor is not None:
            self.query_one(SummaryLine).show(self.last_summary, self.supervisor.views(), self._now())

    def _show_detail(self) -> None:
        name = self.selected_service
        if name is not None and self.supervisor is not None:
            self.query_one(DetailLine).show(self.supervisor.view(name), self._now())

    def on_data_table_row_highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._show_detail()

    async def on_data_table_row_selected(self, _: DataTable.RowSelected) -> None:
        await self.action_toggle()  # enter

    # -- actions -------------------------------------------------------------------------

    @property
    def selected_service(self) -> str | None:
        if self.supervisor is None or not self.supervisor.names:
            return None
        row = min(self.table.cursor_row, len(self.supervisor.names) - 1)
        return self.supervisor.names[max(row, 0)]

    async def _act(self, operation) -> None:
        """Run a supervisor call; a refusal (unknown mode, closed store) goes to the log."""
        try:
            await operation
        except NothingToDo as exc:  # asked for something that is already so: said, not an error
            self._pending_log.append(LogEvent(str(exc), logging.INFO, at=self._now()))
        except _refusals() as exc:
            self._pending_log.append(LogEvent(str(exc), logging.ERROR, at=self._now()))

    @work(name="wake", group="wake", exit_on_error=False)
    async def _recover(self, wake) -> None:
        """Run a wake recovery in a worker: whatever goes wrong is logged, with its
        traceback in the log file, and never closes the dashboard."""
        try:
            await self._act(wake)
        except Exception as exc:
            logging.getLogger(__name__).exception("wake recovery failed")
            text = f"wake recovery failed: {exc or type(exc).__name__} (details in the log file)"
            self._pending_log.append(LogEvent(text, logging.ERROR, at=self._now()))

    async def action_toggle(self) -> None:
        if await self._supervisor_ready() and (name := self.selected_service):
            await self._act(self.supervisor.toggle(name))

    async def action_start(self, name: str | None = None) -> None:
        if await self._supervisor_ready() and (name := name or self.selected_service):
            await self._act(self.supervisor.start(name))

    async def action_stop(self, name: str | None = None) -> None:
        if await self._supervisor_ready() and (name := name or self.selected_service):
            await self._act(self.supervisor.stop(name))

    async def action_start_all(self) -> None:
        if await self._supervisor_ready():
            await self._act(self.supervisor.start_all())

    async def action_stop_all(self) -> None:
        """Stopping everything is hard to undo by accident: ask once."""
        from aime_tui.ui.screens.confirm import ConfirmScreen

        if not await self._supervisor_ready():
            return
        wanted = [view.name for view in self.supervisor.views() if view.wanted or view.up]
        if not wanted:
            self._pending_log.append(LogEvent("no service is wanted or running: nothing to stop", at=self._now()))
            return
        count = len(wanted)
        every = "all " if count == len(self.supervisor.names) else ""
        question = f"stop {every}{count} service{'s' if count != 1 else ''}?"

        async def answered(yes: bool | None) -> None:
            if yes and self.supervisor is not None:
                await self._act(self.supervisor.stop_all())

        self.push_screen(ConfirmScreen(question), answered)

    async def action_retry(self, name: str | None = None) -> None:
        if await self._supervisor_ready() and (name := name or self.selected_service):
            await self._act(self.supervisor.retry_now(name))

    async def action_restart(self, name: str | None = None) -> None:
        if await self._supervisor_ready() and (name := name or self.selected_service):
            await self._act(self.supervisor.restart_now(name))

    async def action_mode(self) -> None:
        if await self._supervisor_ready():
            moded = [n for n in self.supervisor.names if self.supervisor.modes(n)]
            for name in moded:
                await self._act(self.supervisor.cycle_mode(name))

    async def action_wake(self) -> None:
        if await self._supervisor_ready():
            self._recover(self.supervisor.wake())

    async def action_history(self) -> None:
        if await self._supervisor_ready() is not None and not self._on_history_screen():
            from aime_tui.ui.screens.history import HistoryScreen

            self.push_screen(HistoryScreen(self.engine.config.db_path, self.supervisor.names, now=self._now))

    def _on_history_screen(self) -> bool:
        # Its module is imported when first shown: before that, it cannot be on screen.
        history = sys.modules.get("aime_tui.ui.screens.history")
        return history is not None and isinstance(self.screen, history.HistoryScreen)

    def action_plays(self) -> None:
        from aime_tui.ui.screens.plays import PlaysScreen

        if not isinstance(self.screen, PlaysScreen):
            self.push_screen(PlaysScreen(self.engine.config.db_path, now=self._now))

    def _on_plays_screen(self) -> bool:
        plays = sys.modules.get("aime_tui.ui.screens.plays")
        return plays is not None and isinstance(self.screen, plays.PlaysScreen)

    def action_help(self) -> None:
        from aime_tui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_groups()))

    def help_groups(self) -> HelpGroups:
        """The focused part's own keys, then the keys of this screen and the app, by group."""
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        focused = self.focused
        part = getattr(focused, "HELP_KEYS", None) or getattr(self.screen, "HELP_KEYS", None)
        if part:
            title = "The log" if isinstance(focused, LogView) else "The services table"
            if not isinstance(focused, (LogView, ServicesTable)):
                title = "This screen"
            groups.append((title, list(part)))
        # Textual's own keys (focus moves, copy, ctrl+q) are not this app's to explain.
        textual_own = {
            (key.strip(), binding.action)
            for binding in (*App.BINDINGS, *Screen.BINDINGS)
            if isinstance(binding, Binding)
            for key in binding.key.split(",")
        }
        by_group: dict[str, list[tuple[str, str]]] = {}
        for node, binding, _, _ in self.screen.active_bindings.values():
            # The focused widget's own bindings (a table's cursor keys) are its part's above.
            ours = node is self or node is self.screen
            textuals = (binding.key, binding.action) in textual_own or binding.action == "command_palette"
            if not ours or textuals or binding.system or not binding.description:
                continue
            if binding.action in SERVICE_ACTIONS and not self._on_dashboard():
                continue
            heading = HELP_GROUP.get(binding.action, "Other keys")
            key = self.get_key_display(binding)
            by_group.setdefault(heading, []).append((key, binding.tooltip or binding.description))
        if self.ENABLE_COMMAND_PALETTE:
            palette = (self.COMMAND_PALETTE_BINDING, "command palette: every action by name")
            by_group.setdefault(SCREENS, []).insert(-1, palette)
        order = [SELECTED, EVERY, SCREENS]
        groups.extend(sorted(by_group.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
        return groups

    def _on_dashboard(self) -> bool:
        return len(self.screen_stack) == 1

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Over another screen (history, help, a question), service keys would act on a
        # table out of sight.
        if action == "slow_wake" and (self.engine is None or self.engine.demo is None):
            return False  # the demo's slow network only
        return not (action in SERVICE_ACTIONS and not self._on_dashboard())

    async def action_slow_wake(self) -> None:
        if await self._supervisor_ready() and self.engine.demo is not None:
            self._recover(self.engine.simulate_slow_wake())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's "Keys" opens its own panel of widget bindings, and its "Quit" says "as
        # soon as possible": this app's help (?) and quit say what they do here.
        for command in super().get_system_commands(screen):
            if command.title not in ("Keys", "Quit"):
                yield command
        yield SystemCommand("Keys", "This app's keys, by what they act on (?)", self.action_help)
        yield from self._leaving_commands()
        if self.supervisor is None:
            return
        for name in self.supervisor.names:
            yield SystemCommand(f"Start {name}", f"Want {name} running and start it", partial(self.action_start, name))
            yield SystemCommand(f"Stop {name}", f"Want {name} stopped and stop it", partial(self.action_stop, name))
            yield SystemCommand(f"Retry {name} now", "Skip the backoff wait", partial(self.action_retry, name))
            yield SystemCommand(f"Restart {name}", "Stop it and start it again (wanted on)", partial(self.action_restart, name))
        yield SystemCommand("Start all services", "Want every service running", self.action_start_all)
        yield SystemCommand("Stop all services", "Want every service stopped", self.action_stop_all)
        yield SystemCommand("Cycle scheduler mode", "MAINTENANCE ↔ MASSIVE (saved)", self.action_mode)
        yield SystemCommand("Simulate wake", "Recover as after a sleep: stop and restore", self.action_wake)
        yield SystemCommand("History and availability", "Transitions, availability over 24 h and 7 d", self.action_history)
        yield SystemCommand("Plays and stats", "The stored history: search, plays per day, top artists", self.action_plays)

    def _leaving_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Detach", "Close the window; the services keep running in the background", self.action_detach)
        yield SystemCommand("Quit", "Stop the services and close; what they want is remembered", self.action_quit)


class AttachedApp(AimeApp):
    """The dashboard of an instance that runs on without it (usually headless): `q` and `d`
    detach; stopping the instance is explicit (its palette entry, or `aime-tui shutdown`)."""

    BINDINGS = [
        Binding("d", "detach", "detach", show=False),
        Binding("q", "detach", "detach", tooltip="Close the window; the instance and its services keep running"),
    ]

    #: Closed by q or d (not by a shutdown, nor a failure to attach).
    detached = False

    def action_detach(self) -> None:
        self.detached = True
        self.exit()  # closing a remote engine detaches from it

    async def action_shutdown(self) -> None:
        try:
            pid = await self.engine.shutdown()
        except _refusals() as exc:
            self._pending_log.append(LogEvent(str(exc), logging.ERROR, at=self._now()))
            return
        self.exit(message=f"aime-tui: asked the instance (pid {pid}) to stop; its services stop with it")

    def _leaving_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Detach", "Close the window; the instance keeps running", self.action_detach)
        yield SystemCommand(
            "Shut down the instance", "Stop the running instance and its services (what they want is kept)",
            self.action_shutdown,
        )
