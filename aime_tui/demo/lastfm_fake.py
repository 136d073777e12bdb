"""A loopback HTTP server that answers `user.getRecentTracks` the way Last.fm does.

Owns a deterministic listening history and serves it with the real API's quirks:
newest first, pages of at most 200, `from` inclusive and `to` exclusive, every number a
string, a lone track sent as an object and an empty page with no `track` key at all,
the now-playing track on top of every page (beyond `limit`, and not in `total`), the
account's own spelling in `@attr.user` whatever case was asked, identical same-second
duplicates served twice, error payloads `{"error": N, "message": ...}`. Late scrobbles
(offline plays synced days later) can land inside any window while it is read. Faults
can be injected (slow, dropped or hung connections, HTTP 500 and 429, a 503 HTML page,
a truncated body, bad JSON, any Last.fm error such as a spurious 6 "User not found")
for the demo and the tests. HTTP/1.1 framing is done by h11 on an asyncio server.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, quote_plus, urlsplit

import h11

from aime_tui.store.database import Play

API_PATH = "/2.0/"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
FAULT_KINDS = ("slow", "drop", "http_500", "http_429", "bad_json", "error", "hang", "html", "truncated")
RATE_LIMIT_MESSAGE = "Rate Limit Exceeded - Your IP has made too many requests in a short period"

# (artist, album, title): real names, some with accents and odd case so the store's
# normalisation has something to do.
CATALOGUE: tuple[tuple[str, str, str], ...] = (
    ("Nils Frahm", "Spaces", "Says"),
    ("Nils Frahm", "All Melody", "#2"),
    ("Sigur Rós", "Takk...", "Hoppípolla"),
    ("Björk", "Homogenic", "Jóga"),
    ("Röyksopp", "Melody A.M.", "Eple"),
    ("Beyoncé", "I Am... Sasha Fierce", "Halo"),
    ("Motörhead", "Ace of Spades", "Ace of Spades"),
    ("Amadou & Mariam", "Dimanche à Bamako", "Beaux dimanches"),
    ("Angèle", "Brol", "Balance ton quoi"),
    ("Stromae", "Racine carrée", "Papaoutai"),
    ("Françoise Hardy", "Tous les garçons et les filles", "Le temps de l'amour"),
    ("Édith Piaf", "La vie en rose", "La vie en rose"),
    ("Ólafur Arnalds", "re:member", "saman"),
    ("múm", "Finally We Are No One", "Green Grass of Tunnel"),
    ("MØ", "No Mythologies to Follow", "Don't Wanna Dance"),
    ("alt-J", "An Awesome Wave", "Breezeblocks"),
    ("deadmau5", "For Lack of a Better Name", "Strobe"),
    ("CHVRCHES", "The Bones of What You Believe", "The Mother We Share"),
    ("the xx", "xx", "Intro"),
    ("Radiohead", "Kid A", "Everything In Its Right Place"),
    ("Daft Punk", "Discovery", "Digital Love"),
    ("Jon Hopkins", "Immunity", "Open Eye Signal"),
    ("Khruangbin", "Mordechai", "Time (You and I)"),
    ("Caetano Veloso", "Caetano Veloso", "Irene"),
    ("Hania Rani", "Esja", "Eden"),
    ("Floating Points", "Crush", "LesAlpx"),
    ("Rosalía", "El Mal Querer", "MALAMENTE - Cap.1: Augurio"),
    ("Ryuichi Sakamoto", "async", "andata"),
)


@dataclass
class _Fault:
    kind: str
    remaining: int
    params: dict = field(default_factory=dict)


class FakeLastfm:
    """One user's history served at `url` between `start()` and `stop()`.

    `history` (newest first) and `requests` (each request's query parameters) are
    public so that tests can compare exactly; `add_plays` scrobbles new ones,
    `insert_play` one at any moment (a late scrobble), and `late_every` makes every
    n-th request first insert a late play somewhere in the `late_window` seconds below
    the newest (`late_limit` of them at most). `latency` delays every answer.
    """

    def __init__(
        self,
        *,
        user: str = "demo",
        api_key: str = "demo-api-key",
        plays: int = 3000,
        seed: int = 7,
        newest: int | None = None,
        spacing: int = 180,
        live_every: float | None = None,
        record_requests: bool = True,
        latency: float = 0.0,
        late_every: int | None = None,
        late_window: int = 14 * 24 * 3600,
        late_limit: int | None = None,
    ) -> None:
        self.user = user
        self.latency = latency
        self.late_every = late_every
        self.late_window = late_window
        self.late_limit = late_limit
        self.late_plays: list[Play] = []
        self.api_key = api_key
        self.spacing = spacing
        self.live_every = live_every
        self.now_playing = False
        # Tests compare requests exactly; a long-running demo must not keep them all.
        self.record_requests = record_requests
        self.requests: list[dict] = []
        self.requests_seen = 0
        self._random = random.Random(seed)
        newest = int(time.time()) if newest is None else newest
        self.history: list[Play] = [
            self._play(newest - index * spacing) for index in range(plays)
        ]
        artist, album, title = self._random.choice(CATALOGUE)
        # What page 1 shows on top while `now_playing` is true (it has no date: played_at 0).
        self.now_playing_track = Play("lastfm", user, 0, artist, title, album)
        self.connections_accepted = 0
        self._faults: deque[_Fault] = deque()
        self._server: asyncio.Server | None = None
        # Each open connection's handler and writer, so stop() can end them.
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._live_task: asyncio.Task | None = None
        self._stopped = asyncio.Event()
        self._address: tuple[str, int] | None = None

    def _play(self, played_at: int) -> Play:
        artist, album, title = self._random.choice(CATALOGUE)
        return Play("lastfm", self.user, played_at, artist, title, album)

    # -- control ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopped.clear()
        self._server = await asyncio.start_server(self._serve_connection, host, port)
        self._address = self._server.sockets[0].getsockname()[:2]
        if self.live_every:
            self._live_task = asyncio.create_task(self._scrobble_live(self.live_every))

    @property
    def url(self) -> str:
        if self._address is None:
            raise RuntimeError("FakeLastfm is not started")
        host, port = self._address
        return f"http://{host}:{port}{API_PATH}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def stop(self) -> None:
        self._stopped.set()  # releases hung requests
        if self._live_task is not None:
            self._live_task.cancel()
            await asyncio.gather(self._live_task, return_exceptions=True)
            self._live_task = None
        if self._server is not None:
            self._server.close()
            # Closing the server leaves accepted connections open (before 3.12); abort
            # them so their handlers end on their own: asyncio 3.11 logs an error for a
            # connection handler that ends cancelled.
            for writer in self._connections.values():
                writer.transport.abort()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def inject(self, kind: str, times: int = 1, **params) -> None:
        """Make the next `times` requests misbehave; faults queue up in injection order."""
        if kind not in FAULT_KINDS:
            expected = ", ".join(FAULT_KINDS)
            raise ValueError(f"unknown fault {kind!r}; expected one of {expected}")
        self._faults.append(_Fault(kind, times, params))

    def insert_play(self, played_at: int, *, like: Play | None = None) -> Play:
        """Scrobble one play at `played_at`, wherever that falls in the history (a late
        one); `like` copies another's track (at its second: an identical duplicate)."""
        if like is not None:
            play = Play(like.source, like.account, played_at, like.artist, like.title, like.album)
        else:
            play = self._play(played_at)
        # Newest first, and after the plays already there at that second.
        index = bisect.bisect_right(self.history, -played_at, key=_descending)
        self.history.insert(index, play)
        return play

    def _scrobble_late(self) -> None:
        newest = self.history[0].played_at if self.history else int(time.time())
        played_at = newest - self._random.randrange(1, max(2, self.late_window))
        self.late_plays.append(self.insert_play(played_at))

    def add_plays(self, count: int = 1) -> list[Play]:
        """Scrobble `count` new plays, each one second or more after the current newest."""
        added = []
        for _ in range(count):
            newest = self.history[0].played_at if self.history else 0
            play = self._play(max(int(time.time()), newest + 1))
            self.history.insert(0, play)
            added.append(play)
        return added

    async def _scrobble_live(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.add_plays(1)

    def _next_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.popleft()
        return fault

    # -- HTTP ------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        self._connections[handler] = writer
        self.connections_accepted += 1
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._next_event(connection, reader)
                if not isinstance(request, h11.Request):
                    break
                while not isinstance(await self._next_event(connection, reader), h11.EndOfMessage):
                    pass  # GET requests carry no body worth reading
                if not await self._answer(connection, writer, request):
                    break
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break
                connection.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            # Only now, so that stop() also waits for the socket to finish closing.
            del self._connections[handler]

    @staticmethod
    async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader):
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(await reader.read(65536))

    async def _answer(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request
    ) -> bool:
        """Send one response; False when the connection must be closed instead."""
        target = urlsplit(request.target.decode("ascii", "replace"))
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        self.requests_seen += 1
        if self.record_requests:
            self.requests.append(params)
        if (self.late_every and self.requests_seen % self.late_every == 0
                and (self.late_limit is None or len(self.late_plays) < self.late_limit)):
            self._scrobble_late()
        if self.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.latency)

        fault = self._next_fault()
        kind = fault.kind if fault is not None else None
        if kind == "drop":
            return False
        if kind in ("hang", "slow"):
            delay = float(fault.params.get("delay", 1.0)) if kind == "slow" else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            if self._stopped.is_set():
                return False

        if request.method != b"GET":
            status, headers, body = _text_response(405, "Method Not Allowed")
        elif target.path.rstrip("/") != API_PATH.rstrip("/"):
            status, headers, body = _text_response(404, "Not Found")
        elif kind in ("http_500", "http_429", "bad_json", "error", "html"):
            status, headers, body = _fault_response(fault)
        else:
            status, headers, body = _json_response(*self._recent_tracks(params))

        if kind == "truncated":
            # The length promises the whole answer; the connection ends halfway through it.
            head = h11.Response(status_code=status, headers=[*headers, ("Content-Length", str(len(body)))],
                                reason=HTTPStatus(status).phrase)
            writer.write(connection.send(head))
            writer.write(connection.send(h11.Data(data=body[: len(body) // 2])))
            await writer.drain()
            return False
        headers.append(("Content-Length", str(len(body))))
        head = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
        writer.write(connection.send(head))
        writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    # -- the API ---------------------------------------------------------------------

    def _recent_tracks(self, params: dict[str, str]) -> tuple[int, dict]:
        if params.get("api_key") != self.api_key:
            return 403, _error(10, "Invalid API key - You must be granted a valid key by last.fm")
        if params.get("method", "").lower() != "user.getrecenttracks":
            return 400, _error(3, "Invalid Method - No method with that name in this package")
        if not params.get("user"):
            return 400, _error(6, "Invalid parameters - missing a required parameter: user")
        if params["user"].casefold() != self.user.casefold():
            return 404, _error(6, "User not found")
        try:
            limit = min(MAX_PAGE_SIZE, int(params.get("limit", DEFAULT_PAGE_SIZE)))
            page = int(params.get("page", 1))
            from_ts = int(params["from"]) if params.get("from") else None
            to_ts = int(params["to"]) if params.get("to") else None
        except ValueError:
            return 400, _error(6, "Invalid parameters - limit, page, from and to must be integers")
        if limit < 1 or page < 1:
            return 400, _error(6, "Invalid parameters - limit and page must be positive")

        # `from` inclusive, `to` exclusive; found by bisection (histories of millions).
        first = 0 if to_ts is None else bisect.bisect_right(self.history, -to_ts, key=_descending)
        end = len(self.history) if from_ts is None else bisect.bisect_right(
            self.history, -from_ts, key=_descending
        )
        total = max(0, end - first)
        start = first + (page - 1) * limit
        tracks = [_track_json(play) for play in self.history[start: min(end, start + limit)]]
        if self.now_playing:
            # Last.fm puts it on top of every page, beyond the limit.
            tracks.insert(0, _track_json(self.now_playing_track, now_playing=True))

        body: dict = {
            "@attr": {
                "user": self.user,
                "page": str(page),
                "perPage": str(limit),
                "totalPages": str(math.ceil(total / limit)),
                "total": str(total),
            }
        }
        if len(tracks) == 1:
            body["track"] = tracks[0]
        elif tracks:
            body["track"] = tracks
        return 200, {"recenttracks": body}


Response = tuple[int, list[tuple[str, str]], bytes]


def _error(code: int, message: str) -> dict:
    return {"error": code, "message": message}


def _json_response(status: int, payload: dict) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return status, [("Content-Type", "application/json; charset=utf-8")], body


def _text_response(status: int, text: str, content_type: str = "text/plain") -> Response:
    return status, [("Content-Type", f"{content_type}; charset=utf-8")], text.encode()


def _descending(play: Play) -> int:
    return -play.played_at


def _fault_response(fault: _Fault) -> Response:
    if fault.kind == "http_500":
        return _text_response(500, "<html><body>Internal Server Error</body></html>", "text/html")
    if fault.kind == "html":
        # What a proxy in front of Last.fm answers when the backend is away.
        page = "<html><head><title>503 Service Unavailable</title></head><body><h1>503 Service" \
               " Unavailable</h1>No server is available to handle this request.</body></html>"
        return _text_response(int(fault.params.get("status", 503)), page, "text/html")
    if fault.kind == "http_429":
        status, headers, body = _json_response(429, _error(29, RATE_LIMIT_MESSAGE))
        if "retry_after" in fault.params:
            headers.append(("Retry-After", str(fault.params["retry_after"])))
        return status, headers, body
    if fault.kind == "bad_json":
        # Cut off mid-answer, as a proxy timing out halfway through would leave it.
        return _text_response(200, '{"recenttracks": {"track": [{"artist": ', "application/json")
    code = int(fault.params.get("code", 8))
    message = str(fault.params.get("message", "Operation failed"))
    return _json_response(int(fault.params.get("status", 200)), _error(code, message))


def _track_json(play: Play, *, now_playing: bool = False) -> dict:
    track = {
        # Last.fm sends "" where it knows no MusicBrainz id.
        "artist": {"mbid": play.artist_mbid or "", "#text": play.artist},
        "streamable": "0",
        "image": [],
        "mbid": play.track_mbid or "",
        "album": {"mbid": play.album_mbid or "", "#text": play.album},
        "name": play.title,
        "url": "https://www.last.fm/music/"
        + quote_plus(play.artist) + "/_/" + quote_plus(play.title),
    }
    if now_playing:
        track["@attr"] = {"nowplaying": "true"}
    else:
        track["date"] = {
            "uts": str(play.played_at),
            "#text": time.strftime("%d %b %Y, %H:%M", time.gmtime(play.played_at)),
        }
    return track
