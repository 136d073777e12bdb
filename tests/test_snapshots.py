"""SVG snapshots of the dashboard with frozen clocks (wall, monotonic and the title clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scripted import scripted_engine

from aime_tui.config import load_config
from aime_tui.core.faults import NeedsAttention
from aime_tui.ui.app import AimeApp

SIZE = (110, 30)
FROZEN = 1_795_461_857.0  # 2026-11-23 19:24:17 UTC


def frozen_app(tmp_path, monkeypatch) -> AimeApp:
    # A relative data dir keeps the temporary path out of the "data in …" log line.
    monkeypatch.chdir(tmp_path)
    config = load_config(config_path=Path("config.toml"), data_dir=Path("data"), env={})
    engine, _ = scripted_engine(
        config,
        roon_tracker={"failures": (NeedsAttention("approve aime-tui in Roon → Settings → Extensions"),)},
        engine={"clock": lambda: 100.0, "wall": lambda: FROZEN},
    )
    return AimeApp(engine, now=lambda: FROZEN)


async def restored(pilot) -> None:
    async def poll():
        while pilot.app.last_summary is None:
            await pilot.pause(0.02)

    await asyncio.wait_for(poll(), 5)
    await pilot.pause(0.3)


def test_dashboard_after_restoration(snap_compare, tmp_path, monkeypatch):
    assert snap_compare(frozen_app(tmp_path, monkeypatch), terminal_size=SIZE, run_before=restored)


def test_dashboard_after_stop_and_mode_change(snap_compare, tmp_path, monkeypatch):
    async def stop_tracker_and_switch_mode(pilot):
        await restored(pilot)
        await pilot.press("x", "down", "down", "m")
        await pilot.pause(0.3)

    app = frozen_app(tmp_path, monkeypatch)
    assert snap_compare(app, terminal_size=SIZE, run_before=stop_tracker_and_switch_mode)
