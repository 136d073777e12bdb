"""The title bar: the instance's name on the left, a clock on the right, redrawn each second."""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.widget import Widget

from aime_tui.format import clock


class TitleBar(Widget):
    """One widget that renders both, not a row of two labels: three nodes fewer to style
    and lay out before the dashboard's first frame."""

    DEFAULT_CSS = """
    TitleBar {
        height: 1;
        padding: 0 1;
    }
    """

    def __init__(self, subtitle: str | Callable[[], str], now: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self._subtitle = subtitle  # a callable when it can change (an attached dashboard's instance)
        self._now = now
        #: The title as last drawn (the subtitle can change between two redraws).
        self.shown = ""

    @property
    def title(self) -> str:
        subtitle = self._subtitle() if callable(self._subtitle) else self._subtitle
        return f"aime-tui ─ {subtitle}"

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh)  # its size never changes: no layout pass

    def render(self) -> Text:
        title, time = self.title, clock(self._now())
        self.shown = title
        gap = max(self.content_size.width - len(title) - len(time), 1)
        return Text.assemble((title, "bold"), " " * gap, time, no_wrap=True, overflow="ellipsis")
