"""Child process for the memory benchmark: a headless demo engine, then many plays stored.

Prints one JSON line: RSS (MB) after restoring, and after `PLAYS` plays were stored
through the store's batched insert while the services kept running.

    python -m benchmarks.memory_child DATA_DIR PLAYS
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aime_tui.config import load_config
from aime_tui.engine import Engine
from aime_tui.store.database import Play

from .common import rss_mb

ARTISTS = ("Nils Frahm", "Björk", "Sigur Rós", "Radiohead", "Khruangbin", "Hania Rani", "múm")


async def main(data_dir: Path, plays: int) -> None:
    config = load_config(config_path=data_dir / "none.toml", data_dir=data_dir,
                         env={"AIME_DEMO_FAULTS": "0"}, demo=True)
    engine = Engine(config)
    try:
        supervisor = await engine.open()
        summary = await supervisor.restore("launch")
        await asyncio.sleep(0.5)
        restored = rss_mb()
        store = engine.store
        for start in range(0, plays, 200):
            page = [
                Play("bench", "memory", 1_000_000_000 + n, ARTISTS[n % len(ARTISTS)], f"Track {n}", "Album")
                for n in range(start, min(start + 200, plays))
            ]
            await store.insert_plays(page, cursor=("bench:memory", str(start)))
        stored = await store.count_plays("bench")
        await asyncio.sleep(0.5)
        print(json.dumps({"restored": restored, "after_plays": rss_mb(), "stored": stored,
                          "summary": summary.line()}), flush=True)
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
