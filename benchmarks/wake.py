"""Wake recovery: `Supervisor.wake()` against the loopback fakes, all services healthy.

A real engine in demo mode with injected faults off: the Last.fm and Roon fakes on
loopback, the real tracker, Roon tracker and scheduler, a real database. Each wake
stops the services, drops and recreates their connections, reopens the database and
restores; it counts as recovered when the summary says every service succeeded and
every service is running. The baseline is the launch restoration of the same engine.
"""

from __future__ import annotations

import asyncio
import time

from aime_tui.config import load_config
from aime_tui.core.model import RunState
from aime_tui.engine import Engine

from .common import Figure, Stats, scratch_dir
from .context import Context


async def _measure(ctx: Context) -> list[Figure]:
    engines = ctx.runs(3, 1)
    wakes_each = ctx.runs(10, 2)
    wakes, launches = [], []
    with scratch_dir(ctx.tmp_root, "wake") as directory:
        for index in range(engines):
            config = load_config(
                config_path=directory / "none.toml", data_dir=directory / f"data-{index}",
                env={"AIME_DEMO_FAULTS": "0"}, demo=True,
            )
            engine = Engine(config)
            try:
                supervisor = await engine.open()
                began = time.perf_counter()
                summary = await supervisor.restore("launch")
                launches.append(time.perf_counter() - began)
                _check(summary, supervisor, "launch")
                for _ in range(wakes_each):
                    await asyncio.sleep(0.3)  # let the sessions settle, as a machine would before sleeping
                    began = time.perf_counter()
                    summary = await supervisor.wake()
                    wakes.append(time.perf_counter() - began)
                    _check(summary, supervisor, "wake")
            finally:
                await engine.close()
    value = Stats.of(wakes)
    return [Figure(
        "wake", "wake → all 3 healthy (loopback fakes)", "s", value, Stats.of(launches),
        "launch restoration", target="≤ 0.5 s", judged_on="p95", met=value.p95 <= 0.5,
        notes=f"{len(wakes)} wakes over {engines} engines",
    )]


def _check(summary, supervisor, what: str) -> None:
    states = {view.name: view.state for view in supervisor.views()}
    if summary.failed or any(state is not RunState.RUNNING for state in states.values()):
        raise AssertionError(f"{what}: {summary.line()}; states {states}")


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
