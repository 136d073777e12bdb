"""The control client: the blocking side the CLI uses to ask a running instance.

Also answers whether an instance holds the data directory at all (its lock), without
writing anything. Nothing is sent to a socket that is not the user's own (the file's
owner, then the peer's uid); a socket whose backlog is full is tried again briefly.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from aime_tui.control.protocol import CLIENT_TIMEOUT, MAX_LINE, encode, peer_uid

# A listener with a full backlog answers EAGAIN: try again for this long, this often.
BUSY_RETRY_FOR = 3.0
BUSY_RETRY_EVERY = 0.01


def instance_running(lock_path: Path) -> bool:
    """Whether an instance holds the data directory's lock; writes nothing."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class ControlError(Exception):
    """The instance answered, and said no; the message is its reason."""


class Unreachable(Exception):
    """No instance answers on the socket (missing, refused, dead file, or timed out)."""


def _check_owner(path: Path) -> None:
    """Refuse a socket file that is not the user's own (planted in a directory others can write)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise Unreachable(f"no control socket at {path}") from None
    except OSError as exc:
        raise Unreachable(f"cannot use {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise Unreachable(f"{path} is not a socket: not sending anything to it")
    if info.st_uid != os.geteuid():
        raise Unreachable(f"{path} belongs to uid {info.st_uid}, not to you: not sending anything to it")


def _connected(conn: socket.socket, path: Path, busy_until: float) -> bool:
    """One connect attempt: True once connected, False while the listener's backlog is
    full (EAGAIN: it is busy, for now) and there is time left to try again."""
    try:
        conn.connect(str(path))
        return True
    except BlockingIOError as exc:
        if exc.errno != errno.EAGAIN or time.monotonic() >= busy_until:
            raise
        return False


def _connect(conn: socket.socket, path: Path, deadline: float) -> None:
    busy_until = min(deadline, time.monotonic() + BUSY_RETRY_FOR)
    while not _connected(conn, path, busy_until):
        time.sleep(BUSY_RETRY_EVERY)


async def open_stream(path: Path, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The asyncio connection to the instance (an attached dashboard's), with the CLI's
    retries of a full backlog: asyncio's own connect takes EAGAIN for a connect under way
    and hands back a broken stream."""
    busy_until = time.monotonic() + min(timeout, BUSY_RETRY_FOR)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.setblocking(False)
    try:
        while not _connected(conn, path, busy_until):
            await asyncio.sleep(BUSY_RETRY_EVERY)
        return await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
    except BaseException:
        conn.close()
        raise


def request(path: Path, message: dict[str, Any], *, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Send one request and return the answer (without "ok"); raise ControlError if it says no."""
    deadline = time.monotonic() + timeout
    _check_owner(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            _connect(conn, path, deadline)
        except FileNotFoundError:
            raise Unreachable(f"no control socket at {path}") from None
        except ConnectionRefusedError:
            raise Unreachable(f"nothing listens on {path} (a dead socket file)") from None
        except socket.timeout:
            raise Unreachable(f"{path} did not accept a connection within {timeout:.0f} s") from None
        except OSError as exc:
            raise Unreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        # The file may have been swapped since it was checked: the peer itself must be ours.
        uid = peer_uid(conn)
        if uid != os.geteuid():
            raise Unreachable(f"{path} is served by uid {uid}, not by you: not sending anything to it")
        try:
            conn.sendall(encode(message))
            answer = _read_line(conn, deadline)
        except socket.timeout:
            raise Unreachable(f"no answer on {path} within {timeout:.0f} s") from None
        except OSError as exc:
            raise Unreachable(f"the connection on {path} broke: {exc.strerror or exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise Unreachable(f"an unreadable answer on {path}") from None
    if not reply.pop("ok", False):
        raise ControlError(reply.get("error") or "refused")
    return reply


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout
        conn.settimeout(remaining)
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError(0, "closed before answering")
        chunks.append(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).split(b"\n", 1)[0]
        if sum(map(len, chunks)) > 16 * MAX_LINE:
            raise ConnectionResetError(0, "answer too long")
