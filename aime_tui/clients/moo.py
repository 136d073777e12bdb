"""MOO/1, the request/response protocol Roon speaks over a WebSocket, on asyncio.

Owns the frame codec (`encode`, `decode`) and `MooConnection`, which numbers outgoing
requests, routes CONTINUE/COMPLETE replies back to whoever asked, and answers the
requests the other side makes (Roon pings its extensions). The same connection class
serves both ends, so the demo's fake Core speaks exactly what the client parses.

A frame is one binary WebSocket message:

    MOO/1 REQUEST com.roonlabs.registry:1/info      (or CONTINUE/COMPLETE <name>)
    Request-Id: 3
    Content-Type: application/json                  (only with a body)
    Content-Length: 42
                                                    (blank line)
    {"json": "body"}
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from websockets.asyncio.client import connect as websocket_connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from aime_tui.clients.network import log_raw, network_failure

log = logging.getLogger(__name__)

# websockets logs frames at DEBUG, and MOO frames carry the Roon token; at INFO it
# chats about every connection. Its connections log here, where only trouble shows.
WIRE_LOG = logging.getLogger(f"{__name__}.wire")
WIRE_LOG.setLevel(logging.WARNING)

VERBS = ("REQUEST", "CONTINUE", "COMPLETE")
JSON_TYPE = "application/json"
PING = "com.roonlabs.ping:1/ping"
#: Seconds between keepalive pings (node-roon-api pings every 10 s) and how long a pong
#: may take: a dead or half-open socket is noticed within their sum plus CLOSE_TIMEOUT.
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_TIMEOUT = 6.0
CLOSE_TIMEOUT = 2.0

_FIRST_LINE = re.compile(r"MOO/(\d+) ([A-Z]+) (\S.*)")


class MooError(Exception):
    """Something went wrong speaking MOO."""


class MooProtocolError(MooError):
    """A frame that is not valid MOO/1; the message says what is wrong with it."""


class MooConnectionLost(MooError, ConnectionError):
    """The socket closed while a reply was awaited, or before a request could be sent."""


class MooConnectError(MooError, ConnectionError):
    """The WebSocket could not be opened; `reason` says why in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot open {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class MooMessage:
    verb: str
    #: `service/method` for a REQUEST; the outcome (`Success`, `Changed`…) for a reply.
    name: str
    #: Any text: Roon's parser takes the header as it is, and replies echo it unchanged.
    request_id: str
    #: Decoded JSON, raw bytes for other content types, None without a body.
    body: Any = None
    content_type: str | None = None
    #: Headers other than Request-Id, Content-Type and Content-Length.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.name.rpartition("/")[0]


def encode(message: MooMessage) -> bytes:
    """The frame for `message`; a body that is not bytes is sent as JSON."""
    if message.verb not in VERBS:
        raise ValueError(f"unknown MOO verb {message.verb!r}")
    lines = [f"MOO/1 {message.verb} {message.name}", f"Request-Id: {message.request_id}"]
    lines += [f"{key}: {value}" for key, value in message.headers.items()]
    body = b""
    if message.body is not None:
        if isinstance(message.body, (bytes, bytearray)):
            if not message.content_type:
                raise ValueError("a bytes body needs a content_type")
            body, content_type = bytes(message.body), message.content_type
        else:
            body = json.dumps(message.body, separators=(",", ":")).encode()
            content_type = message.content_type or JSON_TYPE
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\n".join(lines) + "\n\n").encode() + body


def decode(frame: bytes | str) -> MooMessage:
    """Parse one frame; raises MooProtocolError saying what is malformed.

    As lenient as Roon's own parser (node-roon-api `moo.js`) where it is lenient: any
    version number, any Request-Id text, headers with or without a space after the
    colon, and exactly Content-Length bytes of body read (anything after them is
    ignored). As strict where it is strict: no Request-Id, a body without a
    Content-Length, a Content-Type without a Content-Length, a body without a
    Content-Type, bad JSON, a header line without a colon. A body shorter than its
    Content-Length is a truncated frame, refused too.
    """
    data = frame.encode() if isinstance(frame, str) else bytes(frame)
    head, blank, body = data.partition(b"\n\n")
    if not blank:
        raise MooProtocolError("no blank line after the headers")
    try:
        first, *header_lines = head.decode().split("\n")
    except UnicodeDecodeError:
        raise MooProtocolError("headers are not UTF-8") from None

    match = _FIRST_LINE.fullmatch(first.rstrip("\r"))
    if match is None:
        raise MooProtocolError(f"first line is not 'MOO/1 VERB name': {first[:80]!r}")
    _version, verb, name = match.groups()
    if verb not in VERBS:
        raise MooProtocolError(f"unknown verb {verb!r}")
    if verb == "REQUEST" and "/" not in name:
        raise MooProtocolError(f"request name {name!r} is not 'service/method'")

    headers: dict[str, str] = {}
    for line in header_lines:
        key, colon, value = line.rstrip("\r").partition(":")
        if not colon or not key:
            raise MooProtocolError(f"header line is not 'Name: value': {line[:80]!r}")
        headers[key] = value.lstrip(" ")

    request_id = headers.pop("Request-Id", None)
    if request_id is None:
        raise MooProtocolError("missing Request-Id header")
    length = _length_header(headers)
    content_type = headers.pop("Content-Type", None)
    if length is None:
        if content_type is not None:
            raise MooProtocolError("a Content-Type without a Content-Length")
        if body:
            raise MooProtocolError(f"{len(body)} bytes of body without a Content-Length")
        return MooMessage(verb, name, request_id, None, content_type, headers)
    if len(body) < length:
        raise MooProtocolError(f"Content-Length says {length} bytes, the body has only {len(body)}")
    body = body[:length]
    if length == 0:
        return MooMessage(verb, name, request_id, None, content_type, headers)
    if content_type is None:
        raise MooProtocolError(f"{length} bytes of body without a Content-Type")
    if content_type != JSON_TYPE:
        return MooMessage(verb, name, request_id, body, content_type, headers)
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MooProtocolError(f"body is not valid JSON: {exc}") from None
    return MooMessage(verb, name, request_id, decoded, content_type, headers)


def _length_header(headers: dict[str, str]) -> int | None:
    value = headers.pop("Content-Length", None)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise MooProtocolError(f"Content-Length is not a non-negative integer: {value[:40]!r}")
    return int(value)


class MooRequest:
    """A request the other side made, with the means to answer it."""

    def __init__(self, connection: "MooConnection", message: MooMessage) -> None:
        self.connection = connection
        self.message = message
        self.completed = False

    @property
    def body(self) -> Any:
        return self.message.body

    async def send_continue(self, name: str, body: Any = None) -> None:
        await self._reply("CONTINUE", name, body)

    async def send_complete(self, name: str, body: Any = None) -> None:
        await self._reply("COMPLETE", name, body)
        self.completed = True

    async def _reply(self, verb: str, name: str, body: Any) -> None:
        if self.completed:
            raise MooError(f"request {self.message.request_id} ({self.message.name}) is already complete")
        await self.connection.send(MooMessage(verb, name, self.message.request_id, body))


RequestHandler = Callable[[MooRequest], Awaitable[None]]


async def answer_ping(request: MooRequest) -> None:
    await request.send_complete("Success")


class MooSubscription:
    """Every reply to one request, in order: iterate it; iteration ends after COMPLETE."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._replies: asyncio.Queue[MooMessage | BaseException] = asyncio.Queue()
        self._finished = False

    def _deliver(self, item: MooMessage | BaseException) -> None:
        self._replies.put_nowait(item)

    def __aiter__(self) -> "MooSubscription":
        return self

    async def __anext__(self) -> MooMessage:
        if self._finished:
            raise StopAsyncIteration
        item = await self._replies.get()
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if item.verb == "COMPLETE":
            self._finished = True
        return item


class MooConnection:
    """One MOO session over an open WebSocket. Nothing is received until `run()` runs."""

    def __init__(
        self, websocket: Connection, handlers: Mapping[str, RequestHandler] | None = None
    ) -> None:
        self._websocket = websocket
        # Answering pings is part of being a MOO peer: Roon drops extensions that don't.
        self._handlers: dict[str, RequestHandler] = {PING: answer_ping, **(handlers or {})}
        self._request_ids = map(str, itertools.count())
        self._waiting: dict[str, asyncio.Future[MooMessage] | MooSubscription] = {}
        self._handler_tasks: set[asyncio.Task] = set()
        self._closing = False
        self._lost: MooConnectionLost | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        handlers: Mapping[str, RequestHandler] | None = None,
        *,
        open_timeout: float = 10.0,
        ping_interval: float = KEEPALIVE_INTERVAL,
        ping_timeout: float = KEEPALIVE_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> "MooConnection":
        """Open the WebSocket; raises MooConnectError or TimeoutError naming `url`.

        A WebSocket ping goes out every `ping_interval` seconds, as node-roon-api's
        transport does; a pong missing for `ping_timeout` seconds ends the session
        (`run()` raises MooConnectionLost) once the closing handshake has had
        `close_timeout` seconds, so a half-open socket is noticed within the three's sum
        instead of waiting for TCP to give up.
        """
        try:
            # A Core that stopped answering must not hold up a close for long.
            websocket = await websocket_connect(
                url,
                open_timeout=open_timeout,
                close_timeout=close_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                logger=WIRE_LOG,
            )
        except TimeoutError:
            raise TimeoutError(f"opening {url} timed out after {open_timeout:g} s") from None
        except InvalidURI as exc:
            raise MooConnectError(url, f"not a WebSocket address ({exc.msg})") from None
        except InvalidHandshake as exc:
            raise MooConnectError(url, f"handshake refused ({exc})") from None
        except OSError as exc:
            log_raw(f"opening {url}", exc)
            address = urlsplit(url)
            reason = network_failure(exc, address.hostname or url, address.port)
            raise MooConnectError(url, reason or exc.strerror or str(exc) or type(exc).__name__) from None
        return cls(websocket, handlers)

    @property
    def closed(self) -> bool:
        return self._closing or self._lost is not None

    async def run(self) -> None:
        """Receive and dispatch until the socket closes.

        Returns after `close()`. Anything else that ends the session raises:
        MooConnectionLost for a dropped or peer-closed socket, MooProtocolError for a
        malformed frame (the socket is closed first). Every waiter gets MooConnectionLost.
        """
        try:
            async for frame in self._websocket:
                self._dispatch(decode(frame))
        except ConnectionClosed as exc:
            if self._closing:
                return
            self._shut_down(MooConnectionLost(f"connection lost ({_close_reason(exc)})"))
            raise self._lost from None
        except MooProtocolError as exc:
            self._shut_down(MooConnectionLost(f"connection closed after a malformed frame: {exc}"))
            await self._websocket.close(code=1002, reason="malformed MOO frame")
            raise
        except asyncio.CancelledError:
            self._shut_down(MooConnectionLost("connection closed"))
            raise
        # `async for` ends quietly when the peer closes normally: still a loss to us.
        if not self._closing:
            self._shut_down(MooConnectionLost("connection closed by the other side"))
            raise self._lost

    async def request(self, name: str, body: Any = None) -> MooMessage:
        """Send a request and return its first reply (CONTINUE or COMPLETE)."""
        request_id = next(self._request_ids)
        reply: asyncio.Future[MooMessage] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        try:
            await self.send(MooMessage("REQUEST", name, request_id, body))
            return await reply
        finally:
            self._waiting.pop(request_id, None)
            if reply.done() and not reply.cancelled():
                reply.exception()  # a failed send leaves the reply unread: mark it seen

    async def subscribe(self, name: str, body: Any = None) -> MooSubscription:
        """Send a request whose replies keep coming; iterate the result to read them."""
        request_id = next(self._request_ids)
        subscription = MooSubscription(request_id)
        self._waiting[request_id] = subscription
        try:
            await self.send(MooMessage("REQUEST", name, request_id, body))
        except BaseException:
            self._waiting.pop(request_id, None)
            raise
        return subscription

    async def send(self, message: MooMessage) -> None:
        if self._lost is not None:
            raise self._lost
        if self._closing:
            raise MooConnectionLost("connection closed")
        try:
            await self._websocket.send(encode(message))
        except ConnectionClosed as exc:
            raise MooConnectionLost(f"connection lost ({_close_reason(exc)})") from None

    async def close(self) -> None:
        """Close the socket, fail every waiter, stop answering requests. Safe to repeat."""
        if self._closing:
            return
        self._closing = True
        self._shut_down(MooConnectionLost("connection closed"))
        await self._websocket.close()
        if self._handler_tasks:
            await asyncio.gather(*self._handler_tasks, return_exceptions=True)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a crash or a cut cable)."""
        self._websocket.transport.abort()

    # -- internals ------------------------------------------------------------------

    def _dispatch(self, message: MooMessage) -> None:
        if message.verb == "REQUEST":
            self._serve(message)
            return
        waiter = self._waiting.get(message.request_id)
        if waiter is None:
            # Roon's parser closes the connection here; a reply to a request we stopped
            # waiting for (its step timed out) is no reason to drop a working session.
            log.debug("MOO: reply %s to unknown request %s ignored", message.name, message.request_id)
            return
        if isinstance(waiter, MooSubscription):
            waiter._deliver(message)
            if message.verb == "COMPLETE":
                del self._waiting[message.request_id]
        else:
            del self._waiting[message.request_id]
            if not waiter.done():
                waiter.set_result(message)

    def _serve(self, message: MooMessage) -> None:
        request = MooRequest(self, message)
        handler = self._handlers.get(message.name) or self._refusal(message)
        # Each request runs on its own: a slow answer never holds up the replies behind it.
        task = asyncio.create_task(self._run_handler(handler, request), name=f"moo:{message.name}")
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _run_handler(self, handler: RequestHandler, request: MooRequest) -> None:
        try:
            await handler(request)
        except MooConnectionLost:
            return
        except Exception as exc:
            log.error("MOO: handler for %s failed", request.message.name, exc_info=exc)
            if not request.completed and not self.closed:
                await request.send_complete("InternalError", {"error": str(exc)})

    def _refusal(self, message: MooMessage) -> RequestHandler:
        if any(name.rpartition("/")[0] == message.service for name in self._handlers):
            error = f"unknown request: {message.name}"
        else:
            error = f"unknown service: {message.service}"

        async def refuse(request: MooRequest) -> None:
            await request.send_complete("InvalidRequest", {"error": error})

        return refuse

    def _shut_down(self, lost: MooConnectionLost) -> None:
        if self._lost is None:
            self._lost = lost
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if isinstance(waiter, MooSubscription):
                waiter._deliver(self._lost)
            elif not waiter.done():
                waiter.set_exception(self._lost)
        for task in self._handler_tasks:
            task.cancel()


def _close_reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "the socket dropped"
    return f"closed with code {int(frame.code)}" + (f": {frame.reason}" if frame.reason else "")
