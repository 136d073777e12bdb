"""Play detection for Roon zones: what a zone plays, and how much of it has been heard.

Owns the rule: a track becomes a play once it has been heard for half its length or
four minutes, whichever comes first. Only time spent playing counts, and seek progress
counts only as fast as time passes, so a jump forward is a seek, not listening. A zone
last seen playing that shows the next track counts the end of the one before as heard,
as far as the time between allows: the updates missed while a socket was dead still
belong to the track that was playing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

#: A track is a play after half its length or this many seconds heard, whichever is first.
PLAY_CAP = 240.0
# Zone updates arrive about once a second and not exactly on time: between two of them
# the seek position may run this far ahead of our clock and still count as listening.
SEEK_AHEAD_RATIO = 1.5
SEEK_AHEAD_SECONDS = 1.0
#: Back to within this many seconds of the start of the same track: a new play (repeat).
RESTART_WITHIN = 3.0
#: A saved play in progress older than this is not carried on after a restart: the same
#: track playing now is more likely a new play than the old one resumed.
RESUME_WITHIN = 30 * 60.0
#: The end of a track is credited for a gap of at most this long (a dead socket noticed
#: and reconnected): after a longer one, nobody knows whether it was paused meanwhile.
FINISH_WITHIN = 120.0


@dataclass(frozen=True)
class Track:
    artist: str
    title: str
    album: str
    length: float | None

    @property
    def threshold(self) -> float:
        return min(self.length / 2, PLAY_CAP) if self.length else PLAY_CAP


@dataclass
class Listening:
    """How much of the track a zone is on has actually been heard."""

    track: Track
    played_at: int
    seek: float
    state: str
    observed_at: float
    listened: float = 0.0
    stored: bool = False

    def advance(self, seek: float, state: str, now: float) -> bool:
        """Count what was heard since the last update; True unless it was plain playback
        (a pause, a resume or a jump), the moments worth saving."""
        moved, heard = seek - self.seek, 0.0
        if self.state == "playing":
            elapsed = max(0.0, now - self.observed_at)
            heard = max(0.0, min(moved, elapsed * SEEK_AHEAD_RATIO + SEEK_AHEAD_SECONDS))
            self.listened += heard
        changed = state != self.state or abs(moved - heard) > SEEK_AHEAD_SECONDS
        self.seek, self.state, self.observed_at = seek, state, now
        return changed

    def finish(self, now: float, into_next: float) -> None:
        """The zone moved on to another track, `into_next` seconds into it: the end of this
        one was heard if it was playing and the time since it was last seen allows."""
        if self.state != "playing" or not self.track.length or now - self.observed_at > FINISH_WITHIN:
            return
        elapsed = max(0.0, now - self.observed_at - into_next)
        self.listened += max(0.0, min(self.track.length - self.seek, elapsed))

    @property
    def qualifies(self) -> bool:
        return not self.stored and bool(self.track.artist) and self.listened >= self.track.threshold

    def restarted(self, seek: float) -> bool:
        return seek < self.seek and seek < RESTART_WITHIN

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str) -> "Listening":
        fields = json.loads(text)
        return cls(**dict(fields, track=Track(**fields["track"])))


def listening_cursor(zone_id: str) -> str:
    return f"roon:listening:{zone_id}"


def text_of(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def zone_list(body: dict, key: str) -> list[dict]:
    """The entries of a zone list that carry a zone_id; anything else is skipped."""
    items = body.get(key)
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("zone_id"), str)]


def track_of(zone: dict) -> Track | None:
    now_playing = zone.get("now_playing")
    if not isinstance(now_playing, dict):
        return None
    lines = now_playing.get("three_line") or now_playing.get("two_line") or now_playing.get("one_line")
    if not isinstance(lines, dict) or not text_of(lines, "line1").strip():
        return None
    length = now_playing.get("length")
    return Track(
        artist=text_of(lines, "line2").strip(),
        title=text_of(lines, "line1").strip(),
        album=text_of(lines, "line3").strip(),
        length=float(length) if isinstance(length, (int, float)) and length > 0 else None,
    )


def seek_of(zone: dict) -> float | None:
    """Seconds into the track, or None when the zone does not say."""
    now_playing = zone.get("now_playing")
    for source in (now_playing if isinstance(now_playing, dict) else {}, zone):
        seek = source.get("seek_position")
        if isinstance(seek, (int, float)):
            return float(seek)
    return None
