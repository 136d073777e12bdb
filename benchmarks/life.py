"""Process life: a signal ends the headless runner at once, even mid-restoration, and a
dashboard whose terminal goes runs on headless, idle.

* signal → exit: `aime-tui --headless` whose Last.fm and Roon endpoints accept connections
  and never answer (their starts hang; `[restore] timeout` 30 s), signalled (SIGTERM and
  SIGINT in turn) while the launch restoration waits on them; exec of the signal → exit.
* terminal lost: `aime-tui --demo` (faults off) in tmux, the tmux server killed (an SSH
  drop), every other time while the log streams (mode changes typed as fast as tmux
  sends them). Measured: kill → "running on in the background" in aime.log; the CPU the
  instance uses over the next minute; alive 5 s after the kill; SIGTERM → exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .common import Figure, Stats, executable, scratch_dir
from .context import Context

DETACHED = "running on in the background"


def _log(data_dir: Path) -> str:
    try:
        return (data_dir / "aime.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _wait(predicate, timeout: float, what: str, poll: float = 0.01) -> float:
    began = time.perf_counter()
    while not predicate():
        if time.perf_counter() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)
    return time.perf_counter() - began


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signal_during_restoration(ctx: Context, directory: Path) -> list[Figure]:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    config = directory / "hung.toml"
    config.write_text(
        f'[lastfm]\napi_url = "http://127.0.0.1:{port}/2.0/"\napi_key = "k"\nuser = "u"\n'
        f'[roon]\nhost = "127.0.0.1"\nport = {port}\n[restore]\ntimeout = 30\n'
    )
    env = dict(os.environ, AIME_CONFIG=str(config))
    exits, codes = [], []
    try:
        for index in range(ctx.runs(30, 3)):
            data_dir = directory / f"hung-{index}"
            process = subprocess.Popen(
                [str(executable("aime-tui")), "--headless", "--data-dir", str(data_dir)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                _wait(lambda: "restoring" in _log(data_dir), 20, "the launch restoration began")
                time.sleep(0.2)  # the starts are under way, and hang
                if "Restored" in _log(data_dir):
                    raise AssertionError("the restoration finished: the hung starts did not hang")
                began = time.perf_counter()
                process.send_signal(signal.SIGTERM if index % 2 == 0 else signal.SIGINT)
                codes.append(process.wait(10))
                exits.append(time.perf_counter() - began)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        silent.close()
    value = Stats.of(exits)
    return [
        Figure(
            "life", "signal → exit during a launch restoration (starts hung, timeout 30 s)", "s", value,
            target="≤ 1 s", met=value.p99 <= 1.0 and set(codes) == {0}, judged_on="p99",
            notes=f"SIGTERM and SIGINT in turn; exit codes {sorted(set(codes))}",
        )
    ]


class _Tmux:
    def __init__(self, name: str) -> None:
        self.socket = name

    def run(self, *args: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def terminal_lost(ctx: Context, directory: Path) -> list[Figure]:
    if shutil.which("tmux") is None:
        ctx.say("tmux is not installed: terminal-loss figures skipped")
        return []
    data_dir = directory / "demo"
    env = f"env AIME_DEMO_FAULTS=0 AIME_CONFIG={directory / 'none.toml'} TERM=xterm-256color"
    command = f"{env} {executable('aime-tui')} --demo --data-dir {data_dir}"
    rounds = ctx.runs(30, 1)
    alive_after = ctx.pick(5.0, 1.0)
    cpu_window = ctx.pick(60.0, 3.0)
    detach, stops, cpu = [], [], []
    survived = 0
    for index in range(rounds):
        terminal = _Tmux(f"aime-bench-life-{os.getpid()}-{index}")
        restored = _log(data_dir).count("Restored 3 succeeded")
        detached = _log(data_dir).count(DETACHED)
        terminal.run("new-session", "-d", "-s", "main", "-x", "120", "-y", "35", command)
        try:
            _wait(lambda: _log(data_dir).count("Restored 3 succeeded") > restored, 30, "the launch restoration")
            pid = int((data_dir / "aime.lock").read_text())
            if index % 2:
                terminal.run("send-keys", "-t", "main", *["m"] * 40)  # the log streams
            began = time.perf_counter()
            terminal.kill()
            detach.append(_wait(lambda: _log(data_dir).count(DETACHED) > detached, 10, "running headless"))
            if index == 0:
                before, at = _cpu_seconds(pid), time.perf_counter()
                time.sleep(cpu_window)
                cpu.append(100.0 * (_cpu_seconds(pid) - before) / (time.perf_counter() - at))
            time.sleep(max(0.0, alive_after - (time.perf_counter() - began)))
            survived += _running(pid)
            stopped = time.perf_counter()
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not _running(pid), 10, "the detached instance exits on SIGTERM")
            stops.append(time.perf_counter() - stopped)
        finally:
            terminal.kill()
            if (data_dir / "aime.lock").exists():
                try:
                    lingering = int((data_dir / "aime.lock").read_text())
                    if _running(lingering):
                        os.kill(lingering, signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
    stop_stats, cpu_stats = Stats.of(stops), Stats.of(cpu)
    return [
        Figure("life", "terminal lost → running headless (tmux killed)", "s", Stats.of(detach),
               notes="every other time while the log streams"),
        Figure("life", f"CPU of the detached instance over {cpu_window:g} s", "% core", cpu_stats,
               target="≤ 1 %", met=cpu_stats.max <= 1.0, judged_on="max"),
        Figure("life", f"alive {alive_after:g} s after its terminal went", "count", Stats.of([survived]),
               target=f"= {rounds} of {rounds}", met=survived == rounds, judged_on="max"),
        Figure("life", "SIGTERM → exit, detached instance", "s", stop_stats,
               target="≤ 2 s", met=stop_stats.max <= 2.0, judged_on="max"),
    ]


def run(ctx: Context) -> list[Figure]:
    with scratch_dir(ctx.tmp_root, "life") as directory:
        return signal_during_restoration(ctx, directory) + terminal_lost(ctx, directory)
