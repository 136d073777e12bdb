"""The HTTP probes, fetched with httpx from a real instance on loopback.

The demo's services start, fail (its Roon Core does not answer the first connection)
and recover by themselves; /ready, /health and /metrics follow along.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aime_tui.config import HttpConfig, load_config
from aime_tui.core.model import LogEvent, RunState
from aime_tui.engine import Engine
from benchmarks.common import free_port
from waits import wait_until


def metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
async def demo(config):
    port = free_port()
    # Jitter pinned: Roon's retry comes 2 s after its failure, time enough to see
    # the failure over HTTP before it recovers.
    engine = Engine(config.with_overrides(demo=True, demo_faults=True, http=HttpConfig("127.0.0.1", port)), rng=lambda: 0.4)
    supervisor = await engine.open()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        yield engine, supervisor, http
    await engine.close()


async def answers(http, path):
    try:
        return await http.get(path)
    except httpx.TransportError:
        return None


async def test_ready_health_and_metrics_follow_the_demo_through_a_failure_and_recovery(demo):
    engine, supervisor, http = demo
    response = await wait_until(lambda: answers(http, "/ready"), what="the probe server listening")
    assert response.status_code == 503 and response.json() == {"ready": False}, "not restored yet"

    summary = await supervisor.restore("launch")
    assert list(summary.failed) == ["roon_tracker"]
    ready = await http.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}

    health = await http.get("/health")
    assert health.status_code == 503 and health.headers["content-type"].startswith("application/json")
    report = health.json()
    assert report["status"] == "degraded"
    assert report["services"]["roon_tracker"]["state"] == "backoff"
    assert report["problems"][0].startswith("roon_tracker is wanted but backoff")

    page = await http.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = metrics(page.text)
    assert samples["aime_service_up", (("service", "tracker"),)] == 1
    assert samples["aime_service_up", (("service", "roon_tracker"),)] == 0
    assert samples["aime_service_state", (("service", "roon_tracker"), ("state", "backoff"))] == 1
    assert samples["aime_service_state", (("service", "roon_tracker"), ("state", "running"))] == 0
    assert samples["aime_service_wanted", (("service", "scheduler"),)] == 1
    assert samples["aime_ready", ()] == 1
    assert samples["aime_restore_failed_services", ()] == 1
    assert samples["aime_restore_duration_seconds", ()] == pytest.approx(summary.elapsed)
    assert samples["aime_database_size_bytes", ()] > 0

    # The demo's Roon Core answers the retry: healthy, with the plays collected meanwhile.
    await wait_until(lambda: supervisor.view("roon_tracker").state is RunState.RUNNING, timeout=10, what="Roon back")
    await wait_until(lambda: supervisor.view("tracker").status["last_check"], what="the tracker's first check")
    health = await wait_until(
        lambda: _healthy(http), timeout=3, what="/health to say healthy (its database check is a second fresh)"
    )
    assert health.json()["services"]["roon_tracker"]["state"] == "running"
    samples = metrics((await http.get("/metrics")).text)
    assert samples["aime_service_up", (("service", "roon_tracker"),)] == 1
    assert samples["aime_service_restarts_total", (("service", "roon_tracker"),)] == 1
    stored = await engine.store.count_plays("lastfm")
    assert stored > 0
    assert samples["aime_service_plays_stored", (("service", "tracker"),)] == stored
    assert samples["aime_service_plays_stored", (("service", "scheduler"),)] == stored, "the same source"
    assert samples["aime_service_plays_stored", (("service", "roon_tracker"),)] == await engine.store.count_plays("roon")
    assert 0 <= samples["aime_service_last_check_age_seconds", (("service", "tracker"),)] < 60


async def _healthy(http):
    response = await http.get("/health")
    return response if response.status_code == 200 else None


async def test_health_is_unhealthy_when_no_wanted_service_runs_and_unknown_paths_are_404(config, cleanup):
    from aime_tui.core.faults import NeedsAttention
    from scripted import scripted_engine

    port = free_port()
    failing = {"failures": (NeedsAttention("set lastfm.api_key"),)}
    engine, _ = scripted_engine(
        config.with_overrides(http=HttpConfig("127.0.0.1", port)), tracker=failing, roon_tracker=failing, scheduler=failing
    )
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        await wait_until(lambda: answers(http, "/ready"), what="the probe server listening")
        await supervisor.restore("launch")
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert (await http.get("/ready")).status_code == 200, "restored, however it went"
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/health")).status_code == 405


async def test_a_taken_port_is_one_notice_and_the_instance_runs_on(config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = Engine(config.with_overrides(http=HttpConfig("127.0.0.1", port)))
        notices = []
        engine.bus.subscribe(lambda event: isinstance(event, LogEvent) and notices.append(event.text))
        supervisor = await engine.open()
        try:
            await wait_until(lambda: notices and "http" in notices[-1], what="the notice")
            assert notices[-1].startswith(f"http 127.0.0.1:{port} unavailable: ")
            assert engine.probes is None
            await supervisor.restore("launch")  # the rest of the instance is unaffected
        finally:
            await engine.close()


def test_listen_is_loopback_unless_an_address_is_written(tmp_path):
    def listen(value):
        path = tmp_path / "c.toml"
        path.write_text(f'[http]\nlisten = "{value}"\n', encoding="utf-8")
        return load_config(config_path=path, data_dir=tmp_path, env={}).http

    assert not listen("").enabled
    assert listen("9180") == HttpConfig("127.0.0.1", 9180)
    assert listen(":9180") == HttpConfig("127.0.0.1", 9180)
    assert listen("0.0.0.0:9180") == HttpConfig("0.0.0.0", 9180)
    assert listen("[::1]:9180").address == "[::1]:9180"
    from aime_tui.config import ConfigError

    for bad in ("127.0.0.1:http", "127.0.0.1:70000", "127.0.0.1:0"):
        with pytest.raises(ConfigError, match=r"\[http\] listen: expected HOST:PORT"):
            listen(bad)


async def test_a_restoration_over_before_the_server_listens_still_makes_it_ready(config, cleanup):
    from scripted import scripted_engine

    port = free_port()
    engine, _ = scripted_engine(config.with_overrides(http=HttpConfig("127.0.0.1", port)))
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    await supervisor.restore("launch")  # at once: the server is still loading
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        ready = await wait_until(lambda: answers(http, "/ready"), what="the probe server listening")
        assert ready.status_code == 200


async def test_closing_while_the_server_still_loads_leaves_the_port_free(config):
    from scripted import scripted_engine

    port = free_port()
    engine, _ = scripted_engine(config.with_overrides(http=HttpConfig("127.0.0.1", port)))
    import threading

    await engine.open()
    await wait_until(lambda: [t for t in threading.enumerate() if t.name == "probes"], what="the server loading")
    await engine.close()  # the server is still loading (importing aiohttp takes a while)
    await wait_until(lambda: not [t for t in threading.enumerate() if t.name == "probes"], timeout=3,
                     what="the server's thread to end")
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # nobody listens there any more
        again.listen()
