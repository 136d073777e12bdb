"""The store on a real SQLite file: schema, migrations, durability, dedupe, cursors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from waits import wait_until

from aime_tui.store.database import SCHEMA_VERSION, Play, Store, StoreError, normalise


def read(path, sql, *args):
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


async def test_a_new_file_gets_the_current_schema_in_wal_mode(store):
    assert read(store.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert read(store.path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in read(store.path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"service_states", "transitions", "plays", "cursors", "settings"} <= tables


async def test_migration_is_applied_once_and_data_kept(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.set_desired("tracker", True, "user")
    await store.close()
    store = await Store.open(path)  # runs no migration twice
    assert (await store.desired_states())["tracker"].is_active is True
    await store.close()


async def test_an_older_schema_is_migrated_up(tmp_path):
    path = tmp_path / "aime.db"
    sqlite3.connect(path).close()  # an empty file at version 0
    store = await Store.open(path)
    assert read(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    await store.close()


async def test_a_version_1_database_gains_transition_details_and_keeps_its_rows(tmp_path):
    from aime_tui.store.database import MIGRATIONS

    path = tmp_path / "aime.db"
    with sqlite3.connect(path) as db:  # what the first release wrote
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO transitions (service, from_state, to_state, reason, at) VALUES ('tracker', 'stopped', 'starting', 'launch', 5)")
    store = await Store.open(path)
    await store.record_transition("tracker", "starting", "backoff", "backoff", "Last.fm answered HTTP 503")
    rows = await store.transitions("tracker")
    assert [(row.to_state, row.detail) for row in rows] == [
        ("starting", ""), ("backoff", "Last.fm answered HTTP 503"),
    ]
    await store.close()


async def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "aime.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this aime-tui understands"):
        await Store.open(path)


async def test_a_file_that_is_not_a_database_is_moved_aside_not_deleted(tmp_path):
    path = tmp_path / "aime.db"
    garbage = b"this is not sqlite" * 100
    path.write_bytes(garbage)
    (tmp_path / "aime.db-wal").write_bytes(b"stale wal")
    store = await Store.open(path)
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == garbage
    assert store.moved_aside.with_name(store.moved_aside.name + "-wal").read_bytes() == b"stale wal"
    await store.set_desired("tracker", True, "user")  # a fresh, working database
    assert read(path, "PRAGMA quick_check") == [("ok",)]
    await store.close()


async def test_a_damaged_database_fails_quick_check_and_is_moved_aside(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([Play("lastfm", "a", t, "A", f"T{t}") for t in range(3000)])
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3 : page * 6] = b"\xff" * (page * 3)  # scribble over b-tree pages
    path.write_bytes(bytes(data))
    store = await Store.open(path)
    assert store.moved_aside is not None and store.moved_aside.exists()
    assert await store.count_plays() == 0
    await store.close()


async def test_a_database_locked_by_another_process_is_waited_for(tmp_path):
    path = tmp_path / "aime.db"
    await (await Store.open(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits = []
        began = time.monotonic()
        store = await Store.open(path, on_wait=waits.append)
        waited = time.monotonic() - began
        await store.set_desired("tracker", True, "user")
        await store.close()
    finally:
        holder.wait(10)
    assert waits, "the wait was reported"
    assert 1.0 < waited < 5.0
    assert holder.returncode == 0


async def test_an_unwritable_data_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        path = blocker / "aime.db"  # a path under a regular file: no one can create it
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        path = locked / "sub" / "aime.db"
    with pytest.raises(StoreError, match="cannot create"):
        await Store.open(path)


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


async def test_first_launch_defaults_never_override_a_users_choice(store):
    await store.ensure_defaults({"scheduler": (True, "MAINTENANCE"), "tracker": (True, None)})
    await store.set_desired("scheduler", False, "user")
    await store.set_mode("scheduler", "MASSIVE", "user")
    await store.ensure_defaults({"scheduler": (True, "MAINTENANCE"), "tracker": (True, None)})
    states = await store.desired_states()
    assert states["scheduler"].is_active is False
    assert states["scheduler"].mode == "MASSIVE"
    assert states["tracker"].is_active is True


async def test_desired_state_is_visible_to_another_connection_once_set(store):
    await store.set_desired("roon_tracker", False, "user")
    assert read(store.path, "SELECT is_active FROM service_states WHERE service_name='roon_tracker'") == [(0,)]


async def test_plays_are_unique_on_normalised_artist_and_title(store):
    plays = [
        Play("lastfm", "ana", 100, "Björk", "Army of Me"),
        Play("lastfm", "ana", 100, "BJÖRK", "army  of  me "),  # same play, other spelling
        Play("lastfm", "ana", 101, "Björk", "Army of Me"),  # another time: another play
        Play("roon", "core", 100, "Björk", "Army of Me"),  # another source
    ]
    assert await store.insert_plays(plays) == 3
    assert await store.insert_plays(plays) == 0
    assert await store.count_plays() == 3
    assert await store.count_plays("lastfm") == 2
    assert normalise("  Sigur\u00a0Rós ") == "sigur rós"


async def test_a_page_and_its_cursor_commit_together(store):
    page = [Play("lastfm", "ana", t, "A", f"T{t}") for t in range(10)]
    assert await store.insert_plays(page, cursor=("backfill", "page 2")) == 10
    assert await store.get_cursor("backfill") == "page 2"

    class Boom(Exception):
        pass

    async def fail_midway(db):
        await db.execute("INSERT INTO cursors (name, value, updated_at) VALUES ('backfill2', 'x', 0)")
        raise Boom

    with pytest.raises(Boom):
        await store.write(fail_midway)
    assert await store.get_cursor("backfill2") is None, "rolled back"


async def test_a_cancelled_writer_cannot_leave_a_transaction_open(store):
    started = asyncio.Event()

    async def slow(db):
        await db.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        started.set()
        await asyncio.sleep(0.05)

    writer = asyncio.create_task(store.write(slow))
    await started.wait()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    # The write finished in its shielded task; the connection is usable for the next one.
    await store.set_cursor("other", "1")
    assert await store.get_setting("k") == "v"
    assert await store.get_cursor("other") == "1"


async def test_a_write_after_close_is_refused_and_the_file_left_alone(tmp_path):
    """A writer that outlived the store (a transition flushed after shutdown timed out)
    gets a clear error; it must not take the closed file for a deleted one, move the
    user's database aside and open a fresh one whose thread keeps the process alive."""
    threads_before = set(threading.enumerate())
    store = await Store.open(tmp_path / "aime.db")
    await store.set_cursor("c", "1")
    await store.close()
    assert not store.path.with_name("aime.db-wal").exists(), "closing removed the log"
    with pytest.raises(StoreError, match="closed"):
        await store.record_transition("tracker", "running", "stopped", "shutdown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aime.db"]
    assert read(store.path, "SELECT value FROM cursors WHERE name = 'c'") == [("1",)]
    await wait_until(lambda: set(threading.enumerate()) <= threads_before, what="no connection thread left")


async def test_reopen_keeps_working(store):
    await store.set_cursor("c", "1")
    await store.reopen()
    assert await store.get_cursor("c") == "1"


async def test_a_path_that_no_longer_opens_is_moved_aside_at_reopen(store):
    await store.set_cursor("c", "1")
    moved = store.path.with_name("moved.db")
    store.path.rename(moved)
    store.path.mkdir()  # nothing can open a directory as a database
    await store.reopen()
    # Not served by the connection it had (writes there would be lost at the next
    # launch): a fresh file at the path holds what it held.
    await store.set_cursor("c", "2")
    assert read(store.path, "SELECT value FROM cursors WHERE name = 'c'") == [("2",)]
    assert [p.is_dir() for p in store.path.parent.glob("aime.db.corrupt-*[0-9]")] == [True]


async def test_backup_is_a_consistent_copy(store, tmp_path):
    await store.insert_plays([Play("lastfm", "ana", 1, "A", "B")])
    destination = tmp_path / "backups" / "copy.db"
    await store.backup_to(destination)
    assert read(destination, "SELECT artist, title FROM plays") == [("A", "B")]
    assert read(destination, "PRAGMA integrity_check") == [("ok",)]


async def test_a_full_disk_is_a_clear_store_error_and_nothing_half_written(store):
    await store.set_desired("tracker", True, "user")
    async with store.db.execute("PRAGMA page_count") as cursor:
        (pages,) = await cursor.fetchone()
    await store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
    plays = [Play("lastfm", "a", t, "Artist " * 20, f"Title {t} " * 20) for t in range(2000)]
    with pytest.raises(StoreError, match="database or disk is full"):
        await store.insert_plays(plays)
    assert await store.count_plays() == 0
    assert (await store.desired_states())["tracker"].is_active is True


async def test_a_file_damaged_in_place_is_found_at_reopen_and_what_it_held_carries_on(store):
    await store.set_desired("tracker", True, "user")
    await store.set_cursor("backfill", "page 7")
    await store.insert_plays([Play("lastfm", "a", t, f"Artist {t}", f"Title {t}" * 30) for t in range(3000)])
    await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = store.path.stat().st_size
    with open(store.path, "r+b") as handle:  # scribble over the plays' last pages
        handle.seek(size - 40 * 4096)
        handle.write(os.urandom(30 * 4096))
    said = []
    store.say = lambda text, level: said.append(text)
    await store.reopen()
    assert len(said) == 1 and ("fails quick_check" in said[0] or "is unreadable" in said[0]) and "moved aside to" in said[0]
    assert read(store.path, "PRAGMA quick_check") == [("ok",)]
    assert (await store.desired_states())["tracker"].is_active is True
    assert await store.get_cursor("backfill") == "page 7"
    assert list(store.path.parent.glob("aime.db.corrupt-*"))
