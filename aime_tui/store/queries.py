"""Read-only questions about the stored history: plays in a range, pages, search, counts.

Every function takes a plain `sqlite3` connection from `connect_read_only`: a WAL reader
that never takes the write lock, so export, stats and the plays screen run beside a
running instance without holding up its writes, and never change the file. The
queries are shaped for the indexes the store's migrations add (time, source and time,
artist and title keys, the full-text index); on a database no instance has migrated
yet they still answer, more slowly, and the columns it lacks read as NULL.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Iterator

#: The columns a play is read with, in this order (see `PlayRow`).
PLAY_COLUMNS = (
    "id", "source", "account", "played_at", "artist", "title", "album",
    "track_mbid", "artist_mbid", "album_mbid", "zone", "length",
)
#: The keys of an exported play, in this order (CSV's header, each JSON line's keys).
JSON_KEYS = (
    "played_at", "played_at_iso", "source", "account", "artist", "title", "album",
    "track_mbid", "artist_mbid", "album_mbid", "zone", "length",
)
_OPTIONAL = {"track_mbid", "artist_mbid", "album_mbid", "zone", "length"}
CHUNK = 5000
#: A search with at most this many matches sorts them; with more, it walks the history
#: newest first and stops at a page (dense matches come early).
SPARSE_MATCHES = 5000
TOP = 10
#: The search index's tokenizer (store migration 3), for the plays not yet in it.
TOKENIZER = "unicode61 remove_diacritics 2"


@dataclass(frozen=True)
class PlayRow:
    id: int
    source: str
    account: str
    played_at: int
    artist: str
    title: str
    album: str
    track_mbid: str | None = None
    artist_mbid: str | None = None
    album_mbid: str | None = None
    zone: str | None = None
    length: float | None = None


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that can neither create nor change the database."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
    db.execute("PRAGMA query_only = 1")
    return db


def _expressions(db: sqlite3.Connection) -> list[str]:
    """What to select for each of PLAY_COLUMNS: NULL for a column an unmigrated database lacks."""
    present = {row[1] for row in db.execute("PRAGMA table_info(plays)")}
    return [name if name in present or name not in _OPTIONAL else "NULL" for name in PLAY_COLUMNS]


def _columns(db: sqlite3.Connection) -> str:
    return ", ".join(_expressions(db))


def _has(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _range(since: float | None, until: float | None, source: str | None) -> tuple[str, list]:
    clauses, args = [], []
    if source is not None:
        clauses.append("source = ?")
        args.append(source)
    if since is not None:
        clauses.append("played_at >= ?")
        args.append(since)
    if until is not None:
        clauses.append("played_at < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


# -- plays in a range (export) ----------------------------------------------------------


def iter_plays(
    db: sqlite3.Connection, *, since: float | None = None, until: float | None = None,
    source: str | None = None, chunk: int = CHUNK, iso: bool = False,
) -> Iterator[list[tuple]]:
    """Plays with since ≤ played_at < until, oldest first, in lists of up to `chunk`
    tuples of PLAY_COLUMNS (with `iso`, then played_at as ISO 8601 UTC).

    One read transaction (a consistent snapshot), fetched a chunk at a time: memory
    stays flat whatever the size of the history.
    """
    where, args = _range(since, until, source)
    extra = ", strftime('%Y-%m-%dT%H:%M:%SZ', played_at, 'unixepoch')" if iso else ""
    cursor = db.execute(f"SELECT {_columns(db)}{extra} FROM plays{where} ORDER BY played_at, id", args)
    try:
        while rows := cursor.fetchmany(chunk):
            yield rows
    finally:
        cursor.close()


def iter_json_lines(
    db: sqlite3.Connection, *, since: float | None = None, until: float | None = None,
    source: str | None = None, chunk: int = CHUNK,
) -> Iterator[list[bytes]]:
    """The same plays as `iter_plays`, each already one JSON object (keys in `JSON_KEYS`
    order) as UTF-8 bytes, built by SQLite's json_object: reading one text per play
    instead of a dozen values, and never decoding it into a str to encode it back, is
    what makes an export of a million plays take seconds, not tens of them."""
    where, args = _range(since, until, source)
    values = dict(zip(PLAY_COLUMNS, _expressions(db)))
    values["played_at_iso"] = "strftime('%Y-%m-%dT%H:%M:%SZ', played_at, 'unixepoch')"
    pairs = ", ".join(f"'{key}', {values[key]}" for key in JSON_KEYS)
    factory, db.text_factory = db.text_factory, bytes
    try:
        cursor = db.execute(f"SELECT json_object({pairs}) FROM plays{where} ORDER BY played_at, id", args)
        try:
            while rows := cursor.fetchmany(chunk):
                yield [text for (text,) in rows]
        finally:
            cursor.close()
    finally:
        db.text_factory = factory


# -- pages for the plays screen -----------------------------------------------------------


def search_expression(text: str) -> str | None:
    """The full-text query for what the user typed: every word, as a prefix, in any of
    artist, title and album (case and accents ignored). None for nothing to search."""
    words = [word for word in text.split() if word.strip('"')]
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words)


def _unindexed_matches(db: sqlite3.Connection, expression: str) -> list[int]:
    """Ids of the plays above the search index's mark that match `expression`: copied
    into an in-memory index of the same definition, so they match exactly as if indexed."""
    if not _has(db, "search_indexed"):
        return []  # before the mark existed, the index was kept whole by trigger
    rows = db.execute(
        "SELECT id, artist, title, album FROM plays WHERE id > (SELECT up_to FROM search_indexed)"
    ).fetchall()
    if not rows:
        return []
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute(f"CREATE VIRTUAL TABLE tail USING fts5 (artist, title, album, tokenize = '{TOKENIZER}')")
        scratch.executemany("INSERT INTO tail (rowid, artist, title, album) VALUES (?, ?, ?, ?)", rows)
        return [rowid for (rowid,) in scratch.execute("SELECT rowid FROM tail WHERE tail MATCH ?", (expression,))]
    finally:
        scratch.close()


def page(
    db: sqlite3.Connection, *, before: tuple[int, int] | None = None, limit: int = 100,
    search: str | None = None,
) -> list[PlayRow]:
    """The newest `limit` plays older than `before` (played_at, id): keyset paging, so a
    page deep in the history costs what the first one does. With `search`, only matches."""
    clauses, args = [], []
    if before is not None:
        clauses.append("(played_at, id) < (?, ?)")
        args += list(before)
    expression = search_expression(search) if search else None
    index = ""
    if expression is not None:
        if _has(db, "plays_search"):
            # The index holds the plays up to its mark; the few newer ones (written in the
            # last second or so) are matched by the same tokenizer in memory.
            fresh = json.dumps(_unindexed_matches(db, expression))
            matches = "SELECT rowid FROM plays_search WHERE plays_search MATCH ? UNION ALL SELECT value FROM json_each(?)"
            (found,) = db.execute(
                f"SELECT COUNT(*) FROM ({matches} LIMIT ?)", (expression, fresh, SPARSE_MATCHES + 1)
            ).fetchone()
            if found > SPARSE_MATCHES:
                # Many matches: walk newest first and stop at a page, not sort them all.
                index, clauses = " INDEXED BY plays_by_time", clauses + [f"+id IN ({matches})"]
            else:
                clauses.append(f"id IN ({matches})")
            args += [expression, fresh]
        else:
            like = [f"%{word}%" for word in search.split()]
            clauses += ["(artist LIKE ? OR title LIKE ? OR album LIKE ?)"] * len(like)
            args += [pattern for pattern in like for _ in range(3)]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = db.execute(
        f"SELECT {_columns(db)} FROM plays{index}{where} ORDER BY played_at DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [PlayRow(*row) for row in rows]


# -- counts -----------------------------------------------------------------------------


def totals_by_source(db: sqlite3.Connection) -> dict[str, int]:
    """Plays stored per source, the whole history."""
    if _has(db, "play_totals"):
        return {source: plays for source, plays in db.execute("SELECT source, plays FROM play_totals") if plays}
    return dict(db.execute("SELECT source, COUNT(*) FROM plays GROUP BY source").fetchall())


def per_source(db: sqlite3.Connection, *, since: float | None, until: float | None) -> dict[str, int]:
    where, args = _range(since, until, None)
    if not _has(db, "play_totals") or not _has(db, "plays_by_source_time"):
        return dict(db.execute(f"SELECT source, COUNT(*) FROM plays{where} GROUP BY source ORDER BY source", args).fetchall())
    # Per source, a count of its range of the (source, time) index: no row is read.
    counted = {}
    for (source,) in db.execute("SELECT source FROM play_totals WHERE plays > 0 ORDER BY source").fetchall():
        where, args = _range(since, until, source)
        (plays,) = db.execute(f"SELECT COUNT(*) FROM plays INDEXED BY plays_by_source_time{where}", args).fetchone()
        if plays:
            counted[source] = plays
    return counted


def day_starts(first: date, days: int) -> list[float]:
    """Local midnights from `first`, one more than `days` (the end of the last day); a
    day is 23 or 25 hours where the clocks change."""
    return [datetime.combine(first + timedelta(days=offset), datetime.min.time()).timestamp() for offset in range(days + 1)]


def per_day(db: sqlite3.Connection, first: date, days: int) -> list[tuple[date, int]]:
    """Plays on each local day from `first`, `days` of them (zeros included)."""
    bounds = day_starts(first, days)
    # A count of each day's range of the time index (midnight to midnight, which holds
    # across clock changes): SQLite steps through the index, no play reaches Python.
    count = "SELECT COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ?"
    return [
        (first + timedelta(days=offset), db.execute(count, (bounds[offset], bounds[offset + 1])).fetchone()[0])
        for offset in range(days)
    ]


@dataclass(frozen=True)
class Ranked:
    name: str
    artist: str
    plays: int


_KINDS = {
    # kind: (grouping keys, the display columns picked for each group)
    "artists": ("artist_key", "artist"),
    "tracks": ("artist_key, title_key", "title"),
    "albums": ("artist_key, album", "album"),
}


def top(
    db: sqlite3.Connection, kind: str, *, since: float | None = None, until: float | None = None, limit: int = TOP,
) -> list[Ranked]:
    """The most played artists, tracks or albums with since ≤ played_at < until.

    Grouped by the normalised keys (two spellings of one artist are one artist), shown
    as one of the group's plays spells it. Over the whole history the grouping reads the
    artist/title/album index alone; over a period, the time index's range.
    """
    keys, shown = _KINDS[kind]
    where, args = _range(since, until, None)
    if kind == "albums":
        where += (" AND " if where else " WHERE ") + "album != ''"
    ranged = since is not None or until is not None
    if kind == "albums" and not ranged and _has(db, "plays_by_track"):
        # Counted per track and album first, in the order of the (artist, title, album)
        # index, no sort; then the few thousand tracks summed into their albums.
        counted = (f"SELECT artist_key, album, COUNT(*) AS plays FROM plays INDEXED BY plays_by_track{where}"
                   " GROUP BY artist_key, title_key, album")
        source, total = f"({counted})", "SUM(plays)"
    else:
        source, total = "plays" + (" INDEXED BY plays_by_time" if ranged else "") + where, "COUNT(*)"
    grouped = db.execute(
        f"SELECT {keys}, {total} AS plays FROM {source}"
        f" GROUP BY {keys} ORDER BY plays DESC, {keys} LIMIT ?",
        (*args, limit),
    ).fetchall()
    ranked = []
    for row in grouped:
        *key, plays = row
        match = " AND ".join(f"{column.strip()} = ?" for column in keys.split(","))
        artist, name = db.execute(
            f"SELECT artist, {shown} FROM plays WHERE {match} LIMIT 1", key
        ).fetchone()
        ranked.append(Ranked(name, artist, plays))
    return ranked


def newest_play(db: sqlite3.Connection) -> tuple[int, int] | None:
    """(played_at, id) of the newest play: what the plays screen checks for arrivals."""
    row = db.execute("SELECT played_at, id FROM plays ORDER BY played_at DESC, id DESC LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])


def first_play(db: sqlite3.Connection) -> int | None:
    return db.execute("SELECT MIN(played_at) FROM plays").fetchone()[0]
