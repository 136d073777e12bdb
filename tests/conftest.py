import os
import sys
import time
from pathlib import Path

import pytest

# Test helpers (scripted services) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
# The kill -9 test shares its child and its check with the benchmarks package at the
# repository root. Appended, not prepended: `aime_tui` still comes from the installed package.
sys.path.append(str(Path(__file__).resolve().parent.parent))

# Screens show local times: pin the zone so snapshots read the same on every machine.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture
def config(tmp_path):
    from aime_tui.config import load_config

    return load_config(config_path=tmp_path / "config.toml", data_dir=tmp_path / "data", env={})
