"""The services table: one row per service, cells redrawn only when their text changes."""

from __future__ import annotations

from typing import Any, Iterable

from textual.widgets import DataTable

from aime_tui.core.model import ServiceView
from aime_tui.ui.cells import COLUMNS, row_cells


class ServicesTable(DataTable):
    """A DataTable of a handful of rows that shows engine views.

    DataTable keys its render caches by an update counter, so each cell update leaves
    the previous renders behind until its LRU caches (10,000 cells, 1,000 rows and lines)
    evict them: a three-row table updated every second grew the app's memory by about
    0.3 MB a minute for over an hour, some 14 MB in all. After a pass that changed cells,
    the table drops those caches through the style-update hook (the one public way to
    clear them); re-rendering a few rows once a second costs next to nothing.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)
        self._shown: dict[tuple[str, str], Any] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self.border_title = "Services"

    def show(self, views: Iterable[ServiceView], now: float) -> None:
        """Add a row for a service not shown yet; touch only the cells whose text changed
        (no flicker, no full rebuild)."""
        changed = False
        for view in views:
            cells = row_cells(view, now)
            if view.name not in self.rows:
                self.add_row(*(cells[key] for key, _, _ in COLUMNS), key=view.name)
                self._shown.update({(view.name, key): value for key, value in cells.items()})
                continue
            for key, value in cells.items():
                if self._shown.get((view.name, key)) != value:
                    self._shown[view.name, key] = value
                    self.update_cell(view.name, key, value)
                    changed = True
        if changed:
            self.notify_style_update()
