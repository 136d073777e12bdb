"""How the CLI prints: the status table and the health report (times, durations and
states read as format.py says)."""

from __future__ import annotations

from typing import Any

from aime_tui.core.model import ServiceView
from aime_tui.format import NONE, STATE_SYMBOL, count, duration, optional_duration, state_badge, when


def status_table(views: list[ServiceView]) -> list[str]:
    """A `pm2 list`-like table of service views."""
    header = ("name", "state", "wanted", "mode", "uptime", "↺", "last check", "plays (new)", "last error")
    rows = [header]
    for view in views:
        rows.append((
            view.name,
            state_badge(view.state, view.retry_in),
            "on" if view.wanted else "off",
            view.mode or NONE,
            optional_duration(view.uptime),
            str(view.restarts),
            when(view.status.get("last_check")),
            plays_cell(view.status),
            view.last_error or NONE,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in rows]


def plays_cell(status: dict[str, Any]) -> str:
    """Plays stored from the service's source (the whole history), this session's new ones beside."""
    return f"{status.get('plays_total') or 0:,} (+{status.get('tracks_found') or 0:,})"


def health_lines(report: dict[str, Any]) -> list[str]:
    lines = [report["status"]]
    if "uptime" in report:
        database = report["database"]
        reachable = "reachable" if database["reachable"] else f"unreachable ({database['error']})"
        errors = report["errors"]
        lines[0] += (
            f" · up {duration(report['uptime'])} · database {reachable}"
            f" · last hour: {count(errors['errors_last_hour'], 'error')}, {count(errors['warnings_last_hour'], 'warning')}"
        )
        for name, service in report["services"].items():
            wanted = "wanted" if service["wanted"] else "not wanted"
            plays = ""
            if service.get("plays_total") is not None:
                plays = f"  {service['plays_total']:,} plays stored, {service.get('plays_new') or 0:,} new this session"
            lines.append(
                f"  {name:<13} {STATE_SYMBOL.get(service['state'], '?')} {service['state']:<16} {wanted:<10}{plays}".rstrip()
            )
    lines += [f"  problem: {problem}" for problem in report.get("problems", [])]
    if "uptime" in report and report["database"].get("recovered"):
        lines.append(f"  database: {report['database']['recovered']}")
    lines += [f"  not set up: {name}: {what}" for name, what in (report.get("not_set_up") or {}).items()]
    if report.get("summary"):
        lines.append(f"  last restoration: {report['summary']}")
    return lines
