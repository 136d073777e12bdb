"""The live log: engine events written as timestamped lines, a batch at a time."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from rich.text import Text
from textual.widgets import RichLog

from aime_tui.core.model import LogEvent, RestoreSummary
from aime_tui.format import clock

MAX_LINES = 5000
LEVEL_STYLE = {logging.WARNING: "yellow", logging.ERROR: "bold red"}


def event_line(event: LogEvent | RestoreSummary) -> Text:
    stamp = (f"{clock(event.at)} ", "dim")
    if isinstance(event, RestoreSummary):
        return Text.assemble(stamp, (event.line(), "bold red" if event.failed else "bold green"))
    return Text.assemble(stamp, (event.text, LEVEL_STYLE.get(event.level, "")))


class LogView(RichLog):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_lines", MAX_LINES)
        kwargs.setdefault("wrap", True)
        kwargs.setdefault("markup", False)
        super().__init__(**kwargs)

    def on_mount(self) -> None:
        self.border_title = "Log"

    def append(self, events: Sequence[LogEvent | RestoreSummary]) -> None:
        """Write a batch of events in one write: one layout and one scroll however many
        lines arrived (a busy log costs the same refresh pass)."""
        lines = Text("\n").join(event_line(event) for event in events)
        # Follow the tail only if the user has not scrolled up to read.
        self.write(lines, scroll_end=self.is_vertical_scroll_end)
