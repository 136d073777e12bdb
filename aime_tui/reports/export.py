"""`aime-tui export`: the stored history as CSV, NDJSON or ListenBrainz JSON.

Streams: plays are read from a read-only connection a chunk at a time and written as
they come, so a million plays cost the memory of a few thousand. `--since` is
inclusive and `--until` exclusive, each an ISO date (local midnight) or an ISO time
(local unless it carries an offset or Z). A file named with `-o` is written beside
itself with mode 0600 and renamed into place once complete: an interrupted export never
leaves half a file under that name.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import closing
from datetime import date, datetime
from pathlib import Path
from typing import IO, Callable, Iterable

from aime_tui import __version__
from aime_tui.store.queries import JSON_KEYS, connect_read_only, iter_json_lines, iter_plays

#: What each play is written with (CSV's header, NDJSON's keys), in this order.
FIELDS = JSON_KEYS
MEDIA_PLAYER = {"roon": "Roon", "lastfm": None}


class ExportError(Exception):
    """Bad input (a date that does not parse) or a file that cannot be written."""


def parse_moment(text: str, *, flag: str) -> float:
    """An ISO date (its local midnight) or time (local unless it has an offset) as epoch seconds."""
    try:
        if "T" not in text and " " not in text.strip():
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day).timestamp()
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ExportError(
            f"{flag} {text!r} is not an ISO date or time (like 2026-11-01 or 2026-11-01T18:30)"
        ) from None


def _csv_row(row: tuple) -> tuple:
    (_, source, account, played_at, artist, title, album, track_mbid, artist_mbid, album_mbid,
     zone, length, iso) = row
    return (played_at, iso, source, account, artist, title, album, track_mbid, artist_mbid, album_mbid,
            zone, length)


def write_csv(chunks: Iterable[list[tuple]], out: IO[str]) -> int:
    # RFC 4180: CRLF line ends; fields with commas, quotes or line breaks quoted, quotes
    # doubled. None is written as an empty field.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(FIELDS)
    count = 0
    for rows in chunks:
        writer.writerows(map(_csv_row, rows))
        count += len(rows)
    return count


def write_ndjson(chunks: Iterable[list[bytes]], out: IO[str]) -> int:
    """JSON lines as SQLite made them (UTF-8), straight to the bytes under `out` when it
    has them (a file, stdout): no decoding and encoding back of every line."""
    binary = getattr(out, "buffer", None)
    if binary is not None:
        out.flush()  # whatever was written as text goes first
        write = binary.write
    else:
        write = lambda data: out.write(data.decode("utf-8"))  # noqa: E731 (a StringIO)
    count = 0
    for lines in chunks:
        write(b"\n".join(lines))
        write(b"\n")
        count += len(lines)
    return count


def listen(row: tuple) -> dict:
    """One play as a ListenBrainz listen (its JSON format for submission and import)."""
    (_, source, _, played_at, artist, title, album, track_mbid, artist_mbid, album_mbid,
     _, length, *_) = row
    info: dict = {"submission_client": "aime-tui", "submission_client_version": __version__}
    if media_player := MEDIA_PLAYER.get(source):
        info["media_player"] = media_player
    if track_mbid:
        info["recording_mbid"] = track_mbid
    if artist_mbid:
        info["artist_mbids"] = [artist_mbid]
    if album_mbid:
        info["release_mbid"] = album_mbid
    if length:
        info["duration_ms"] = int(round(length * 1000))
    metadata: dict = {"artist_name": artist, "track_name": title}
    if album:
        metadata["release_name"] = album
    metadata["additional_info"] = info
    return {"listened_at": played_at, "track_metadata": metadata}


def write_listenbrainz(chunks: Iterable[list[tuple]], out: IO[str]) -> int:
    """A JSON array of listens, written a chunk at a time."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    count = 0
    out.write("[")
    for rows in chunks:
        text = ",\n".join(dumps(listen(row)) for row in rows)
        out.write((",\n" if count else "\n") + text)
        count += len(rows)
    out.write("\n]\n")
    return count


WRITERS: dict[str, Callable[[Iterable[list], IO[str]], int]] = {
    "csv": write_csv, "ndjson": write_ndjson, "listenbrainz": write_listenbrainz,
}


def export(
    db_path: Path, out: IO[str], *, fmt: str = "ndjson", since: float | None = None,
    until: float | None = None, source: str | None = None,
) -> int:
    """Write the plays in [since, until) to `out`; returns how many."""
    db = connect_read_only(db_path)
    try:
        if fmt == "ndjson":
            chunks = iter_json_lines(db, since=since, until=until, source=source)
        else:
            chunks = iter_plays(db, since=since, until=until, source=source, iso=True)
        with closing(chunks):
            return WRITERS[fmt](chunks, out)
    finally:
        db.close()


def export_to_file(db_path: Path, target: Path, **options) -> int:
    """Export into `target` (mode 0600), replacing it only once the export is complete."""
    directory = target.parent if str(target.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(handle, 0o600)
        with open(handle, "w", encoding="utf-8", newline="") as out:
            count = export(db_path, out, **options)
        os.replace(temporary, target)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    return count
