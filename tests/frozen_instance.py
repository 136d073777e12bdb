"""Child process for the attached-dashboard snapshot: a frozen scripted instance that
serves the control socket until SIGTERM.

Usage (from the directory that holds, or will hold, `data/`): frozen_instance.py.
"""

from __future__ import annotations

import asyncio
import signal

from frozen import frozen_config, frozen_engine

from aime_tui.core.faults import NeedsAttention


async def main() -> None:
    engine, _ = frozen_engine(
        frozen_config(),
        roon_tracker={"failures": (NeedsAttention("approve aime-tui in Roon → Settings → Extensions"),)},
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await engine.open()
    await engine.launch()
    await stop.wait()
    await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
