"""Toggle durability: from a supervisor start/stop call to the committed (fsynced) row.

Real Store on a scratch file, real Supervisor hosting services named like the real
three. Each toggle is timed from the call to its return, which the supervisor makes
only after the desired-state row is committed; a second connection then checks the
row is there. Alongside: the same transaction committed with synchronous=FULL (what
the store does for desired states) and with NORMAL, to show what the fsync costs.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time

import aiosqlite

from aime_tui.core.supervisor import Supervisor
from aime_tui.store.database import Store

from .common import Figure, Stats, ms, scratch_dir, synthetic_like_real
from .context import Context


async def _desired_transaction(store: Store, service: str, active: bool, durable: bool) -> None:
    """The statements of Store.set_desired, committed with or without the fsync."""
    now = time.time()

    async def update(db: aiosqlite.Connection) -> None:
        async with db.execute("SELECT is_active FROM service_states WHERE service_name = ?", (service,)) as cursor:
            await cursor.fetchone()
        await db.execute(
            "INSERT INTO service_states (service_name, is_active, last_updated) VALUES (?, ?, ?)"
            " ON CONFLICT (service_name) DO UPDATE SET is_active = excluded.is_active,"
            " last_updated = excluded.last_updated",
            (service, int(active), now),
        )
        await db.execute(
            "INSERT INTO transitions (service, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)",
            (service, "wanted", "unwanted", "bench", now),
        )

    await store.write(update, durable=durable)


async def _measure(ctx: Context) -> list[Figure]:
    toggles = ctx.runs(600, 60)
    rng = random.Random(7)
    with scratch_dir(ctx.tmp_root, "toggle") as directory:
        store = await Store.open(directory / "aime.db")
        await store.ensure_defaults({name: (False, None) for name in ("tracker", "roon_tracker", "scheduler")})
        supervisor = Supervisor(store, synthetic_like_real(start_delay=0.002))
        await supervisor.load()
        check = sqlite3.connect(directory / "aime.db")
        latencies, unverified = [], 0
        try:
            for step in range(toggles):
                name = rng.choice(supervisor.names)
                began = time.perf_counter()
                wanted = await supervisor.toggle(name)
                latencies.append(time.perf_counter() - began)
                (stored,) = check.execute(
                    "SELECT is_active FROM service_states WHERE service_name = ?", (name,)
                ).fetchone()
                unverified += stored != int(wanted)
                # Let the background start/stop and the transition writer run, as between keys.
                await asyncio.sleep(rng.uniform(0.0, 0.004))

            full, normal = [], []
            for step in range(toggles):
                for durable, bucket in ((True, full), (False, normal)) if step % 2 else ((False, normal), (True, full)):
                    began = time.perf_counter()
                    await _desired_transaction(store, "tracker", bool(step % 2), durable)
                    bucket.append(time.perf_counter() - began)
        finally:
            check.close()
            await supervisor.close()
            await store.close()
    value = Stats.of([ms(v) for v in latencies])
    full_stats, normal_stats = Stats.of([ms(v) for v in full]), Stats.of([ms(v) for v in normal])
    return [
        Figure(
            "toggle", "toggle → committed row (FULL)", "ms", value, normal_stats,
            "same transaction, NORMAL", target="p99 ≤ 5 ms", judged_on="p99", met=value.p99 <= 5.0,
            notes=f"{toggles} toggles; {unverified} not found committed by a second connection",
            extra={"unverified": unverified},
        ),
        Figure(
            "toggle", "desired-state commit, synchronous=FULL", "ms", full_stats, normal_stats,
            "NORMAL", notes=f"fsync cost ≈ {full_stats.median - normal_stats.median:.2f} ms (median)",
        ),
    ]


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
