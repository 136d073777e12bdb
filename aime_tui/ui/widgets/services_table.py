"""The services table: one row per service, its columns fitted to the width it has.

Column widths come from what the cells hold. When the table is too narrow for all of
them, it first uses the short forms (a shorter heading, "MAINT" for MAINTENANCE,
"✖ attention"), then drops whole columns, least needed first (restarts, plays, last
check, mode, want), so what is left is never cut and nothing hides behind a scrollbar.
The service and its state always stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

from aime_tui.core.model import ServiceView
from aime_tui.ui.cells import COLUMNS, row_cells

#: Short headings for a narrow table.
SHORT_LABELS = {"last_check": "Checked"}
#: Short cell texts for a narrow table (the detail line under the table says it in full).
SHORT_VALUES = {"MAINTENANCE": "MAINT", "✖ needs attention": "✖ attention"}
#: Columns a narrow table gives up, first to last; the others always stay.
DROP_FIRST = ("restarts", "plays", "last_check", "mode", "want")


@dataclass(frozen=True)
class Layout:
    """Which columns show, with which heading and width, and whether cells are short."""

    columns: tuple[tuple[str, str, int], ...]
    short: bool

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _, _ in self.columns)


def _text(value: Any) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def shorten(value: Any) -> Any:
    """The short form of a cell, keeping its style."""
    plain = _text(value)
    short = SHORT_VALUES.get(plain)
    if short is None:
        return value
    return Text(short, style=value.style) if isinstance(value, Text) else short


def fit_columns(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    padding: int = 1,
) -> Layout:
    """The widest layout of `columns` (key, heading) that shows `rows` whole in `width` cells."""

    def layout(keys: Sequence[str], short: bool) -> Layout:
        chosen = []
        for key, label in columns:
            if key not in keys:
                continue
            if short:
                label = SHORT_LABELS.get(key, label)
            cells = [_text(shorten(row[key]) if short else row[key]) for row in rows]
            chosen.append((key, label, max([len(label), *map(len, cells)])))
        return Layout(tuple(chosen), short)

    def total(candidate: Layout) -> int:
        return sum(cell_width + 2 * padding for _, _, cell_width in candidate.columns)

    keys = [key for key, _ in columns]
    candidate = layout(keys, short=False)
    if total(candidate) <= width:
        return candidate
    for drop in (None, *DROP_FIRST):
        if drop in keys:
            keys.remove(drop)
        candidate = layout(keys, short=True)
        if total(candidate) <= width:
            return candidate
    return candidate  # service and state alone: the narrowest there is


class ServicesTable(DataTable):
    """A DataTable of a few rows that fits its columns to its width.

    DataTable keys its render caches by an update counter, so each cell update leaves
    the previous renders behind until its LRU caches (10,000 cells, 1,000 rows and lines)
    evict them: a three-row table updated every second grew the app's memory by about
    0.3 MB a minute for over an hour, some 14 MB in all. After a pass that changed cells,
    the table drops those caches through the style-update hook (the one public way to
    clear them); re-rendering a few rows once a second costs next to nothing.
    """

    #: What the help screen says about this table's own keys.
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("↑ ↓", "select a service"),
        ("enter", "toggle the selected service (like space)"),
        ("tab", "to the log, to scroll it"),
    )

    def __init__(self, columns: Sequence[tuple[str, str]] = COLUMNS, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)
        self._all_columns = tuple(columns)
        self._rows: dict[str, dict[str, Any]] = {}
        self._layout: Layout | None = None

    def on_mount(self) -> None:
        self.border_title = "Services"

    def show(self, views: Iterable[ServiceView], now: float) -> None:
        """Show these engine views (a row per service, added when first seen)."""
        self.show_rows({view.name: row_cells(view, now) for view in views})

    @property
    def layout_keys(self) -> tuple[str, ...]:
        """The columns on screen now."""
        return self._layout.keys if self._layout is not None else ()

    def show_rows(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Show these rows (by service name), touching only the cells whose text changed."""
        changed = {}
        for name, cells in rows.items():
            before = self._rows.get(name)
            if before != cells:
                changed[name] = dict(cells)
        if not changed:
            return
        self._rows.update(changed)
        layout = self._fit()
        if layout != self._layout or any(name not in self.rows for name in changed):
            self._rebuild(layout)
            return
        updated = False
        for name, cells in changed.items():
            for key in layout.keys:
                value = shorten(cells[key]) if layout.short else cells[key]
                if self.get_cell(name, key) != value:
                    self.update_cell(name, key, value)
                    updated = True
        if updated:
            self.notify_style_update()

    def on_resize(self, _: Resize) -> None:
        if self._rows:
            layout = self._fit()
            if layout != self._layout:
                self._rebuild(layout)

    def _fit(self) -> Layout:
        width = self.scrollable_content_region.width or self.size.width
        return fit_columns(self._all_columns, list(self._rows.values()), width, padding=self.cell_padding)

    def _rebuild(self, layout: Layout) -> None:
        row = self.cursor_row
        self.clear(columns=True)
        for key, label, width in layout.columns:
            self.add_column(label, key=key, width=width)
        for name, cells in self._rows.items():
            values = (shorten(cells[key]) if layout.short else cells[key] for key in layout.keys)
            self.add_row(*values, key=name)
        self._layout = layout
        self.move_cursor(row=max(0, min(row, len(self._rows) - 1)), animate=False)
