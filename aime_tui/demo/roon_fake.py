"""A loopback Roon Core: the MOO WebSocket an extension talks to, with zones that play,
and the SOOD discovery replies that lead to it.

Owns the fake Core used by `--demo` and by the tests. It speaks MOO/1 on `/api` like a
real Core: `registry:1/info`, `registry:1/register` (issuing tokens, optionally waiting
for the user's approval), `transport:2/subscribe_zones` (Subscribed, then Changed with
zones_seek_changed every tick, zones_changed on a new track, zones_added and
zones_removed as zones come and go). It pings every connection from the moment it
opens (registered or not, as a real Core does), and once an extension that provides
`com.roonlabs.status:1` is registered it subscribes to its status, as the Extensions
page does. Zones play deterministic playlists; `time_scale` makes tracks run fast for
tests. Faults can be injected: slow handshakes, refused connections, dropped sockets,
half-open sockets (nothing more sent or read, nothing closed), a rename.

`FakeSoodResponder` answers SOOD queries on a loopback UDP port for one or more fake
Cores, the way a Core on the network answers the multicast query.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from dataclasses import dataclass

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from aime_tui.clients import sood
from aime_tui.clients.moo import PING, WIRE_LOG, MooConnection, MooError, MooRequest

log = logging.getLogger(__name__)

INFO = "com.roonlabs.registry:1/info"
REGISTER = "com.roonlabs.registry:1/register"
SUBSCRIBE_ZONES = "com.roonlabs.transport:2/subscribe_zones"
STATUS_SERVICE = "com.roonlabs.status:1"
CORE_VERSION = "2.0 (build 1470) production"

ZONE_NAMES = ("Living Room", "Kitchen", "Study", "Bedroom", "Garden", "Office")


@dataclass(frozen=True)
class FakeTrack:
    artist: str
    title: str
    album: str
    length: int


CATALOGUE = (
    FakeTrack("Nils Frahm", "Says", "Spaces", 499),
    FakeTrack("Radiohead", "Weird Fishes/Arpeggi", "In Rainbows", 318),
    FakeTrack("Bonobo", "Kerala", "Migration", 243),
    FakeTrack("Massive Attack", "Teardrop", "Mezzanine", 330),
    FakeTrack("Björk", "Jóga", "Homogenic", 305),
    FakeTrack("Miles Davis", "So What", "Kind of Blue", 562),
    FakeTrack("Portishead", "Roads", "Dummy", 305),
    FakeTrack("Khruangbin", "Maria También", "Con Todo El Mundo", 191),
    FakeTrack("Ólafur Arnalds", "Saman", "re:member", 176),
    FakeTrack("Daft Punk", "Digital Love", "Discovery", 301),
    FakeTrack("Boards of Canada", "Roygbiv", "Music Has the Right to Children", 151),
    FakeTrack("Fleetwood Mac", "Dreams", "Rumours", 257),
    FakeTrack("Aphex Twin", "Avril 14th", "Drukqs", 125),
    FakeTrack("Sault", "Wildfires", "Untitled (Black Is)", 262),
    FakeTrack("Kraftwerk", "Computer Love", "Computer World", 435),
    FakeTrack("Floating Points", "Silhouettes (I, II & III)", "Elaenia", 643),
    FakeTrack("The xx", "Intro", "xx", 127),
    FakeTrack("Talk Talk", "Ascension Day", "Laughing Stock", 360),
    FakeTrack("Mulatu Astatke", "Yègellé Tezeta", "Éthiopiques 4", 191),
    FakeTrack("Beach House", "Space Song", "Depression Cherry", 320),
    FakeTrack("Caribou", "Can't Do Without You", "Our Love", 237),
    FakeTrack("Alice Coltrane", "Journey in Satchidananda", "Journey in Satchidananda", 399),
    FakeTrack("Burial", "Archangel", "Untrue", 239),
    FakeTrack("Joni Mitchell", "A Case of You", "Blue", 262),
)


class _FakeZone:
    def __init__(self, zone_id: str, name: str, playlist: list[FakeTrack]) -> None:
        self.zone_id = zone_id
        self.name = name
        self.playlist = playlist
        self.position = 0
        self.track = playlist[0]
        self.seek = 0.0
        self.state = "playing"

    def next_track(self) -> None:
        self.position = (self.position + 1) % len(self.playlist)
        self.track = self.playlist[self.position]
        self.seek = 0.0

    def seek_json(self) -> dict:
        return {
            "zone_id": self.zone_id,
            "seek_position": round(self.seek, 3),
            "queue_time_remaining": round(self.track.length - self.seek, 3),
        }

    def to_json(self) -> dict:
        """The zone as transport:2 describes it."""
        track = self.track
        output = {
            "output_id": f"17{self.zone_id[2:]}",
            "zone_id": self.zone_id,
            "display_name": self.name,
            "state": self.state,
            "volume": {
                "type": "number", "min": 0, "max": 100, "value": 42, "step": 1, "is_muted": False,
            },
        }
        return {
            "zone_id": self.zone_id,
            "display_name": self.name,
            "outputs": [output],
            "state": self.state,
            "is_previous_allowed": True,
            "is_next_allowed": True,
            "is_pause_allowed": self.state == "playing",
            "is_play_allowed": self.state != "playing",
            "is_seek_allowed": True,
            "queue_items_remaining": len(self.playlist) - self.position - 1,
            "queue_time_remaining": round(track.length - self.seek, 3),
            "settings": {"loop": "disabled", "shuffle": False, "auto_radio": True},
            "seek_position": round(self.seek, 3),
            "now_playing": {
                "seek_position": round(self.seek, 3),
                "length": track.length,
                "image_key": f"{zlib.crc32(f'{track.artist}/{track.album}'.encode()):08x}",
                "one_line": {"line1": f"{track.title} - {track.artist}"},
                "two_line": {"line1": track.title, "line2": track.artist},
                "three_line": {"line1": track.title, "line2": track.artist, "line3": track.album},
            },
        }


class FakeRoonCore:
    """A Roon-Core-shaped MOO server on loopback. Start it, point the tracker at `port`."""

    def __init__(
        self,
        *,
        zones: int = 2,
        seed: int = 7,
        require_approval: bool = False,
        ping_interval: float = 10.0,
        tick: float = 1.0,
        time_scale: float = 1.0,
        core_name: str = "Demo Core",
    ) -> None:
        if not 1 <= zones <= len(ZONE_NAMES):
            raise ValueError(f"zones must be between 1 and {len(ZONE_NAMES)}")
        self._random = random.Random(seed)
        self.core_id = self._hex_id("c0", 32)
        self.core_name = core_name
        self._zones = [
            _FakeZone(self._hex_id("16", 36), name, self._random.sample(CATALOGUE, len(CATALOGUE)))
            for name in ZONE_NAMES[:zones]
        ]
        self.require_approval = require_approval
        self.ping_interval = ping_interval
        self.tick = tick
        self.time_scale = time_scale
        self.pings_answered = 0
        #: Pings answered by connections that had not registered (yet).
        self.pings_before_registration = 0
        #: The latest status each extension showed on the Extensions page, by extension id.
        self.extension_status: dict[str, dict] = {}
        #: The token each register request presented (None for a first registration).
        self.registrations: list[str | None] = []
        self._tokens: set[str] = set()
        self._approved = asyncio.Event()
        self._handshake_delays: list[float] = []
        self._unreachable_until = 0.0
        self._silent_until = 0.0
        self._sessions: set[_Session] = set()
        self._subscribers: set[asyncio.Queue[dict]] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task | None = None

    def _hex_id(self, prefix: str, length: int) -> str:
        return prefix + f"{self._random.getrandbits(4 * length):0{length}x}"[: length - len(prefix)]

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(
            self._serve,
            host,
            port,
            process_request=self._screen_request,
            logger=WIRE_LOG,
            ping_interval=None,
            close_timeout=1.0,
        )
        self._ticker = asyncio.create_task(self._tick_forever(), name="fake-roon:tick")

    @property
    def connected(self) -> int:
        """How many extensions hold a connection to the Core now."""
        return len(self._sessions)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Roon Core is not started")
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for session in list(self._sessions):
            if session.frozen:
                session.connection.abort()  # its peer is long gone; nothing would close it
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- fault injection ------------------------------------------------------------

    def approve(self) -> None:
        """The user enables the extension in Settings → Extensions."""
        self._approved.set()

    def rename(self, name: str) -> None:
        """The user renames the Core in Roon's settings; its core_id stays."""
        self.core_name = name

    def half_open(self) -> int:
        """Every open connection goes quiet, as when the Core's box sleeps or the Wi-Fi goes:
        nothing more is sent or read (pings unanswered), and nothing is closed. Returns how
        many. New connections are served as usual."""
        sessions = [session for session in self._sessions if not session.frozen]
        for session in sessions:
            session.freeze()
        return len(sessions)

    async def drop_connections(self) -> None:
        """Cut every client's socket without a closing handshake."""
        sessions = list(self._sessions)
        for session in sessions:
            session.connection.abort()
        await asyncio.gather(*(session.finished.wait() for session in sessions))

    def delay_handshakes(self, seconds: float, count: int = 1) -> None:
        """The next `count` connections get their registry/info reply `seconds` late."""
        self._handshake_delays += [seconds] * count

    def set_unreachable(self, seconds: float) -> None:
        """Refuse new connections (HTTP 503) for `seconds`."""
        self._unreachable_until = asyncio.get_running_loop().time() + seconds

    def set_silent(self, seconds: float) -> None:
        """Leave new connections unanswered for `seconds`, as a network still coming back
        after a wake does: the client's own timeout is what ends its attempt."""
        self._silent_until = asyncio.get_running_loop().time() + seconds

    # -- playback controls ----------------------------------------------------------

    @property
    def zone_names(self) -> list[str]:
        return [zone.name for zone in self._zones]

    def current_track(self, zone: str) -> FakeTrack:
        return self._zone(zone).track

    def seek_position(self, zone: str) -> float:
        return self._zone(zone).seek

    def pause(self, zone: str) -> None:
        self._set_state(self._zone(zone), "paused")

    def play(self, zone: str) -> None:
        self._set_state(self._zone(zone), "playing")

    def seek(self, zone: str, seconds: float) -> None:
        target = self._zone(zone)
        target.seek = max(0.0, min(float(seconds), target.track.length))
        self._broadcast({"zones_seek_changed": [target.seek_json()]})

    def skip(self, zone: str) -> None:
        target = self._zone(zone)
        target.next_track()
        self._broadcast({"zones_changed": [target.to_json()]})

    def set_track(self, zone: str, artist: str, title: str, album: str, length: int) -> None:
        """Play this track now, from the start; the playlist resumes after it."""
        target = self._zone(zone)
        target.track = FakeTrack(artist, title, album, length)
        target.seek = 0.0
        target.state = "playing"
        self._broadcast({"zones_changed": [target.to_json()]})

    def add_zone(self, name: str) -> None:
        """A new zone appears (an endpoint switched on), playing its own playlist."""
        zone = _FakeZone(self._hex_id("16", 36), name, self._random.sample(CATALOGUE, len(CATALOGUE)))
        self._zones.append(zone)
        self._broadcast({"zones_added": [zone.to_json()]})

    def remove_zone(self, zone: str) -> None:
        """A zone goes away (an endpoint switched off); Roon sends only its id."""
        target = self._zone(zone)
        self._zones.remove(target)
        self._broadcast({"zones_removed": [target.zone_id]})

    def _zone(self, key: str) -> _FakeZone:
        for zone in self._zones:
            if key in (zone.name, zone.zone_id):
                return zone
        raise KeyError(f"no zone {key!r}; zones are {', '.join(self.zone_names)}")

    def _set_state(self, zone: _FakeZone, state: str) -> None:
        zone.state = state
        self._broadcast({"zones_changed": [zone.to_json()]})

    def _broadcast(self, changes: dict) -> None:
        for queue in self._subscribers:
            queue.put_nowait(changes)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self._advance(self.tick * self.time_scale)

    def _advance(self, seconds: float) -> None:
        seeks, changed = [], []
        for zone in self._zones:
            if zone.state != "playing":
                continue
            zone.seek += seconds
            if zone.seek >= zone.track.length:
                zone.next_track()
                changed.append(zone.to_json())
            else:
                seeks.append(zone.seek_json())
        changes = {}
        if seeks:
            changes["zones_seek_changed"] = seeks
        if changed:
            changes["zones_changed"] = changed
        if changes:
            self._broadcast(changes)

    # -- connections ----------------------------------------------------------------

    async def _screen_request(self, connection: ServerConnection, request: Request) -> Response | None:
        silence = self._silent_until - asyncio.get_running_loop().time()
        if silence > 0:
            await asyncio.sleep(silence)
            return connection.respond(503, "Roon Core unavailable\n")  # long given up on
        if asyncio.get_running_loop().time() < self._unreachable_until:
            return connection.respond(503, "Roon Core unavailable\n")
        if request.path.split("?")[0] != "/api":
            return connection.respond(404, "not found\n")
        return None

    async def _serve(self, websocket: ServerConnection) -> None:
        delay = self._handshake_delays.pop(0) if self._handshake_delays else 0.0
        session = _Session(self, websocket, delay)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class _Session:
    """One extension's connection to the fake Core."""

    def __init__(self, core: FakeRoonCore, websocket: ServerConnection, info_delay: float) -> None:
        self.core = core
        self.info_delay = info_delay
        self.connection = MooConnection(
            websocket,
            {INFO: self._info, REGISTER: self._register, SUBSCRIBE_ZONES: self._subscribe_zones},
        )
        self.finished = asyncio.Event()
        self.frozen = False
        self.registered = False
        self._pinger: asyncio.Task | None = None
        self._status: asyncio.Task | None = None

    def freeze(self) -> None:
        self.frozen = True
        self.connection._websocket.transport.pause_reading()
        for task in (self._pinger, self._status):
            if task is not None:
                task.cancel()

    async def run(self) -> None:
        # A Core pings each connection from the start, registered or not.
        self._pinger = asyncio.create_task(self._ping_forever(), name="fake-roon:ping")
        try:
            await self.connection.run()
        except MooError as exc:
            # An extension going away is routine for a Core.
            log.debug("fake Roon Core: session ended: %s", exc)
        finally:
            for task in (self._pinger, self._status):
                if task is not None:
                    task.cancel()
            self.finished.set()

    async def _info(self, request: MooRequest) -> None:
        if self.info_delay:
            await asyncio.sleep(self.info_delay)
        await request.send_complete("Success", self._core_identity())

    async def _register(self, request: MooRequest) -> None:
        body = request.body if isinstance(request.body, dict) else {}
        presented = body.get("token")
        self.core.registrations.append(presented)
        if self.core.require_approval:
            # A real Core leaves the request unanswered until the user enables the extension.
            await self.core._approved.wait()
        token = presented if presented in self.core._tokens else self._issue_token()
        await request.send_complete(
            "Registered",
            {
                **self._core_identity(),
                "token": token,
                "provided_services": list(body.get("required_services", [])),
                "http_port": self.core.port,
            },
        )
        self.registered = True
        if STATUS_SERVICE in body.get("provided_services", []) and self._status is None:
            extension = str(body.get("extension_id", ""))
            self._status = asyncio.create_task(self._follow_status(extension), name="fake-roon:status")

    async def _subscribe_zones(self, request: MooRequest) -> None:
        changes: asyncio.Queue[dict] = asyncio.Queue()
        self.core._subscribers.add(changes)
        try:
            zones = [zone.to_json() for zone in self.core._zones]
            await request.send_continue("Subscribed", {"zones": zones})
            while True:
                update = await changes.get()
                if self.frozen:
                    await asyncio.Event().wait()  # a half-open socket carries nothing more
                await request.send_continue("Changed", update)
        finally:
            self.core._subscribers.discard(changes)

    async def _ping_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.core.ping_interval)
                reply = await self.connection.request(PING)
                if reply.name == "Success":
                    self.core.pings_answered += 1
                    self.core.pings_before_registration += not self.registered
        except MooError:
            return

    async def _follow_status(self, extension: str) -> None:
        """What Settings → Extensions does for an extension that provides a status."""
        try:
            subscription = await self.connection.subscribe(
                f"{STATUS_SERVICE}/subscribe_status", {"subscription_key": 0}
            )
            async for reply in subscription:
                if isinstance(reply.body, dict):
                    self.core.extension_status[extension] = reply.body
        except MooError:
            return

    def _issue_token(self) -> str:
        token = self.core._hex_id("", 32)
        self.core._tokens.add(token)
        return token

    def _core_identity(self) -> dict:
        return {
            "core_id": self.core.core_id,
            "display_name": self.core.core_name,
            "display_version": CORE_VERSION,
        }


class FakeSoodResponder:
    """Answers Roon SOOD queries on a loopback UDP port for the given fake Cores.

    A query that asks for another service id, or is not SOOD at all, gets no answer, as
    on a real network. `reply_address` makes the replies carry `_replyaddr`/`_replyport`
    (where to reach the Core instead of the reply's source).
    """

    def __init__(self, cores: list[FakeRoonCore], *, reply_address: tuple[str, int] | None = None) -> None:
        self.cores = list(cores)
        self.reply_address = reply_address
        self.queries: list[dict] = []
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _SoodAnswers(self), local_addr=(host, port)
        )

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("the SOOD responder is not started")
        return self._transport.get_extra_info("sockname")[1]

    @property
    def target(self) -> str:
        """The AIME_ROON_DISCOVERY value that reaches this responder."""
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _answer(self, data: bytes, sender: tuple[str, int]) -> None:
        try:
            query = sood.decode(data, sender)
        except sood.SoodFormatError:
            return
        self.queries.append(dict(query.properties))
        if query.kind != sood.QUERY or query.properties.get("query_service_id") != sood.ROON_SERVICE_ID:
            return
        for core in self.cores:
            if core._server is None:
                continue  # a Core switched off answers nothing
            properties = {
                "name": core.core_name,
                "display_version": CORE_VERSION,
                "unique_id": core.core_id,
                "service_id": sood.ROON_SERVICE_ID,
                "tcp_port": "9332",
                "http_port": str(core.port),
                "_tid": query.properties.get("_tid"),
            }
            if self.reply_address is not None:
                properties["_replyaddr"], properties["_replyport"] = self.reply_address[0], str(self.reply_address[1])
            self._transport.sendto(sood.encode(sood.REPLY, properties), sender)


class _SoodAnswers(asyncio.DatagramProtocol):
    def __init__(self, responder: FakeSoodResponder) -> None:
        self.responder = responder

    def datagram_received(self, data: bytes, addr) -> None:
        self.responder._answer(data, (addr[0], addr[1]))
