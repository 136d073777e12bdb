"""The headless runner (`aime-tui --headless`, e.g. under systemd).

Hosts the same engine as the dashboard with no UI, tells systemd how it is doing
(Type=notify: READY=1 once the launch restoration has finished, STATUS= the summary,
STOPPING=1), and stops on SIGTERM, SIGINT or SIGHUP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from aime_tui.cli.exits import fail
from aime_tui.config import Config
from aime_tui.core.model import RestoreSummary
from aime_tui.store.database import StoreError


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are doing; a no-op when it did not start us."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.connect(address)
            notify.sendall(message.encode())
    except OSError as exc:
        logging.getLogger(__name__).warning("could not notify systemd: %s", exc)


async def run_headless(config: Config) -> int:
    from aime_tui.engine import Engine

    engine = Engine(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    try:
        await engine.open()
        summary = await engine.launch()
        sd_notify(f"READY=1\nSTATUS={summary.line()}")
        # Later restorations (after a wake) update the status systemctl shows.
        engine.bus.subscribe(lambda event: isinstance(event, RestoreSummary) and sd_notify(f"STATUS={event.line()}"))
        await stop.wait()
    except StoreError as exc:
        return fail(str(exc))
    finally:
        sd_notify("STOPPING=1")
        await engine.close()
    return 0
