"""Health: the verdict from service views, the tally of errors, and the exit codes of `aime-tui health`."""

from __future__ import annotations

import json
import logging

import pytest
from instances import EXECUTABLE, Headless

from aime_tui.core.model import RunState, ServiceView
from aime_tui.reports.health import DEGRADED, HEALTHY, UNHEALTHY, ErrorTally, assess

REACHABLE = {"reachable": True, "checked_at": 0.0, "error": None}


def view(name: str, state: RunState, wanted: bool = True, reason: str | None = None) -> ServiceView:
    return ServiceView(name, state, wanted, None, reason, None, 0, {})


def verdict(*views: ServiceView, database=REACHABLE) -> dict:
    return assess(views, database=database, uptime=1.0, errors={}, summary=None, now=0.0)


def test_the_verdict_follows_the_wanted_services():
    running, backoff = RunState.RUNNING, RunState.BACKOFF
    assert verdict(view("a", running), view("b", running))["status"] == HEALTHY
    # A service nobody wants is not a problem, stopped or not.
    assert verdict(view("a", running), view("b", RunState.STOPPED, wanted=False))["status"] == HEALTHY
    assert verdict(view("a", RunState.STOPPED, wanted=False))["status"] == HEALTHY
    degraded = verdict(view("a", running), view("b", backoff, reason="connection refused"))
    assert degraded["status"] == DEGRADED
    assert degraded["problems"] == ["b is wanted but backoff: connection refused"]
    # Still starting is not up yet.
    assert verdict(view("a", running), view("b", RunState.STARTING))["status"] == DEGRADED
    assert verdict(view("a", RunState.NEEDS_ATTENTION), view("b", backoff))["status"] == UNHEALTHY
    lost = verdict(view("a", running), database={"reachable": False, "checked_at": 0.0, "error": "disk I/O error"})
    assert lost["status"] == UNHEALTHY
    assert lost["problems"] == ["database unreachable: disk I/O error"]


def test_the_tally_counts_the_last_hour_and_the_total():
    clock = [0.0]
    tally = ErrorTally(clock=lambda: clock[0])
    for level in (logging.ERROR, logging.WARNING, logging.INFO, logging.ERROR):
        tally.note(level)
    clock[0] = 3000.0
    tally.note(logging.ERROR)
    clock[0] = 4000.0  # the first three are now over an hour old
    assert tally.counts() == {
        "errors_total": 3, "errors_last_hour": 1, "warnings_total": 1, "warnings_last_hour": 0,
    }


needs_executable = pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")


@needs_executable
def test_no_instance_is_unhealthy(tmp_path):
    result = Headless(tmp_path).cli("health")
    assert result.returncode == 4
    assert result.stdout.splitlines() == ["unhealthy", f"  problem: no instance running on {tmp_path / 'data'}"]


@needs_executable
def test_all_wanted_running_is_healthy(tmp_path, cleanup):
    headless = Headless(tmp_path).start("Restored 3 succeeded")
    cleanup.callback(headless.stop)
    result = headless.cli("health", "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["status"] == "healthy" and report["database"]["reachable"] is True
    assert {name: s["state"] for name, s in report["services"].items()} == dict.fromkeys(
        ("tracker", "roon_tracker", "scheduler"), "running"
    )
    assert report["errors"]["errors_last_hour"] == 0


@needs_executable
def test_some_wanted_not_running_is_degraded_and_none_is_unhealthy(tmp_path, cleanup):
    # No config: the trackers are not set up (not failing) and only the scheduler runs.
    headless = Headless(tmp_path, demo=False, env={"AIME_LASTFM_API_KEY": "secret-key-1234567890"}).start("Restored 1 succeeded")
    cleanup.callback(headless.stop)
    result = headless.cli("health")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("healthy · up ")
    assert "last hour: 0 errors, 0 warnings" in lines[0]
    assert "  not set up: tracker: set lastfm.user in" in "\n".join(lines)
    assert "  last restoration: Restored 1 succeeded, 0 failed, 2 not set up in" in "\n".join(lines)
    assert "secret-key" not in result.stdout

    assert headless.cli("stop", "scheduler").returncode == 0
    result = headless.cli("health", "--json")
    assert result.returncode == 4
    report = json.loads(result.stdout)
    assert report["status"] == "unhealthy"
    assert set(report["not_set_up"]) == {"tracker", "roon_tracker"}
    assert report["problems"] == ["no wanted service is set up"]
