"""The installed `aime-tui` in a pseudo-terminal: launch it, watch its screen bytes, quit it."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from .common import executable

COLUMNS, LINES = 120, 35


class DemoTerminal:
    """`aime-tui --demo` with its own data dir, on a pty of COLUMNS × LINES."""

    def __init__(
        self, data_dir: Path, config_path: Path, *, faults: bool = False, command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config_path = config_path
        self.faults = faults
        #: Another program to run on the same terminal instead (a baseline).
        self.command = command
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.master: int | None = None
        self.screen = bytearray()
        self.launched_at = 0.0

    def launch(self) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES),
                   AIME_DEMO_FAULTS="1" if self.faults else "0", AIME_CONFIG=str(self.config_path))
        self.launched_at = time.perf_counter()
        command = self.command or [str(executable("aime-tui")), "--demo", "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(
            command, cwd=self.cwd,
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True,
        )
        os.close(slave)
        self.master = master

    def pump(self, timeout: float) -> bool:
        """Read what the app wrote within `timeout`; False once the terminal is closed."""
        assert self.master is not None
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 1 << 16)
        except OSError:
            return False
        if not chunk:
            return False
        self.screen += chunk
        if len(self.screen) > 1 << 20:  # keep what a wait_for can still need
            del self.screen[: len(self.screen) - (1 << 18)]
        return True

    def wait_for(self, marker: bytes, timeout: float = 30.0, start: int = 0) -> float:
        """Seconds since launch when `marker` first appeared in the output."""
        deadline = time.perf_counter() + timeout
        while marker not in self.screen[start:]:
            if time.perf_counter() > deadline or not self.pump(0.05):
                tail = bytes(self.screen[-400:])
                raise TimeoutError(f"{marker!r} not seen after {timeout:g} s; last output {tail!r}")
        return time.perf_counter() - self.launched_at

    def keys(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    def quit(self, timeout: float = 10.0) -> float | None:
        """Press q; seconds until the process exited (None if it had to be killed)."""
        assert self.process is not None
        began = time.perf_counter()
        try:
            self.keys(b"q")
        except OSError:
            pass
        deadline = began + timeout
        while self.process.poll() is None and time.perf_counter() < deadline:
            if not self.pump(0.05):
                self.process.wait(max(0.0, deadline - time.perf_counter()))
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None
        return time.perf_counter() - began

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def __enter__(self) -> "DemoTerminal":
        self.launch()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
