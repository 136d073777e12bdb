"""The plays screen (`p`): the stored history, newest first, with search, plays per day
over the last 30 days and the top artists over 7 days, 30 days and everything.

Reads the database read-only in worker threads (the queries are store/queries.py's, the
periods stats.py's), so it works the same in an attached dashboard and never holds up
the instance's writes. The table holds only what has been scrolled through: the next
page is fetched by keyset (older than the last row shown) as the cursor nears the end.
New plays are noticed by a cheap look at the newest one every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, Sparkline, Static

from aime_tui.reports import stats
from aime_tui.store import queries
from aime_tui.store.queries import PlayRow, Ranked
from aime_tui.store.roon_cores import core_names
from aime_tui.ui.widgets.key_bar import KeyBar

PAGE = 100
#: Fetch the next page once the cursor is this close to the last row loaded.
PREFETCH = 20
CHART_DAYS = 30
TOP_SHOWN = 5
#: How often the screen looks for new plays, and how long typing pauses before a search.
WATCH_EVERY = 2.0
SEARCH_DELAY = 0.25
#: The top over the whole history reads every play: at most this often while plays arrive.
ALL_TIME_EVERY = 60.0
TOP_PERIODS = (("7 days", "7d"), ("30 days", "30d"), ("all time", "all"))
#: The table's columns: (key, label, share of the width the fixed ones leave). "From" is as
#: wide as its widest text (a Roon Core's name, up to SOURCE_MAX); album goes first when narrow.
WHEN_WIDTH, SOURCE_MAX = 16, 18
NAMED = (("artist", "Artist", 3), ("title", "Title", 4), ("album", "Album", 3))
#: Below this many cells for artist, title and album together, the Core's name gives way
#: in the From column (the line under the table still says it), then album.
ALBUM_FROM = 42
SOURCE_MIN = len("lastfm")
CELL_PADDING = 2


@dataclass
class Overview:
    stored: int
    per_day: list[int]
    first_day: str
    top: dict[str, list[Ranked]]


def _overview(db_path: Path, now: float, periods: tuple[str, ...]) -> Overview:
    db = queries.connect_read_only(db_path)
    try:
        today = datetime.fromtimestamp(now).date()
        first = stats.first_day("30d", today, db)
        assert first is not None
        days = queries.per_day(db, first, CHART_DAYS)
        top = {}
        for period in periods:
            start = stats.first_day(period, today, db)
            bounds = {} if period == "all" or start is None else {"since": queries.day_starts(start, 1)[0]}
            top[period] = queries.top(db, "artists", limit=TOP_SHOWN, **bounds) if start is not None else []
        stored = sum(queries.totals_by_source(db).values())
        return Overview(stored, [plays for _, plays in days], first.isoformat(), top)
    finally:
        db.close()


def _page(db_path: Path, before: tuple[int, int] | None, search: str | None) -> tuple[list[PlayRow], dict[str, str]]:
    """A page of plays, and the Roon Cores' names (a Roon play's account is its core_id)."""
    db = queries.connect_read_only(db_path)
    try:
        return queries.page(db, before=before, limit=PAGE, search=search), core_names(db)
    finally:
        db.close()


def source_text(row: PlayRow, cores: dict[str, str]) -> str:
    """Where a play came from, as a person reads it: the Roon Core by name, not by id."""
    name = cores.get(row.account) if row.source == "roon" else None
    return f"roon · {name}" if name else row.source


def play_detail(row: PlayRow, cores: dict[str, str]) -> str:
    """The highlighted play in full: what the columns cut, and where it came from."""
    album = f" [{_one_line(row.album)}]" if row.album else ""
    where = [source_text(row, cores)] + ([row.zone] if row.zone else [])
    return f"{_one_line(row.artist)} – {_one_line(row.title)}{album} · {', '.join(where)}"


def column_widths(width: int, source_width: int) -> dict[str, int]:
    """Each column's width in a table `width` cells wide (its scrollbar excluded)."""
    named = list(NAMED)
    left = width - WHEN_WIDTH - source_width - CELL_PADDING * (2 + len(named))
    if left < ALBUM_FROM:
        left, source_width = left + source_width - SOURCE_MIN, SOURCE_MIN
    widths = {"when": WHEN_WIDTH, "source": source_width}
    if left < ALBUM_FROM:
        named, left = named[:-1], left + CELL_PADDING
    left = max(left, 4 * len(named))
    shares = sum(share for _, _, share in named)
    for index, (key, _, share) in enumerate(named):
        widths[key] = left - sum(widths.get(k, 0) for k, _, _ in named) if index == len(named) - 1 else left * share // shares
    return widths


def _newest(db_path: Path) -> tuple[int, int] | None:
    db = queries.connect_read_only(db_path)
    try:
        return queries.newest_play(db)
    finally:
        db.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def top_table(top: dict[str, list[Ranked]]) -> Table:
    table = Table.grid(padding=(0, 2), expand=True)
    for label, _ in TOP_PERIODS:
        table.add_column(label, ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_row(*(Text(label, style="bold") for label, _ in TOP_PERIODS))
    # Counts right-aligned to the widest of their column, names after them.
    widths = {period: max((len(f"{item.plays:,}") for item in top.get(period) or ()), default=0)
              for _, period in TOP_PERIODS}
    for place in range(TOP_SHOWN):
        cells = []
        for _, period in TOP_PERIODS:
            ranked = top.get(period)
            if ranked is None:
                cells.append(Text("…" if place == 0 else "", style="dim"))
            elif place < len(ranked):
                item = ranked[place]
                count = f"{item.plays:,}".rjust(widths[period])
                cells.append(Text.assemble((f"{count} ", "dim"), _one_line(item.name)))
            else:
                cells.append(Text("–" if place == 0 else "", style="dim"))
        table.add_row(*cells)
    return table


class HistoryTable(DataTable):
    """The plays table; says when it has been scrolled (by keys or wheel) near its end."""

    class NearEnd(Message):
        pass

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self.row_count and new >= self.max_scroll_y - PREFETCH:
            self.post_message(self.NearEnd())


class PlaysScreen(Screen):
    # Loaded when the screen is first shown, not before the dashboard's first frame.
    CSS_PATH = Path(__file__).resolve().parent.parent / "styles" / "plays.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    HELP_KEYS = (
        ("↑ ↓ pgup pgdn", "scroll (older plays load as you go)"),
        ("/", "search artist, title or album (enter: done, esc: clear)"),
        ("esc p q", "back to the dashboard"),
        ("r", "read the plays again"),
    )
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("slash", "search", "search"),
        Binding("r", "reload", "reload"),
        Binding("p,q", "app.pop_screen", "back", show=False),
    ]

    def __init__(self, db_path: Path, *, now=time.time) -> None:
        super().__init__()
        self._db_path = db_path
        self._now = now
        self._search: str | None = None
        self._last: tuple[int, int] | None = None  # the oldest row loaded: the next page's key
        self._exhausted = False
        self._loading = False
        self._newest: tuple[int, int] | None = None
        self._overview: Overview | None = None
        self._search_timer = None
        self._all_time_at: float | None = None
        #: Bumped whenever the list starts over: a page fetched for an older list is dropped.
        self._generation = 0
        #: The rows in the table, and the Cores' names, to lay it out again at another width.
        self._rows: list[PlayRow] = []
        self._by_key: dict[str, PlayRow] = {}
        self._cores: dict[str, str] = {}
        self._widths: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        yield Label("Plays ─ loading…", id="plays-title")
        search = Input(placeholder="search artist, title or album (enter: done, esc: clear)", id="plays-search")
        search.display = False
        yield search
        with Horizontal(id="plays-charts"):
            with Vertical(id="plays-per-day"):
                yield Sparkline([0] * CHART_DAYS, id="plays-sparkline")
                yield Label("", id="plays-per-day-caption")
            yield Static("", id="plays-top")
        yield HistoryTable(id="plays-table", cursor_type="row", zebra_stripes=True)
        yield Label("", id="plays-detail")
        yield KeyBar(always=("escape", "slash", "question_mark"))

    @property
    def table(self) -> DataTable:
        return self.query_one("#plays-table", DataTable)

    def on_mount(self) -> None:
        self.query_one("#plays-per-day", Vertical).border_title = f"plays per day, {CHART_DAYS} d"
        self.query_one("#plays-top", Static).border_title = "top artists"
        self._lay_out(self.app.size.width)
        self.table.focus()
        self.run_worker(self._first_load(), name="plays", group="plays", exclusive=True)
        self.set_interval(WATCH_EVERY, self._watch)

    # -- loading --------------------------------------------------------------------------

    async def _first_load(self) -> None:
        """The table's first page and the chart first, then the slow part (top over everything)."""
        try:
            rows, overview, newest = await asyncio.gather(
                asyncio.to_thread(_page, self._db_path, None, self._search),
                asyncio.to_thread(_overview, self._db_path, self._now(), ("7d", "30d")),
                asyncio.to_thread(_newest, self._db_path),
            )
        except Exception as exc:  # an unreadable or missing database: say so, stay open
            self._say(f"Plays ─ cannot read {self._db_path}: {exc}")
            return
        self._newest = newest
        self._fill(rows, replace=True)
        if self._overview is not None and "all" in self._overview.top:
            overview.top["all"] = self._overview.top["all"]  # kept until it is read again
        self._show_overview(overview)
        if self._all_time_at is not None and time.monotonic() - self._all_time_at < ALL_TIME_EVERY:
            return
        self._all_time_at = time.monotonic()
        # Not before the frame showing the rest is out: the all-time top reads every play.
        painted = asyncio.Event()
        self.call_after_refresh(painted.set)
        await painted.wait()
        try:
            full = await asyncio.to_thread(_overview, self._db_path, self._now(), tuple(p for _, p in TOP_PERIODS))
        except Exception:
            return
        self._show_overview(full)

    def on_resize(self, event) -> None:
        self._lay_out(event.size.width)

    def _lay_out(self, width: int) -> None:
        """Columns that fit the width, the rows kept (a resize or a Core's name learnt)."""
        table = self.table
        sources = [source_text(row, self._cores) for row in self._rows[:PAGE]] or ["lastfm"]
        source_width = min(max(len(text) for text in (*sources, "lastfm")), SOURCE_MAX)
        widths = column_widths(width - table.styles.scrollbar_size_vertical, source_width)
        if widths == self._widths:
            return
        self._widths = widths
        cursor = table.cursor_row
        table.clear(columns=True)
        labels = {"when": "When", "source": "From", **{key: label for key, label, _ in NAMED}}
        for key, column_width in widths.items():
            table.add_column(labels[key], key=key, width=column_width)
        self._add_rows(self._rows)
        if self._rows:
            table.move_cursor(row=min(cursor, len(self._rows) - 1), animate=False)

    def _add_rows(self, rows: list[PlayRow]) -> None:
        width = self._widths.get("source", SOURCE_MIN)
        cells = {
            "when": lambda row: datetime.fromtimestamp(row.played_at).strftime("%Y-%m-%d %H:%M"),
            # The Core's name where it fits (the line under the table says it in any case).
            "source": lambda row: text if len(text := source_text(row, self._cores)) <= width else row.source,
            "artist": lambda row: _one_line(row.artist),
            "title": lambda row: _one_line(row.title),
            "album": lambda row: _one_line(row.album) or "–",
        }
        for row in rows:
            self.table.add_row(*(cells[key](row) for key in self._widths), key=str(row.id))

    def _fill(self, page: tuple[list[PlayRow], dict[str, str]], *, replace: bool) -> None:
        rows, cores = page
        table = self.table
        if replace:
            self._generation += 1
            table.clear()
            self._rows, self._by_key = [], {}
            self._last, self._exhausted = None, False
        self._rows.extend(rows)
        self._by_key.update((str(row.id), row) for row in rows)
        if cores != self._cores:
            self._cores = cores
            self._widths = {}  # the From column's width may change: lay the table out again
            self._lay_out(self.app.size.width)
        else:
            self._add_rows(rows)
        if rows:
            self._last = (rows[-1].played_at, rows[-1].id)
        self._exhausted = len(rows) < PAGE
        if replace:  # a new list (a search that matches nothing, too): the line follows the cursor
            cursor = self.table.cursor_row
            self._show_detail(self._rows[cursor] if 0 <= cursor < len(self._rows) else None)
        self._show_title()

    def _show_detail(self, row: PlayRow | None) -> None:
        self.query_one("#plays-detail", Label).update(Text(play_detail(row, self._cores)) if row else "")

    def _show_overview(self, overview: Overview) -> None:
        self._overview = overview
        self.query_one("#plays-sparkline", Sparkline).data = overview.per_day
        total, peak = sum(overview.per_day), max(overview.per_day, default=0)
        self.query_one("#plays-per-day-caption", Label).update(
            f"{total:,} since {overview.first_day[5:]} · peak {peak:,}"
        )
        self.query_one("#plays-top", Static).update(top_table(overview.top))
        self._show_title()

    def _show_title(self, note: str = "") -> None:
        stored = f"{self._overview.stored:,} stored" if self._overview else "…"
        shown = f"{self.table.row_count:,}{'' if self._exhausted else '+'} shown"
        search = f" · matching “{self._search}”" if self._search else ""
        self._say(f"Plays ─ {stored}{search} · {shown}{note}")

    def _say(self, text: str) -> None:
        self.query_one("#plays-title", Label).update(Text(text))  # a search in [brackets] is no markup

    async def _more(self) -> None:
        if self._loading or self._exhausted or self._last is None:
            return
        self._loading = True
        generation = self._generation
        try:
            rows = await asyncio.to_thread(_page, self._db_path, self._last, self._search)
        finally:
            self._loading = False
        if generation == self._generation:
            self._fill(rows, replace=False)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self._by_key.get(event.row_key.value) if event.row_key is not None else None
        self._show_detail(row)
        if event.cursor_row >= self.table.row_count - PREFETCH:
            self.run_worker(self._more(), name="plays-more", group="plays-more")

    def on_history_table_near_end(self, _: HistoryTable.NearEnd) -> None:
        self.run_worker(self._more(), name="plays-more", group="plays-more")

    async def _watch(self) -> None:
        """New plays arrived: refresh the numbers; the list too if the user is at its top."""
        try:
            newest = await asyncio.to_thread(_newest, self._db_path)
        except Exception:
            return
        if newest == self._newest:
            return
        self._newest = newest
        if self.table.cursor_row <= 0:
            self.run_worker(self._first_load(), name="plays", group="plays", exclusive=True)
        else:
            self._show_title(" · new plays: r shows them")

    # -- keys -----------------------------------------------------------------------------

    def action_reload(self) -> None:
        self.run_worker(self._first_load(), name="plays", group="plays", exclusive=True)
        self.table.move_cursor(row=0)

    def action_search(self) -> None:
        search = self.query_one("#plays-search", Input)
        search.display = True
        search.focus()

    def action_back(self) -> None:
        search = self.query_one("#plays-search", Input)
        if search.display:
            search.value = ""
            search.display = False
            self.table.focus()
            self._apply_search("")
        else:
            self.app.pop_screen()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        value = event.value
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self._apply_search(value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._apply_search(event.value)
        self.table.focus()

    def _apply_search(self, text: str) -> None:
        wanted = text.strip() or None
        if wanted == self._search:
            return
        self._search = wanted
        self.run_worker(self._reload_rows(), name="plays-search", group="plays", exclusive=True)

    async def _reload_rows(self) -> None:
        rows = await asyncio.to_thread(_page, self._db_path, None, self._search)
        self._fill(rows, replace=True)
