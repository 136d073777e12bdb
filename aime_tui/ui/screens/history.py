"""The history screen (`h`): per service, availability over 24 h and 7 d, restarts,
recent failures and transitions, read from the database in a worker thread.

The arithmetic and the wording are history.py's, shared with `aime-tui history`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Sequence

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from aime_tui.reports import history
from aime_tui.ui.widgets.key_bar import KeyBar

TRANSITIONS_SHOWN = 50


def history_text(item: history.ServiceHistory) -> Text:
    text = Text()
    for window in item.windows:
        share = window.share
        style = "" if share is None else ("green" if share >= 0.99 else "yellow" if share >= 0.9 else "bold red")
        text.append(f"last {window.label:<5} ", style="bold")
        text.append(history.window_line(window, item.restarts[window.label]).split(": ", 1)[1], style=style)
        text.append("\n")
    if item.failures:
        text.append("recent failures\n", style="bold")
        for row in item.failures:
            text.append(f"  {history.transition_line(row)}\n", style="yellow")
    text.append("transitions\n" if item.transitions else "no transitions recorded\n", style="bold")
    for row in item.transitions:
        when, change, why = history.transition_parts(row)
        text.append(f"  {when}  ", style="dim")
        text.append(change)
        text.append(f"  {why}\n", style="dim")
    text.rstrip()
    return text


class HistoryScreen(Screen):
    # Loaded when the screen is first shown, not before the dashboard's first frame.
    CSS_PATH = Path(__file__).resolve().parent.parent / "styles" / "history.tcss"
    HELP_KEYS = (("↑ ↓ pgup pgdn", "scroll"), ("esc h q", "back to the dashboard"), ("r", "read the history again"))
    BINDINGS = [
        Binding("escape,h,q", "app.pop_screen", "back"),
        Binding("r", "reload", "reload"),
    ]

    def __init__(self, db_path: Path, names: Sequence[str], *, now=time.time) -> None:
        super().__init__()
        self._db_path = db_path
        self._names = list(names)
        self._now = now

    def compose(self) -> ComposeResult:
        yield Label("History ─ availability: the share of wanted time running", id="history-title")
        with VerticalScroll(id="history"):
            for name in self._names:
                panel = Static("loading…", id=f"history-{name}", classes="history-service")
                panel.border_title = name
                yield panel
        yield KeyBar(always=("escape", "question_mark"))

    def on_mount(self) -> None:
        self.action_reload()

    @work(name="history", group="history", exclusive=True)
    async def action_reload(self) -> None:
        try:
            # This instance runs, so a service last seen "running" still is.
            items = await asyncio.to_thread(
                history.load, self._db_path, self._names, now=self._now(), alive=True, limit=TRANSITIONS_SHOWN
            )
        except Exception as exc:  # a locked or vanished file: say so on the screen
            for name in self._names:
                self.query_one(f"#history-{name}", Static).update(f"cannot read {self._db_path}: {exc}")
            return
        for item in items:
            self.query_one(f"#history-{item.name}", Static).update(history_text(item))
