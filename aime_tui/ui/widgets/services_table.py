"""The services table: a DataTable of a few rows whose cells change every second or so."""

from __future__ import annotations

from textual.widgets import DataTable

# Renders kept per cache: a few screens' worth for a table of a handful of rows.
RENDER_CACHE_ENTRIES = 512


class ServicesTable(DataTable):
    """DataTable with render caches sized for a small table.

    DataTable keys its render caches by an update counter, so every cell update leaves
    the previous renders behind until its LRU caches (10,000 cells, 1,000 rows and
    lines) evict them: a three-row table updated every second grew the app's memory by
    about 0.3 MB a minute for over an hour. A few hundred entries hold all that is ever
    on screen.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for cache in (
            self._cell_render_cache,
            self._row_render_cache,
            self._row_renderable_cache,
            self._line_cache,
        ):
            cache.maxsize = RENDER_CACHE_ENTRIES
