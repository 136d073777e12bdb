"""The Roon Cores the tracker has met: each one's name and token by core_id, and the claim
of what was stored before plays were keyed by core_id.

Roon plays belong to the Core's `core_id`; its name is only shown, so renaming the Core
neither splits the history nor stores a play twice. The token is kept per Core, as
node-roon-api keeps `tokens[core_id]`. Plays from before (keyed by the Core's name) and
the single token of before wait in `roon_unclaimed` (set aside by the migration) until a Core claims them:
the plays by its name, the token by accepting it at registration.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import aiosqlite

from aime_tui.store.database import Store, _read_totals

#: The Core the tracker last registered with: picked again when several answer.
SAVED_CORE_SETTING = "roon.core_id"


@dataclass(frozen=True)
class KnownCore:
    core_id: str
    name: str
    has_token: bool
    last_seen: float


async def claim_core(store: Store, core_id: str, name: str) -> str | None:
    """Record the Core (new, or renamed) and move to it the plays stored under its name
    before plays had core ids, duplicates dropped. Returns the token to register with:
    its own, else the unclaimed one from before (the Core says whether it is its), else None."""
    now = store._clock()

    async def claim(db: aiosqlite.Connection) -> str | None:
        await db.execute(
            "INSERT INTO roon_cores (core_id, name, last_seen) VALUES (?, ?, ?)"
            " ON CONFLICT (core_id) DO UPDATE SET name = excluded.name, last_seen = excluded.last_seen",
            (core_id, name, now),
        )
        async with db.execute(
            "SELECT 1 FROM roon_unclaimed WHERE kind = 'account' AND value = ?", (name,)
        ) as cursor:
            unclaimed_plays = await cursor.fetchone() is not None
        if unclaimed_plays:
            # A play already stored under the core id is the same play: the old copy goes.
            await db.execute(
                "UPDATE OR IGNORE plays SET account = ? WHERE source = 'roon' AND account = ?", (core_id, name)
            )
            await db.execute("DELETE FROM plays WHERE source = 'roon' AND account = ?", (name,))
            await db.execute("DELETE FROM roon_unclaimed WHERE kind = 'account' AND value = ?", (name,))
            # The duplicates dropped leave the store's running totals behind (this package's own).
            store._totals = await _read_totals(db)
        async with db.execute("SELECT token FROM roon_cores WHERE core_id = ?", (core_id,)) as cursor:
            (token,) = await cursor.fetchone()
        if token:
            return token
        async with db.execute("SELECT value FROM roon_unclaimed WHERE kind = 'token' LIMIT 1") as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    return await store.write(claim)


async def save_registration(store: Store, core_id: str, name: str, token: str) -> None:
    """The Core registered us with `token`: keep it as this Core's, and the Core as the one
    to pick again. A token from before that the Core accepted is now claimed."""
    now = store._clock()

    async def save(db: aiosqlite.Connection) -> None:
        await db.execute(
            "INSERT INTO roon_cores (core_id, name, token, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (core_id) DO UPDATE SET name = excluded.name, token = excluded.token,"
            " last_seen = excluded.last_seen",
            (core_id, name, token, now),
        )
        await db.execute("DELETE FROM roon_unclaimed WHERE kind = 'token' AND value = ?", (token,))
        await db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (SAVED_CORE_SETTING, core_id),
        )

    await store.write(save, durable=True)


async def saved_core_id(store: Store) -> str | None:
    return await store.get_setting(SAVED_CORE_SETTING)


async def known_cores(store: Store) -> list[KnownCore]:
    async with store.db.execute(
        "SELECT core_id, name, token IS NOT NULL, last_seen FROM roon_cores ORDER BY last_seen DESC"
    ) as cursor:
        rows = await cursor.fetchall()
    return [KnownCore(core_id, name, bool(has_token), last_seen) for core_id, name, has_token, last_seen in rows]


async def count_core_plays(store: Store, core_id: str) -> int:
    async with store.db.execute(
        "SELECT COUNT(*) FROM plays WHERE source = 'roon' AND account = ?", (core_id,)
    ) as cursor:
        (count,) = await cursor.fetchone()
    return count


def core_names(db: sqlite3.Connection) -> dict[str, str]:
    """Each known Core's name by core_id, for showing Roon plays (whose account is the
    core_id) to a person; read-only, on a plain sqlite3 connection (store/queries.py's)."""
    try:
        return dict(db.execute("SELECT core_id, name FROM roon_cores"))
    except sqlite3.OperationalError:  # a database from before Cores were recorded
        return {}
