"""What a test reads back from a store it opened: the plays, newest first; a Roon Core's token."""

from __future__ import annotations

from aime_tui.store.database import Play, Store


async def stored_plays(store: Store, limit: int = -1) -> list[Play]:
    """Every play (or the newest `limit`), newest first; plays of one moment in the
    order they were stored."""
    async with store.db.execute(
        "SELECT source, account, played_at, artist, title, album FROM plays ORDER BY played_at DESC, id LIMIT ?",
        (limit,),
    ) as cursor:
        return [Play(*row) for row in await cursor.fetchall()]


async def roon_token(store: Store, core_id: str) -> str | None:
    """The token the store keeps for this Roon Core, if any."""
    async with store.db.execute("SELECT token FROM roon_cores WHERE core_id = ?", (core_id,)) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None
