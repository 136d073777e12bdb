"""Event-loop lag: how late a 10 ms ticker wakes while the loop does real work.

Three loads, each with its baseline measured in the same run:

* restoring 200 synthetic services (real store and supervisor), the window running
  from the restore call to 100 ms after it returns, so that the transition rows
  written behind it count too; baseline: the same loop idle;
* a MASSIVE backfill by the real scheduler against the Last.fm fake (served from
  another process, as the real Last.fm would be), one page of 200 every 0.1 s:
  twenty times the default pace; baseline: the same loop idle;
* the log streaming 1,000 lines/s into the real dashboard under `App.run_test`;
  baseline: the same dashboard idle.
"""

from __future__ import annotations

import asyncio
import time

from aime_tui.config import LastfmConfig, SchedulerConfig, load_config
from aime_tui.core.supervisor import Supervisor
from aime_tui.engine import Engine
from aime_tui.services.scheduler import CollectionScheduler
from aime_tui.store.database import Store

from .common import (
    Figure,
    LagProbe,
    Stats,
    SyntheticService,
    ms,
    scratch_dir,
    synthetic_like_real,
)
from .context import Context
from .lastfm_server import API_KEY, USER, lastfm_server

RESTORE_COUNT = 200
BACKFILL_EVERY = 0.1
#: Seconds a backfill may take to store its first page before the run is declared broken.
FIRST_PAGE_WITHIN = 30.0
LINES_PER_SECOND = 1000


async def idle(seconds: float) -> list[float]:
    probe = LagProbe().start()
    await asyncio.sleep(seconds)
    return await probe.stop()


async def while_restoring(directory, restores: int) -> list[float]:
    probe = LagProbe().start()
    probe.active = False
    for run in range(restores):
        names = [f"svc{index:03d}" for index in range(RESTORE_COUNT)]
        store = await Store.open(directory / f"lag-restore-{run}.db")
        await store.ensure_defaults({name: (True, None) for name in names})
        supervisor = Supervisor(store, [SyntheticService(name) for name in names])
        await supervisor.load()
        await asyncio.sleep(0.02)
        probe.active = True
        summary = await supervisor.restore("launch")
        await asyncio.sleep(0.1)
        probe.active = False
        if len(summary.succeeded) != RESTORE_COUNT:
            raise AssertionError(summary.line())
        await supervisor.close()
        await store.close()
    return await probe.stop()


async def while_backfilling(directory, pages: int, seconds: float) -> tuple[list[float], int, float]:
    with lastfm_server(pages * 200) as url:
        store = await Store.open(directory / "lag-backfill.db")
        scheduler = CollectionScheduler(
            SchedulerConfig(mode="MASSIVE", backfill_interval=BACKFILL_EVERY),
            LastfmConfig(api_url=url, api_key=API_KEY, user=USER),
            store, backup_dir=directory / "backups",
        )
        probe = LagProbe().start()
        began = time.perf_counter()
        await scheduler.start()
        try:
            # At least one page, however loaded the machine (a quick run's window is short).
            while not scheduler.backfill_done and (
                time.perf_counter() - began < seconds
                or (scheduler.pages_done == 0 and time.perf_counter() - began < FIRST_PAGE_WITHIN)
            ):
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
            samples = await probe.stop()
            done = scheduler.pages_done
        finally:
            await scheduler.stop()
            await store.close()
    if done == 0:
        raise AssertionError(f"the backfill stored no page: {scheduler.status()}")
    return samples, done, elapsed


async def in_dashboard(directory, seconds: float) -> tuple[list[float], list[float], int]:
    from aime_tui.ui.app import AimeApp

    config = load_config(config_path=directory / "none.toml", data_dir=directory / "tui", env={})
    app = AimeApp(Engine(config, services=lambda config, store: synthetic_like_real()))
    async with app.run_test(size=(120, 35)) as pilot:
        deadline = time.monotonic() + 10
        while app.last_summary is None:
            if time.monotonic() > deadline:
                raise AssertionError("the dashboard never showed its restoration summary")
            await pilot.pause(0.02)
        await pilot.pause(0.3)
        baseline = await idle(seconds)
        supervisor = app.supervisor
        probe = LagProbe().start()
        written = 0
        began = time.perf_counter()
        while (now := time.perf_counter()) - began < seconds:
            due = int((now - began) * LINES_PER_SECOND)
            while written < due:
                written += 1
                # The supervisor's own path for a log line: logging, then its listeners.
                supervisor._log(f"benchmark line {written}: the quick brown fox jumps over the lazy dog")
            await asyncio.sleep(0.01)
        samples = await probe.stop()
        await pilot.pause(0.3)
        shown = len(app.log_view.lines)
    if shown < min(written, 1000):
        raise AssertionError(f"wrote {written} lines, the log shows {shown}")
    return samples, baseline, written


async def _measure(ctx: Context) -> list[Figure]:
    seconds = ctx.pick(10.0, 1.0)
    figures = []
    with scratch_dir(ctx.tmp_root, "lag") as directory:
        quiet = Stats.of([ms(v) for v in await idle(seconds)])
        restoring = Stats.of([ms(v) for v in await while_restoring(directory, ctx.runs(40, 4))])
        figures.append(Figure(
            "lag", f"loop lag restoring {RESTORE_COUNT} services", "ms", restoring, quiet, "idle loop",
            target="p99 ≤ 20 ms", judged_on="p99", met=restoring.p99 <= 20.0,
            notes=f"10 ms ticker; max {restoring.max:.1f} ms",
        ))
        samples, pages, elapsed = await while_backfilling(directory, ctx.pick(200, 10), seconds)
        backfill = Stats.of([ms(v) for v in samples])
        figures.append(Figure(
            "lag", "loop lag during a MASSIVE backfill", "ms", backfill, quiet, "idle loop",
            target="p99 ≤ 20 ms", judged_on="p99", met=backfill.p99 <= 20.0,
            notes=f"{pages} pages of 200 in {elapsed:.1f} s; max {backfill.max:.1f} ms",
        ))
        samples, baseline, written = await in_dashboard(directory, seconds)
        streaming = Stats.of([ms(v) for v in samples])
        figures.append(Figure(
            "lag", "loop lag, log streaming 1,000 lines/s (TUI)", "ms", streaming,
            Stats.of([ms(v) for v in baseline]), "dashboard idle",
            target="p99 ≤ 20 ms", judged_on="p99", met=streaming.p99 <= 20.0,
            notes=f"{written:,} lines in {seconds:g} s; max {streaming.max:.1f} ms",
        ))
    return figures


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_measure(ctx))
