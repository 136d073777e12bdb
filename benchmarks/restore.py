"""Restoration of 3, 50 and 200 synthetic services, and isolation from one that hangs.

Real Store on a scratch file, real Supervisor, services that take 10 ms to start. The
baseline is the same starts gathered bare, without the supervisor: what restoring would
cost if supervision were free. Isolation compares the other services' ready times in a
restoration where one service hangs past its timeout with one where none does.
"""

from __future__ import annotations

import asyncio
import time

from aime_tui.core.supervisor import Supervisor
from aime_tui.store.database import Store

from .common import Figure, Stats, SyntheticService, ms, scratch_dir
from .context import Context

START_DELAY = 0.010
SIZES = (3, 50, 200)
ISOLATION_OTHERS = 10


async def _open_store(path, names) -> Store:
    store = await Store.open(path)
    await store.ensure_defaults({name: (True, None) for name in names})
    return store


async def restore_once(directory, count: int, *, hang: str | None = None,
                       timeout: float = 3.0) -> tuple[float, list[SyntheticService], object]:
    """One restoration on a fresh database; returns (seconds, services, summary)."""
    names = [f"svc{index:03d}" for index in range(count)]
    store = await _open_store(directory / f"restore-{count}-{time.monotonic_ns()}.db", names)
    services = [SyntheticService(name, start_delay=START_DELAY, hang=(name == hang)) for name in names]
    supervisor = Supervisor(store, services, restore_timeout=timeout)
    await supervisor.load()
    try:
        began = time.perf_counter()
        summary = await supervisor.restore("launch")
        elapsed = time.perf_counter() - began
        for service in services:
            if service.ready_at is not None:
                service.ready_at -= began
    finally:
        await supervisor.close()
        await store.close()
    return elapsed, services, summary


async def bare_starts(count: int) -> float:
    services = [SyntheticService(f"bare{index}", start_delay=START_DELAY) for index in range(count)]
    began = time.perf_counter()
    await asyncio.gather(*(service.start() for service in services))
    return time.perf_counter() - began


async def _restoration(ctx: Context) -> list[Figure]:
    figures = []
    runs = ctx.runs(15, 2)
    with scratch_dir(ctx.tmp_root, "restore") as directory:
        await restore_once(directory, 3)  # warm-up: imports, first database
        for count in SIZES:
            elapsed, bare = [], []
            for _ in range(runs):
                bare.append(await bare_starts(count))
                seconds, services, summary = await restore_once(directory, count)
                if len(summary.succeeded) != count:
                    raise AssertionError(f"restoring {count}: {summary.line()}")
                elapsed.append(seconds)
            value, baseline = Stats.of(elapsed), Stats.of(bare)
            per_service = Stats.of([(seconds - baseline.median) / count for seconds in elapsed])
            figure = Figure(
                "restore", f"restore {count} services (10 ms start each)", "s", value, baseline,
                "the same starts gathered bare",
                extra={"per_service_ms": ms(per_service.median), "count": count},
                notes=f"{ms(per_service.median):.2f} ms per service over the bare starts",
            )
            if count == 200:
                figure.target, figure.judged_on = "≤ 1.0 s", "p95"
                figure.met = value.p95 <= 1.0
            figures.append(figure)
            figures.append(Figure(
                "restore", f"restore cost per service ({count})", "ms", per_service.scaled(1000.0),
                notes="(restore − bare starts) / services",
            ))
    return figures


async def _isolation(ctx: Context) -> list[Figure]:
    runs = ctx.runs(8, 1)
    timeout = ctx.pick(3.0, 0.3)
    count = ISOLATION_OTHERS + 1
    hung = f"svc{count - 1:03d}"
    with_hang, without_hang, summary_at = [], [], []
    with scratch_dir(ctx.tmp_root, "isolation") as directory:
        await restore_once(directory, 3)
        for _ in range(runs):
            _, services, summary = await restore_once(directory, count, timeout=timeout)
            without_hang += [s.ready_at for s in services if s.name != hung]
            elapsed, services, summary = await restore_once(directory, count, hang=hung, timeout=timeout)
            if hung not in summary.failed or len(summary.succeeded) != count - 1:
                raise AssertionError(f"isolation run: {summary.line()}")
            with_hang += [s.ready_at for s in services if s.name != hung]
            summary_at.append(elapsed)
    value, baseline = Stats.of([ms(v) for v in with_hang]), Stats.of([ms(v) for v in without_hang])
    delta_median = value.median - baseline.median
    delta_p95 = value.p95 - baseline.p95
    return [
        Figure(
            "isolation", f"others' ready time, one of {count} hung", "ms", value, baseline,
            "the same restoration, nothing hung",
            target="≤ +10 ms", judged_on="median & p95 delta",
            met=delta_median <= 10.0 and delta_p95 <= 10.0,
            notes=f"delta median {delta_median:+.1f} ms, p95 {delta_p95:+.1f} ms; "
                  f"timeout {timeout:g} s",
            extra={"delta_median_ms": delta_median, "delta_p95_ms": delta_p95, "timeout": timeout},
        ),
        Figure(
            "isolation", "summary line with one hung", "s", Stats.of(summary_at),
            notes=f"the hung service's timeout is {timeout:g} s; the summary waits for it",
        ),
    ]


def run(ctx: Context) -> list[Figure]:
    return asyncio.run(_restoration(ctx)) + asyncio.run(_isolation(ctx))
