"""Helpers for tests of real aime-tui processes: loopback fakes in a thread of their own,
a config pointing at them, tmux terminals, a headless instance, and reading an
instance's state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from waits import wait_until_sync

from aime_tui.control.client import request
from aime_tui.demo.environment import DEMO_API_KEY, DEMO_USER
from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.demo.roon_fake import FakeRoonCore

EXECUTABLE = Path(sys.executable).parent / "aime-tui"


class Fakes:
    """A Last.fm and a Roon Core on loopback, served from a thread. The Roon Core plays
    2-second tracks back to back in one zone, so a play (half a track heard) is stored
    every second and a half."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fakes")
        self.lastfm = FakeLastfm(user=DEMO_USER, api_key=DEMO_API_KEY, plays=50, record_requests=False)
        self.roon = FakeRoonCore(zones=2, tick=0.25)
        self._jukebox: asyncio.Future | None = None

    def start(self) -> "Fakes":
        self.thread.start()
        self._run(self.lastfm.start())
        self._run(self.roon.start())
        self._jukebox = asyncio.run_coroutine_threadsafe(self._short_tracks(), self.loop)
        return self

    async def _short_tracks(self) -> None:
        for number in range(1, 100_000):
            self.roon.set_track("Living Room", "The Testers", f"Short Song {number}", "Loopback", 2)
            await asyncio.sleep(1.5)

    def stop(self) -> None:
        if self._jukebox is not None:
            self._jukebox.cancel()
        self._run(self.roon.stop())
        self._run(self.lastfm.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def config_text(self, *, catchup_interval: float = 900.0, restore_timeout: float = 3.0) -> str:
        return (
            f'[lastfm]\napi_url = "{self.lastfm.url}"\napi_key = "{DEMO_API_KEY}"\nuser = "{DEMO_USER}"\n'
            f'interval = 60\n[roon]\nhost = "127.0.0.1"\nport = {self.roon.port}\n'
            f"[scheduler]\ncatchup_interval = {catchup_interval}\n[restore]\ntimeout = {restore_timeout}\n"
        )


def instance_env(config_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AIME_CONFIG": str(config_path), "AIME_DEMO_FAULTS": "0", "TERM": "xterm-256color", **extra}


class Terminal:
    """One tmux server of its own (a unique socket), one session: a terminal to lose."""

    count = 0

    def __init__(self, tag: str) -> None:
        Terminal.count += 1
        self.socket = f"aime-life-{os.getpid()}-{tag}-{Terminal.count}"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def launch(self, argv: list[str], env: dict[str, str], *, then: str = "") -> None:
        assignments = [f"{key}={value}" for key, value in env.items() if key.startswith(("AIME_", "TERM"))]
        command = " ".join(["env", *assignments, str(EXECUTABLE), *argv]) + then
        self.tmux("new-session", "-d", "-s", "main", "-x", "120", "-y", "35", command)

    def screen(self) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-J", "-t", "main")
        except subprocess.CalledProcessError:
            return "(no session)"

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        return wait_until_sync(lambda: text in (screen := self.screen()) and screen, timeout, f"{text!r} on screen")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "main", *keys)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session"], capture_output=True).returncode == 0

    def kill(self) -> None:
        """Close the terminal, as an SSH drop does."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def holder(data_dir: Path) -> int:
    return int((data_dir / "aime.lock").read_text())


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def stop_within(pid: int, signum: int, seconds: float) -> float:
    """Send `signum`; seconds until the process was gone (fails past `seconds`)."""
    began = time.monotonic()
    os.kill(pid, signum)
    wait_until_sync(lambda: not running(pid), seconds, f"pid {pid} gone after signal {signum}")
    return time.monotonic() - began


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def roon_plays(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "aime.db") as db:
        return db.execute("SELECT COUNT(*) FROM plays WHERE source = 'roon'").fetchone()[0]


def log_text(data_dir: Path) -> str:
    try:
        return (data_dir / "aime.log").read_text()
    except FileNotFoundError:
        return ""


def cli(*argv: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXECUTABLE), *argv], env=env, capture_output=True, text=True, timeout=timeout)


class TmuxSession:
    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"aime-test-{os.getpid()}"
        self.name = "aime"
        self.tmp_path = tmp_path

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def launch(self, *argv: str, env: dict[str, str], size: tuple[int, int] = (120, 35)) -> None:
        assignments = [f"{key}={value}" for key, value in env.items()]
        command = " ".join(["env", *assignments, str(EXECUTABLE), *argv])
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]), command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        def shown() -> str | None:
            try:
                screen = self.screen()
            except subprocess.CalledProcessError:
                screen = "(session ended)"
            return screen if text in screen else None

        return wait_until_sync(shown, timeout, f"{text!r} on screen")

    def wait_gone_text(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still on screen after {timeout} s:\n{self.screen()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", self.name], capture_output=True
        ).returncode == 0

    def wait_gone(self, timeout: float = 10.0) -> None:
        wait_until_sync(lambda: not self.alive(), timeout, "aime-tui gone after q")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def row(screen: str, service: str) -> str:
    return next(line for line in screen.splitlines() if f" {service} " in line)


class Headless:
    """`aime-tui --headless` in a subprocess, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, *, demo: bool = True, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.env = {
            **os.environ,
            "AIME_DEMO_FAULTS": "0",
            "AIME_CONFIG": str(tmp_path / "no-config.toml"),
            **(env or {}),
        }
        self.argv = [str(EXECUTABLE), *(["--demo"] if demo else []), "--headless", "--data-dir", str(self.data_dir)]
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []

    def start(self, until: str = "Restored") -> "Headless":
        self.process = subprocess.Popen(self.argv, env=self.env, stderr=subprocess.PIPE, text=True)
        self.wait_for(until)
        return self

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never logged; saw:\n{''.join(self.log[-20:])}")

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXECUTABLE), *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def ask(self, message: dict, timeout: float = 5.0) -> dict:
        return request(self.data_dir / "aime.sock", message, timeout=timeout)

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        return self.process.returncode if self.process is not None else 0

    def desired(self) -> dict[str, tuple[int, str | None]]:
        with sqlite3.connect(self.data_dir / "aime.db") as db:
            rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
        return {name: (active, mode) for name, active, mode in rows}


@contextlib.contextmanager
def headless_demo(env: dict[str, str], *argv: str) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """`aime-tui --demo --headless ARGV...` with its log lines collected as they come; yields
    once its launch restoration succeeded, and stops it with SIGTERM afterwards."""
    process = subprocess.Popen([str(EXECUTABLE), "--demo", "--headless", *argv], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until_sync(lambda: any("Restored 3 succeeded" in line for line in lines), timeout=20, what="the restoration")
        yield process, lines
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        reader.join(5)
