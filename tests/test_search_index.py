"""The search index kept in bulk, off the insert path, on a real SQLite file: it holds
exactly the plays up to its mark whatever writes the plays table (inserts, deletes of
the newest rows and ids reused, updates, an account adopted), a search finds a play the
moment it is stored, and a schema-5 database with plays migrates with its index whole."""

from __future__ import annotations

import sqlite3

from aime_tui.store import queries
from aime_tui.store.database import MIGRATIONS, Play, Store


def play(at: int, artist: str, title: str, album: str = "", account: str = "listener") -> Play:
    return Play("lastfm", account, at, artist, title, album)


def check_index(path) -> tuple[int, set[int]]:
    """Fails unless the index is sound and holds exactly the plays up to its mark;
    returns the mark and the ids of the plays above it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO plays_search (plays_search) VALUES ('integrity-check')")
        db.execute("BEGIN")  # one snapshot: the store may index meanwhile
        (mark,) = db.execute("SELECT up_to FROM search_indexed").fetchone()
        # Each indexed play's tokens are there (checked against the content above), and
        # the index has no row the table lacks or above the mark.
        indexed = {rowid for (rowid,) in db.execute("SELECT rowid FROM plays_search_docsize")}
        below = {row for (row,) in db.execute("SELECT id FROM plays WHERE id <= ?", (mark,))}
        above = {row for (row,) in db.execute("SELECT id FROM plays WHERE id > ?", (mark,))}
    finally:
        db.close()
    assert indexed == below
    return mark, above


def index_pages(path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, block FROM plays_search_data ORDER BY id").fetchall()
    finally:
        db.close()


def found(path, text: str) -> list[str]:
    db = queries.connect_read_only(path)
    try:
        return [row.title for row in queries.page(db, search=text)]
    finally:
        db.close()


async def test_a_play_is_found_the_moment_it_is_stored_and_indexed_soon_after(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([play(100, "Sigur Rós", "Hoppípolla", "Takk...")])
    mark, above = check_index(path)
    assert above  # not indexed yet: the insert did not pay for it
    # Same words, case and accents as the index reads them, prefixes too.
    assert found(path, "sigur ROS") == ["Hoppípolla"]
    assert found(path, "hoppi tak") == ["Hoppípolla"]
    assert found(path, "sigurd") == []
    await store.index_search()
    assert check_index(path)[1] == set()
    assert found(path, "hoppi tak") == ["Hoppípolla"]
    await store.close()


async def test_the_index_catches_up_by_itself_within_a_second_or_two(tmp_path):
    from waits import wait_until

    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([play(100, "Nils Frahm", "Says")])
    await wait_until(lambda: not check_index(path)[1], timeout=5, what="the new play indexed")
    assert found(path, "frahm") == ["Says"]
    await store.close()


async def test_deletes_reused_ids_updates_and_an_adopted_account_keep_the_index_exact(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([play(at, f"Artist {at}", f"Song {at}") for at in range(1, 6)])
    await store.index_search()
    mark, _ = check_index(path)

    async def delete_newest(db):
        await db.execute("DELETE FROM plays WHERE id >= ?", (mark - 1,))

    await store.write(delete_newest)
    check_index(path)
    # The ids of the deleted rows are given out again, below the mark: indexed at once.
    await store.insert_plays([play(50, "Reused Name", "Again"), play(51, "Other", "Twice")])
    assert check_index(path) == (mark, set())
    assert found(path, "reused") == ["Again"]
    assert found(path, "artist") == ["Song 3", "Song 2", "Song 1"]

    async def rename(db):
        await db.execute("UPDATE plays SET title = 'Renamed' WHERE title = 'Song 2'")
        await db.execute("UPDATE plays SET title = 'Fresh' WHERE id = (SELECT max(id) FROM plays)")

    # Updates below the mark and above it (a new play, not indexed yet).
    await store.insert_plays([play(60, "Tail", "Unindexed")])
    await store.write(rename)
    check_index(path)
    assert found(path, "renamed") == ["Renamed"] and found(path, "song") == ["Song 3", "Song 1"]
    assert found(path, "tail fresh") == ["Fresh"]

    # Another case of the account: rows moved and, where a duplicate, dropped.
    await store.insert_plays([play(1, "Artist 1", "Song 1", account="LISTENER"),
                              play(70, "Moved", "Over", account="LISTENER")])
    assert await store.adopt_account("lastfm", "LISTENER") == 6
    check_index(path)
    await store.index_search()
    assert check_index(path)[1] == set()
    assert found(path, "moved") == ["Over"] and found(path, "song") == ["Song 3", "Song 1"]
    await store.close()


async def test_a_play_deleted_before_it_was_indexed_leaves_no_mark_in_the_index(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([play(1, "Kept", "First")])
    await store.index_search()
    await store.insert_plays([play(2, "Gone", "Soon")])  # above the mark

    async def delete(db):
        await db.execute("DELETE FROM plays WHERE artist = 'Gone'")

    before = index_pages(path)
    await store.write(delete)
    assert index_pages(path) == before  # no 'delete' given for a play the index never had
    await store.insert_plays([play(2, "Gone", "Soon")])  # the same id and words again
    await store.index_search()
    check_index(path)
    assert found(path, "gone soon") == ["Soon"]
    await store.close()


async def test_a_large_write_indexes_in_its_own_transaction_and_close_indexes_the_rest(tmp_path, monkeypatch):
    from aime_tui.store import database

    monkeypatch.setattr(database, "INDEX_AT_ONCE", 50)
    monkeypatch.setattr(database, "INDEX_AFTER", 3600.0)  # no timer in this test
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.insert_plays([play(at, "Early", f"Song {at}") for at in range(30)])
    assert len(check_index(path)[1]) == 30
    await store.insert_plays([play(at, "Late", f"Song {at}") for at in range(30, 60)])
    assert check_index(path)[1] == set()  # 60 pending ≥ 50: indexed with the write
    await store.insert_plays([play(at, "Last", f"Song {at}") for at in range(60, 70)])
    assert len(check_index(path)[1]) == 10
    await store.close()
    assert check_index(path)[1] == set()


async def test_plays_written_by_another_connection_are_indexed_at_the_next_open(tmp_path):
    path = tmp_path / "aime.db"
    store = await Store.open(path)
    await store.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO plays (source, account, played_at, artist, title, artist_key, title_key, stored_at)"
                " VALUES ('roon', 'core', 5, 'Björk', 'Jóga', 'björk', 'jóga', 0)")
    db.commit()
    db.close()
    assert check_index(path)[1] and found(path, "bjork") == ["Jóga"]
    store = await Store.open(path)
    assert check_index(path)[1] == set()
    await store.close()


async def test_a_schema_5_database_with_plays_keeps_its_index_whole(tmp_path):
    path = tmp_path / "aime.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        db.executescript(script + f"PRAGMA user_version = {number};")
    db.executemany(
        "INSERT INTO plays (source, account, played_at, artist, title, album, artist_key, title_key, stored_at)"
        " VALUES ('lastfm', 'me', ?, ?, ?, '', ?, ?, 0)",
        [(at, f"Band {at}", f"Tune {at}", f"band {at}", f"tune {at}") for at in range(1, 41)],
    )
    db.execute("DELETE FROM plays WHERE played_at > 38")  # ids 39, 40 free for reuse
    db.commit()
    db.close()
    store = await Store.open(path)
    mark, above = check_index(path)
    assert (mark, above) == (38, set())
    assert found(path, "tune 12") == ["Tune 12"]
    await store.insert_plays([play(100, "After", "Migration")])
    assert found(path, "migration") == ["Migration"]
    await store.close()
    assert check_index(path) == (39, set())
    assert await_totals(path) == [("lastfm", 39)]


def await_totals(path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT source, plays FROM play_totals").fetchall()
    finally:
        db.close()
