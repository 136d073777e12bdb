"""The control protocol: one JSON object per line each way, and how engine facts travel.

Owns the wire codec (`encode`), the limits and timeouts both sides agree on, and the
conversion of service views, events and restoration summaries to and from their wire
form. Requests look like `{"cmd": "start", "service": "tracker"}`; every answer carries
`"ok"`, and `"error"` when it is false. Commands:

    status                 pid, uptime, data dir, last restore summary, service views
    start|stop  service    acknowledged once the desired state is committed (durable)
    retry       service    skip the backoff wait (refused when there is nothing to retry)
    restart     service    want it running, stop it and start it again
    mode   mode [service]  the service defaults to the one that has modes
    wake                   recover as after a sleep; answers with the restore summary
    health                 see reports/health.py
    subscribe              keep the connection open: a status answer saying how many
                           recent log lines follow ("recent": N), those N lines, then one
                           line per engine event (state, log, summary) until either side
                           closes
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict
from typing import Any, Iterable

from aime_tui.core.model import (
    Event,
    RestoreSummary,
    RunState,
    ServiceView,
    StateEvent,
)

MAX_LINE = 64 * 1024
# Clients the socket holds waiting to be accepted (500 at once must not see EAGAIN).
BACKLOG = 1024
# A client that connects and says nothing is dropped after this long.
REQUEST_TIMEOUT = 5.0
# Longest a command may take before the server answers with an error instead.
COMMAND_TIMEOUT = 20.0
WRITE_TIMEOUT = 5.0
# Events a subscriber has not read yet; beyond this it is too slow and is dropped.
SUBSCRIBER_BACKLOG = 2000
# Log lines (and summaries) a dashboard that attaches is shown first, as `pm2 logs` does.
RECENT_LOG_LINES = 200
CLIENT_TIMEOUT = 10.0
# A wake stops and restores every wanted service: allow for both timeouts and more.
WAKE_CLIENT_TIMEOUT = 30.0


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# -- wire format ------------------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    # default=str: service status dicts are plain data, but never let one odd value
    # (a path, a datetime) break the whole answer.
    return (json.dumps(message, default=str, separators=(",", ":")) + "\n").encode()


# A ServiceView is the same on both sides: the instance sends one, the CLI and an
# attached dashboard read it back as one.


def view_to_wire(view: ServiceView) -> dict[str, Any]:
    wire = asdict(view)
    wire["state"] = view.state.value
    return wire


def event_to_wire(event: Event) -> dict[str, Any]:
    if isinstance(event, StateEvent):
        return {"event": "state", "view": view_to_wire(event.view)}
    if isinstance(event, RestoreSummary):
        return {"event": "summary", **summary_to_wire(event)}
    return {"event": "log", "text": event.text, "level": event.level, "service": event.service, "at": event.at}


def summary_to_wire(summary: RestoreSummary, views: Iterable[ServiceView] = (), now: float | None = None) -> dict[str, Any]:
    """The summary, its line saying which failures have recovered since when views and now are given."""
    views = list(views)
    return {
        "at": summary.at,
        "trigger": summary.trigger,
        "succeeded": list(summary.succeeded),
        "failed": summary.failed,
        "not_set_up": summary.not_set_up,
        "elapsed": summary.elapsed,
        "recovered": summary.recovered(views, now),
        "line": summary.line(views, now),
    }


def view_from_wire(wire: dict[str, Any]) -> ServiceView:
    return ServiceView(
        name=wire["name"], state=RunState(wire["state"]), wanted=wire["wanted"], mode=wire.get("mode"),
        reason=wire.get("reason"), retry_in=wire.get("retry_in"), restarts=wire.get("restarts", 0),
        status=wire.get("status") or {}, uptime=wire.get("uptime"), up=wire.get("up", False),
    )


def summary_from_wire(wire: dict[str, Any]) -> RestoreSummary:
    return RestoreSummary(
        wire["at"], wire["trigger"], tuple(wire["succeeded"]), wire["failed"], wire["elapsed"],
        wire.get("not_set_up") or {},
    )
