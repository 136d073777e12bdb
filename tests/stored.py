"""What a test reads back from a store it opened: the plays, newest first."""

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
