"""Every benchmark runs in quick mode and reports sane numbers (targets are not judged here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = ("launch", "restore", "wake", "toggle", "ingest", "backfill_pace", "catchup", "roon", "history_data", "lag", "probes", "life", "memory", "kill9")


@pytest.fixture
def children():
    """The benchmark processes. When the test fails on one, the others are left to finish
    (each stops what it started, such as the memory benchmark's dashboard, which a kill
    would leave running), and killed only if they do not."""
    started: dict[str, subprocess.Popen] = {}
    yield started
    for child in started.values():
        try:
            child.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()


def run_quick(names, tmp_path, runs):
    """Each benchmark in a process of its own, all at once: most of them wait on timers
    and sockets, so side by side they take as long as the longest, not the sum."""
    for name in names:
        (tmp_path / name).mkdir()
        runs[name] = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--quick", "--silent", "--only", name,
             "--tmp-dir", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    merged = {"errors": {}, "figures": []}
    for name, run in runs.items():
        stdout, stderr = run.communicate(timeout=180)
        results = json.loads((tmp_path / f"{name}.json").read_text())
        assert results["errors"] == {}, stderr
        assert run.returncode == 0, stderr
        assert "targets met" in stdout
        merged["figures"] += results["figures"]
    return merged


@pytest.mark.xdist_group("cpu")  # busy on a core: one such test at a time
def test_every_benchmark_runs_in_quick_mode(tmp_path, children):
    results = run_quick(BENCHMARKS, tmp_path, children)

    figures = results["figures"]
    assert {figure["benchmark"] for figure in figures} >= set(BENCHMARKS) | {"isolation"}
    for figure in figures:
        value = figure["value"]
        assert value["n"] >= 1, figure["name"]
        for key in ("median", "p95", "p99"):
            assert math.isfinite(value[key]), figure["name"]
        # Zero is a true reading for a kill -9 count, a per-service cost or an idle CPU.
        if figure["benchmark"] not in ("kill9",) and "cost per service" not in figure["name"] and figure["unit"] != "% core":
            assert value["median"] > 0, figure["name"]
        if figure["baseline"] is not None:
            assert figure["baseline"]["median"] > 0, figure["name"]

    by_name = {figure["name"]: figure for figure in figures}
    alive = next(f for f in figures if f["name"].startswith("alive ") and f["benchmark"] == "life")
    assert alive["met"], "a dashboard that lost its terminal runs on"
    ingest = next(f for f in figures if f["name"].startswith("backfill ingest"))
    assert ingest["value"]["median"] > ingest["baseline"]["median"], "batched beats one commit per row"
    pace = next(f for f in figures if f["benchmark"] == "backfill_pace")
    assert pace["value"]["median"] > pace["baseline"]["median"], "the bucket beats a fixed 2 s per page"
    catchup = next(f for f in figures if f["name"].startswith("tracker catch-up"))
    assert "succeeded" in catchup["notes"], catchup["notes"]
    soak = next(f for f in figures if f["name"].startswith("kill -9 soak"))
    assert soak["value"]["max"] == 0 and soak["extra"]["corrupt"] == 0, soak["extra"]["failures"]
    assert soak["extra"]["acknowledged"] > soak["extra"]["kills"]
    for name, figure in by_name.items():
        if figure["unit"] == "MB":
            # A process's RSS is more than 5 MB; a growth (the export's) may be less.
            assert (0 if "growth" in name else 5) < figure["value"]["max"] < 2000, name
        if figure["unit"] == "ms" and name.startswith("loop lag"):
            assert figure["value"]["median"] < 1000, name
