"""Panels under the table: the selected service's detail, now playing, and the
restoration summary. Each wraps to the width it has, so nothing is cut."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.widgets import Static

from aime_tui.core.model import RestoreSummary, ServiceView
from aime_tui.format import clock
from aime_tui.ui.cells import detail_text, now_playing_text


class WrappedLine(Static):
    """Repainted only when its text changes; laid out again only when its length does
    (a countdown or a seek position ticking keeps it, once a second)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: str | None = None

    def show_text(self, text: str | Text) -> None:
        plain = text.plain if isinstance(text, Text) else text
        if plain == self._shown:
            return
        layout = self._shown is None or len(plain) != len(self._shown)
        self._shown = plain
        self.update(text, layout=layout)


class DetailLine(WrappedLine):
    """What the selected service is doing or needs."""

    def show(self, view: ServiceView, now: float) -> None:
        self.show_text(detail_text(view, now))


class NowPlaying(WrappedLine):
    """Every Roon zone that has a track."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self._text({}), **kwargs)

    @staticmethod
    def _text(roon_status: dict[str, Any]) -> str:
        return f"Now playing ─ {now_playing_text(roon_status)}"

    def show(self, roon_status: dict[str, Any]) -> None:
        self.show_text(self._text(roon_status))


def summary_style(summary: RestoreSummary, views: Iterable[ServiceView]) -> str:
    """Red while a failure stands, yellow for what is only not set up, else green."""
    recovered = summary.recovered(views, 0.0)
    if any(name not in recovered for name in summary.failed):
        return "bold red"
    return "bold yellow" if summary.not_set_up else "bold green"


class SummaryLine(WrappedLine):
    """The last restoration's outcome, saying which failures have recovered since."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("Restoring…", **kwargs)

    def show(self, summary: RestoreSummary, views: Iterable[ServiceView] = (), now: float | None = None) -> None:
        views = list(views)
        line = summary.line(views, now, recovered_reasons=False)  # what went wrong: in the log
        self.show_text(Text.assemble((f"{clock(summary.at)} ", "dim"), (line, summary_style(summary, views))))
