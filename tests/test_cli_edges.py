"""The command line as a first-time user meets it: init (asking in a terminal, never for
the demo), each subcommand's own exit codes, retry against restart, and a headless log
free of APScheduler's bookkeeping."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest
from instances import EXECUTABLE, headless_demo
from waits import wait_until_sync

from aime_tui.demo.lastfm_fake import FakeLastfm

pytestmark = pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")

KEY = "0123456789abcdef0123456789abcdef"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIME_DEMO_FAULTS": "0",
        "AIME_CONFIG": str(tmp_path / "config.toml"),
        "AIME_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def run(tmp_path: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXECUTABLE), *argv], env=env_for(tmp_path, **extra), capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def lastfm():
    """The Last.fm fake on loopback, served from a thread: the CLI under test is a child process."""
    loop = asyncio.new_event_loop()
    fake = FakeLastfm(user="RJ", api_key=KEY, plays=1234)
    loop.run_until_complete(fake.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


class Terminal:
    """A child on a pseudo-terminal: what it printed so far, and keys typed to it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execve(argv[0], argv, env)
        self.output = ""

    def read(self) -> str:
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child has gone and closed its side
                break
            if not chunk:
                break
            self.output += chunk.decode(errors="replace")
        return self.output

    def expect(self, text: str, timeout: float = 15.0) -> None:
        wait_until_sync(lambda: text in self.read(), timeout=timeout, what=f"{text!r} in {self.output!r}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 15.0) -> int:
        def reaped():
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            return (status,) if pid else None

        (status,) = wait_until_sync(reaped, timeout=timeout, what="the child to exit")
        self.read()
        return os.waitstatus_to_exitcode(status)


# -- init ------------------------------------------------------------------------------------


def test_init_for_the_demo_writes_nothing(tmp_path):
    done = run(tmp_path, "init", "--demo")
    assert done.returncode == 2
    assert "the demo needs no config file" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "config.toml").exists()


def test_init_without_a_terminal_writes_the_template_privately(tmp_path):
    done = run(tmp_path, "init")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "config.toml"
    assert "set lastfm.user and lastfm.api_key" in done.stdout
    assert (path.stat().st_mode & 0o777) == 0o600
    assert tomllib.loads(path.read_text())["lastfm"]["api_key"] == ""
    again = run(tmp_path, "init")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_init_in_a_terminal_asks_hides_the_key_and_tries_it_once(tmp_path, lastfm):
    env = env_for(tmp_path, AIME_LASTFM_API_URL=lastfm.url)
    terminal = Terminal([str(EXECUTABLE), "init"], env)
    terminal.expect("Last.fm user: ")
    terminal.type("RJ\n")
    terminal.expect("Last.fm API key")
    asked = len(lastfm.requests)
    terminal.type(f"{KEY}\n")
    terminal.expect("Collect Roon plays? [Y/n]: ")
    terminal.type("n\n")
    assert terminal.exit_code() == 0, terminal.output
    assert KEY not in terminal.output, "the key is typed without echo"
    assert "Last.fm knows RJ: 1,234 plays so far" in terminal.output
    assert len(lastfm.requests) == asked + 1, "tried once"
    written = tomllib.loads((tmp_path / "config.toml").read_text())["lastfm"]
    assert written["user"] == "RJ" and written["api_key"] == KEY
    assert tomllib.loads((tmp_path / "config.toml").read_text())["roon"]["enabled"] is False
    assert ((tmp_path / "config.toml").stat().st_mode & 0o777) == 0o600


def test_init_in_a_terminal_says_when_the_account_does_not_work(tmp_path, lastfm):
    env = env_for(tmp_path, AIME_LASTFM_API_URL=lastfm.url)
    terminal = Terminal([str(EXECUTABLE), "init"], env)
    terminal.expect("Last.fm user: ")
    terminal.type("RJ\n")
    terminal.expect("Last.fm API key")
    terminal.type("not-the-key\n")
    terminal.expect("Collect Roon plays? [Y/n]: ")
    terminal.type("\n")
    # No Core to offer (discovery off, as in the whole suite): typed instead, the port checked.
    terminal.expect("discovery is off (AIME_ROON_DISCOVERY=off): type the Core's host")
    terminal.type("nucleus.local\n")
    terminal.expect("Roon Core port [9330")
    terminal.type("ninety\n")
    terminal.expect("a port from 1 to 65535, please")
    terminal.type("9100\n")
    assert terminal.exit_code() == 0, terminal.output
    assert "tried once and it did not work: Last.fm rejected the API key" in terminal.output
    written = tomllib.loads((tmp_path / "config.toml").read_text())
    assert written["lastfm"]["user"] == "RJ"
    assert written["roon"] == {"host": "nucleus.local", "port": 9100, "enabled": True}


@pytest.fixture
def sood_cores():
    """Two fake Roon Cores and a SOOD responder for them on loopback, served from a thread."""
    from aime_tui.demo.roon_fake import FakeRoonCore, FakeSoodResponder

    loop = asyncio.new_event_loop()
    cores = [FakeRoonCore(core_name="Kitchen Core", seed=1), FakeRoonCore(core_name="Study Core", seed=2)]
    responder = FakeSoodResponder(cores)

    async def start() -> None:
        for core in cores:
            await core.start()
        await responder.start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield cores, responder

    async def stop() -> None:
        await responder.stop()
        for core in cores:
            await core.stop()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_init_offers_the_roon_cores_discovery_finds(tmp_path, sood_cores):
    cores, responder = sood_cores
    env = env_for(tmp_path, AIME_ROON_DISCOVERY=responder.target)
    terminal = Terminal([str(EXECUTABLE), "init"], env)
    terminal.expect("Last.fm user: ")
    terminal.type("\n")  # Last.fm later
    terminal.expect("Last.fm API key")
    terminal.type("\n")
    terminal.expect("Collect Roon plays? [Y/n]: ")
    terminal.type("y\n")
    terminal.expect("Which Core? [1-2, 0; enter: 1]: ")
    assert f"1. Kitchen Core at 127.0.0.1:{cores[0].port}" in terminal.output
    assert f"2. Study Core at 127.0.0.1:{cores[1].port}" in terminal.output
    terminal.type("2\n")
    assert terminal.exit_code() == 0, terminal.output
    assert len(responder.queries) >= 1
    written = tomllib.loads((tmp_path / "config.toml").read_text())["roon"]
    assert written == {"host": "127.0.0.1", "port": cores[1].port, "enabled": True}


# -- each subcommand's --help -------------------------------------------------------------------


def test_each_subcommand_help_lists_its_own_exit_codes():
    def help_of(*argv: str) -> str:
        return subprocess.run([str(EXECUTABLE), *argv, "--help"], capture_output=True, text=True, timeout=30).stdout

    health = help_of("health")
    assert "4  unhealthy" in health and "1  degraded" in health
    assert "unknown service" not in health and "nothing to retry" not in health
    retry = help_of("retry")
    assert "1  nothing to retry" in retry and "4  " not in retry
    assert "  0  the config file is written" in help_of("init")
    whole = help_of()
    assert "4  health: unhealthy" in whole and "restart" in whole


# -- retry against restart, and the headless log ---------------------------------------------------


@pytest.fixture
def headless(tmp_path):
    with headless_demo(env_for(tmp_path)) as (_, lines):
        yield lines


def test_retry_of_a_running_service_says_so_and_restart_restarts_it(tmp_path, headless):
    retried = run(tmp_path, "retry", "tracker")
    assert retried.returncode == 1
    assert retried.stderr == "aime-tui: tracker is running: nothing to retry (use restart to restart it)\n"

    restarted = run(tmp_path, "restart", "tracker")
    assert restarted.returncode == 0, restarted.stderr
    assert "restarting it" in restarted.stdout
    wait_until_sync(lambda: any("tracker restarted" in line for line in headless), timeout=10, what="the restart")
    status = run(tmp_path, "status")
    assert "● running" in next(line for line in status.stdout.splitlines() if line.startswith("tracker"))


def test_the_headless_log_says_what_the_scheduler_plans_without_apschedulers_bookkeeping(headless):
    text = "".join(headless)
    assert "scheduler in MAINTENANCE: catch-up every 1 min" in text
    assert "job store" not in text and "Added job" not in text
    assert "Scheduler started" not in text


# -- the summary says what has recovered since ------------------------------------------------


def test_status_and_health_say_a_failure_has_since_recovered(tmp_path):
    # The demo's Roon Core answers too late the first time: a real failure, then a recovery.
    process = subprocess.Popen(
        [str(EXECUTABLE), "--demo", "--headless"], env=env_for(tmp_path, AIME_DEMO_FAULTS="1"),
        stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until_sync(lambda: any("roon_tracker recovered" in line for line in lines), timeout=30, what="the recovery")
        status = run(tmp_path, "status")
        summary = next(line for line in status.stdout.splitlines() if line.startswith("Restored"))
        assert summary.startswith("Restored 2 succeeded, 1 failed in ")
        assert re.search(r"\(roon_tracker recovered \d\d:\d\d:\d\d\)$", summary), summary
        health = run(tmp_path, "health", "--json")
        assert re.search(r"\(roon_tracker recovered \d\d:\d\d:\d\d\)$", json.loads(health.stdout)["summary"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        reader.join(5)
