"""One-line panels under the table: the selected service's detail, now playing, and the
restoration summary."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from aime_tui.core.model import RestoreSummary, ServiceView
from aime_tui.ui.cells import detail_text, now_playing_text
from aime_tui.ui.widgets.log_view import event_line


class DetailLine(Static):
    """What the selected service is doing or needs."""

    def show(self, view: ServiceView, now: float) -> None:
        # A line that never changes size: repaint without a layout pass of the screen.
        self.update(detail_text(view, now), layout=False)


class NowPlaying(Static):
    """Every Roon zone that has a track."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self._text({}), **kwargs)

    @staticmethod
    def _text(roon_status: dict[str, Any]) -> str:
        return f"Now playing ─ {now_playing_text(roon_status)}"

    def show(self, roon_status: dict[str, Any]) -> None:
        self.update(self._text(roon_status), layout=False)


class SummaryLine(Static):
    """The last restoration's outcome, as the log said it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("Restoring…", **kwargs)

    def show(self, summary: RestoreSummary) -> None:
        self.update(event_line(summary))


