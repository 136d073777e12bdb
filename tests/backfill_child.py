"""Child process for the backfill kill test: runs the MASSIVE backfill until it is done.

Usage: backfill_child.py DATA_DIR API_URL API_KEY USER INTERVAL. Prints `ready` once the
scheduler runs and `done` once the whole history is stored and the backfilled range
reconciled; the parent may SIGKILL it at any moment in between. No pacing here beyond
INTERVAL: the fake is on loopback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aime_tui.config import LastfmConfig, SchedulerConfig
from aime_tui.services.scheduler import MASSIVE, CollectionScheduler
from aime_tui.store.database import Store


async def main(data_dir: str, api_url: str, api_key: str, user: str, interval: str) -> None:
    store = await Store.open(Path(data_dir) / "aime.db")
    scheduler = CollectionScheduler(
        SchedulerConfig(mode=MASSIVE, backfill_interval=float(interval)),
        LastfmConfig(api_url=api_url, api_key=api_key, user=user, rate=10_000),
        store,
        backup_dir=Path(data_dir) / "backups",
    )
    faults: list[BaseException] = []
    scheduler.set_fault_handler(lambda service, exc: faults.append(exc))
    scheduler.retry_wait = 0.005
    await scheduler.start()
    print("ready", flush=True)
    while not scheduler.status()["backfill_reconciled"] and not faults:
        await asyncio.sleep(0.01)
    await scheduler.stop()
    await store.close()
    if faults:
        sys.exit(f"backfill failed: {faults[0]}")
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
