"""`aime-tui stats`: how much was listened to, when, and to what, over a period.

Owns the report behind `stats` and the numbers the plays screen shows: plays per local
day, the top artists, tracks and albums, and the plays per source, for the last 7, 30
or 365 days or the whole history. A period of N days is today and the N − 1 days before
it, from local midnight. Read through a read-only connection; no Textual here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

from aime_tui.store import queries
from aime_tui.store.queries import Ranked

PERIODS = {"7d": 7, "30d": 30, "365d": 365, "all": None}
BAR_WIDTH = 40
#: Beyond this many days the text chart sums the days of each month.
DAILY_CHART_DAYS = 62


@dataclass
class Stats:
    period: str
    since: float | None
    until: float
    plays: int
    per_source: dict[str, int]
    per_day: list[tuple[str, int]]
    top_artists: list[Ranked] = field(default_factory=list)
    top_tracks: list[Ranked] = field(default_factory=list)
    top_albums: list[Ranked] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["per_day"] = [{"day": day, "plays": plays} for day, plays in self.per_day]
        return data


def first_day(period: str, today: date, db: sqlite3.Connection) -> date | None:
    """The first local day of the period (None: nothing stored for 'all')."""
    days = PERIODS[period]
    if days is not None:
        return today - timedelta(days=days - 1)
    first = queries.first_play(db)
    return None if first is None else min(datetime.fromtimestamp(first).date(), today)


def compute(db: sqlite3.Connection, period: str, *, now: float, top: int = queries.TOP) -> Stats:
    today = datetime.fromtimestamp(now).date()
    start = first_day(period, today, db)
    if start is None:
        return Stats(period, None, now, 0, {}, [])
    days = (today - start).days + 1
    bounds = queries.day_starts(start, days)
    since, until = bounds[0], bounds[-1]
    per_day = queries.per_day(db, start, days)
    # The whole history needs no time bounds: the grouping then reads the key index alone.
    ranged = {"since": since, "until": until} if PERIODS[period] is not None else {}
    return Stats(
        period=period,
        since=since,
        until=until,
        plays=sum(plays for _, plays in per_day),
        per_source=queries.per_source(db, since=since, until=until),
        per_day=[(day.isoformat(), plays) for day, plays in per_day],
        top_artists=queries.top(db, "artists", limit=top, **ranged),
        top_tracks=queries.top(db, "tracks", limit=top, **ranged),
        top_albums=queries.top(db, "albums", limit=top, **ranged),
    )


def chart_rows(per_day: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Days as they are, or months summed once there are too many days for a screen."""
    if len(per_day) <= DAILY_CHART_DAYS:
        return per_day
    months: dict[str, int] = {}
    for day, plays in per_day:
        months[day[:7]] = months.get(day[:7], 0) + plays
    return list(months.items())


def bar(value: int, peak: int, width: int = BAR_WIDTH) -> str:
    """A bar in eighths of a cell; any play at all shows at least a sliver."""
    if peak <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / peak * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")


def report_lines(stats: Stats) -> list[str]:
    label = "the whole history" if stats.period == "all" else f"the last {PERIODS[stats.period]} days"
    if not stats.per_day:
        return [f"no plays stored ({label})"]
    sources = ", ".join(f"{source} {plays:,}" for source, plays in stats.per_source.items()) or "none"
    lines = [f"{stats.plays:,} plays in {label} ({sources})", ""]
    rows = chart_rows(stats.per_day)
    monthly = rows is not stats.per_day
    lines.append("plays per month" if monthly else "plays per day")
    peak = max((plays for _, plays in rows), default=0)
    width = max(len(f"{plays:,}") for _, plays in rows)
    for when, plays in rows:
        lines.append(f"  {when}  {plays:>{width},}  {bar(plays, peak)}".rstrip())
    for title, ranked, with_artist in (
        ("top artists", stats.top_artists, False),
        ("top tracks", stats.top_tracks, True),
        ("top albums", stats.top_albums, True),
    ):
        lines += ["", title]
        if not ranked:
            lines.append("  –")
        for place, item in enumerate(ranked, start=1):
            name = f"{item.artist} – {item.name}" if with_artist else item.name
            lines.append(f"  {place:>2}. {_one_line(name)}  ({item.plays:,})")
    return lines


def _one_line(text: str) -> str:
    # A name with a line break in it must not break the report's layout.
    return " ".join(text.split())
