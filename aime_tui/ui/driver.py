"""The terminal driver: Textual's LinuxDriver, made to let go of a terminal that is gone.

Over SSH the terminal can vanish at any moment: writes then fail with EIO (or stall),
reads return end-of-file, and the kernel's SIGHUP comes with a SIGCONT. Textual's own
driver is not made for that: its writer thread dies on the first failed write while
the app keeps queueing output (the queue fills and the next write blocks the event
loop for ever), and every SIGCONT starts application mode again with another writer.
Here a failed or stalled write marks the terminal lost and tells the app; from then on
nothing is written, a SIGCONT starts nothing, and closing never waits on the terminal.
"""

from __future__ import annotations

import asyncio
import queue
from typing import IO, Callable

from textual.drivers._writer_thread import WriterThread
from textual.drivers.linux_driver import LinuxDriver

#: A terminal that takes no output for this long is as good as gone (a stalled SSH link
#: would otherwise freeze the event loop, and every service on it).
STALL_LIMIT = 10.0
#: How long closing waits for the writer to finish what it has.
CLOSE_WAIT = 1.0


class _Writer(WriterThread):
    """Writes to the terminal in the background; never blocks the app on a lost one."""

    def __init__(self, file: IO[str], on_lost: Callable[[str], None]) -> None:
        super().__init__(file)
        self._on_lost = on_lost
        self.lost = False

    def write(self, text: str) -> None:
        if self.lost:
            return
        try:
            self._queue.put(text, timeout=STALL_LIMIT)
        except queue.Full:
            self._lose(f"it took no output for {STALL_LIMIT:.0f} s")

    def run(self) -> None:
        get, file = self._queue.get, self._file
        while (text := get()) is not None:
            if self.lost:
                continue  # drain: whatever was queued goes nowhere
            try:
                file.write(text)
                if self._queue.qsize() == 0:
                    file.flush()
            except (OSError, ValueError) as exc:  # EIO: the terminal hung up
                self._lose(f"a write failed: {exc.strerror if isinstance(exc, OSError) else exc}")

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost(why)

    def stop(self) -> None:
        try:
            self._queue.put(None, timeout=0 if self.lost else CLOSE_WAIT)
        except queue.Full:
            pass
        self.join(CLOSE_WAIT)  # a write stuck on a stalled terminal stays behind, a daemon


class TerminalDriver(LinuxDriver):
    """LinuxDriver that hands its app `terminal_lost(why)` once the terminal is gone."""

    def __init__(self, app, **options) -> None:
        super().__init__(app, **options)
        self.lost = False
        self._suspended = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start_application_mode(self) -> None:
        if self.lost:
            return
        self._loop = asyncio.get_running_loop()
        super().start_application_mode()
        # Textual started a plain writer: let it write what it has, then use ours.
        plain = self._writer_thread
        if plain is not None and not isinstance(plain, _Writer):
            try:
                plain._queue.put_nowait(None)
            except queue.Full:
                pass
            plain.join(CLOSE_WAIT)
        writer = _Writer(self._file, self._writer_lost)
        writer.start()
        self._writer_thread = writer

    def _writer_lost(self, why: str) -> None:
        """From the writer thread."""
        self.lose()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._app.terminal_lost, why)

    def lose(self) -> None:
        """Write nothing more (callable from any thread, or a signal handler)."""
        self.lost = True
        writer = self._writer_thread
        if isinstance(writer, _Writer):
            writer.lost = True

    def write(self, data: str) -> None:
        if not self.lost and self._writer_thread is not None:
            self._writer_thread.write(data)

    def _sigtstp_application(self, *args) -> None:
        self._suspended = self._auto_restart
        super()._sigtstp_application(*args)

    def _sigcont_application(self, *args) -> None:
        # Only a resume from our own suspension restarts application mode: the SIGCONT
        # that comes with a hang-up must not start a second writer on a dead terminal.
        if self._suspended and not self.lost:
            self._suspended = False
            super()._sigcont_application(*args)

    def stop_application_mode(self) -> None:
        if self.lost:
            self.disable_input()  # the input thread ends; the terminal is not touched
            return
        super().stop_application_mode()

