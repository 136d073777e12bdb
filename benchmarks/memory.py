"""Memory: resident set size after restoring, after 100,000 plays stored, and over a demo soak.

* the installed `aime-tui --demo` in a pseudo-terminal: RSS once the summary is on
  screen, then sampled through N minutes of demo (the scheduler switched to MASSIVE with
  `m` so the backfill runs too); "no growth" means the least-squares trend over the
  last half of the samples adds at most 1 MB over that half;
* a headless demo engine in a child process: RSS after restoring and after 100,000
  plays were stored through the store;
* baseline: a bare interpreter that has imported textual, apscheduler, aiosqlite, httpx.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .common import REPO, Figure, Stats, dashboard_host, rss_mb, scratch_dir
from .context import Context
from .launch import SUMMARY
from .terminal import DemoTerminal

LIMIT_MB = 100.0
GROWTH_TOLERANCE_MB = 1.0
BASELINE = (
    "import textual, apscheduler, aiosqlite, httpx\n"
    "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])"
)


def baseline_mb() -> float:
    out = subprocess.run([sys.executable, "-c", BASELINE], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) * 1024 / 1e6


def trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (MB per second) of (seconds, MB) points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0


def soak(ctx: Context, directory) -> tuple[float, list[tuple[float, float]]]:
    minutes = ctx.soak_minutes if ctx.soak_minutes is not None else ctx.pick(10.0, 0.05)
    every = ctx.pick(5.0, 0.5) if minutes >= 1 else 0.5
    with DemoTerminal(directory / "demo", directory / "none.toml") as terminal:
        terminal.wait_for(SUMMARY)
        time.sleep(0.5)
        terminal.pump(0)
        # `aime-tui` forks at launch: the child hosts the dashboard and the engine, the
        # parent only waits for it. The host is what grows, so the host is measured.
        pid = dashboard_host(terminal.process.pid)
        restored = rss_mb(pid)
        terminal.keys(b"m")  # MAINTENANCE → MASSIVE: the backfill runs during the soak
        began = time.perf_counter()
        samples: list[tuple[float, float]] = []
        next_sample = began
        end = began + minutes * 60
        while (now := time.perf_counter()) < end:
            if now >= next_sample:
                samples.append((now - began, rss_mb(pid)))
                next_sample += every
            if not terminal.pump(min(0.2, max(0.0, next_sample - now))):
                raise AssertionError("the demo exited during the soak")
        samples.append((time.perf_counter() - began, rss_mb(pid)))
        ctx.say(f"soak: {len(samples)} samples over {minutes:g} min")
        if terminal.quit() is None:
            raise AssertionError("the demo did not quit within 10 s of q after the soak")
    return restored, samples


def run(ctx: Context) -> list[Figure]:
    plays = ctx.pick(100_000, 10_000)
    base = Stats.of([baseline_mb() for _ in range(3)])
    with scratch_dir(ctx.tmp_root, "memory") as directory:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_child", str(directory / "headless"), str(plays)],
            check=True, capture_output=True, text=True, cwd=REPO, timeout=300,
        )
        headless = json.loads(child.stdout.strip().splitlines()[-1])
        if headless["stored"] != plays:
            raise AssertionError(f"stored {headless['stored']} plays of {plays}")
        restored, samples = soak(ctx, directory)
    duration = samples[-1][0]
    last_half = [(t, m) for t, m in samples if t >= duration / 2]
    growth = trend(last_half) * (duration / 2)
    peak = max(m for _, m in samples)
    soak_stats = Stats.of([m for _, m in samples])
    return [
        Figure("memory", "RSS, demo after restoring (TUI)", "MB", Stats.of([restored]), base,
               "bare imports", target=f"≤ {LIMIT_MB:g} MB", met=restored <= LIMIT_MB),
        Figure("memory", "RSS, headless demo engine after restoring", "MB", Stats.of([headless["restored"]]),
               base, "bare imports", target=f"≤ {LIMIT_MB:g} MB", met=headless["restored"] <= LIMIT_MB),
        Figure("memory", f"RSS after {plays:,} plays stored", "MB", Stats.of([headless["after_plays"]]),
               base, "bare imports", target=f"≤ {LIMIT_MB:g} MB", met=headless["after_plays"] <= LIMIT_MB,
               notes=f"{headless['after_plays'] - headless['restored']:+.1f} MB over restoring"),
        Figure("memory", f"RSS during {duration / 60:.1f} min of demo", "MB", soak_stats, base, "bare imports",
               target=f"≤ {LIMIT_MB:g} MB, last-half growth ≤ {GROWTH_TOLERANCE_MB:g} MB",
               judged_on="max & trend", met=peak <= LIMIT_MB and growth <= GROWTH_TOLERANCE_MB,
               notes=f"peak {peak:.1f} MB; last-half trend {growth:+.2f} MB; "
                     f"start {samples[0][1]:.1f} → end {samples[-1][1]:.1f} MB",
               extra={"samples": samples, "last_half_growth_mb": growth}),
    ]
