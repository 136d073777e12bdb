"""Network failures in words: what a person can act on, instead of `[Errno -2] Name or
service not known`.

The protocol clients say what failed with `network_failure(exc, host, port)` and log
the raw error (with `log_raw`) to the log file, where whoever debugs finds it whole.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl

log = logging.getLogger(__name__)

_REFUSED = (errno.ECONNREFUSED,)
_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN)
_RESET = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


def _causes(exc: BaseException):
    """The exception and what it wraps (httpx wraps httpcore wraps the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def network_failure(exc: BaseException, host: str, port: int | None = None, *, timeout: float | None = None) -> str | None:
    """A few words for a failure to reach `host`, or None when it is not a network failure."""
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as in a URL
    where = f"{shown}:{port}" if port else host
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "not verified"
            return f"TLS certificate of {host} not trusted ({reason})"
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed for {host}"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) in _REFUSED:
            return f"connection refused by {where}"
        if isinstance(cause, TimeoutError) or type(cause).__name__.endswith("Timeout"):
            return f"timed out after {timeout:g} s reaching {where}" if timeout else f"timed out reaching {where}"
        if getattr(cause, "errno", None) in _UNREACHABLE:
            return f"no route to {where} (network unreachable)"
        if isinstance(cause, ConnectionResetError) or getattr(cause, "errno", None) in _RESET:
            return f"connection to {where} dropped"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {host} failed ({cause.reason or 'handshake failed'})"
    return None


def log_raw(what: str, exc: BaseException, scrub=lambda text: text) -> None:
    """The raw error, for the log file only (the screen shows network_failure's words)."""
    chain = " <- ".join(f"{type(cause).__name__}: {scrub(str(cause))}" for cause in _causes(exc))
    log.info("%s: raw error %s", what, chain)
