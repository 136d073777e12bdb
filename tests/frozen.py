"""A scripted engine whose clocks stand still, for snapshots that read the same every run."""

from __future__ import annotations

from pathlib import Path

from scripted import ScriptedService, scripted_engine

from aime_tui.config import Config, load_config
from aime_tui.engine import Engine

FROZEN = 1_795_461_857.0  # 2026-11-23 19:24:17 UTC
MONOTONIC = 100.0


def frozen_config() -> Config:
    # Relative paths (the caller chdirs into its temporary directory) keep that
    # directory out of the "data in …" log line.
    return load_config(config_path=Path("config.toml"), data_dir=Path("data"), env={})


def frozen_engine(config: Config, **behaviour) -> tuple[Engine, dict[str, ScriptedService]]:
    """Wall clock, monotonic clock and backoff jitter fixed: a backoff countdown stands
    still at 90 % of its longest wait."""
    return scripted_engine(
        config, engine={"clock": lambda: MONOTONIC, "wall": lambda: FROZEN, "rng": lambda: 0.9}, **behaviour
    )
