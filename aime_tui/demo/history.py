"""A generated listening history: plays in a real database, for tests and benchmarks.

Artists, albums and tracks drawn with a long-tailed popularity (a few artists get most of
the plays, as in a real history), spread over `days` up to `end`, from both sources.
Written through the store's own schema (opened by `Store`, so every migration, index
and trigger is there), then in large transactions on a plain connection; opening the
store again afterwards indexes them for search.
Deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Sequence

from aime_tui.store.database import Play, Store, normalise

SYLLABLES = ("ka", "lo", "mi", "ra", "shu", "ten", "vo", "bel", "dor", "fen", "gra", "hul", "is", "jor", "ny")
ODD_NAMES = ("Björk", "Sigur Rós", "Motörhead", "坂本龍一", "Nils Frahm", "Crosby, Stills & Nash",
             'The "Band"', "Multi\nLine")
BATCH = 20_000
COLUMNS = (
    "source, account, played_at, artist, title, album, artist_key, title_key, stored_at,"
    " track_mbid, artist_mbid, album_mbid, zone, length"
)


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _mbid(rng: random.Random) -> str:
    return "%08x-%04x-4%03x-8%03x-%012x" % (
        rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48)
    )


class Catalogue:
    """Artists, each with albums of tracks; `pick()` draws one track, popular ones more often."""

    def __init__(self, rng: random.Random, artists: int) -> None:
        self.rng = rng
        self.tracks: list[tuple[str, str, str, str, str, str, float]] = []
        self.weights: list[float] = []
        names = list(ODD_NAMES) + [f"{_word(rng, 2)} {_word(rng, 2)}" for _ in range(artists)]
        for rank, artist in enumerate(names[:artists], start=1):
            artist_mbid = _mbid(rng)
            for _ in range(rng.randint(1, 3)):
                album, album_mbid = f"{_word(rng, 3)}", _mbid(rng)
                for _ in range(rng.randint(4, 10)):
                    title = f"{_word(rng, 2)} {_word(rng, 1)}"
                    self.tracks.append(
                        (artist, title, album, _mbid(rng), artist_mbid, album_mbid, float(rng.randint(90, 600)))
                    )
                    self.weights.append(1.0 / rank)
        self._cumulative = list(_accumulate(self.weights))

    def pick(self, count: int) -> list[tuple]:
        return self.rng.choices(self.tracks, cum_weights=self._cumulative, k=count)


def _accumulate(values: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def generate_plays(
    count: int, *, end: float | None = None, days: float = 3650, seed: int = 1, artists: int = 3000,
    account: str = "listener",
) -> Iterator[Play]:
    """`count` plays over the `days` before `end`, oldest first; 1 in 5 from Roon."""
    rng = random.Random(seed)
    end = time.time() if end is None else end
    start = end - days * 86400
    catalogue = Catalogue(rng, artists)
    stamps = sorted(rng.randrange(int(start), int(end)) for _ in range(count))
    zones = ("Living Room", "Kitchen", "Study")
    for played_at, track in zip(stamps, catalogue.pick(count)):
        artist, title, album, track_mbid, artist_mbid, album_mbid, length = track
        if rng.random() < 0.2:
            yield Play("roon", "core", played_at, artist, title, album, zone=rng.choice(zones), length=length)
        else:
            yield Play("lastfm", account, played_at, artist, title, album, track_mbid, artist_mbid, album_mbid)


def write_history(path: Path, plays: Iterator[Play]) -> int:
    """Store `plays` in the database at `path` (created and migrated if need be); returns how many were new."""

    async def open_once() -> None:
        store = await Store.open(path)
        await store.close()

    asyncio.run(open_once())
    db = sqlite3.connect(path, isolation_level=None)
    added = 0
    try:
        db.execute("PRAGMA synchronous = NORMAL")
        now = time.time()
        batch: list[tuple] = []

        def flush() -> int:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.executemany(
                f"INSERT OR IGNORE INTO plays ({COLUMNS}) VALUES ({', '.join('?' * 14)})", batch
            )
            db.execute("COMMIT")
            batch.clear()
            return cursor.rowcount

        for p in plays:
            batch.append((
                p.source, p.account, p.played_at, p.artist, p.title, p.album, normalise(p.artist),
                normalise(p.title), now, p.track_mbid, p.artist_mbid, p.album_mbid, p.zone, p.length,
            ))
            if len(batch) >= BATCH:
                added += flush()
        if batch:
            added += flush()
    finally:
        db.close()
    asyncio.run(open_once())  # the store's open indexes them for search
    return added
