"""kill -9 soak: repeated SIGKILL at random moments while toggling; nothing acknowledged lost.

A child (benchmarks/toggle_child.py) toggles services and modes through the real engine
and store, printing each change before asking for it and after it is acknowledged; the
parent kills it at a random moment, then checks the database with another connection:
integrity_check ok, and every service holding its last acknowledged value (or the value
of the one change in flight, which may or may not have committed). Also reported: how
long the next launch takes to open the database after a kill.

The kill -9 test (tests/test_kill9.py) runs the same child and the same check, fewer
times and at its own pacing: `run_until_killed` and `check_after_kill` are shared.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import REPO, Figure, Stats, ms, scratch_dir
from .context import Context

#: The longest pause between two of the child's changes, in seconds (the soak's pacing).
SOAK_PAUSE = 0.005
#: Seconds a child may take to open the database before the run is declared broken.
READY_TIMEOUT = 30.0


@dataclass
class Life:
    """What one child printed before it was killed."""

    lines: list[str]
    #: Seconds the child took to open, check and load the database (from its `ready` line).
    opened: float


def run_until_killed(data_dir: Path, seed: int, delay: float, pause: float = SOAK_PAUSE) -> Life:
    """Start a toggle child on `data_dir`, SIGKILL it `delay` seconds after it is ready."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.toggle_child", str(data_dir), str(seed), repr(pause)],
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
    if not ready.wait(READY_TIMEOUT):
        child.kill()
        child.wait()
        raise AssertionError(f"child never became ready: {child.stderr.read()}")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(30)
    if reader.is_alive():  # a history read short would pass for a lost change
        raise AssertionError("the child's output was not read in full within 30 s")
    child.stderr.close()
    opened = float(next(line for line in lines if line.startswith("ready")).split()[1])
    return Life(lines, opened)


def allowed_values(history: list[str], known: dict[str, object]) -> dict[str, set[object]]:
    """Per key (a service's wanted flag `name`, or `name.mode`), what the database may hold:
    the last acknowledged value (or, before any, what the child found at open: on a fresh
    directory the first-launch defaults), plus the value of a change asked for but not
    yet acknowledged (it may have committed)."""
    acked = dict(known)
    pending: dict[int, tuple[str, object]] = {}
    for line in history:
        kind, *rest = line.split()
        if kind == "had":  # what the database held when the child opened it
            key, value = rest
            acked[key] = value if key.endswith(".mode") else int(value)
        elif kind == "want":
            step, key, value = rest
            pending[int(step)] = (key, value if key.endswith(".mode") else int(value))
        elif kind == "ack":
            key, value = pending.pop(int(rest[0]))
            acked[key] = value
    allowed = {key: {value} for key, value in acked.items()}
    for key, value in pending.values():
        allowed.setdefault(key, set()).add(value)
    return allowed


def stored_values(db_path: Path) -> tuple[str, dict[str, object]]:
    """integrity_check's answer, and per key (as in `allowed_values`) what the database holds."""
    with sqlite3.connect(db_path) as db:
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
    db.close()
    stored: dict[str, object] = {name: active for name, active, _ in rows}
    stored.update({f"{name}.mode": mode for name, _, mode in rows if mode})
    return integrity, stored


def _evidence(db_path: Path, history: list[str], key: str) -> str:
    """What a lost change's report needs: the child's last lines about the key, the
    database's last transitions of the service, and what else is in the directory."""
    steps = {line.split()[1] for line in history if line.startswith("want") and line.split()[2] == key}
    lines = [line for line in history if line.split()[1] in steps][-4:]
    service = key.removesuffix(".mode")
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT from_state, to_state, reason, at FROM transitions WHERE service = ?"
            " AND (to_state IN ('wanted', 'unwanted') OR to_state LIKE 'mode %')"
            " ORDER BY id DESC LIMIT 4", (service,),
        ).fetchall()
    db.close()
    files = sorted(path.name for path in db_path.parent.iterdir())
    return f"child said {lines}; last transitions {rows[::-1]}; files {files}"


@dataclass
class Check:
    """One kill, checked: what the database holds and what went wrong."""

    #: What the database holds now: the `known` state to check the next kill against.
    stored: dict[str, object]
    acknowledged: int
    mode_changes: int
    #: The kill landed between a `want` and its `ack`.
    in_flight: bool
    corrupt: bool
    #: Acknowledged changes the database does not hold.
    lost: int
    failures: list[str] = field(default_factory=list)


def check_after_kill(db_path: Path, history: list[str], known: dict[str, object], kill: int = 0) -> Check:
    """After kill number `kill`: integrity ok and nothing acknowledged lost, given the
    child's `history` and what the database held before it started (`known`)."""
    allowed = allowed_values(history, known)
    integrity, stored = stored_values(db_path)
    failures = [] if integrity == "ok" else [f"kill {kill}: integrity_check said {integrity}"]
    lost = 0
    for key, values in allowed.items():
        if stored.get(key) not in values:
            lost += 1
            failures.append(
                f"kill {kill}: {key} is {stored.get(key)!r}, acknowledged {values}"
                f" ({_evidence(db_path, history, key)})"
            )
    return Check(
        stored=stored,
        acknowledged=sum(line.startswith("ack") for line in history),
        mode_changes=sum(line.startswith("want") and ".mode " in line for line in history),
        in_flight=bool(history and history[-1].startswith("want")),
        corrupt=integrity != "ok",
        lost=lost,
        failures=failures,
    )


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
            life = run_until_killed(directory, kill, rng.uniform(0.0, 0.25))
            opens.append(life.opened)
            check = check_after_kill(directory / "aime.db", life.lines, known, kill)
            acknowledged += check.acknowledged
            in_flight += check.in_flight
            corrupt += check.corrupt
            lost += check.lost
            failures += check.failures
            known = check.stored
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
               Stats.of([ms(v) for v in opens]),
               notes="Engine.open: Store.open (quick_check, WAL recovery), defaults, load, control socket"),
    ]
