"""Child process for the kill -9 test: toggles services through the real engine forever.

Prints `want N SERVICE VALUE` before each toggle (`want N SERVICE.mode MODE` before a
mode change) and `ack N` once the supervisor has returned (the moment the UI would show
it as done). The parent kills it at random.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from aime_tui.config import load_config  # noqa: E402
from scripted import scripted_engine  # noqa: E402


async def main(data_dir: str, seed: int) -> None:
    config = load_config(config_path=Path(data_dir) / "none.toml", data_dir=Path(data_dir), env={})
    engine, _ = scripted_engine(config)
    supervisor = await engine.open()
    rng = random.Random(seed)
    print("ready", flush=True)
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
        await asyncio.sleep(rng.uniform(0, 0.01))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
