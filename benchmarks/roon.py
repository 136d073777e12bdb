"""Roon as it really runs: a half-open socket noticed, and discovery to a connected session.

Half-open: a real RoonTracker connected to the loopback fake Core, whose sessions then go
quiet (nothing read or sent, nothing closed: a Core box asleep, Wi-Fi gone). Timed from
that moment to the tracker reporting the lost connection. The baseline is the same with
websockets' default keepalive (ping every 20 s, 20 s for the pong), which is what the
tracker ran with before. A full run uses the real timings (target ≤ 20 s); --quick runs
every timing twenty times faster, and judges the target the same way, scaled.

Discovery: a tracker with no host sends its SOOD query to the fake's loopback responder
(never to the network), picks the Core and completes the handshake: timed from
`start()` to running with the zones subscribed. The baseline is the same start with the
host configured, no discovery. Once with no saved Core (the reply window is waited
out, in case a second Core answers), once with the Core saved (taken at its reply).
"""

from __future__ import annotations

import asyncio
import random
import time

from aime_tui.clients.moo import CLOSE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT
from aime_tui.config import RoonConfig
from aime_tui.demo.roon_fake import FakeRoonCore, FakeSoodResponder
from aime_tui.services.roon import RoonTracker
from aime_tui.store.database import Store

from .common import Figure, Stats, scratch_dir
from .context import Context

TARGET_NOTICED = 20.0
#: websockets' own defaults: the keepalive the tracker had before.
DEFAULT_PING_INTERVAL = DEFAULT_PING_TIMEOUT = 20.0


async def _noticed_after_half_open(store: Store, interval: float, timeout: float, scale: float) -> float:
    core = FakeRoonCore(zones=1)
    await core.start()
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store)
    tracker.keepalive_interval, tracker.keepalive_timeout = interval, timeout
    tracker.close_timeout = CLOSE_TIMEOUT * scale
    lost = asyncio.Event()
    tracker.set_fault_handler(lambda service, exc: lost.set())
    try:
        await tracker.start()
        # Anywhere in the ping cycle, as a real socket dies whenever it does.
        await asyncio.sleep(interval * random.random())
        began = time.perf_counter()
        core.half_open()
        async with asyncio.timeout(interval + timeout + 30):
            await lost.wait()
        return time.perf_counter() - began
    finally:
        await tracker.stop()
        await core.stop()


async def _discovery_to_connected(store: Store, *, discover: bool, saved: bool) -> float:
    core = FakeRoonCore(zones=2)
    await core.start()
    responder = FakeSoodResponder([core])
    await responder.start()
    if discover:
        config = RoonConfig(host="", discovery=(("127.0.0.1", responder.port),))
    else:
        config = RoonConfig(host="127.0.0.1", port=core.port, discovery=())
    if not saved:
        await store.write(lambda db: db.execute("DELETE FROM settings WHERE key = 'roon.core_id'"))
    tracker = RoonTracker(config, store)
    try:
        began = time.perf_counter()
        await tracker.start()
        elapsed = time.perf_counter() - began
        status = tracker.status()
        if not status["running"] or status["zones"] != 2:
            raise AssertionError(f"not connected: {status}")
        return elapsed
    finally:
        await tracker.stop()
        await responder.stop()
        await core.stop()


async def _measure(ctx: Context) -> list[Figure]:
    scale = ctx.pick(1.0, 1 / 20)
    repeats = ctx.runs(3, 1)
    noticed, before = [], []
    figures = []
    with scratch_dir(ctx.tmp_root, "roon") as directory:
        store = await Store.open(directory / "aime.db")
        try:
            for index in range(repeats):
                ctx.say(f"half-open socket {index + 1}/{repeats}")
                noticed.append(await _noticed_after_half_open(
                    store, KEEPALIVE_INTERVAL * scale, KEEPALIVE_TIMEOUT * scale, scale))
                before.append(await _noticed_after_half_open(
                    store, DEFAULT_PING_INTERVAL * scale, DEFAULT_PING_TIMEOUT * scale, scale))
            value = Stats.of(noticed)
            figures.append(Figure(
                "roon", "half-open socket → noticed" + (" (timings ÷20)" if ctx.quick else ""), "s", value,
                Stats.of(before), "websockets' default keepalive",
                target=f"≤ {TARGET_NOTICED * scale:g} s", judged_on="max", met=value.max <= TARGET_NOTICED * scale,
                notes=f"ping every {KEEPALIVE_INTERVAL * scale:g} s, pong within {KEEPALIVE_TIMEOUT * scale:g} s,"
                      f" close handshake {CLOSE_TIMEOUT * scale:g} s",
            ))

            runs = ctx.runs(10, 3)
            found, found_saved, direct = [], [], []
            for _ in range(runs):
                found.append(await _discovery_to_connected(store, discover=True, saved=False))
                found_saved.append(await _discovery_to_connected(store, discover=True, saved=True))
                direct.append(await _discovery_to_connected(store, discover=False, saved=True))
        finally:
            await store.close()
    figures.append(Figure(
        "roon", "discovery → connected, loopback (no saved Core)", "s", Stats.of(found), Stats.of(direct),
        "roon.host configured", notes=f"reply window {RoonTracker.discovery_window:g} s waited out",
    ))
    figures.append(Figure(
        "roon", "discovery → connected, loopback (saved Core)", "s", Stats.of(found_saved), Stats.of(direct),
        "roon.host configured", notes="taken at its reply",
    ))
    return figures


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
