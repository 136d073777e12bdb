"""How service facts read on screen: table cells, the detail line, now playing.

Pure functions from engine views to Rich text; the words, times and durations are
format.py's, shared with the CLI. Colour never carries meaning alone: every state has a
symbol and a word.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from aime_tui.core.model import RunState, ServiceView
from aime_tui.format import STATE_COLOUR, countdown, duration, state_badge, track_position, when

# (key, heading), in screen order; widths come from the cells (see widgets/services_table.py).
COLUMNS = (
    ("service", "Service"),
    ("state", "State"),
    ("want", "Want"),
    ("mode", "Mode"),
    ("last_check", "Last check"),
    ("plays", "Plays"),
    ("restarts", "↺"),
)


def state_text(view: ServiceView) -> Text:
    return Text(state_badge(view.state, view.retry_in), style=STATE_COLOUR[view.state])


def row_cells(view: ServiceView, now: float | None = None) -> dict[str, Any]:
    status = view.status
    return {
        "service": view.name,
        "state": state_text(view),
        "want": "on" if view.wanted else "off",
        "mode": view.mode or "–",
        "last_check": when(status.get("last_check"), now),
        # The whole history stored from the service's source; this session's are in the detail.
        "plays": f"{status.get('plays_total') or 0:,}",
        "restarts": str(view.restarts),
    }


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
            f" ({track_position(zone.get('seek'))} / {track_position(zone.get('length'))}){paused}"
        )
    return " · ".join(parts) if parts else "nothing playing"


def plays_text(status: dict[str, Any]) -> str:
    """'61,204 plays stored, 200 new this session': the whole history, then this session's."""
    return f"{status.get('plays_total') or 0:,} plays stored, {status.get('tracks_found') or 0:,} new this session"


def detail_text(view: ServiceView, now: float | None = None) -> str:
    """What the selected service is doing or needs, in one line."""
    status = view.status
    if view.state is RunState.NEEDS_ATTENTION:
        # A service that stays up meanwhile says so in its own words (see Service.report_attention).
        return f"{view.name} needs attention: {view.reason}"
    if view.state is RunState.NOT_SET_UP:
        return f"{view.name} not set up: {view.reason}, then r (or try aime-tui --demo)"
    if view.state is RunState.BACKOFF:
        retry = countdown(view.retry_in or 0)
        return f"{view.name}: {view.reason} — retrying in {retry} (r retries now)"
    facts = [f"{view.name} {view.state.value}"]
    if view.name == "tracker" and status.get("account"):
        facts.append(f"account {status['account']}, polls every {status.get('interval', 0):.0f} s")
    if view.name == "tracker" and status.get("catching_up"):
        facts.append(f"catching up: {status['catching_up']:,} plays to fetch")
    if view.name == "roon_tracker" and status.get("core"):
        facts.append(f"core {status['core']}, {status.get('zones', 0)} zones")
    if view.name == "scheduler":
        if view.mode == "MASSIVE":
            if status.get("backfill_done"):
                facts.append("backfill complete")
            elif status.get("total_pages"):
                eta = status.get("eta")
                # Stopped, the backfill waits where it is: no ETA to count down.
                paused = " paused at" if view.state is not RunState.RUNNING else ""
                progress = f"backfill{paused} {status.get('pages_done', 0)}/{status['total_pages']} pages"
                if status.get("backfill_total"):
                    progress += f", {status.get('backfill_plays', 0):,} of {status['backfill_total']:,} plays"
                if eta is not None and not paused:
                    progress += f", ETA {duration(eta)}"
                facts.append(progress)
        if status.get("catchup_every"):
            facts.append(f"catching up every {duration(status['catchup_every'])}")
        facts.extend(status.get("duties_off") or ())  # "catch-up off: …, set … in …"
        if status.get("next_run"):
            job = f" ({status['next_job']})" if status.get("next_job") else ""
            facts.append(f"next run {when(status['next_run'], now)}{job}")
    if "plays_total" in status:
        facts.append(plays_text(status))
    if status.get("last_error"):
        facts.append(f"last error: {status['last_error']}")
    return " · ".join(facts)
