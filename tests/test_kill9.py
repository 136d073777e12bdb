"""kill -9 at random moments while toggling: no acknowledged change is ever lost."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

CHILD = Path(__file__).parent / "toggle_child.py"
KILLS = 50


def run_until_killed(data_dir: Path, seed: int, delay: float) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in child.stdout:
            lines.append(line.strip())
            if line.startswith("ready"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(20):
        child.kill()
        raise AssertionError(f"child never became ready: {child.stderr.read()}")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    child.stderr.close()
    return lines


def expected_states(history: list[str], known: dict[str, object]) -> dict[str, set[object]]:
    """Per key (a service's wanted flag, or `scheduler.mode`), what the database may hold:
    the last acknowledged value, plus the value of a change asked for but not yet
    acknowledged (it may have committed)."""
    acked = dict(known)
    pending: dict[int, tuple[str, object]] = {}
    for line in history:
        kind, *rest = line.split()
        if kind == "want":
            step, name, value = rest
            pending[int(step)] = (name, value if name.endswith(".mode") else int(value))
        elif kind == "ack":
            name, value = pending.pop(int(rest[0]))
            acked[name] = value
    allowed = {name: {value} for name, value in acked.items()}
    for name, value in pending.values():
        allowed.setdefault(name, set()).add(value)
    return allowed


def test_no_acknowledged_toggle_is_lost_across_repeated_kill_9(tmp_path):
    rng = random.Random(20261123)
    data_dir = tmp_path / "data"
    known: dict[str, object] = {}
    acknowledged = mode_changes = 0
    for kill in range(KILLS):
        history = run_until_killed(data_dir, seed=kill, delay=rng.uniform(0.0, 0.25))
        acknowledged += sum(line.startswith("ack") for line in history)
        mode_changes += sum(".mode " in line for line in history)
        allowed = expected_states(history, known)
        with sqlite3.connect(data_dir / "aime.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
        stored = {name: active for name, active, _ in rows}
        stored.update({f"{name}.mode": mode for name, _, mode in rows if mode})
        for name, values in allowed.items():
            assert stored[name] in values, f"kill {kill}: {name} is {stored[name]}, acknowledged {values}"
        known = stored
    assert acknowledged > KILLS, "the kills landed while toggles were being acknowledged"
    assert mode_changes > 10, "mode changes were part of the run"
