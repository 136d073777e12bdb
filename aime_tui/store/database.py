"""The SQLite store: desired service states, transitions, plays, cursors, settings.

One aiosqlite connection in WAL mode. Every write runs inside `BEGIN IMMEDIATE` under an
asyncio lock (one connection is shared by every coroutine, so transactions must not
interleave). Desired-state writes are committed with synchronous=FULL: once a toggle is
acknowledged it survives a kill -9 and a power cut. The schema is versioned with
`PRAGMA user_version`.

The files are private (0600: the database is created before SQLite opens it, and SQLite
gives the -wal and -shm the database's mode). A full disk is said once with the free
space, then counted (a line a minute at most) until a write succeeds again. The file on
disk is checked against the open one (a database replaced, or its WAL deleted, while
running): `check_file()` says what is wrong and `recover()` moves it aside and carries
on in a fresh file holding everything the open connection still reads. A data directory
deleted whole is made again (0700) first, and the fresh file is made in it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Iterable, TypeVar

import aiosqlite

from aime_tui.core.files import UnsafeDataDir, create_private, ensure_private_dir

BUSY_TIMEOUT_MS = 30_000
STARTUP_BUSY_MS = 500
LOCK_RETRY_EVERY = 0.5
# Primary SQLite result codes (extended codes carry them in the low byte).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 5, 6, 10, 11, 13, 26
# A full disk is said once, then at most one summary line per this many seconds.
DISK_FULL_SUMMARY_EVERY = 60.0
# Below this much free space an I/O error is taken for a full disk.
NEARLY_FULL = 1 << 20
log = logging.getLogger(__name__)
T = TypeVar("T")

# Each entry moves the schema from version N to N+1; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE service_states (
        service_name TEXT PRIMARY KEY,
        is_active    INTEGER NOT NULL CHECK (is_active IN (0, 1)),
        mode         TEXT,
        last_updated REAL NOT NULL
    );
    CREATE TABLE transitions (
        id         INTEGER PRIMARY KEY,
        service    TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL,
        at         REAL NOT NULL
    );
    CREATE INDEX transitions_by_service ON transitions (service, at);
    CREATE TABLE plays (
        id         INTEGER PRIMARY KEY,
        source     TEXT NOT NULL,
        account    TEXT NOT NULL,
        played_at  INTEGER NOT NULL,
        artist     TEXT NOT NULL,
        title      TEXT NOT NULL,
        album      TEXT NOT NULL DEFAULT '',
        artist_key TEXT NOT NULL,
        title_key  TEXT NOT NULL,
        stored_at  REAL NOT NULL,
        UNIQUE (source, account, played_at, artist_key, title_key)
    );
    CREATE INDEX plays_by_time ON plays (played_at);
    CREATE TABLE cursors (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: what went wrong, in words, beside the reason category ("backoff", "error").
    """
    ALTER TABLE transitions ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    """,
    # 3: what the sources say of a play beyond artist and title (NULL where they did not
    # say: rows stored before keep NULL); indexes for export and stats; a full-text index
    # of artist, title and album and the plays stored per source, both kept exact by
    # triggers whatever writes the plays table.
    """
    ALTER TABLE plays ADD COLUMN track_mbid TEXT;
    ALTER TABLE plays ADD COLUMN artist_mbid TEXT;
    ALTER TABLE plays ADD COLUMN album_mbid TEXT;
    ALTER TABLE plays ADD COLUMN zone TEXT;
    ALTER TABLE plays ADD COLUMN length REAL;
    CREATE INDEX IF NOT EXISTS plays_by_source_time ON plays (source, played_at);
    CREATE INDEX IF NOT EXISTS plays_by_artist ON plays (artist_key, title_key);
    CREATE VIRTUAL TABLE plays_search USING fts5 (
        artist, title, album, content = 'plays', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO plays_search (plays_search) VALUES ('rebuild');
    CREATE TABLE play_totals (
        source TEXT PRIMARY KEY,
        plays  INTEGER NOT NULL
    );
    INSERT INTO play_totals (source, plays) SELECT source, COUNT(*) FROM plays GROUP BY source;
    CREATE TRIGGER plays_search_insert AFTER INSERT ON plays BEGIN
        INSERT INTO plays_search (rowid, artist, title, album) VALUES (new.id, new.artist, new.title, new.album);
        INSERT INTO play_totals (source, plays) VALUES (new.source, 1)
            ON CONFLICT (source) DO UPDATE SET plays = plays + 1;
    END;
    CREATE TRIGGER plays_search_delete AFTER DELETE ON plays BEGIN
        INSERT INTO plays_search (plays_search, rowid, artist, title, album)
            VALUES ('delete', old.id, old.artist, old.title, old.album);
        UPDATE play_totals SET plays = plays - 1 WHERE source = old.source;
    END;
    CREATE TRIGGER play_totals_update AFTER UPDATE OF source ON plays BEGIN
        UPDATE play_totals SET plays = plays - 1 WHERE source = old.source;
        INSERT INTO play_totals (source, plays) VALUES (new.source, 1)
            ON CONFLICT (source) DO UPDATE SET plays = plays + 1;
    END;
    CREATE TRIGGER plays_search_update AFTER UPDATE OF artist, title, album ON plays BEGIN
        INSERT INTO plays_search (plays_search, rowid, artist, title, album)
            VALUES ('delete', old.id, old.artist, old.title, old.album);
        INSERT INTO plays_search (rowid, artist, title, album) VALUES (new.id, new.artist, new.title, new.album);
    END;
    """,
    # 4: Roon plays and tokens belong to a Core's core_id (store/roon_cores.py). What came
    # before was keyed by the Core's name, with one token: kept aside until a Core claims it.
    """
    CREATE TABLE roon_cores (
        core_id   TEXT PRIMARY KEY,
        name      TEXT NOT NULL,
        token     TEXT,
        last_seen REAL NOT NULL
    );
    CREATE TABLE roon_unclaimed (
        kind  TEXT NOT NULL CHECK (kind IN ('account', 'token')),
        value TEXT NOT NULL,
        PRIMARY KEY (kind, value)
    );
    INSERT OR IGNORE INTO roon_unclaimed (kind, value)
        SELECT DISTINCT 'account', account FROM plays WHERE source = 'roon';
    INSERT OR IGNORE INTO roon_unclaimed (kind, value)
        SELECT 'token', value FROM settings WHERE key = 'roon.token';
    DELETE FROM settings WHERE key = 'roon.token';
    """,
    # 5: one Last.fm account whatever the case it was typed in. Plays stored under other
    # cases of an account move to the case stored last (the next answer from Last.fm then
    # renames them to its own spelling), duplicates dropped; cursors are named in lower
    # case, the tracker's keeping the oldest (a catch-up overlaps, never skips) and the
    # backfill's a completed one first, else the latest. `served_counts` keeps, per play,
    # how many times Last.fm serves it when that is not once (identical same-second
    # duplicates are stored once), so that counting a window compares like with like.
    """
    CREATE TEMP TABLE account_case AS
        SELECT source, lower(account) AS folded, account AS canonical, max(stored_at)
        FROM plays WHERE source = 'lastfm' GROUP BY source, lower(account);
    UPDATE OR IGNORE plays SET account = (
        SELECT canonical FROM account_case c
        WHERE c.source = plays.source AND c.folded = lower(plays.account))
    WHERE source = 'lastfm' AND account <> (
        SELECT canonical FROM account_case c
        WHERE c.source = plays.source AND c.folded = lower(plays.account));
    DELETE FROM plays WHERE source = 'lastfm' AND account <> (
        SELECT canonical FROM account_case c
        WHERE c.source = plays.source AND c.folded = lower(plays.account));
    DROP TABLE account_case;
    INSERT OR REPLACE INTO cursors (name, value, updated_at)
        SELECT lower(name), CAST(min(CAST(value AS INTEGER)) AS TEXT), max(updated_at)
        FROM cursors WHERE name LIKE 'lastfm:%' GROUP BY lower(name);
    DELETE FROM cursors WHERE name LIKE 'lastfm:%' AND name <> lower(name);
    INSERT OR REPLACE INTO cursors (name, value, updated_at)
        SELECT lower(name), value, updated_at FROM (
            SELECT name, value, updated_at, row_number() OVER (
                PARTITION BY lower(name)
                ORDER BY instr(value, '"done": true') > 0 DESC, updated_at DESC) AS rank
            FROM cursors WHERE name LIKE 'backfill:lastfm:%')
        WHERE rank = 1;
    DELETE FROM cursors WHERE name LIKE 'backfill:lastfm:%' AND name <> lower(name);
    CREATE TABLE served_counts (
        source     TEXT NOT NULL,
        account    TEXT NOT NULL,
        played_at  INTEGER NOT NULL,
        artist_key TEXT NOT NULL,
        title_key  TEXT NOT NULL,
        copies     INTEGER NOT NULL,
        PRIMARY KEY (source, account, played_at, artist_key, title_key)
    );
    """,
    # 6: the full-text index is kept in bulk, off the insert path (a trigger indexing
    # row by row made FTS5 write a segment at every commit: backfill ingest ran at a
    # quarter of its speed). It holds exactly the plays with id <= search_indexed.up_to;
    # the store indexes the newer ones in one statement soon after they are written
    # (`index_search`), and a search reads the few not yet indexed from the table. A
    # play whose id is reused (the newest rows deleted, then an insert) below the mark
    # is indexed at once, and the 'delete' command is only ever given for indexed rows.
    """
    CREATE TABLE search_indexed (
        only  INTEGER PRIMARY KEY CHECK (only = 1),
        up_to INTEGER NOT NULL
    );
    INSERT INTO search_indexed (only, up_to) SELECT 1, COALESCE(max(id), 0) FROM plays;
    DROP TRIGGER plays_search_insert;
    DROP TRIGGER plays_search_delete;
    DROP TRIGGER plays_search_update;
    CREATE TRIGGER play_totals_insert AFTER INSERT ON plays BEGIN
        INSERT INTO play_totals (source, plays) VALUES (new.source, 1)
            ON CONFLICT (source) DO UPDATE SET plays = plays + 1;
    END;
    CREATE TRIGGER play_totals_delete AFTER DELETE ON plays BEGIN
        UPDATE play_totals SET plays = plays - 1 WHERE source = old.source;
    END;
    CREATE TRIGGER plays_search_reused AFTER INSERT ON plays
    WHEN new.id <= (SELECT up_to FROM search_indexed) BEGIN
        INSERT INTO plays_search (rowid, artist, title, album) VALUES (new.id, new.artist, new.title, new.album);
    END;
    CREATE TRIGGER plays_search_delete AFTER DELETE ON plays
    WHEN old.id <= (SELECT up_to FROM search_indexed) BEGIN
        INSERT INTO plays_search (plays_search, rowid, artist, title, album)
            VALUES ('delete', old.id, old.artist, old.title, old.album);
    END;
    CREATE TRIGGER plays_search_update AFTER UPDATE OF id, artist, title, album ON plays BEGIN
        INSERT INTO plays_search (plays_search, rowid, artist, title, album)
            SELECT 'delete', old.id, old.artist, old.title, old.album
            WHERE old.id <= (SELECT up_to FROM search_indexed);
        INSERT INTO plays_search (rowid, artist, title, album)
            SELECT new.id, new.artist, new.title, new.album
            WHERE new.id <= (SELECT up_to FROM search_indexed);
    END;
    """,
    # 7: the top albums over the whole history read one index, not every row: the
    # artist/title index gains the album (and so replaces the one without it).
    """
    CREATE INDEX IF NOT EXISTS plays_by_track ON plays (artist_key, title_key, album);
    DROP INDEX IF EXISTS plays_by_artist;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: Plays the search index may lag behind by: past this many, a write indexes them in its
#: own transaction; fewer wait at most INDEX_AFTER seconds (then one bulk statement).
INDEX_AT_ONCE = 20_000
INDEX_AFTER = 1.0
# The search index's tail, indexed in one statement, its mark moved in the same transaction.
INDEX_TAIL = (
    "INSERT INTO plays_search (rowid, artist, title, album)"
    " SELECT id, artist, title, album FROM plays WHERE id > (SELECT up_to FROM search_indexed)"
)
MOVE_MARK = "UPDATE search_indexed SET up_to = max(up_to, (SELECT COALESCE(max(id), 0) FROM plays))"


class StoreError(Exception):
    """The database cannot be used; the message says which file and why."""


class DiskFull(StoreError):
    """A write refused for want of space: nothing of it was committed."""


class _Corrupt(Exception):
    """quick_check found damage."""


def _error_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


@dataclass(frozen=True)
class DesiredState:
    service_name: str
    is_active: bool
    mode: str | None
    last_updated: float


@dataclass(frozen=True)
class Play:
    source: str
    account: str
    played_at: int
    artist: str
    title: str
    album: str = ""
    #: MusicBrainz ids, as Last.fm gives them (None where it gives none).
    track_mbid: str | None = None
    artist_mbid: str | None = None
    album_mbid: str | None = None
    #: The Roon zone it played in, and the track's length in seconds.
    zone: str | None = None
    length: float | None = None


@dataclass(frozen=True)
class Transition:
    service: str
    from_state: str
    to_state: str
    reason: str
    at: float
    #: The failure's message for backoff and needs-attention rows; empty otherwise.
    detail: str = ""


def free_space(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _size(count: int | None) -> str:
    if count is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


class DiskFullReport:
    """Says a full disk once, then counts refused writes: one summary a minute at most."""

    def __init__(self, path: Path, say: Callable[[str, int], None], clock=time.monotonic) -> None:
        self.path = path
        self.say = say
        self._clock = clock
        self.full = False
        self.refused = 0
        self._unsaid = 0
        self._said_at = 0.0

    def refused_write(self) -> None:
        now = self._clock()
        self.refused += 1
        if not self.full:
            self.full = True
            self._said_at = now
            self.say(
                f"disk full: cannot write {self.path} ({_size(free_space(self.path.parent))} free);"
                " changes are refused until there is space, then it carries on",
                logging.ERROR,
            )
            return
        self._unsaid += 1
        if now - self._said_at >= DISK_FULL_SUMMARY_EVERY:
            self._said_at = now
            self.say(
                f"disk still full: {self._unsaid} more writes to {self.path} refused"
                f" ({_size(free_space(self.path.parent))} free)",
                logging.WARNING,
            )
            self._unsaid = 0

    def wrote(self) -> None:
        if self.full:
            self.full = False
            self.say(
                f"disk space is back: writing {self.path} again ({self.refused} writes were refused)",
                logging.WARNING,
            )
            self.refused = self._unsaid = 0


def _retrieve_exception(task: asyncio.Future) -> None:
    # The shielded write's caller may be gone; mark its exception seen (the caller, if
    # still there, gets it too).
    if not task.cancelled():
        task.exception()


def normalise(text: str) -> str:
    """The form two spellings of one artist or title share: NFKC, case-folded, single-spaced."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class Store:
    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        #: Where an unreadable database was moved on open, if it was.
        self.moved_aside: Path | None = None
        #: Plays stored per source (the whole history), as of the last write.
        self._totals: dict[str, int] = {}
        #: How the store tells the user of faults it handles itself (a full disk, a
        #: replaced file); the engine points it at the log pane.
        self.say: Callable[[str, int], None] = lambda text, level: log.log(level, text)
        #: Called once a recovery is done, before it is said; returns words to add to the
        #: line (the engine remakes the other files a deleted data directory took along).
        self.after_recovery: Callable[[], str] = lambda: ""
        self.disk = DiskFullReport(self.path, lambda text, level: self.say(text, level))
        #: (st_dev, st_ino) of the database and of its -wal as opened.
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None
        #: When quick_check last passed (monotonic), for checks that may skip it.
        self._checked_at: float | None = None
        #: Plays written since the search index last caught up, and the pending catch-up.
        self._unindexed = 0
        self._index_timer: asyncio.TimerHandle | None = None
        self._index_task: asyncio.Future | None = None

    @classmethod
    async def open(
        cls, path: Path, clock=time.time, on_wait: Callable[[float], None] | None = None
    ) -> "Store":
        """Open (creating, checking, migrating) the database at `path`.

        A database locked by another process is waited for, calling `on_wait` with the
        seconds waited so far. A corrupt one is moved aside (see `moved_aside`) and a
        fresh one created. Anything else unusable raises StoreError.
        """
        store = cls(path, clock)
        await store._connect(on_wait or (lambda waited: None))
        return store

    async def _connect(self, on_wait: Callable[[float], None]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        began = time.monotonic()
        while True:
            try:
                create_private(self.path)
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
                await _configure(self._db, STARTUP_BUSY_MS)
                await self._check_integrity()
                # Take and drop the write lock once: waits out another writer here,
                # where we can say so, rather than silently in the first write.
                await self._db.execute("BEGIN IMMEDIATE")
                await self._db.execute("ROLLBACK")
                await self._db.execute("PRAGMA journal_mode = WAL")
                await self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await self._migrate()
                self._totals = await _read_totals(self._db)
                await self.index_search()  # what another writer, or a killed one, left
                self._remember_identity()
                return
            except _Corrupt as exc:
                await self.close()
                if self.moved_aside is not None:
                    raise StoreError(f"database {self.path} is still unusable after recovery: {exc}") from exc
                self.moved_aside = self._move_aside()
            except sqlite3.Error as exc:
                code = _error_code(exc)
                unreadable = code in (SQLITE_CORRUPT, SQLITE_NOTADB) and self.moved_aside is None
                if unreadable:
                    # Move aside before closing: closing may delete the -wal we must keep.
                    self.moved_aside = self._move_aside()
                await self.close()
                if code in (SQLITE_BUSY, SQLITE_LOCKED):
                    on_wait(time.monotonic() - began)
                    await asyncio.sleep(LOCK_RETRY_EVERY)
                elif not unreadable:
                    raise StoreError(f"cannot open database {self.path}: {exc}") from exc
            except OSError as exc:
                await self.close()
                raise StoreError(f"cannot open database {self.path}: {exc}") from exc
            except BaseException:
                # A schema too new, a cancelled launch: never leave the connection's
                # thread behind.
                await self.close()
                raise

    async def _check_integrity(self) -> None:
        async with self.db.execute("PRAGMA quick_check") as cursor:
            rows = await cursor.fetchall()
        if rows != [("ok",)]:
            raise _Corrupt("; ".join(str(row[0]) for row in rows[:3]))

    def _move_aside(self, why: str = "was unreadable") -> Path | None:
        """Rename the unusable database and its -wal/-shm out of the way; never delete them.
        Returns where they went, None if none of them is there any more."""
        sources = [self.path.with_name(self.path.name + suffix) for suffix in ("", "-wal", "-shm")]
        if not any(os.path.lexists(source) for source in sources):
            return None
        stamp = datetime.fromtimestamp(self._clock()).strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        count = 1
        while any(os.path.lexists(target.with_name(target.name + suffix)) for suffix in ("", "-wal", "-shm")):
            count += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{count}")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if os.path.lexists(source):
                source.rename(target.with_name(target.name + suffix))
        log.warning("database %s: %s; moved aside to %s", self.path, why, target)
        return target

    # -- the file on disk ------------------------------------------------------------

    def _wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def _remember_identity(self) -> None:
        """After an open or a recovery, both of which checked the file."""
        self._checked_at = time.monotonic()
        self._identity = _identity(self.path)
        self._wal_identity = _identity(self._wal_path())

    def _identity_problem(self) -> str | None:
        """What differs between the files on disk and the ones this connection has open."""
        if self._identity is None:
            return None
        now = _identity(self.path)
        if now is None and not os.path.isdir(self.path.parent):
            return f"data directory {self.path.parent} was deleted while in use"
        if now is None:
            return f"database {self.path} was deleted while in use"
        if now != self._identity:
            return f"database {self.path} was replaced while in use"
        wal = _identity(self._wal_path())
        if self._wal_identity is None:
            self._wal_identity = wal  # made since the open: this one is ours
        elif wal != self._wal_identity:
            return f"the write-ahead log {self._wal_path()} was {'deleted' if wal is None else 'replaced'} while in use"
        return None

    async def check_file(self, *, quick_check_within: float = 0.0) -> str | None:
        """None if the file on disk is the one open and passes quick_check, else what is wrong.

        The identity is compared every time (it costs two stat calls); quick_check reads
        the whole file, so it is skipped if one passed less than `quick_check_within` s ago.
        """
        problem = self._identity_problem()
        if problem is not None:
            return problem
        if self._checked_at is not None and time.monotonic() - self._checked_at < quick_check_within:
            return None
        try:
            await self._check_integrity()
            self._checked_at = time.monotonic()
        except _Corrupt as exc:
            return f"database {self.path} fails quick_check: {exc}"
        except sqlite3.Error as exc:
            return f"database {self.path} is unreadable: {exc}"
        return None

    async def verify(self, *, quick_check_within: float = 0.0) -> str | None:
        """Check the file on disk; if it is not the one open or is damaged, recover.

        Returns None when all is well, else the line said about what was found and done.
        """
        async with self._write_lock:
            problem = await self.check_file(quick_check_within=quick_check_within)
            if problem is None:
                return None
            return await self._recover_and_say(problem)

    async def _recover_and_say(self, problem: str) -> str:
        remade = not os.path.isdir(self.path.parent)
        moved = await self._recover(problem)
        if remade:
            text = f"{problem}: made it again (0700) with a fresh database holding what the instance held"
        elif moved is None:
            text = f"{problem}: carrying on in a fresh one with what it held"
        else:
            text = f"{problem}: moved aside to {moved}; carrying on in a fresh one with what it held"
        more = self.after_recovery()
        if more:
            text += f"; {more}"
        self.say(text, logging.ERROR)
        return text

    async def _recover(self, problem: str) -> Path | None:
        """Move the files aside (kept) and carry on in a fresh database.

        The fresh one is a copy of what this connection still reads (it holds the old
        file open, and its log): desired states, modes, cursors, settings and plays. If
        the copy cannot be made, the fresh database gets what tables can still be read.
        Returns where the old files went (None: there were none left). The caller holds
        the write lock.
        """
        if not os.path.isdir(self.path.parent):
            try:
                ensure_private_dir(self.path.parent)  # deleted whole (rm -rf): made again, private
            except UnsafeDataDir as exc:
                raise StoreError(str(exc)) from None
        old = self._db
        salvage = self.path.with_name(self.path.name + ".salvage")
        salvage.unlink(missing_ok=True)
        copied = False
        rows: dict[str, list[tuple]] = {}
        if old is not None:
            try:
                create_private(salvage)
                await old.execute("VACUUM INTO ?", (str(salvage),))
                copied = True
            except (sqlite3.Error, OSError):
                salvage.unlink(missing_ok=True)
                rows = await _readable_rows(old)
        moved = self._move_aside(problem)
        # Closed after the move: closing removes the log by its name, now no longer ours.
        self._db = None
        if old is not None:
            try:
                await old.close()
            except (sqlite3.Error, OSError):
                pass
        if copied:
            salvage.rename(self.path)
        try:
            # Before SQLite opens it: closing a file of ours on the database later would
            # drop the POSIX locks SQLite holds on it (they are the process's, per file).
            create_private(self.path)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await _configure(self._db, BUSY_TIMEOUT_MS)
            await self._db.execute("PRAGMA journal_mode = WAL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot start a fresh database {self.path}: {exc}") from exc
        self._identity = None  # not checked while migrating
        await self._migrate(locked=True)
        if rows:
            await self._run_write(lambda db: _restore_rows(db, rows), True)
        self._remember_identity()
        return moved

    async def reopen(self) -> None:
        """Replace the connection (after a wake, file handles may be stale).

        The file is checked first: one replaced or damaged meanwhile is moved aside and a
        fresh one carries on (see recover). Otherwise the new connection is made before the
        old one is dropped: if it cannot be made, the old one stays and the error is a
        StoreError for the caller to report.
        """
        if await self.verify() is not None:
            return
        async with self._write_lock:
            old = self._db
            try:
                fresh = await aiosqlite.connect(self.path, isolation_level=None)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot reopen database {self.path}: {exc}") from exc
            try:
                await _configure(fresh, BUSY_TIMEOUT_MS)
            except (sqlite3.Error, OSError) as exc:
                await fresh.close()
                raise StoreError(f"cannot reopen database {self.path}: {exc}") from exc
            # Swapped in only once configured: reads outside the write lock may use it.
            self._db = fresh
            if old is not None:
                await old.close()

    async def close(self) -> None:
        if self._index_timer is not None:
            self._index_timer.cancel()
            self._index_timer = None
        if self._index_task is not None:
            await asyncio.gather(self._index_task, return_exceptions=True)
        if self._unindexed and self._db is not None:
            try:
                await self.index_search()
            except StoreError as exc:  # the next open indexes them
                log.warning("search index not brought up to date at close: %s", exc)
        db, self._db = self._db, None
        # Closed, nothing is checked or recovered: a late write must not make the data
        # directory again after whoever owned it removed it.
        self._identity = self._wal_identity = None
        if db is not None:
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"database {self.path} is closed")
        return self._db

    async def _migrate(self, locked: bool = False) -> None:
        async with self.db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this aime-tui "
                f"understands ({SCHEMA_VERSION}); upgrade aime-tui"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):

            async def migrate(db: aiosqlite.Connection, target: int = target) -> None:
                for statement in _statements(MIGRATIONS[target - 1]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {target}")

            if locked:
                await self._run_write(migrate, True)
            else:
                await self.write(migrate, durable=True)

    async def write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, durable: bool = False) -> T:
        """Run `work` in one BEGIN IMMEDIATE transaction and return its result.

        The transaction runs in a shielded task: a caller cancelled mid-write (a service
        being stopped) cannot leave a half-open transaction on the shared connection.
        `durable` fsyncs the commit, for changes the user has been told are saved.
        """
        task = asyncio.ensure_future(self._checked_write(work, durable))
        task.add_done_callback(_retrieve_exception)
        try:
            result = await asyncio.shield(task)
        except sqlite3.Error as exc:
            # A full disk or a vanished file: a clear error the caller can show, and
            # nothing acknowledged that was not committed.
            if self._disk_full(exc):
                self.disk.refused_write()
                raise DiskFull(f"disk full: cannot write to database {self.path} ({exc})") from exc
            raise StoreError(f"cannot write to database {self.path}: {exc}") from exc
        self.disk.wrote()
        return result

    def _disk_full(self, exc: sqlite3.Error) -> bool:
        code = _error_code(exc)
        if code == SQLITE_FULL:
            return True
        free = free_space(self.path.parent)
        return code == SQLITE_IOERR and free is not None and free < NEARLY_FULL

    async def _checked_write(self, work, durable: bool):
        async with self._write_lock:
            # A write lands in the file the next launch reads, or in none: a database
            # replaced or its log deleted is moved aside first, and the fresh one
            # receives what this connection holds before this change goes in.
            problem = self._identity_problem()
            if problem is not None:
                await self._recover_and_say(problem)
            return await self._run_write(work, durable)

    async def _run_write(self, work, durable: bool):
        """The transaction itself; the caller holds the write lock."""
        db = self.db
        if durable:
            await db.execute("PRAGMA synchronous = FULL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            result = await work(db)
        except BaseException:
            # SQLite has already rolled back on some errors (a full disk): don't let
            # a failing ROLLBACK hide the error that matters.
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        else:
            await db.execute("COMMIT")
        finally:
            if durable:
                await db.execute("PRAGMA synchronous = NORMAL")
        return result

    # -- desired states -------------------------------------------------------------

    async def ensure_defaults(self, defaults: dict[str, tuple[bool, str | None]]) -> None:
        """Give each service a row on first launch; existing rows (the user's choice) win."""
        rows = [(name, int(active), mode, self._clock()) for name, (active, mode) in defaults.items()]

        async def insert(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT OR IGNORE INTO service_states (service_name, is_active, mode, last_updated)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

        await self.write(insert, durable=True)

    async def desired_states(self) -> dict[str, DesiredState]:
        async with self.db.execute(
            "SELECT service_name, is_active, mode, last_updated FROM service_states"
        ) as cursor:
            rows = await cursor.fetchall()
        return {
            name: DesiredState(name, bool(active), mode, updated)
            for name, active, mode, updated in rows
        }

    async def set_desired(self, service: str, is_active: bool, reason: str) -> None:
        """Commit (fsynced) what the user wants, with a transition row saying so."""
        now = self._clock()

        async def update(db: aiosqlite.Connection) -> None:
            async with db.execute(
                "SELECT is_active FROM service_states WHERE service_name = ?", (service,)
            ) as cursor:
                row = await cursor.fetchone()
            await db.execute(
                "INSERT INTO service_states (service_name, is_active, last_updated)"
                " VALUES (?, ?, ?) ON CONFLICT (service_name)"
                " DO UPDATE SET is_active = excluded.is_active, last_updated = excluded.last_updated",
                (service, int(is_active), now),
            )
            before = "wanted" if row and row[0] else "unwanted"
            after = "wanted" if is_active else "unwanted"
            await _insert_transition(db, service, before, after, reason, now)

        await self.write(update, durable=True)

    async def set_mode(self, service: str, mode: str, reason: str) -> None:
        """Commit (fsynced) a service's mode, with a transition row saying so."""
        now = self._clock()

        async def update(db: aiosqlite.Connection) -> None:
            async with db.execute(
                "SELECT mode FROM service_states WHERE service_name = ?", (service,)
            ) as cursor:
                row = await cursor.fetchone()
            await db.execute(
                "INSERT INTO service_states (service_name, is_active, mode, last_updated)"
                " VALUES (?, 0, ?, ?) ON CONFLICT (service_name)"
                " DO UPDATE SET mode = excluded.mode, last_updated = excluded.last_updated",
                (service, mode, now),
            )
            before = f"mode {row[0]}" if row and row[0] else "mode unset"
            await _insert_transition(db, service, before, f"mode {mode}", reason, now)

        await self.write(update, durable=True)

    # -- runtime transitions --------------------------------------------------------

    async def record_transition(
        self, service: str, before: str, after: str, reason: str, detail: str = ""
    ) -> None:
        now = self._clock()
        await self.write(lambda db: _insert_transition(db, service, before, after, reason, now, detail))

    async def transitions(self, service: str | None = None, limit: int = 500) -> list[Transition]:
        sql = "SELECT service, from_state, to_state, reason, at, detail FROM transitions"
        args: tuple = ()
        if service is not None:
            sql += " WHERE service = ?"
            args = (service,)
        sql += " ORDER BY id DESC LIMIT ?"
        async with self.db.execute(sql, (*args, limit)) as cursor:
            rows = await cursor.fetchall()
        return [Transition(*row) for row in reversed(rows)]

    # -- plays ----------------------------------------------------------------------

    async def insert_plays(
        self,
        plays: Iterable[Play],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Iterable[tuple[str, str | None]] = (),
    ) -> int:
        """Insert a batch in one transaction, duplicates ignored; returns how many were new.

        With `cursor` (name, value) the cursor advances in the same transaction, so a
        crash leaves either the page and its cursor or neither: resumable with no gap.
        `cursors` sets several the same way (a value of None deletes that cursor).
        """
        cursor_rows = ([cursor] if cursor is not None else []) + list(cursors)
        now = self._clock()
        rows = [
            (p.source, p.account, int(p.played_at), p.artist, p.title, p.album,
             normalise(p.artist), normalise(p.title), now, p.track_mbid, p.artist_mbid,
             p.album_mbid, p.zone, p.length)
            for p in plays
        ]
        if not rows and not cursor_rows:
            return 0

        async def insert(db: aiosqlite.Connection) -> tuple[int, dict[str, int], bool]:
            # rowcount, not total_changes: the triggers' own rows are not plays.
            inserted = await db.executemany(
                "INSERT OR IGNORE INTO plays (source, account, played_at, artist, title, album,"
                " artist_key, title_key, stored_at, track_mbid, artist_mbid, album_mbid, zone,"
                " length) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = max(inserted.rowcount, 0)
            await inserted.close()
            # A large tail is indexed in this transaction (a backfill's pages meanwhile
            # wait for the timer, a second's worth at a time).
            caught_up = bool(added) and self._unindexed + added >= INDEX_AT_ONCE
            if caught_up:
                await _index_tail(db)
            for name, value in cursor_rows:
                if value is None:
                    await db.execute("DELETE FROM cursors WHERE name = ?", (name,))
                else:
                    await _upsert_cursor(db, name, value, now)
            totals = await _read_totals(db) if added else self._totals
            return added, totals, caught_up

        added, self._totals, caught_up = await self.write(insert)
        if caught_up:
            self._unindexed = 0
        elif added:
            self._unindexed += added
            self._index_soon()
        return added

    def _index_soon(self) -> None:
        """Index the plays not yet searchable within INDEX_AFTER seconds (one timer for
        many writes: a backfill indexes a second's worth of pages at a time)."""
        if self._unindexed <= 0 or self._index_timer is not None:
            return

        def start() -> None:
            self._index_timer = None
            self._index_task = asyncio.ensure_future(self._index_quietly())

        self._index_timer = asyncio.get_running_loop().call_later(INDEX_AFTER, start)

    async def _index_quietly(self) -> None:
        try:
            await self.index_search()
        except StoreError as exc:  # said by the write itself when the disk is full
            log.debug("search index catch-up deferred: %s", exc)

    async def index_search(self) -> int:
        """Bring the search index up to date (one bulk statement); returns how many plays
        it took in. Searches find the newest plays meanwhile too (see queries.page)."""
        if self._index_timer is not None:
            self._index_timer.cancel()
            self._index_timer = None
        self._unindexed = 0
        try:
            return await self.write(_index_tail)
        except BaseException:
            self._unindexed = 1  # still pending: the next write or the close retries
            raise

    def play_total(self, source: str) -> int:
        """Plays stored from `source`, the whole history (kept by the store, no query)."""
        return self._totals.get(source, 0)

    async def count_plays(self, source: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM plays", ()
        if source is not None:
            sql, args = sql + " WHERE source = ?", (source,)
        async with self.db.execute(sql, args) as cursor:
            (count,) = await cursor.fetchone()
        return count

    async def adopt_account(self, source: str, account: str) -> int:
        """Move plays stored under another case of `account` to this spelling, duplicates
        dropped; returns how many rows were moved or dropped (0: nothing to do)."""

        async def adopt(db: aiosqlite.Connection) -> tuple[int, dict[str, int]]:
            where = "source = ? AND account <> ? AND lower(account) = lower(?)"
            moved = await db.execute(f"UPDATE OR IGNORE plays SET account = ? WHERE {where}",
                                     (account, source, account, account))
            dropped = await db.execute(f"DELETE FROM plays WHERE {where}", (source, account, account))
            changed = max(moved.rowcount, 0) + max(dropped.rowcount, 0)
            await db.execute(f"DELETE FROM served_counts WHERE {where}", (source, account, account))
            return changed, await _read_totals(db)  # the duplicates dropped are no plays now

        # Fetched whole in one step: a statement left open would block a VACUUM INTO backup.
        others = await self.db.execute_fetchall(
            "SELECT 1 FROM plays WHERE source = ? AND account <> ? AND lower(account) = lower(?) LIMIT 1",
            (source, account, account),
        )
        if not others:
            return 0
        changed, self._totals = await self.write(adopt)
        return changed

    async def oldest_play(self, source: str, account: str) -> int | None:
        """When the oldest stored play of the account (any case) was played, if any."""
        [(oldest,)] = await self.db.execute_fetchall(
            "SELECT min(played_at) FROM plays WHERE source = ? AND lower(account) = lower(?)",
            (source, account),
        )
        return oldest

    async def count_served(self, source: str, account: str, since: int, until: int) -> int:
        """How many plays the source serves for `since` <= played_at < `until`, as far as
        the store knows: the stored plays, with those it serves other than once counted
        as often as it serves them."""
        args = (source, account, since, until)
        where = "source = ? AND account = ? AND played_at >= ? AND played_at < ?"
        [(stored, extra)] = await self.db.execute_fetchall(
            f"SELECT (SELECT COUNT(*) FROM plays WHERE {where}),"
            f" (SELECT COALESCE(SUM(copies - 1), 0) FROM served_counts WHERE {where})",
            args + args,
        )
        return stored + extra

    async def record_served(
        self, source: str, account: str, since: int, until: int, served: Iterable[Play]
    ) -> None:
        """Remember how often each stored play of the window is served, from a complete
        fetch of the window (`served`, duplicates included)."""
        copies: dict[tuple[int, str, str], int] = {}
        for play in served:
            key = (int(play.played_at), normalise(play.artist), normalise(play.title))
            copies[key] = copies.get(key, 0) + 1
        window = (source, account, since, until)

        async def record(db: aiosqlite.Connection) -> None:
            where = "source = ? AND account = ? AND played_at >= ? AND played_at < ?"
            await db.execute(f"DELETE FROM served_counts WHERE {where}", window)
            async with db.execute(
                f"SELECT played_at, artist_key, title_key FROM plays WHERE {where}", window
            ) as cursor:
                stored = await cursor.fetchall()
            odd = [(source, account, *key, copies.get(tuple(key), 0)) for key in stored
                   if copies.get(tuple(key), 0) != 1]
            await db.executemany(
                "INSERT INTO served_counts (source, account, played_at, artist_key, title_key,"
                " copies) VALUES (?, ?, ?, ?, ?, ?)",
                odd,
            )

        await self.write(record)

    # -- cursors and settings -------------------------------------------------------

    async def get_cursor(self, name: str) -> str | None:
        async with self.db.execute("SELECT value FROM cursors WHERE name = ?", (name,)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_cursor(self, name: str, value: str) -> None:
        now = self._clock()
        await self.write(lambda db: _upsert_cursor(db, name, value, now))

    async def get_setting(self, key: str) -> str | None:
        async with self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    # -- maintenance ----------------------------------------------------------------

    async def optimize(self) -> None:
        """Refresh the query planner's statistics (the nightly job)."""
        async with self._write_lock:
            await self.db.execute("ANALYZE")
            await self.db.execute("PRAGMA optimize")

    async def backup_to(self, destination: Path) -> None:
        """Write a consistent, compacted copy of the database (VACUUM INTO), mode 0600."""
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with self._write_lock:
            create_private(destination)
            try:
                await self.db.execute("VACUUM INTO ?", (str(destination),))
            except sqlite3.Error as exc:
                destination.unlink(missing_ok=True)  # a half-written copy is no backup
                if self._disk_full(exc):
                    self.disk.refused_write()
                    raise DiskFull(f"disk full: cannot write the backup {destination}") from exc
                raise


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


# What a fresh database needs from a damaged one when no whole copy can be made.
SALVAGED_TABLES = ("service_states", "cursors", "settings")


async def _readable_rows(db: aiosqlite.Connection) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {}
    for table in SALVAGED_TABLES:
        try:
            async with db.execute(f"SELECT * FROM {table}") as cursor:
                rows[table] = list(await cursor.fetchall())
        except sqlite3.Error:
            continue
    return rows


async def _restore_rows(db: aiosqlite.Connection, rows: dict[str, list[tuple]]) -> None:
    for table, values in rows.items():
        if values:
            marks = ", ".join("?" * len(values[0]))
            await db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", values)


async def _read_totals(db: aiosqlite.Connection) -> dict[str, int]:
    async with db.execute("SELECT source, plays FROM play_totals") as cursor:
        return {source: plays for source, plays in await cursor.fetchall()}


async def _index_tail(db: aiosqlite.Connection) -> int:
    """Index the plays above the search index's mark and move the mark (in the caller's
    transaction). The mark never goes down: ids reused below it are indexed by trigger."""
    cursor = await db.execute(INDEX_TAIL)
    indexed = max(cursor.rowcount, 0)
    await cursor.close()
    await db.execute(MOVE_MARK)
    return indexed


def _statements(script: str) -> Iterable[str]:
    """The statements of a migration, whole: a trigger's body holds semicolons too."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


async def _configure(db: aiosqlite.Connection, busy_ms: int) -> None:
    await db.execute(f"PRAGMA busy_timeout = {busy_ms}")
    await db.execute("PRAGMA synchronous = NORMAL")


async def _insert_transition(
    db: aiosqlite.Connection, service: str, before: str, after: str, reason: str, at: float,
    detail: str = "",
) -> None:
    await db.execute(
        "INSERT INTO transitions (service, from_state, to_state, reason, at, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (service, before, after, reason, at, detail),
    )


async def _upsert_cursor(db: aiosqlite.Connection, name: str, value: str, now: float) -> None:
    await db.execute(
        "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, value, now),
    )
