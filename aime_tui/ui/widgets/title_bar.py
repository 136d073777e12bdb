"""The title bar: the instance's name on the left, a clock on the right, redrawn each second."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from aime_tui.format import clock


class TitleBar(Horizontal):
    def __init__(self, subtitle: str | Callable[[], str], now: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self._subtitle = subtitle  # a callable when it can change (an attached dashboard's instance)
        self._now = now

    def compose(self) -> ComposeResult:
        yield Label(self._title_text(), id="title")
        yield Label(clock(self._now()), id="clock")

    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        # Neither label changes size: repaint them without a layout pass of the whole
        # screen (once a second, it adds up).
        self.query_one("#clock", Label).update(clock(self._now()), layout=False)
        if callable(self._subtitle):
            self.query_one("#title", Label).update(self._title_text(), layout=False)

    def _title_text(self) -> str:
        subtitle = self._subtitle() if callable(self._subtitle) else self._subtitle
        return f"aime-tui ─ {subtitle}"
