"""Child process for the kill -9 test and the kill -9 soak: changes services until killed.

Opens the real engine (store, defaults, supervisor) with synthetic services named like
the real three, prints `ready SECONDS` (SECONDS: opening, checking and loading after the
previous kill) after `had SERVICE VALUE` / `had SERVICE.mode MODE` lines saying what
the database held at open, then toggles services and changes the scheduler's mode forever, printing
`want N SERVICE VALUE` (or `want N SERVICE.mode MODE`) before each change and `ack N`
once the supervisor has returned, which it does only once the change is committed: the
moment the UI would show it as done. Between changes it pauses a random 0..PAUSE seconds.
The parent (`run_until_killed` in benchmarks/kill9.py, which tests/test_kill9.py uses
too) kills it at a random moment.

    python -m benchmarks.toggle_child DATA_DIR SEED PAUSE
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

from aime_tui.config import load_config
from aime_tui.engine import Engine

from .common import synthetic_like_real


def services(config, store):
    return synthetic_like_real(config, store, start_delay=0.001)


async def main(data_dir: Path, seed: int, pause: float) -> None:
    parent = os.getppid()
    config = load_config(config_path=data_dir / "none.toml", data_dir=data_dir, env={})
    began = time.perf_counter()
    engine = Engine(config, services=services)
    supervisor = await engine.open()
    opened = time.perf_counter() - began
    # What the database holds before the first change (first-launch defaults included):
    # a kill during the first change of a key leaves this, or the change.
    for name, state in (await engine.store.desired_states()).items():
        print(f"had {name} {int(state.is_active)}", flush=True)
        if state.mode:
            print(f"had {name}.mode {state.mode}", flush=True)
    print(f"ready {opened:.6f}", flush=True)
    rng = random.Random(seed)
    step = 0
    try:
        while os.getppid() == parent:  # a parent gone (a benchmark run killed) ends the child too
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
            await asyncio.sleep(rng.uniform(0, pause))
    except BrokenPipeError:
        # Nobody reads our lines any more (the run that started us is gone): end.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        # Closed however the loop ends: the connection's thread would keep the
        # process alive for ever.
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
