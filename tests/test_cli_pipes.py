"""A subcommand whose reader goes away (`aime-tui status | head -0`) stops quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_ends_a_subcommand_without_a_traceback(tmp_path):
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "aime-tui"), "status", "--data-dir", str(tmp_path / "data"),
         "--config", str(tmp_path / "config.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "AIME_ROON_DISCOVERY": "off"},
    )
    # Closed before the command has imported anything, so its first write meets a closed pipe.
    process.stdout.close()
    _, stderr = process.communicate(timeout=30)
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr, stderr.decode()
    assert stderr == b""
    assert process.returncode == 1
