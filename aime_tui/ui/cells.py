"""How service facts read on screen: state badges, times, counts, now playing.

Pure functions from engine views to Rich text, so the table, the CLI and the tests agree.
Colour never carries meaning alone: every state has a symbol and a word.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from rich.text import Text

from aime_tui.core.supervisor import RunState, ServiceView, format_duration

STATE_STYLE = {
    RunState.RUNNING: ("●", "green"),
    RunState.STARTING: ("◌", "cyan"),
    RunState.STOPPING: ("◌", "cyan"),
    RunState.BACKOFF: ("◌", "yellow"),
    RunState.STOPPED: ("○", "bright_black"),
    RunState.NEEDS_ATTENTION: ("✖", "bold red"),
}

# (key, label, width): fixed widths, so a longer state never truncates or reflows the table.
COLUMNS = (
    ("service", "Service", 13),
    ("state", "State", 18),
    ("want", "Want", 4),
    ("mode", "Mode", 11),
    ("last_check", "Last check", 10),
    ("found", "Found", 9),
    ("restarts", "↺", 3),
)


def state_text(view: ServiceView) -> Text:
    symbol, style = STATE_STYLE[view.state]
    label = view.state.value
    if view.state is RunState.BACKOFF and view.retry_in is not None:
        label = f"backoff {math.ceil(view.retry_in)}s"
    return Text(f"{symbol} {label}", style=style)


def clock_time(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S") if epoch else "–"


def row_cells(view: ServiceView) -> dict[str, Any]:
    status = view.status
    return {
        "service": view.name,
        "state": state_text(view),
        "want": "on" if view.wanted else "off",
        "mode": view.mode or "–",
        "last_check": clock_time(status.get("last_check")),
        "found": f"{status.get('tracks_found') or 0:,}",
        "restarts": str(view.restarts),
    }


def mmss(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def now_playing_text(status: dict[str, Any]) -> str:
    """One line for every zone that has a track: 'Living Room: Artist – Title (2:41 / 8:19)'."""
    zones = status.get("now_playing") or []
    parts = []
    for zone in zones:
        if not zone.get("title"):
            continue
        paused = "" if zone.get("state") == "playing" else f" [{zone.get('state')}]"
        parts.append(
            f"{zone.get('zone')}: {zone.get('artist')} – {zone.get('title')}"
            f" ({mmss(zone.get('seek'))} / {mmss(zone.get('length'))}){paused}"
        )
    return " · ".join(parts) if parts else "nothing playing"


def detail_text(view: ServiceView) -> str:
    """What the selected service is doing or needs, in one line."""
    status = view.status
    if view.state is RunState.NEEDS_ATTENTION:
        # A service that stays up meanwhile says so in its own words (see Service.report_attention).
        return f"{view.name} needs attention: {view.reason}"
    if view.state is RunState.BACKOFF:
        retry = format_duration(view.retry_in or 0)
        return f"{view.name}: {view.reason} — retrying in {retry} (r retries now)"
    facts = [f"{view.name} {view.state.value}"]
    if view.name == "tracker" and status.get("account"):
        facts.append(f"account {status['account']}, polls every {status.get('interval', 0):.0f} s")
    if view.name == "roon_tracker" and status.get("core"):
        facts.append(f"core {status['core']}, {status.get('zones', 0)} zones")
    if view.name == "scheduler":
        if view.mode == "MASSIVE":
            if status.get("backfill_done"):
                facts.append("backfill complete")
            elif status.get("total_pages"):
                eta = status.get("eta")
                progress = f"backfill {status.get('pages_done', 0)}/{status['total_pages']} pages"
                if status.get("backfill_total"):
                    progress += f", {status.get('backfill_plays', 0):,} of {status['backfill_total']:,} plays"
                if eta is not None:
                    progress += f", ETA {format_duration(eta)}"
                facts.append(progress)
        if status.get("catchup_every"):
            facts.append(f"catching up every {format_duration(status['catchup_every'])}")
        if status.get("next_run"):
            facts.append(f"next run {clock_time(status['next_run'])}")
    if status.get("last_error"):
        facts.append(f"last error: {status['last_error']}")
    return " · ".join(facts)
