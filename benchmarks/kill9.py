"""kill -9 soak: repeated SIGKILL at random moments while toggling; nothing acknowledged lost.

The approach of the kill -9 test, at length: a child toggles services and modes through
the real supervisor and store, printing each change before asking for it and after it is
acknowledged; the parent kills it at a random moment, then checks the database with
another connection: integrity_check ok, and every service holding its last acknowledged
value (or the value of the one change in flight, which may or may not have committed).
Also reported: how long the next launch takes to open the database after a kill.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from .common import REPO, Figure, Stats, ms, scratch_dir
from .context import Context


def run_until_killed(data_dir: Path, seed: int, delay: float) -> tuple[list[str], float]:
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.toggle_child", str(data_dir), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in child.stdout:
            lines.append(line.strip())
            if line.startswith("ready"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(30):
        child.kill()
        child.wait()
        raise AssertionError(f"child never became ready: {child.stderr.read()}")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    child.stderr.close()
    opened = float(next(line for line in lines if line.startswith("ready")).split()[1])
    return lines, opened


def allowed_values(history: list[str], known: dict[str, object]) -> tuple[dict[str, set], int]:
    """Per key (`name` or `name.mode`): the values the database may hold; and the acks seen."""
    acked = dict(known)
    pending: dict[int, tuple[str, object]] = {}
    acks = 0
    for line in history:
        kind, *rest = line.split()
        if kind == "want":
            step, key, value = rest
            pending[int(step)] = (key, value if key.endswith(".mode") else int(value))
        elif kind == "ack":
            key, value = pending.pop(int(rest[0]))
            acked[key] = value
            acks += 1
    allowed = {key: {value} for key, value in acked.items()}
    for key, value in pending.values():
        allowed.setdefault(key, set()).add(value)
    return allowed, acks


def stored_values(db_path: Path) -> tuple[str, dict[str, object]]:
    with sqlite3.connect(db_path) as db:
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
    stored: dict[str, object] = {name: active for name, active, _ in rows}
    stored.update({f"{name}.mode": mode for name, _, mode in rows if mode})
    return integrity, stored


def run(ctx: Context) -> list[Figure]:
    kills = ctx.kills if ctx.kills is not None else ctx.pick(500, 10)
    rng = random.Random(20261123)
    lost, corrupt, acknowledged, in_flight = 0, 0, 0, 0
    opens: list[float] = []
    failures: list[str] = []
    known: dict[str, object] = {}
    began = time.perf_counter()
    with scratch_dir(ctx.tmp_root, "kill9") as directory:
        for kill in range(kills):
            history, opened = run_until_killed(directory, kill, rng.uniform(0.0, 0.25))
            opens.append(opened)
            allowed, acks = allowed_values(history, known)
            acknowledged += acks
            in_flight += bool(history and history[-1].startswith("want"))
            integrity, stored = stored_values(directory / "aime.db")
            if integrity != "ok":
                corrupt += 1
                failures.append(f"kill {kill}: integrity_check said {integrity}")
            for key, values in allowed.items():
                if stored.get(key) not in values:
                    lost += 1
                    failures.append(f"kill {kill}: {key} is {stored.get(key)!r}, acknowledged {values}")
            known = stored
            if kill and kill % 100 == 0:
                ctx.say(f"{kill} kills, {acknowledged} acknowledged changes, {lost} lost")
    elapsed = time.perf_counter() - began
    return [
        Figure(
            "kill9", f"kill -9 soak: acknowledged changes lost ({kills} kills)", "count",
            Stats.of([lost]), judged_on="total",
            target="0 lost, integrity ok" + ("" if ctx.quick else " over ≥ 500 kills"),
            met=lost == 0 and corrupt == 0 and (ctx.quick or kills >= 500),
            notes=f"{acknowledged:,} acknowledged changes; {in_flight} kills landed mid-change; "
                  f"{corrupt} integrity failures; {elapsed:.0f} s",
            extra={"kills": kills, "acknowledged": acknowledged, "in_flight": in_flight,
                   "corrupt": corrupt, "failures": failures[:20]},
        ),
        Figure("kill9", "relaunch after kill -9: open, check, load", "ms",
               Stats.of([ms(v) for v in opens]), notes="Store.open (quick_check, WAL recovery) + load"),
    ]
