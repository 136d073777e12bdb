"""The headless runner (`aime-tui --headless`, e.g. under systemd), and the life of an
engine with no window, which a dashboard that lost its terminal or detached leads too.

Hosts the same engine as the dashboard with no UI, tells systemd how it is doing
(Type=notify: READY=1 once the launch restoration has finished, STATUS= the summary,
STOPPING=1). SIGTERM and SIGINT (and `aime-tui shutdown`) stop the services and exit at
once, even while the launch restoration still runs; SIGHUP reads the config file again,
restarts the services whose settings changed and applies [notify] and [http].
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Awaitable

from aime_tui.cli.exits import fail

if TYPE_CHECKING:
    from aime_tui.config import Config
    from aime_tui.engine import Engine

log = logging.getLogger(__name__)

#: After SIGTERM or SIGINT, the longest the process lives on, whatever hangs.
EXIT_WATCHDOG = 5.0


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
        log.warning("could not notify systemd: %s", exc)


def arm_watchdog(seconds: float = EXIT_WATCHDOG) -> None:
    """A signal always ends the process: if the orderly stop hangs, exit anyway (every
    acknowledged change is committed already)."""

    def expire() -> None:
        log.error("still not stopped %.0f s after the signal: exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def stop_on_signals(engine: "Engine", *, reload: bool) -> None:
    """SIGTERM and SIGINT ask the engine's host to stop; SIGHUP reloads, or is ignored
    (a dashboard that lost its terminal may be told of the hang-up again)."""
    loop = asyncio.get_running_loop()
    def stop() -> None:
        arm_watchdog()
        engine.request_shutdown()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    if reload:
        reloads: set[asyncio.Task] = set()

        def on_hangup() -> None:
            task = loop.create_task(engine.reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    else:
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def until_shutdown(engine: "Engine", work: Awaitable | None = None) -> bool:
    """Run `work` (if any) unless a shutdown is asked first; True if it was asked."""
    asked = asyncio.ensure_future(engine.shutdown_requested.wait())
    if work is None:
        await asked
        return True
    task = asyncio.ensure_future(work)
    await asyncio.wait({asked, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        asked.cancel()
        task.result()  # what it raised, raised here
        return engine.shutdown_requested.is_set()
    task.cancel()
    await asyncio.wait({task})
    return True


async def run_headless(config: "Config") -> int:
    from aime_tui.core.model import RestoreSummary
    from aime_tui.engine import Engine
    from aime_tui.store.database import StoreError

    engine = Engine(config)
    stop_on_signals(engine, reload=True)
    restoring: asyncio.Task | None = None
    try:
        if await until_shutdown(engine, engine.open()):
            return 0

        async def restore() -> None:
            summary = await engine.launch()
            sd_notify(f"READY=1\nSTATUS={summary.line()}")
            # Later restorations (after a wake) update the status systemctl shows.
            engine.bus.subscribe(
                lambda event: isinstance(event, RestoreSummary) and sd_notify(f"STATUS={event.line()}")
            )

        restoring = asyncio.create_task(restore(), name="restore")
        await until_shutdown(engine)
    except StoreError as exc:
        return fail(str(exc))
    finally:
        sd_notify("STOPPING=1")
        if restoring is not None:
            restoring.cancel()  # a start still under way is abandoned, not waited for
        await engine.close()
    return 0
