"""The `roon_tracker` service: a Roon extension that turns what the zones play into plays.

Owns the MOO session with one Roon Core (registry info, registration with the saved
token, the transport zone subscription), the zones it reports as now playing, and play
detection: a track becomes a play once it has been heard for half its length or four
minutes, whichever comes first. Only time spent playing counts, and seek progress
counts only as fast as time passes, so a jump forward is a seek, not listening. It
never retries by itself: a failed handshake raises, a lost socket escapes the reader
task, and the supervisor backs off and calls `start()` again.

The whole handshake fits the start budget the supervisor gives it (the restore
timeout), so a slow Core within that budget is waited for. A Core keeps the register
request open until the user enables the extension in Roon → Settings → Extensions:
then `start()` still succeeds, connected, and reports attention (what to do) instead
of failing; when the Core answers, the token is saved, the zones subscribed and the
attention cleared, with no retry and nothing for the user to press.

Each zone's play in progress (which track, when it started, how much was heard, whether
it was stored) is kept in the store's cursors as `roon:listening:{zone_id}`, written when
it starts, pauses, resumes, jumps or is stored (the play and that mark in one
transaction). A tracker restarted mid-track (a crash, a wake, a new process) carries on
with the same play, its start time unchanged, so the play is never stored twice and the
listening before the restart still counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from aime_tui import __version__
from aime_tui.clients.moo import (
    MooConnectError,
    MooConnection,
    MooConnectionLost,
    MooError,
    MooMessage,
    MooSubscription,
)
from aime_tui.config import Config, RoonConfig, mask_secret
from aime_tui.core.faults import NeedsAttention
from aime_tui.services.base import Service
from aime_tui.services.registry import setting_hint
from aime_tui.store.database import Play, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

REGISTRY_INFO = "com.roonlabs.registry:1/info"
REGISTER = "com.roonlabs.registry:1/register"
TRANSPORT = "com.roonlabs.transport:2"
SUBSCRIBE_ZONES = f"{TRANSPORT}/subscribe_zones"
TOKEN_SETTING = "roon.token"
# Attention texts say the whole situation: the dashboard shows them as they are.
APPROVE_HINT = (
    "approve aime-tui in Roon → Settings → Extensions; connected, it carries on by itself once approved"
)
# Approved before (a token is saved), yet the Core has not answered: busy, or the
# extension was disabled since.
REAPPROVE_HINT = (
    "waiting for the Roon Core to accept aime-tui; if it was disabled, enable it in"
    " Roon → Settings → Extensions (connected, it carries on by itself)"
)

EXTENSION = {
    "extension_id": "com.aime.tui",
    "display_name": "aime-tui",
    "display_version": __version__,
    "publisher": "aime-tui",
    "email": "aime-tui@localhost",
    "required_services": [TRANSPORT],
    "optional_services": [],
    "provided_services": ["com.roonlabs.ping:1"],
}

#: The supervisor's default start budget (the restore timeout), for a tracker built without one.
DEFAULT_START_TIMEOUT = 3.0
#: The handshake ends this much (at most a tenth of the budget) before the supervisor's own
#: timeout, so a Core too slow for it fails with an error naming the step that stalled.
HANDSHAKE_MARGIN = 0.25

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


@dataclass(frozen=True)
class _Track:
    artist: str
    title: str
    album: str
    length: float | None

    @property
    def threshold(self) -> float:
        return min(self.length / 2, PLAY_CAP) if self.length else PLAY_CAP


@dataclass
class _Listening:
    """How much of the track a zone is on has actually been heard."""

    track: _Track
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

    def restarted(self, seek: float) -> bool:
        return seek < self.seek and seek < RESTART_WITHIN

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str) -> "_Listening":
        fields = json.loads(text)
        return cls(**dict(fields, track=_Track(**fields["track"])))


def handshake_budget(start_timeout: float) -> float:
    """Seconds the whole handshake may take within a start budget of `start_timeout`."""
    return start_timeout - min(HANDSHAKE_MARGIN, start_timeout / 10)


class RoonTracker(Service):
    name = "roon_tracker"
    #: At most this many seconds waiting for the Core to answer the registration before
    #: telling the user to approve the extension (an approved one answers at once); the
    #: wait goes on in the background after that.
    approval_wait = 1.5

    def __init__(
        self,
        config: RoonConfig,
        store: Store,
        *,
        config_path: Path | None = None,
        clock=time.time,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        super().__init__()
        #: Seconds the whole handshake (connect, info, register, subscribe) may take, from
        #: the time the supervisor gives `start()` (the restore timeout).
        self.handshake_timeout = handshake_budget(start_timeout)
        self._config = config
        self._store = store
        self._config_path = config_path
        self._clock = clock
        self._connection: MooConnection | None = None
        self._running = False
        self._core_name: str | None = None
        self._account = ""
        self._zones: dict[str, dict] = {}
        # Kept across reconnects, so a track heard before a drop is neither lost nor stored twice.
        self._listening: dict[str, _Listening] = {}
        self._tracks_found = 0
        self._last_error: str | None = None

    def reconfigure(self, config: Config) -> None:
        self._config = config.roon
        self.handshake_timeout = handshake_budget(config.restore_timeout)

    @property
    def where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if not self._config.host:
            raise NeedsAttention(setting_hint("roon.host", self._config_path))
        # The budget runs from here, so the step that stalled is named before the
        # supervisor's own start timeout fires.
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        await self.stop()  # a restart after a fault must not leak the previous session
        try:
            await self._open_session(deadline)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._last_error = str(exc)
            # A Core that stopped answering would not answer a closing handshake either.
            self._abort_session()
            await self.stop()
            raise
        self._running = True
        self._last_error = None
        if self.attention is not None:
            log.info("roon_tracker: connected to %s at %s, waiting for approval", self._core_name, self.where)
        else:
            log.info(
                "roon_tracker: connected to %s at %s, %d zones", self._core_name, self.where, len(self._zones)
            )

    async def stop(self) -> None:
        self._running = False
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closing first lets the reader drain the socket through the closing handshake.
            await connection.close()
        await self.cancel_tasks()
        self._zones.clear()
        self._core_name = None
        self.clear_attention()

    def status(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "awaiting_approval": self.attention is not None,
            "core": self._core_name,
            "zones": len(self._zones),
            "now_playing": self._now_playing(),
            "tracks_found": self._tracks_found,
            "plays_total": self._store.play_total("roon"),
            "last_error": self._last_error,
        }

    # -- the session ----------------------------------------------------------------

    def _abort_session(self) -> None:
        if self._connection is not None:
            self._connection.abort()

    async def _open_session(self, deadline: float) -> None:
        token = await self._store.get_setting(TOKEN_SETTING)
        url = f"ws://{self.where}/api"
        loop = asyncio.get_running_loop()
        try:
            connection = await self._within(
                MooConnection.connect(url, open_timeout=self.handshake_timeout), "the connection", deadline
            )
        except MooConnectError as exc:
            raise ConnectionError(f"cannot connect to Roon Core at {self.where}: {exc.reason}") from None
        self._connection = connection
        self.spawn(self._read(connection), "reader")

        info = await self._within(connection.request(REGISTRY_INFO), "registry info", deadline)
        self._core_name = _text(info.body, "display_name") or "Roon Core"

        registration = dict(EXTENSION, token=token) if token else dict(EXTENSION)
        registering = asyncio.ensure_future(connection.request(REGISTER, registration))
        # Stopped before the background wait ran, a lost connection is nobody's news.
        registering.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            # A Core answers at once for an approved extension, and only once the user has
            # enabled it otherwise. Half of what is left of the budget at most: an answer
            # at the end of the wait still leaves time to subscribe. With a saved token
            # the extension is approved: a slow answer is a busy Core, not a question
            # for the user, so it gets the same half of the budget without the cap.
            left = max(0.0, deadline - loop.time()) / 2
            wait = left if token else min(self.approval_wait, left)
            await asyncio.wait({registering}, timeout=wait)
        except BaseException:
            registering.cancel()
            raise
        if not registering.done():
            # Connected and waiting: carry on in the background, and say what to do.
            self.spawn(self._await_approval(connection, registering, token), "approval")
            self.report_attention(REAPPROVE_HINT if token else APPROVE_HINT)
            return
        try:
            reply = registering.result()
        except MooConnectionLost as exc:
            raise self._lost_during_handshake(exc) from None
        await self._registered(reply, token)
        await self._subscribe_zones(connection, deadline)

    async def _await_approval(
        self, connection: MooConnection, registering: asyncio.Future[MooMessage], token: str | None
    ) -> None:
        """Wait as long as it takes for the Core to answer the registration, then subscribe."""
        try:
            reply = await registering
            await self._registered(reply, token)
            deadline = asyncio.get_running_loop().time() + self.handshake_timeout
            await self._subscribe_zones(connection, deadline)
        except Exception as exc:
            if connection.closed:
                return  # the reader reports the lost socket, or stop() closed it
            raise self._broken(exc) from None
        log.info(
            "roon_tracker: approved; connected to %s at %s, %d zones",
            self._core_name, self.where, len(self._zones),
        )
        self.report_attention(None, "approved in Roon")

    async def _registered(self, reply: MooMessage, token: str | None) -> None:
        """Take the Core's answer to the registration: save the token it gives."""
        if reply.name != "Registered":
            raise MooError(f"Roon Core at {self.where} refused to register aime-tui: {reply.name}")
        new_token = _text(reply.body, "token")
        if not new_token:
            raise MooError(f"Roon Core at {self.where} registered aime-tui without a token")
        if new_token != token:
            await self._store.set_setting(TOKEN_SETTING, new_token)
        self._core_name = _text(reply.body, "display_name") or self._core_name
        self._account = self._core_name
        log.info("roon_tracker: registered with %s (token %s)", self._core_name, mask_secret(new_token))

    async def _subscribe_zones(self, connection: MooConnection, deadline: float) -> None:
        subscription = await self._within(
            connection.subscribe(SUBSCRIBE_ZONES, {"subscription_key": 1}), "the zone subscription", deadline
        )
        first = await self._within(anext(subscription), "the zone subscription", deadline)
        if first.name != "Subscribed":
            raise MooError(f"Roon Core at {self.where} refused the zone subscription: {first.name}")
        await self._apply_zones(first.name, first.body)
        self.spawn(self._follow_zones(subscription), "zones")

    async def _within(self, step: Awaitable[T], what: str, deadline: float) -> T:
        """Await one handshake step before the handshake's deadline, with errors naming the Core."""
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError:
            raise TimeoutError(
                f"Roon Core at {self.where}: no answer for {what}"
                f" (handshake timed out after {self.handshake_timeout:g} s)"
            ) from None
        except MooConnectionLost as exc:
            raise self._lost_during_handshake(exc) from None

    def _lost_during_handshake(self, exc: MooConnectionLost) -> ConnectionError:
        return ConnectionError(
            f"Roon Core at {self.where} closed the connection during the handshake ({exc})"
        )

    async def _read(self, connection: MooConnection) -> None:
        try:
            await connection.run()
        except MooConnectionLost as exc:
            lost = ConnectionError(f"lost the connection to Roon Core at {self.where}: {exc}")
            raise self._broken(lost) from None
        except MooError as exc:
            raise self._broken(MooError(f"Roon Core at {self.where}: {exc}")) from exc

    async def _follow_zones(self, subscription: MooSubscription) -> None:
        try:
            async for reply in subscription:
                if reply.verb == "COMPLETE":
                    raise self._broken(
                        MooError(f"Roon Core at {self.where} ended the zone subscription ({reply.name})")
                    )
                await self._apply_zones(reply.name, reply.body)
        except MooConnectionLost:
            return  # the reader reports the lost socket; once is enough

    def _broken(self, exc: Exception) -> Exception:
        self._running = False
        self._last_error = str(exc)
        return exc

    # -- zones and plays ------------------------------------------------------------

    async def _apply_zones(self, name: str, body: Any) -> None:
        """Fold a Subscribed or Changed message into the zones, then look for plays."""
        body = body if isinstance(body, dict) else {}
        touched: list[str] = []
        if name == "Subscribed":
            self._zones = {zone["zone_id"]: zone for zone in _zone_list(body, "zones")}
            for zone_id in set(self._listening) - set(self._zones):
                del self._listening[zone_id]
            touched = list(self._zones)
        elif name == "Changed":
            for removed in body.get("zones_removed") or []:
                zone_id = removed.get("zone_id") if isinstance(removed, dict) else removed
                self._zones.pop(zone_id, None)
                self._listening.pop(zone_id, None)
            for zone in _zone_list(body, "zones_added") + _zone_list(body, "zones_changed"):
                self._zones[zone["zone_id"]] = zone
                touched.append(zone["zone_id"])
            for change in _zone_list(body, "zones_seek_changed"):
                zone = self._zones.get(change["zone_id"])
                if zone is None:
                    continue
                zone["seek_position"] = change.get("seek_position")
                if isinstance(zone.get("now_playing"), dict):
                    zone["now_playing"]["seek_position"] = change.get("seek_position")
                touched.append(change["zone_id"])
        for zone_id in touched:
            if zone_id not in self._listening and _track_of(self._zones[zone_id]) is not None:
                await self._recall(zone_id)
        now = self._clock()
        for zone_id in touched:
            play, changed = self._observe(zone_id, now)
            if play is not None:
                # The play and its "stored" mark commit together.
                cursor = (_listening_cursor(zone_id), self._listening[zone_id].dump())
                self._tracks_found += await self._store.insert_plays([play], cursor=cursor)
                log.info("roon_tracker: played %s – %s", play.artist, play.title)
            elif changed:
                await self._store.set_cursor(_listening_cursor(zone_id), self._listening[zone_id].dump())

    async def _recall(self, zone_id: str) -> None:
        """Pick up the zone's play in progress from before a restart, if recent enough."""
        saved = await self._store.get_cursor(_listening_cursor(zone_id))
        if saved is None:
            return
        try:
            listening = _Listening.load(saved)
        except (ValueError, TypeError, KeyError):
            log.warning("roon_tracker: ignoring an unreadable saved play for zone %s", zone_id)
            return
        if self._clock() - listening.observed_at <= RESUME_WITHIN:
            self._listening[zone_id] = listening

    def _observe(self, zone_id: str, now: float) -> tuple[Play | None, bool]:
        """Account for what a zone did since it was last seen.

        Returns a Play once the track qualifies, and whether the zone's play in progress
        changed in a way worth saving (started, paused, resumed, jumped).
        """
        zone = self._zones[zone_id]
        track = _track_of(zone)
        if track is None:
            self._listening.pop(zone_id, None)
            return None, False
        seek, state = _seek_of(zone), str(zone.get("state", "stopped"))
        current = self._listening.get(zone_id)
        if current is None or current.track != track or (seek is not None and current.restarted(seek)):
            # First sight of this track: it started `seek` seconds ago, nothing heard yet.
            seek = seek or 0.0
            current = _Listening(track, int(now - seek), seek, state, now)
            self._listening[zone_id] = current
            changed = True
        else:
            # An update without a position (a zone loading) leaves the position where it was.
            changed = current.advance(current.seek if seek is None else seek, state, now)
        if current.stored or not track.artist or current.listened < track.threshold:
            return None, changed
        current.stored = True
        zone_name = zone.get("display_name") or zone_id
        return Play(
            "roon", self._account, current.played_at, track.artist, track.title, track.album,
            zone=zone_name, length=track.length,
        ), True

    def _now_playing(self) -> list[dict[str, Any]]:
        entries = []
        for zone_id, zone in self._zones.items():
            track = _track_of(zone)
            if track is None:
                continue
            entries.append(
                {
                    "zone": zone.get("display_name") or zone_id,
                    "state": zone.get("state"),
                    "artist": track.artist,
                    "title": track.title,
                    "seek": _seek_of(zone),
                    "length": track.length,
                }
            )
        return sorted(entries, key=lambda entry: entry["zone"])


def _listening_cursor(zone_id: str) -> str:
    return f"roon:listening:{zone_id}"


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _zone_list(body: dict, key: str) -> list[dict]:
    """The entries of a zone list that carry a zone_id; anything else is skipped."""
    items = body.get(key)
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("zone_id"), str)]


def _track_of(zone: dict) -> _Track | None:
    now_playing = zone.get("now_playing")
    if not isinstance(now_playing, dict):
        return None
    lines = now_playing.get("three_line") or now_playing.get("two_line") or now_playing.get("one_line")
    if not isinstance(lines, dict) or not _text(lines, "line1").strip():
        return None
    length = now_playing.get("length")
    return _Track(
        artist=_text(lines, "line2").strip(),
        title=_text(lines, "line1").strip(),
        album=_text(lines, "line3").strip(),
        length=float(length) if isinstance(length, (int, float)) and length > 0 else None,
    )


def _seek_of(zone: dict) -> float | None:
    """Seconds into the track, or None when the zone does not say."""
    now_playing = zone.get("now_playing")
    for source in (now_playing if isinstance(now_playing, dict) else {}, zone):
        seek = source.get("seek_position")
        if isinstance(seek, (int, float)):
            return float(seek)
    return None
