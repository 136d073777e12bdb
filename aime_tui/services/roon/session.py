"""The `roon_tracker` service: a Roon extension that turns what the zones play into plays.

Owns the session with one Roon Core: finding it (the configured host, else SOOD
discovery), the MOO handshake (registry info, registration with that Core's token, the
transport zone subscription), the keepalive, the `com.roonlabs.status:1` service that
Roon's Settings → Extensions page shows, and the zones it reports as now playing. Play
detection itself is `listening.py`. It never retries by itself: a failed handshake
raises, a lost socket escapes the reader task, and the supervisor backs off and calls
`start()` again (the same tracker, so the plays in progress carry over).

Which Core: a configured `roon.host` wins. Without one, the discovery query goes out
and the saved core_id (the Core last registered with) is taken at once if it answers,
else the only Core that answered; several with none saved need the user to choose
(`roon.host`). When none answers yet, the service stays up saying so and asks again as
node-roon-api does (every 10 s for a minute, then every minute) until one does.

The whole handshake fits the start budget the supervisor gives it (the restore
timeout). A Core keeps the register request open until the user enables the extension
in Roon → Settings → Extensions: then `start()` still succeeds, connected, and reports
attention (what to do) instead of failing; when the Core answers, the token is saved,
the zones subscribed and the attention cleared, with no retry and nothing to press.

Plays belong to the Core's core_id (the name is only shown) and the token is kept per
Core (store/roon_cores.py). Each zone's play in progress is kept in the store's cursors
as `roon:listening:{zone_id}`, written when it starts, pauses, resumes, jumps or is
stored (the play and that mark in one transaction), so a restarted tracker carries on
with the same play, never storing it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from aime_tui import __version__
from aime_tui.clients import sood
from aime_tui.clients.moo import (
    CLOSE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    MooConnectError,
    MooConnection,
    MooConnectionLost,
    MooError,
    MooMessage,
    MooRequest,
    MooSubscription,
)
from aime_tui.config import Config, RoonConfig, mask_secret
from aime_tui.core.faults import NeedsAttention, NotSetUp
from aime_tui.services.base import Service
from aime_tui.services.registry import setting_hint
from aime_tui.services.roon.listening import (
    RESUME_WITHIN,
    Listening,
    listening_cursor,
    seek_of,
    text_of,
    track_of,
    zone_list,
)
from aime_tui.store import roon_cores
from aime_tui.store.database import Play, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

REGISTRY_INFO = "com.roonlabs.registry:1/info"
REGISTER = "com.roonlabs.registry:1/register"
TRANSPORT = "com.roonlabs.transport:2"
SUBSCRIBE_ZONES = f"{TRANSPORT}/subscribe_zones"
PING_SERVICE = "com.roonlabs.ping:1"
STATUS_SERVICE = "com.roonlabs.status:1"
# Attention texts say the whole situation: the dashboard shows them as they are.
APPROVE_HINT = (
    "approve aime-tui in Roon → Settings → Extensions; connected, it carries on by itself once approved"
)
#: A Core met for the first time while others have approved aime-tui before.
NEW_CORE_HINT = (
    "new Roon Core {name}: approve aime-tui in its Roon → Settings → Extensions"
    " (each Core approves on its own); connected, it carries on by itself once approved"
)
# Approved before (a token is saved), yet the Core has not answered: busy, or the
# extension was disabled since.
REAPPROVE_HINT = (
    "waiting for the Roon Core to accept aime-tui; if it was disabled, enable it in"
    " Roon → Settings → Extensions (connected, it carries on by itself)"
)
LOOKING_HINT = (
    "no Roon Core found on this network yet; still looking (is the Core on? on another"
    " network, set roon.host in {where})"
)

EXTENSION = {
    "extension_id": "com.aime.tui",
    "display_name": "aime-tui",
    "display_version": __version__,
    "publisher": "aime-tui",
    "email": "aime-tui@localhost",
    "required_services": [TRANSPORT],
    "optional_services": [],
    "provided_services": [PING_SERVICE, STATUS_SERVICE],
}

#: The supervisor's default start budget (the restore timeout), for a tracker built without one.
DEFAULT_START_TIMEOUT = 3.0
#: The handshake ends this much (at most a tenth of the budget) before the supervisor's own
#: timeout, so a Core too slow for it fails with an error naming the step that stalled.
HANDSHAKE_MARGIN = 0.25
#: node-roon-api asks again every 10 s for the first minute, then every minute.
REQUERY_EVERY = 10.0
REQUERY_FAST_TIMES = 6
REQUERY_SLOW_EVERY = 60.0


def handshake_budget(start_timeout: float) -> float:
    """Seconds the whole handshake may take within a start budget of `start_timeout`."""
    return start_timeout - min(HANDSHAKE_MARGIN, start_timeout / 10)


class RoonTracker(Service):
    name = "roon_tracker"
    #: At most this many seconds waiting for the Core to answer the registration before
    #: telling the user to approve the extension (an approved one answers at once); the
    #: wait goes on in the background after that.
    approval_wait = 1.5
    #: Seconds replies to a discovery query are gathered before choosing, unless the
    #: saved Core answers first (a Core on the same network answers in milliseconds).
    discovery_window = 0.5
    #: The re-query schedule while no Core answers (tests shorten it).
    requery_every = REQUERY_EVERY
    requery_slow_every = REQUERY_SLOW_EVERY
    #: The WebSocket keepalive: a dead or half-open socket is noticed within their sum
    #: (10 + 6 + 2 s: well inside 20 s, where TCP alone takes minutes).
    keepalive_interval = KEEPALIVE_INTERVAL
    keepalive_timeout = KEEPALIVE_TIMEOUT
    close_timeout = CLOSE_TIMEOUT

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
        self._discovery: sood.SoodClient | None = None
        self._running = False
        #: Where the Core is: the configured host, or the one discovery found.
        self._endpoint: tuple[str, int] | None = None
        self._core_id: str | None = None
        self._core_name: str | None = None
        self._zones: dict[str, dict] = {}
        # Kept across reconnects, so a track heard before a drop is neither lost nor stored twice.
        self._listening: dict[str, Listening] = {}
        self._tracks_found = 0
        self._core_plays = 0
        self._last_error: str | None = None
        self._status_subscribers: dict[Any, MooRequest] = {}
        self._status_shown: tuple[str, bool] | None = None

    def reconfigure(self, config: Config) -> None:
        self._config = config.roon
        self.handshake_timeout = handshake_budget(config.restore_timeout)

    @property
    def where(self) -> str:
        host, port = self._endpoint or (self._config.host, self._config.port)
        return f"{host}:{port}" if host else "(not found yet)"

    @property
    def _config_place(self) -> str:
        return str(self._config_path) if self._config_path is not None else "the config file"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        # The budget runs from here, so the step that stalled is named before the
        # supervisor's own start timeout fires.
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        await self.stop()  # a restart after a fault must not leak the previous session
        try:
            if self._config.host:
                self._endpoint = (self._config.host, self._config.port)
                await self._open_session(deadline)
            else:
                await self._find_core(deadline)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._last_error = str(exc)
            # A Core that stopped answering would not answer a closing handshake either.
            self._abort_session()
            await self.stop()
            raise
        self._running = True
        self._last_error = None
        if self._connection is None:
            log.info("roon_tracker: no Roon Core found yet; still looking")
        elif self.attention is not None:
            log.info("roon_tracker: connected to %s at %s, waiting for approval", self._core_name, self.where)
        else:
            log.info(
                "roon_tracker: connected to %s at %s, %d zones", self._core_name, self.where, len(self._zones)
            )

    async def stop(self) -> None:
        self._running = False
        self._close_discovery()
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closing first lets the reader drain the socket through the closing handshake.
            await connection.close()
        await self.cancel_tasks()
        self._zones.clear()
        self._status_subscribers.clear()
        self._status_shown = None
        self._core_name = None
        self._core_id = None
        if not self._config.host:
            self._endpoint = None  # found again at the next start: the address may change
        self.clear_attention()

    def status(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "awaiting_approval": self.attention is not None and self._connection is not None,
            "core": self._core_name,
            "core_id": self._core_id,
            "endpoint": self.where if self._endpoint else None,
            "zones": len(self._zones),
            "zones_counted": sum(self._counts(zone) for zone in self._zones.values()),
            "now_playing": self._now_playing(),
            "tracks_found": self._tracks_found,
            "plays_total": self._store.play_total("roon"),
            "core_plays": self._core_plays,
            "last_error": self._last_error,
        }

    # -- finding the Core -----------------------------------------------------------

    def _discovery_targets(self) -> tuple[tuple[str, int], ...]:
        targets = self._config.discovery
        if targets == ():  # AIME_ROON_DISCOVERY=off: the host is the only way, and it is not set
            raise NotSetUp(setting_hint("roon.host", self._config_path))
        return sood.default_targets() if targets is None else targets

    async def _find_core(self, deadline: float) -> None:
        """Ask the network for Cores and open a session with the right one; with none yet,
        stay up saying so and keep asking in the background."""
        client = await sood.SoodClient(self._discovery_targets()).open()
        self._discovery = client
        saved = await roon_cores.saved_core_id(self._store)
        client.query()
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        core = await self._choose(client, saved, min(self.discovery_window, left / 4))
        if core is None:
            self.report_attention(LOOKING_HINT.format(where=self._config_place))
            self.spawn(self._keep_looking(client, saved), "discovery")
            return
        self._close_discovery()
        self._endpoint = (core.host, core.port)
        await self._open_session(deadline)

    async def _choose(self, client: sood.SoodClient, saved: str | None, window: float) -> sood.DiscoveredCore | None:
        """The saved Core as soon as it answers; else, after `window`, the only one; None if
        none answered. Several and none of them saved: the user must choose."""
        loop = asyncio.get_running_loop()
        until = loop.time() + window
        while saved not in client.cores and loop.time() < until:
            await client.wait_for_reply(until - loop.time())
        cores = client.cores
        if saved in cores:
            return cores[saved]
        if len(cores) > 1:
            names = ", ".join(sorted(f"{core.name} ({core.host}:{core.port})" for core in cores.values()))
            raise NeedsAttention(f"several Cores found: {names}; {setting_hint('roon.host', self._config_path)}")
        return next(iter(cores.values()), None)

    async def _keep_looking(self, client: sood.SoodClient, saved: str | None) -> None:
        asked = 1
        while not client.cores:
            every = self.requery_every if asked < REQUERY_FAST_TIMES else self.requery_slow_every
            if not await client.wait_for_reply(every):
                client.query()
                asked += 1
        # Others may answer just after the first: give them the same chance as at start.
        core = await self._choose(client, saved, self.discovery_window)
        assert core is not None
        self._close_discovery()
        self._endpoint = (core.host, core.port)
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        try:
            await self._open_session(deadline)
        except BaseException:
            self._abort_session()
            raise
        if self.attention is not None and self.attention.startswith("no Roon Core found"):
            self.report_attention(None, f"found Roon Core {self._core_name} at {self.where}")

    def _close_discovery(self) -> None:
        client, self._discovery = self._discovery, None
        if client is not None:
            client.close()

    # -- the session ----------------------------------------------------------------

    def _abort_session(self) -> None:
        if self._connection is not None:
            self._connection.abort()

    async def _open_session(self, deadline: float) -> None:
        url = f"ws://{self.where}/api"
        loop = asyncio.get_running_loop()
        try:
            connection = await self._within(
                MooConnection.connect(
                    url,
                    self._status_handlers(),
                    open_timeout=self.handshake_timeout,
                    ping_interval=self.keepalive_interval,
                    ping_timeout=self.keepalive_timeout,
                    close_timeout=self.close_timeout,
                ),
                "the connection",
                deadline,
            )
        except MooConnectError as exc:
            raise ConnectionError(f"cannot connect to Roon Core at {self.where}: {exc.reason}") from None
        self._connection = connection
        self.spawn(self._read(connection), "reader")

        info = await self._within(connection.request(REGISTRY_INFO), "registry info", deadline)
        core_id = text_of(info.body, "core_id")
        if not core_id:
            raise MooError(f"Roon Core at {self.where} did not say its core_id")
        self._core_id = core_id
        self._core_name = text_of(info.body, "display_name") or "Roon Core"
        others_approved = any(
            known.has_token and known.core_id != core_id for known in await roon_cores.known_cores(self._store)
        )
        token = await roon_cores.claim_core(self._store, core_id, self._core_name)
        self._core_plays = await roon_cores.count_core_plays(self._store, core_id)

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
            if token:
                hint = REAPPROVE_HINT
            elif others_approved:
                hint = NEW_CORE_HINT.format(name=self._core_name)
            else:
                hint = APPROVE_HINT
            self.report_attention(hint)
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
        """Take the Core's answer to the registration: save the token it gives, as its own."""
        if reply.name != "Registered":
            raise MooError(f"Roon Core at {self.where} refused to register aime-tui: {reply.name}")
        new_token = text_of(reply.body, "token")
        if not new_token:
            raise MooError(f"Roon Core at {self.where} registered aime-tui without a token")
        self._core_name = text_of(reply.body, "display_name") or self._core_name
        assert self._core_id is not None
        await roon_cores.save_registration(self._store, self._core_id, self._core_name or "Roon Core", new_token)
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

    # -- the status Roon shows (com.roonlabs.status:1) --------------------------------

    def _status_handlers(self) -> dict:
        async def subscribe(request: MooRequest) -> None:
            key = request.body.get("subscription_key") if isinstance(request.body, dict) else None
            self._status_subscribers[key] = request
            await request.send_continue("Subscribed", self._status_body())

        async def unsubscribe(request: MooRequest) -> None:
            key = request.body.get("subscription_key") if isinstance(request.body, dict) else None
            self._status_subscribers.pop(key, None)
            await request.send_complete("Unsubscribed")

        async def get(request: MooRequest) -> None:
            await request.send_complete("Success", self._status_body())

        return {
            f"{STATUS_SERVICE}/subscribe_status": subscribe,
            f"{STATUS_SERVICE}/unsubscribe_status": unsubscribe,
            f"{STATUS_SERVICE}/get_status": get,
        }

    def _status_line(self) -> tuple[str, bool]:
        """What the tracker does, in Roon's words for an extension: its collecting, nothing else."""
        if self._last_error:
            return self._last_error, True
        if not self._zones:
            return "connected; no zones yet", False
        counted = sum(self._counts(zone) for zone in self._zones.values())
        zones = f"{len(self._zones)} zone{'s' * (len(self._zones) != 1)}"
        if counted != len(self._zones):
            zones = f"{counted} of {zones}"
        plays = f"{self._core_plays:,} play{'s' * (self._core_plays != 1)}"
        return f"collecting: {plays}, {zones}", False

    def _status_body(self) -> dict:
        message, is_error = self._status_line()
        self._status_shown = (message, is_error)
        return {"message": message, "is_error": is_error}

    async def _publish_status(self) -> None:
        if not self._status_subscribers or self._status_line() == self._status_shown:
            return
        body = self._status_body()
        for request in list(self._status_subscribers.values()):
            try:
                await request.send_continue("Changed", body)
            except MooError:
                return  # the socket is gone; the reader says so

    # -- zones and plays ------------------------------------------------------------

    def _counts(self, zone: dict) -> bool:
        """Whether plays in this zone are stored (`[roon] zones`, by name or id; all if unset)."""
        wanted = self._config.zones
        if not wanted:
            return True
        name = str(zone.get("display_name") or "").casefold()
        return any(key == zone.get("zone_id") or key.casefold() == name for key in wanted)

    async def _apply_zones(self, name: str, body: Any) -> None:
        """Fold a Subscribed or Changed message into the zones, then look for plays."""
        body = body if isinstance(body, dict) else {}
        touched: list[str] = []
        if name == "Subscribed":
            self._zones = {zone["zone_id"]: zone for zone in zone_list(body, "zones")}
            for zone_id in set(self._listening) - set(self._zones):
                del self._listening[zone_id]
            touched = list(self._zones)
        elif name == "Changed":
            for removed in body.get("zones_removed") or []:
                zone_id = removed.get("zone_id") if isinstance(removed, dict) else removed
                self._zones.pop(zone_id, None)
                self._listening.pop(zone_id, None)
            for zone in zone_list(body, "zones_added") + zone_list(body, "zones_changed"):
                self._zones[zone["zone_id"]] = zone
                touched.append(zone["zone_id"])
            for change in zone_list(body, "zones_seek_changed"):
                zone = self._zones.get(change["zone_id"])
                if zone is None:
                    continue
                zone["seek_position"] = change.get("seek_position")
                if isinstance(zone.get("now_playing"), dict):
                    zone["now_playing"]["seek_position"] = change.get("seek_position")
                touched.append(change["zone_id"])
        touched = [zone_id for zone_id in touched if self._counts(self._zones[zone_id])]
        for zone_id in touched:
            if zone_id not in self._listening and track_of(self._zones[zone_id]) is not None:
                await self._recall(zone_id)
        now = self._clock()
        for zone_id in touched:
            plays, changed = self._observe(zone_id, now)
            cursor = listening_cursor(zone_id)
            listening = self._listening.get(zone_id)
            if plays:
                # The plays and the "stored" mark commit together.
                mark = (cursor, listening.dump()) if listening is not None else None
                added = await self._store.insert_plays(plays, cursor=mark)
                self._tracks_found += added
                self._core_plays += added
                for play in plays:
                    log.info("roon_tracker: played %s – %s", play.artist, play.title)
            elif changed and listening is not None:
                await self._store.set_cursor(cursor, listening.dump())
        await self._publish_status()

    async def _recall(self, zone_id: str) -> None:
        """Pick up the zone's play in progress from before a restart, if recent enough."""
        saved = await self._store.get_cursor(listening_cursor(zone_id))
        if saved is None:
            return
        try:
            listening = Listening.load(saved)
        except (ValueError, TypeError, KeyError):
            log.warning("roon_tracker: ignoring an unreadable saved play for zone %s", zone_id)
            return
        if self._clock() - listening.observed_at <= RESUME_WITHIN:
            self._listening[zone_id] = listening

    def _observe(self, zone_id: str, now: float) -> tuple[list[Play], bool]:
        """Account for what a zone did since it was last seen.

        Returns the plays that now qualify (the track before too, when the zone moved on
        having played it through), and whether the zone's play in progress changed in a
        way worth saving (started, paused, resumed, jumped).
        """
        zone = self._zones[zone_id]
        track = track_of(zone)
        current = self._listening.get(zone_id)
        plays: list[Play] = []
        if track is None:
            if current is not None:
                current.finish(now, 0.0)
                plays += self._take(current, zone.get("display_name") or zone_id)
            self._listening.pop(zone_id, None)
            return plays, False
        seek, state = seek_of(zone), str(zone.get("state", "stopped"))
        if current is None or current.track != track or (seek is not None and current.restarted(seek)):
            # First sight of this track: it started `seek` seconds ago, nothing heard yet.
            seek = seek or 0.0
            if current is not None:
                current.finish(now, seek)
                plays += self._take(current, zone.get("display_name") or zone_id)
            current = Listening(track, int(now - seek), seek, state, now)
            self._listening[zone_id] = current
            changed = True
        else:
            # An update without a position (a zone loading) leaves the position where it was.
            changed = current.advance(current.seek if seek is None else seek, state, now)
        taken = self._take(current, zone.get("display_name") or zone_id)
        return plays + taken, changed or bool(taken)

    def _take(self, listening: Listening, zone_name: str) -> list[Play]:
        if not listening.qualifies or self._core_id is None:
            return []
        listening.stored = True
        track = listening.track
        return [Play(
            "roon", self._core_id, listening.played_at, track.artist, track.title, track.album,
            zone=zone_name, length=track.length,
        )]

    def _now_playing(self) -> list[dict[str, Any]]:
        entries = []
        for zone_id, zone in self._zones.items():
            track = track_of(zone)
            if track is None:
                continue
            entries.append(
                {
                    "zone": zone.get("display_name") or zone_id,
                    "state": zone.get("state"),
                    "artist": track.artist,
                    "title": track.title,
                    "seek": seek_of(zone),
                    "length": track.length,
                    "counted": self._counts(zone),
                }
            )
        return sorted(entries, key=lambda entry: entry["zone"])
