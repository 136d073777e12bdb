"""The live log: engine events written as timestamped lines, a batch at a time, wrapped
at word boundaries to the width the pane has now.

RichLog renders a line once, at the width it has when the line arrives, and never
below its `min_width` (78 by default): in a narrower pane, or after the pane shrank
(a smaller terminal), the ends of long lines were cut off. This pane wraps to its own
width from the first line, keeps the lines it was given, and wraps them all again when
its width changes.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from typing import Any, ClassVar, Iterable, Sequence

from rich.text import Text
from textual.events import Resize


def _import_rich_log():
    """RichLog's module imports rich.pretty, which imports attrs (when installed) only to
    pretty-print attrs classes: a tenth of the launch's own import time, before the first
    frame, for something this log never shows. attrs is hidden while it loads."""
    if "attr" in sys.modules or "rich.pretty" in sys.modules:
        from textual.widgets import RichLog

        return RichLog
    sys.modules["attr"] = None  # type: ignore[assignment]  # `import attr` raises ImportError
    try:
        from textual.widgets import RichLog
    finally:
        del sys.modules["attr"]
    return RichLog


RichLog = _import_rich_log()

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
    """A bounded, wrapping log that never loses a character to its width."""

    #: What the help screen says about this pane's own keys.
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("↑ ↓", "scroll a line"),
        ("pgup pgdn", "scroll a page"),
        ("home end", "oldest line / newest line (end follows new lines again)"),
        ("tab", "back to the services table"),
    )

    def __init__(self, **kwargs: Any) -> None:
        max_lines = kwargs.pop("max_lines", MAX_LINES)
        super().__init__(max_lines=max_lines, min_width=1, wrap=True, markup=False, **kwargs)
        self._entries: deque[Text] = deque(maxlen=max_lines)
        self._wrapped_at = 0
        self._sized = False
        self._height_seen: int | None = None

    def on_mount(self) -> None:
        self.border_title = "Log"

    @property
    def entries(self) -> list[Text]:
        """The lines kept, oldest first, as written (unwrapped)."""
        return list(self._entries)

    def append(self, events: Sequence[LogEvent | RestoreSummary]) -> None:
        """Write a batch of events in one write: one layout and one scroll however many
        lines arrived (a busy log costs the same refresh pass)."""
        # Follow the tail only if the user has not scrolled up to read.
        self.write_lines((event_line(event) for event in events), scroll_end=self.is_vertical_scroll_end)

    def write_lines(self, lines: Iterable[Text], *, scroll_end: bool) -> None:
        lines = list(lines)
        if not lines:
            return
        self._entries.extend(lines)
        self.write(Text("\n").join(lines), scroll_end=scroll_end)

    def on_resize(self, event: Resize) -> None:
        # A reader at the tail stays there when the pane gets shorter (a summary line
        # growing above it), or the next lines would arrive out of sight.
        following = self._was_at_end
        height = self._height_seen = self.scrollable_content_region.height
        super().on_resize(event)  # the first one writes what came before the size was known
        width = self.scrollable_content_region.width
        if not self._sized:
            self._sized = bool(width)
            self._wrapped_at = width
        elif width != self._wrapped_at and self._entries:
            self._rewrap(width, following)
        elif following and height and not self.is_vertical_scroll_end:
            self.scroll_end(animate=False, immediate=True)

    @property
    def _was_at_end(self) -> bool:
        """At the tail as of the height last seen (before this resize)."""
        if self._height_seen is None:
            return True
        return self.scroll_y >= self.virtual_size.height - self._height_seen - 1

    def _rewrap(self, width: int, following: bool) -> None:
        """Wrap every line again at `width`: a reader who was at the tail (as of the size
        before this resize: the pane may be shorter now) stays at it."""
        share = self.scroll_y / self.max_scroll_y if self.max_scroll_y else 1.0
        self._wrapped_at = width
        self.clear()
        self.write(Text("\n").join(self._entries), scroll_end=following)
        if not following:
            # Keep the reader at about the same place in the log rather than the top.
            self.call_after_refresh(lambda: self.scroll_to(y=round(share * self.max_scroll_y), animate=False))
