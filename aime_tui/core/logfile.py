"""The log file handler: `aime.log` and its rotations, private, never through a symlink, quiet when it cannot write.

The standard RotatingFileHandler opens with open(), which follows a symlink planted in
place of the log, and on a write error prints a "--- Logging error ---" block with a
traceback to stderr (once per record: a full disk makes dozens a second, over the
dashboard). This one opens with O_NOFOLLOW and mode 0600, and when a write fails it
drops the record, counts it, and says how many were lost once it can write again. A log
deleted under it (its data directory with it) is made again on request (`reopen_if_gone`).
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler

from aime_tui.core.files import PRIVATE_FILE, make_private


class PrivateLogHandler(RotatingFileHandler):
    def __init__(self, filename, maxBytes: int = 0, backupCount: int = 0) -> None:
        self.lost = 0
        self.failure: str | None = None
        super().__init__(filename, maxBytes=maxBytes, backupCount=backupCount, encoding="utf-8", delay=False)

    def _open(self):
        # O_NOFOLLOW: a symlink planted as aime.log fails to open (ELOOP) rather than
        # making us append to whatever it points at.
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.baseFilename, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
            created = True
        except FileExistsError:
            # One already there with a wider mode is narrowed at launch, and said (files.tighten).
            fd = os.open(self.baseFilename, flags)
            created = False
        try:
            if created:
                make_private(fd)  # whatever the umask
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def reopen_if_gone(self) -> bool:
        """Open a new file if ours is no longer there (deleted); True if it did."""
        if os.path.lexists(self.baseFilename):
            return False
        self.acquire()
        try:
            stream, self.stream = self.stream, None
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
            self.stream = self._open()
        except OSError:
            return False  # the next record tries again, and counts what it loses
        finally:
            self.release()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self.lost and self.failure is not None:
            # Try the notice first: if it is written, the disk is back.
            lost, failure = self.lost, self.failure
            self.failure = None
            notice = logging.makeLogRecord({
                "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log lines could not be written (%s)", "args": (lost, failure),
            })
            super().emit(notice)
            if self.failure is None:
                self.lost = 0
            else:
                self.lost = lost
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # Never the stderr block: count, drop the broken stream (reopened at the next
        # record, so its unwritten buffer does not grow), and carry on.
        import sys

        exc = sys.exc_info()[1]
        self.lost += 1
        self.failure = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc else "unknown"
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
