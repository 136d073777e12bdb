"""Your data: export, stats, the read-only queries and the schema they need, on a real
database holding a generated history plus plays with awkward names."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from aime_tui.clients.lastfm import parse_recent_tracks
from aime_tui.demo.history import generate_plays, write_history
from aime_tui.reports import stats
from aime_tui.reports.export import export, export_to_file, listen, parse_moment
from aime_tui.store import queries
from aime_tui.store.database import MIGRATIONS, Play, Store, normalise
from aime_tui.store.queries import connect_read_only

# 2026-11-23 19:24:17 UTC; conftest pins TZ=UTC, so local midnights are UTC ones.
NOW = 1_795_461_857
ODD = [
    Play("lastfm", "listener", NOW - 100, "Crosby, Stills & Nash", 'Say "Hi", Then Go', "Déjà Vu",
         "rec-1", "art-1", "rel-1"),
    Play("lastfm", "listener", NOW - 200, "Multi\nLine Artist", "Line\r\nBreak", "a,b\n\"c\""),
    Play("roon", "core", NOW - 300, "坂本龍一", "戦場のメリークリスマス", "", zone="Living Room", length=301.5),
    Play("roon", "core", NOW - 400, "Björk", "Jóga", "Homogenic", zone="Kitchen, upstairs", length=305.0),
]


def run(coro):
    return asyncio.run(coro)


async def _insert(path: Path, plays) -> int:
    store = await Store.open(path)
    try:
        return await store.insert_plays(plays)
    finally:
        await store.close()


@pytest.fixture
def history(tmp_path) -> Path:
    path = tmp_path / "aime.db"
    write_history(path, generate_plays(3000, end=NOW - 1000, days=90, seed=7, artists=60))
    run(_insert(path, ODD))
    return path


def sql_rows(path: Path, where: str = "", args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT played_at, source, account, artist, title, album, track_mbid, artist_mbid,"
            f" album_mbid, zone, length FROM plays {where} ORDER BY played_at, id", args
        ).fetchall()
    finally:
        db.close()


def exported(path: Path, fmt: str, **options) -> str:
    out = io.StringIO(newline="")
    export(path, out, fmt=fmt, **options)
    return out.getvalue()


# -- schema --------------------------------------------------------------------------------


def test_an_older_database_keeps_its_plays_and_gains_nothing_invented(tmp_path):
    path = tmp_path / "aime.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version = 2;")
    db.executemany(
        "INSERT INTO plays (source, account, played_at, artist, title, album, artist_key, title_key, stored_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
        [("lastfm", "me", 10, "Nils Frahm", "Says", "Spaces", "nils frahm", "says"),
         ("roon", "core", 20, "Björk", "Jóga", "Homogenic", "björk", "jóga")],
    )
    db.commit()
    db.close()

    async def reopen():
        store = await Store.open(path)
        try:
            return store.play_total("lastfm"), store.play_total("roon")
        finally:
            await store.close()

    assert run(reopen()) == (1, 1)
    rows = sql_rows(path)
    assert rows == [
        (10, "lastfm", "me", "Nils Frahm", "Says", "Spaces", None, None, None, None, None),
        (20, "roon", "core", "Björk", "Jóga", "Homogenic", None, None, None, None, None),
    ]
    ro = connect_read_only(path)
    assert [play.title for play in queries.page(ro, search="bjork")] == ["Jóga"]  # old rows are searchable
    ro.close()


def test_totals_are_the_whole_history_per_source_and_count_no_duplicate(history):
    async def check():
        store = await Store.open(history)
        try:
            before = store.play_total("lastfm"), store.play_total("roon")
            again = await store.insert_plays(ODD)  # all stored already
            added = await store.insert_plays([Play("roon", "core", NOW, "New", "One", zone="Study")])
            return before, again, added, (store.play_total("lastfm"), store.play_total("roon"))
        finally:
            await store.close()

    before, again, added, after = run(check())
    db = sqlite3.connect(history)
    counted = dict(db.execute("SELECT source, COUNT(*) FROM plays GROUP BY source").fetchall())
    db.close()
    assert before == (counted["lastfm"], counted["roon"] - 1)
    assert (again, added) == (0, 1)
    assert after == (counted["lastfm"], counted["roon"])


def test_lastfm_mbids_are_parsed_and_blank_ones_stay_unknown():
    page = parse_recent_tracks({"recenttracks": {"@attr": {"page": "1", "totalPages": "1", "total": "2"}, "track": [
        {"artist": {"mbid": "a-1", "#text": "Nils Frahm"}, "mbid": "r-1", "album": {"mbid": "l-1", "#text": "Spaces"},
         "name": "Says", "date": {"uts": "100"}},
        {"artist": {"mbid": "", "#text": "Björk"}, "mbid": "", "album": {"mbid": "", "#text": ""},
         "name": "Jóga", "date": {"uts": "90"}},
    ]}}, "me")
    first, second = page.plays
    assert (first.track_mbid, first.artist_mbid, first.album_mbid) == ("r-1", "a-1", "l-1")
    assert (second.track_mbid, second.artist_mbid, second.album_mbid) == (None, None, None)


# -- export --------------------------------------------------------------------------------


def _expected(row: tuple) -> dict:
    played_at, source, account, artist, title, album, track_mbid, artist_mbid, album_mbid, zone, length = row
    return {
        "played_at": played_at,
        "played_at_iso": datetime.utcfromtimestamp(played_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source, "account": account, "artist": artist, "title": title, "album": album,
        "track_mbid": track_mbid, "artist_mbid": artist_mbid, "album_mbid": album_mbid, "zone": zone,
        "length": length,
    }


def test_ndjson_reads_back_row_for_row(history, tmp_path):
    text = exported(history, "ndjson")
    assert [json.loads(line) for line in text.splitlines()] == [_expected(row) for row in sql_rows(history)]
    # Into a file the lines go as SQLite's bytes, past the text layer: the same text.
    assert export_to_file(history, tmp_path / "plays.ndjson", fmt="ndjson") == len(text.splitlines())
    assert (tmp_path / "plays.ndjson").read_text(encoding="utf-8") == text


def test_csv_reads_back_row_for_row_with_commas_quotes_newlines_and_non_ascii(history):
    text = exported(history, "csv")
    assert text.startswith("played_at,played_at_iso,source,account,artist,title,album,")
    assert "\r\n" in text
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    expected = []
    for row in sql_rows(history):
        record = _expected(row)
        expected.append({key: "" if value is None else str(value) for key, value in record.items()})
    assert records == expected
    titles = {record["title"]: record for record in records}
    assert titles["Line\r\nBreak"]["album"] == 'a,b\n"c"'
    assert titles['Say "Hi", Then Go']["artist"] == "Crosby, Stills & Nash"


def test_listenbrainz_json_reads_back_as_listens(history):
    listens = json.loads(exported(history, "listenbrainz"))
    rows = sql_rows(history)
    assert len(listens) == len(rows)
    for item, row in zip(listens, rows):
        played_at, source, _, artist, title, album, track_mbid, artist_mbid, album_mbid, _, length = row
        metadata = item["track_metadata"]
        assert item["listened_at"] == played_at
        assert (metadata["artist_name"], metadata["track_name"]) == (artist, title)
        assert metadata.get("release_name") == (album or None)
        info = metadata["additional_info"]
        assert info.get("recording_mbid") == track_mbid
        assert info.get("artist_mbids") == ([artist_mbid] if artist_mbid else None)
        assert info.get("release_mbid") == album_mbid
        assert info.get("duration_ms") == (round(length * 1000) if length else None)
        assert info.get("media_player") == ("Roon" if source == "roon" else None)
    assert listen((1, "roon", "core", 5, "A", "B", "", None, None, None, "Z", 301.5))["track_metadata"] == {
        "artist_name": "A", "track_name": "B",
        "additional_info": {"submission_client": "aime-tui", "submission_client_version": info["submission_client_version"],
                            "media_player": "Roon", "duration_ms": 301500},
    }


def test_since_is_inclusive_until_exclusive_and_source_filters(history):
    rows = sql_rows(history)
    since, until = rows[100][0], rows[200][0]
    got = [json.loads(line) for line in exported(history, "ndjson", since=since, until=until).splitlines()]
    assert got == [_expected(row) for row in rows if since <= row[0] < until]
    assert got[0]["played_at"] == since and got[-1]["played_at"] < until
    roon = [json.loads(line) for line in exported(history, "ndjson", since=since, source="roon").splitlines()]
    assert roon == [_expected(row) for row in rows if since <= row[0] and row[1] == "roon"] and roon


def test_dates_read_as_local_midnight_and_times_with_or_without_an_offset():
    assert parse_moment("2026-11-23", flag="--since") == datetime(2026, 11, 23).timestamp()
    assert parse_moment("2026-11-23T19:24:17Z", flag="--since") == NOW
    assert parse_moment("2026-11-23T20:24:17+01:00", flag="--since") == NOW
    assert parse_moment("2026-11-23 19:24:17", flag="--since") == datetime(2026, 11, 23, 19, 24, 17).timestamp()


def test_an_export_never_holds_up_the_instance_writes(history):
    """A reader half-way through a big export (one read snapshot) and the store writing meanwhile."""
    db = connect_read_only(history)
    chunks = queries.iter_plays(db, chunk=100)
    first = next(chunks)

    async def write():
        store = await Store.open(history)
        try:
            return await asyncio.wait_for(store.insert_plays([Play("lastfm", "listener", NOW + 50, "Late", "Arrival")]), 2)
        finally:
            await store.close()

    assert run(write()) == 1
    rest = [row for chunk in chunks for row in chunk]
    db.close()
    exported_titles = [row[5] for row in first + rest]
    assert "Arrival" not in exported_titles  # the export is the snapshot it began with
    assert len(first + rest) == len(sql_rows(history)) - 1


def cli(*args, cwd=None):
    return subprocess.run(
        [str(Path(sys.executable).parent / "aime-tui"), *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, "TZ": "UTC"},
    )


def test_export_command_writes_a_private_file_and_stdout(history, tmp_path):
    data = history.parent
    target = tmp_path / "out" / "plays.csv"
    target.parent.mkdir()
    result = cli("export", "--data-dir", str(data), "--format", "csv", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert result.stderr.strip() == f"wrote {len(sql_rows(history)):,} plays to {target}"
    assert sorted(os.listdir(target.parent)) == ["plays.csv"]  # no temporary left behind
    piped = cli("export", "--data-dir", str(data), "--since", "2026-11-23", "--source", "roon")
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["title"] for line in piped.stdout.splitlines()] == [
        row[4] for row in sql_rows(history, "WHERE played_at >= ? AND source = 'roon'", (parse_moment("2026-11-23", flag=""),))
    ]


def test_export_refuses_a_bad_date_in_one_line(history):
    result = cli("export", "--data-dir", str(history.parent), "--until", "next tuesday")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--until 'next tuesday' is not an ISO date" in result.stderr
    assert result.stdout == ""


# -- stats ---------------------------------------------------------------------------------


def test_stats_agree_with_plain_sql(history):
    db = connect_read_only(history)
    report = stats.compute(db, "30d", now=NOW)
    db.close()
    start = datetime(2026, 11, 23) - timedelta(days=29)
    since, until = start.timestamp(), (datetime(2026, 11, 24)).timestamp()
    plain = sqlite3.connect(history)
    (count,) = plain.execute("SELECT COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ?", (since, until)).fetchone()
    assert report.plays == count and count > 500
    assert len(report.per_day) == 30 and report.per_day[0][0] == start.date().isoformat()
    day = datetime(2026, 11, 20)
    (that_day,) = plain.execute("SELECT COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ?",
                                (day.timestamp(), (day + timedelta(days=1)).timestamp())).fetchone()
    assert dict(report.per_day)["2026-11-20"] == that_day
    assert report.per_source == dict(plain.execute(
        "SELECT source, COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ? GROUP BY source", (since, until)))
    top = plain.execute(
        "SELECT artist_key, COUNT(*) c FROM plays WHERE played_at >= ? AND played_at < ?"
        " GROUP BY artist_key ORDER BY c DESC, artist_key LIMIT 10", (since, until)).fetchall()
    assert [item.plays for item in report.top_artists] == [c for _, c in top]
    tracks = plain.execute(
        "SELECT COUNT(*) c FROM plays WHERE played_at >= ? AND played_at < ?"
        " GROUP BY artist_key, title_key ORDER BY c DESC LIMIT 10", (since, until)).fetchall()
    assert [item.plays for item in report.top_tracks] == [c for (c,) in tracks]
    (everything,) = plain.execute("SELECT COUNT(*) FROM plays").fetchone()
    plain.close()
    db = connect_read_only(history)
    assert stats.compute(db, "all", now=NOW).plays == everything
    db.close()


def test_stats_over_the_whole_history_agree_with_plain_sql(history):
    db = connect_read_only(history)
    report = stats.compute(db, "all", now=NOW)
    db.close()
    plain = sqlite3.connect(history)
    assert report.per_source == dict(plain.execute("SELECT source, COUNT(*) FROM plays GROUP BY source"))
    first = datetime.fromtimestamp(plain.execute("SELECT MIN(played_at) FROM plays").fetchone()[0]).date()
    days = [row for row in report.per_day if row[1]]
    assert report.per_day[0][0] == first.isoformat() and len(days) > 60
    for day, plays in days[::7]:
        since = datetime.fromisoformat(day).timestamp()
        assert plays == plain.execute("SELECT COUNT(*) FROM plays WHERE played_at >= ? AND played_at < ?",
                                      (since, since + 86400)).fetchone()[0]
    for ranked, keys, where in ((report.top_artists, "artist_key", ""),
                                (report.top_tracks, "artist_key, title_key", ""),
                                (report.top_albums, "artist_key, album", "WHERE album != ''")):
        expected = plain.execute(
            f"SELECT COUNT(*) c, max(artist) FROM plays {where} GROUP BY {keys} ORDER BY c DESC, {keys} LIMIT 10"
        ).fetchall()
        assert [(item.plays, normalise(item.artist)) for item in ranked] == [
            (count, normalise(artist)) for count, artist in expected]
    plain.close()


def test_stats_command_prints_a_chart_and_json(history):
    result = cli("stats", "--data-dir", str(history.parent), "--period", "all")
    assert result.returncode == 0, result.stderr
    assert "plays per month" in result.stdout and "top artists" in result.stdout and "█" in result.stdout
    lines = stats.report_lines(stats.Stats("7d", 0, 1, 1, {"roon": 1}, [("2026-11-23", 1)],
                                           top_artists=[queries.Ranked("Multi\nLine", "Multi\nLine", 1)]))
    assert "   1. Multi Line  (1)" in lines  # a line break in a name does not break the layout
    data = json.loads(cli("stats", "--data-dir", str(history.parent), "--period", "7d", "--json").stdout)
    assert data["period"] == "7d" and len(data["per_day"]) == 7
    assert sum(day["plays"] for day in data["per_day"]) == data["plays"]


def test_plays_command_names_the_roon_core_and_keeps_its_id_as_the_account(history, capsys):
    from aime_tui.cli.main import main

    db = sqlite3.connect(history)
    with db:
        db.execute("INSERT INTO roon_cores (core_id, name, last_seen) VALUES ('core', 'Nucleus', 0)")
    db.close()
    assert main(["plays", "--data-dir", str(history.parent), "--limit", "4", "--json"]) == 0
    plays = json.loads(capsys.readouterr().out)
    by_title = {play["title"]: play for play in plays}
    assert by_title["Jóga"]["account"] == "core" and by_title["Jóga"]["core_name"] == "Nucleus"
    assert by_title['Say "Hi", Then Go']["core_name"] is None  # a Last.fm play has no Core
    assert main(["plays", "--data-dir", str(history.parent), "--limit", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("Björk – Jóga  [Homogenic]  (roon · Nucleus)") for line in lines), lines


def test_stats_of_an_empty_history(tmp_path):
    result = cli("stats", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 0 and "nothing recorded yet" in result.stdout


# -- pages and search ------------------------------------------------------------------------


def test_keyset_pages_walk_the_whole_history_newest_first(history):
    db = connect_read_only(history)
    seen, before = [], None
    while rows := queries.page(db, before=before, limit=250):
        seen += rows
        before = (rows[-1].played_at, rows[-1].id)
    db.close()
    plain = sqlite3.connect(history)
    assert [row.id for row in seen] == [id_ for (id_,) in plain.execute("SELECT id FROM plays ORDER BY played_at DESC, id DESC")]
    plain.close()


@pytest.mark.parametrize("text", ["bjork", "crosby stills", "déjà", "line", "mul", '"quoted'])
def test_search_matches_words_by_prefix_whichever_plan_it_takes(history, monkeypatch, text):
    db = connect_read_only(history)
    sparse = queries.page(db, search=text, limit=50)
    monkeypatch.setattr(queries, "SPARSE_MATCHES", 0)  # force the walk for dense matches
    dense = queries.page(db, search=text, limit=50)
    db.close()
    assert sparse == dense
    words = [word.strip('"') for word in text.split()]
    for row in sparse:
        haystack = stats_words(f"{row.artist} {row.title} {row.album}")
        assert all(any(word_.startswith(stats_words(word)[0]) for word_ in haystack) for word in words), row
    assert sparse or text == '"quoted'


def stats_words(text: str) -> list[str]:
    import re
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))
    return re.findall(r"\w+", plain)
