"""Notifications and HTTP probes: what they cost when off, and /health under load.

* Launch with [notify] and [http] off: a fresh interpreter runs the launch path (the
  engine opens, restores and closes, as `--headless` does) and reports the wall time and
  which of Apprise, aiohttp, prometheus-client and our notify/probes modules it
  imported; the target is none. Baseline: the same launch with both configured, which
  shows what the lazy imports keep out of a launch without them.
* /health under 200 concurrent requests on loopback: a real engine (real store and
  supervisor, services like the real ones) serves it; the load comes from another
  process over 200 keep-alive connections, all sending at once, round after round.
  Latency is per request, send → whole answer. Target p99 ≤ 20 ms. Baseline: the same
  load on a bare aiohttp server in a thread answering a constant body, the floor of the
  library on this machine at this moment (the machine is shared: both move together).
* Loop lag on the serving loop during that load, against the same loop idle: the
  target is a p99 within 5 ms of idle (a 10 ms ticker's noise on a shared machine).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from aime_tui.config import HttpConfig, NotifyConfig, load_config
from aime_tui.engine import Engine

from .common import REPO, Figure, LagProbe, Stats, free_port, ms, scratch_dir, synthetic_like_real
from .context import Context

CONNECTIONS = 200
FEATURE_MODULES = ("apprise", "aiohttp", "prometheus_client", "aime_tui.notify", "aime_tui.control.probes")
LAUNCH = """
import asyncio, json, sys, time
began = time.perf_counter()
from pathlib import Path
from aime_tui.config import load_config
from aime_tui.engine import Engine
async def main():
    config = load_config(config_path=Path(sys.argv[1]), data_dir=Path(sys.argv[2]), env={})
    engine = Engine(config, services=lambda config, store: [])
    supervisor = await engine.open()
    await supervisor.restore("launch")
    await engine.close()
asyncio.run(main())
elapsed = time.perf_counter() - began
features = %r
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in features))
print(json.dumps({"seconds": elapsed, "loaded": loaded}))
""" % (FEATURE_MODULES,)


def launch(config_path, data_dir) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(config_path), str(data_dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def launch_figure(ctx: Context, directory) -> Figure:
    off = directory / "off.toml"
    off.write_text("", encoding="utf-8")
    on = directory / "on.toml"
    # Nothing listens on the discard port: the notifier is built, never reaches a server.
    on.write_text(f'[notify]\nurls = ["json://127.0.0.1:9/none"]\n[http]\nlisten = "127.0.0.1:{free_port()}"\n',
                  encoding="utf-8")
    launch(off, directory / "warm")  # byte-compiles, creates nothing that a run then reuses
    seconds_off, seconds_on, loaded = [], [], set()
    for run in range(ctx.runs(10, 2)):
        result = launch(off, directory / f"off-{run}")
        seconds_off.append(result["seconds"])
        loaded.update(result["loaded"])
        seconds_on.append(launch(on, directory / f"on-{run}")["seconds"])
    value, baseline = Stats.of([ms(s) for s in seconds_off]), Stats.of([ms(s) for s in seconds_on])
    return Figure(
        "probes", "launch with notify & http off (engine open → restored → closed)", "ms", value, baseline,
        "with both on", target="imports none of them", met=not loaded,
        notes="imported: " + (", ".join(sorted(loaded)) or "none of " + ", ".join(FEATURE_MODULES)),
        extra={"loaded": sorted(loaded)},
    )


async def idle(seconds: float) -> list[float]:
    probe = LagProbe().start()
    await asyncio.sleep(seconds)
    return await probe.stop()


async def load(port: int, rounds: int) -> dict:
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.probes_client", "127.0.0.1", str(port), "/health",
        str(CONNECTIONS), str(rounds), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(client.communicate(), 120)
    if client.returncode != 0:
        raise AssertionError(f"the load client failed: {err.decode()[-500:]}")
    answer = json.loads(out)
    if answer["statuses"] != {"200": CONNECTIONS * rounds}:
        raise AssertionError(f"/health answered {answer['statuses']}")
    return answer


def bare_server(port: int) -> Callable[[], None]:
    """aiohttp answering a constant body on a loop in a thread of its own; returns its stop."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def constant(request):
        return web.Response(body=b'{"status": "healthy"}', content_type="application/json")

    def serve():
        app = web.Application()
        app.router.add_get("/health", constant)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)

    def stop():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return stop


async def health_under_load(ctx: Context, directory) -> list[Figure]:
    port = free_port()
    config = load_config(config_path=directory / "none.toml", data_dir=directory / "health", env={})
    config = config.with_overrides(http=HttpConfig("127.0.0.1", port), notify=NotifyConfig())
    engine = Engine(config, services=lambda config, store: synthetic_like_real())
    supervisor = await engine.open()
    try:
        await supervisor.restore("launch")
        deadline = time.monotonic() + 10
        while engine.probes is None:
            if time.monotonic() > deadline:
                raise AssertionError("the probe server did not start")
            await asyncio.sleep(0.02)
        seconds = ctx.pick(5.0, 1.0)
        quiet = await idle(seconds)
        rounds = ctx.runs(50, 5)
        bare_port = free_port()
        stop_bare = bare_server(bare_port)
        try:
            floor = await load(bare_port, rounds)
        finally:
            stop_bare()
        probe = LagProbe().start()
        answer = await load(port, rounds)
        loaded = await probe.stop()
    finally:
        await engine.close()
    latency = Stats.of([ms(s) for s in answer["latencies"]])
    bare = Stats.of([ms(s) for s in floor["latencies"]])
    lag, lag_idle = Stats.of([ms(s) for s in loaded]), Stats.of([ms(s) for s in quiet])
    return [
        Figure(
            "probes", f"/health latency, {CONNECTIONS} concurrent requests", "ms", latency, bare,
            "bare aiohttp", target="p99 ≤ 20 ms", judged_on="p99", met=latency.p99 <= 20.0,
            notes=f"{rounds} rounds over {CONNECTIONS} keep-alive connections from another process; max {latency.max:.1f} ms",
        ),
        Figure(
            "probes", f"loop lag serving {CONNECTIONS} concurrent /health", "ms", lag, lag_idle, "idle loop",
            target="p99 within 5 ms of idle", judged_on="p99", met=lag.p99 <= lag_idle.p99 + 5.0,
            notes=f"10 ms ticker on the serving loop; idle p99 {lag_idle.p99:.2f} ms; max {lag.max:.1f} ms",
        ),
    ]


def run(ctx: Context) -> list[Figure]:
    with scratch_dir(ctx.tmp_root, "probes") as directory:
        figures = [launch_figure(ctx, directory)]
        figures += asyncio.run(health_under_load(ctx, directory))
    return figures
