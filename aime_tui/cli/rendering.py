"""How the CLI prints: the status table, the health report, short times and durations."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from aime_tui.core.supervisor import format_duration

STATE_SYMBOL = {
    "running": "●", "starting": "◌", "stopping": "◌", "backoff": "◌", "stopped": "○", "needs attention": "✖",
}


def status_table(views: list[dict[str, Any]]) -> list[str]:
    """A `pm2 list`-like table of wire views."""
    header = ("name", "state", "wanted", "mode", "uptime", "↺", "last check", "found", "last error")
    rows = [header]
    for view in views:
        status = view.get("status") or {}
        state = view["state"]
        label = f"{STATE_SYMBOL.get(state, '?')} {state}"
        if state == "backoff" and view.get("retry_in") is not None:
            label += f" {math.ceil(view['retry_in'])}s"  # like the dashboard: never "0s" while waiting
        rows.append((
            view["name"],
            label,
            "on" if view["wanted"] else "off",
            view.get("mode") or "–",
            short_duration(view.get("uptime")),
            str(view.get("restarts", 0)),
            _when(status.get("last_check")),
            f"{status.get('tracks_found') or 0:,}",
            view.get("reason") or status.get("last_error") or "–",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in rows]


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _when(epoch: float | None) -> str:
    if not epoch:
        return "–"
    moment = datetime.fromtimestamp(epoch)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date() else "%m-%d %H:%M")


def health_lines(report: dict[str, Any]) -> list[str]:
    lines = [report["status"]]
    if "uptime" in report:
        database = report["database"]
        reachable = "reachable" if database["reachable"] else f"unreachable ({database['error']})"
        errors = report["errors"]
        lines[0] += (
            f" · up {format_duration(report['uptime'])} · database {reachable}"
            f" · last hour: {errors['errors_last_hour']} errors, {errors['warnings_last_hour']} warnings"
        )
        for name, service in report["services"].items():
            wanted = "wanted" if service["wanted"] else "not wanted"
            lines.append(f"  {name:<13} {STATE_SYMBOL.get(service['state'], '?')} {service['state']:<16} {wanted}")
    lines += [f"  problem: {problem}" for problem in report.get("problems", [])]
    return lines
