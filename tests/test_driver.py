"""The terminal driver's writer on a terminal that hangs up: the app never blocks on it."""

from __future__ import annotations

import contextlib
import os
import pty
import time

from waits import wait_until_sync

from aime_tui.ui.driver import _Writer


def test_a_hung_up_terminal_is_reported_once_and_writes_never_block():
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    lost: list[str] = []
    writer = _Writer(terminal, lost.append)
    writer.start()
    writer.write("first frame\n")
    assert wait_until_sync(lambda: b"first frame" in os.read(master, 1024), 2)
    os.close(master)  # the terminal hangs up: writes now fail with EIO
    began = time.monotonic()
    for _ in range(1000):  # far more than Textual's queue holds (30)
        writer.write("a frame nobody will see\n" * 20)
    wait_until_sync(lambda: lost, 2, "the loss reported")
    writer.stop()
    assert time.monotonic() - began < 2.0, "writing to a lost terminal never waits"
    assert not writer.is_alive()
    assert len(lost) == 1 and "write failed" in lost[0]
    with contextlib.suppress(OSError):  # what is still buffered cannot be written either
        terminal.close()


def test_closing_a_writer_whose_terminal_takes_nothing_is_bounded(monkeypatch):
    import aime_tui.ui.driver as driver

    monkeypatch.setattr(driver, "STALL_LIMIT", 0.2)
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    lost: list[str] = []
    writer = _Writer(terminal, lost.append)
    writer.start()
    began = time.monotonic()
    # Nobody reads the master: the pty's buffer fills, the writer blocks in a write,
    # its queue fills, and a write then waits STALL_LIMIT at most before calling it lost.
    while not lost and time.monotonic() - began < 10:
        writer.write("x" * 4096)
    assert lost and "took no output" in lost[0]
    writer.stop()  # the blocked write stays behind in a daemon thread; closing does not wait for it
    assert time.monotonic() - began < 5.0
    os.close(master)
