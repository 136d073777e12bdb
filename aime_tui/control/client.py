"""The control client: the blocking side the CLI uses to ask a running instance.

Also answers whether an instance holds the data directory at all (its lock), without
writing anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from aime_tui.control.protocol import CLIENT_TIMEOUT, MAX_LINE, encode


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


def request(path: Path, message: dict[str, Any], *, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Send one request and return the answer (without "ok"); raise ControlError if it says no."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
        except FileNotFoundError:
            raise Unreachable(f"no control socket at {path}") from None
        except ConnectionRefusedError:
            raise Unreachable(f"nothing listens on {path} (a dead socket file)") from None
        except socket.timeout:
            raise Unreachable(f"{path} did not accept a connection within {timeout:.0f} s") from None
        except OSError as exc:
            raise Unreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
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
