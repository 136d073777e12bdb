"""Child process for the catch-up benchmark: the engine restores a tracker whose cursor
is a whole history behind, then catches the gap up while running.

Prints one JSON line: whether the start succeeded within the restore timeout, the
seconds and plays of the catch-up, the RSS (MB) when restored and the peak during it.

    python -m benchmarks.catchup_child DATA_DIR API_URL GAP
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aime_tui.config import Config, LastfmConfig, RoonConfig, SchedulerConfig
from aime_tui.engine import Engine
from aime_tui.store.database import Store

from .common import rss_mb
from .lastfm_server import API_KEY, NEWEST, USER

#: Loopback: the benchmark measures the engine, not Last.fm's cap.
RATE = 100_000


async def main(data_dir: Path, url: str, gap: int) -> None:
    # The cursor is the oldest play (the fake's plays are 180 s apart): `gap` plays to fetch.
    store = await Store.open(data_dir / "aime.db")
    await store.set_cursor(f"lastfm:{USER}", str(NEWEST - gap * 180))
    await store.close()
    config = Config(
        data_dir=data_dir, config_path=data_dir / "none.toml",
        lastfm=LastfmConfig(api_url=url, api_key=API_KEY, user=USER, interval=3600, rate=RATE),
        roon=RoonConfig(enabled=False), scheduler=SchedulerConfig(enabled=False),
    )
    engine = Engine(config)
    try:
        supervisor = await engine.open()
        began = time.perf_counter()
        summary = await supervisor.restore("launch")
        restored = rss_mb()
        tracker = supervisor.service("tracker")
        peak = restored
        while tracker.status()["catching_up"] is not None and supervisor.view("tracker").state.value == "running":
            await asyncio.sleep(0.05)
            peak = max(peak, rss_mb())
        elapsed = time.perf_counter() - began
        plays = tracker.status()["tracks_found"]
        print(json.dumps({
            "started": not summary.failed, "start_seconds": summary.elapsed, "seconds": elapsed,
            "plays": plays, "restored_mb": restored, "peak_mb": peak,
            "state": supervisor.view("tracker").state.value, "summary": summary.line(),
        }), flush=True)
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
