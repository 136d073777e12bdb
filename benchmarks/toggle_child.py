"""Child process for the kill -9 soak: toggles and mode changes through the real supervisor.

Prints `ready SECONDS` once the store is open (SECONDS: opening, checking and loading
after the previous kill), then `want N SERVICE VALUE` (or `want N SERVICE.mode MODE`)
before each change and `ack N` once the supervisor has returned, which it does only once
the change is committed. The parent kills it at a random moment.

    python -m benchmarks.toggle_child DATA_DIR SEED
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from aime_tui.store import Store
from aime_tui.supervisor import Supervisor

from .common import SERVICE_NAMES, synthetic_like_real


async def main(data_dir: Path, seed: int) -> None:
    began = time.perf_counter()
    store = await Store.open(data_dir / "aime.db")
    await store.ensure_defaults({name: (True, "MAINTENANCE" if name == "scheduler" else None)
                                 for name in SERVICE_NAMES})
    supervisor = Supervisor(store, synthetic_like_real(start_delay=0.001))
    await supervisor.load()
    print(f"ready {time.perf_counter() - began:.6f}", flush=True)
    rng = random.Random(seed)
    step = 0
    while True:
        name = rng.choice(supervisor.names)
        step += 1
        if name == "scheduler" and rng.random() < 0.5:
            modes = supervisor.service(name).modes
            mode = modes[(modes.index(supervisor.view(name).mode) + 1) % len(modes)]
            print(f"want {step} {name}.mode {mode}", flush=True)
            await supervisor.set_mode(name, mode)
        else:
            print(f"want {step} {name} {int(not supervisor.view(name).wanted)}", flush=True)
            await supervisor.toggle(name)
        print(f"ack {step}", flush=True)
        await asyncio.sleep(rng.uniform(0, 0.005))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
