"""SOOD, the UDP discovery protocol Roon Cores answer, on asyncio: protocol only, no service logic.

Owns the message codec (`encode`, `decode`), the query targets (the multicast group and
each interface's broadcast address), `SoodClient`, and `discover`,
which sends a query and collects the Cores that reply.

A message is `SOOD`, the version byte 2, a type byte (`Q` query, `R` reply), then
properties: a 1-byte name length and the name, a 2-byte big-endian value length and the
value (0xFFFF: no value). A query carries `query_service_id` (Roon's service id) and a
`_tid`; a Core replies to the address the query came from with `service_id`,
`unique_id`, `name`, `display_version` and `http_port`, where `_replyaddr` and
`_replyport`, when present, say where to reach it instead. The layout follows RoonLabs'
node-roon-api `sood.js`.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import socket
import struct
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping

SOOD_PORT = 9003
MULTICAST_GROUP = "239.255.90.90"
#: The service id a Roon Core answers to.
ROON_SERVICE_ID = "00720724-5143-4a9b-abac-0e50cba674bb"
MAGIC = b"SOOD\x02"
NO_VALUE = 0xFFFF
QUERY, REPLY = "Q", "R"

Target = tuple[str, int]


class SoodFormatError(ValueError):
    """Bytes that are not a SOOD message; the message says what is wrong."""


@dataclass(frozen=True)
class SoodMessage:
    kind: str
    properties: Mapping[str, str | None]
    #: Where it came from: the sender's address, or `_replyaddr`/`_replyport` when given.
    host: str = ""
    port: int = 0


@dataclass(frozen=True)
class DiscoveredCore:
    core_id: str
    name: str
    host: str
    port: int
    version: str = ""

    def describe(self) -> str:
        return f"{self.name} at {self.host}:{self.port}"


def encode(kind: str, properties: Mapping[str, str | None]) -> bytes:
    if len(kind) != 1:
        raise ValueError("a SOOD message type is one letter")
    parts = [MAGIC, kind.encode("ascii")]
    for name, value in properties.items():
        raw_name = name.encode()
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"SOOD property name {name!r} must be 1 to 255 bytes")
        parts += [bytes([len(raw_name)]), raw_name]
        if value is None:
            parts.append(struct.pack(">H", NO_VALUE))
            continue
        raw_value = value.encode()
        if len(raw_value) >= NO_VALUE:
            raise ValueError(f"SOOD property {name!r} is too long")
        parts += [struct.pack(">H", len(raw_value)), raw_value]
    return b"".join(parts)


def decode(data: bytes, sender: Target = ("", 0)) -> SoodMessage:
    if not data.startswith(MAGIC):
        raise SoodFormatError("not a SOOD version 2 message")
    if len(data) < len(MAGIC) + 1:
        raise SoodFormatError("no message type")
    kind = chr(data[len(MAGIC)])
    properties: dict[str, str | None] = {}
    position = len(MAGIC) + 1
    try:
        while position < len(data):
            name_length = data[position]
            position += 1
            if name_length == 0:
                raise SoodFormatError("a property with an empty name")
            name = data[position : position + name_length]
            if len(name) < name_length:
                raise SoodFormatError("a property name runs past the end")
            position += name_length
            if position + 2 > len(data):
                raise SoodFormatError(f"property {name.decode(errors='replace')!r} has no value length")
            (value_length,) = struct.unpack_from(">H", data, position)
            position += 2
            value: str | None = None
            if value_length != NO_VALUE:
                raw = data[position : position + value_length]
                if len(raw) < value_length:
                    raise SoodFormatError(f"property {name.decode(errors='replace')!r} runs past the end")
                position += value_length
                value = raw.decode()
            properties[name.decode()] = value
    except UnicodeDecodeError:
        raise SoodFormatError("a property is not UTF-8") from None
    host, port = sender
    # The reply may name another address to reach the Core at (node-roon-api honours both).
    reply_address, reply_port = properties.pop("_replyaddr", None), properties.pop("_replyport", None)
    if reply_address:
        host = reply_address
    if reply_port and reply_port.isdigit():
        port = int(reply_port)
    return SoodMessage(kind, properties, host, port)


def roon_query(transaction_id: str | None = None) -> bytes:
    return encode(QUERY, {"query_service_id": ROON_SERVICE_ID, "_tid": transaction_id or str(uuid.uuid4())})


def core_from(message: SoodMessage, local_addresses: Iterable[str] = ()) -> DiscoveredCore | None:
    """The Core a reply describes, or None if it is not a Roon Core's reply."""
    props = message.properties
    if message.kind != REPLY or props.get("service_id") != ROON_SERVICE_ID:
        return None
    core_id, port = props.get("unique_id"), props.get("http_port") or ""
    if not core_id or not port.isdigit():
        return None
    # A Core on this machine answers from one of its addresses: talk to it on loopback,
    # as node-roon-api does.
    host = "127.0.0.1" if message.host in set(local_addresses) else message.host
    return DiscoveredCore(core_id, props.get("name") or "Roon Core", host, int(port), props.get("display_version") or "")


# -- where queries go ------------------------------------------------------------------


def default_targets() -> tuple[Target, ...]:
    """What every Roon extension queries: the multicast group and each interface's broadcast."""
    broadcasts = [broadcast for _name, _address, broadcast in _ipv4_interfaces() if broadcast]
    return ((MULTICAST_GROUP, SOOD_PORT), *((address, SOOD_PORT) for address in dict.fromkeys(broadcasts)))


def local_addresses() -> list[str]:
    return [address for _name, address, _broadcast in _ipv4_interfaces()]


_SIOCGIFADDR, _SIOCGIFBRDADDR = 0x8915, 0x8919


def _ipv4_interfaces() -> list[tuple[str, str, str | None]]:
    """(name, address, broadcast) of each IPv4 interface; Linux ioctls, else just the limited
    broadcast address."""
    found = []
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)[20:24])
            except OSError:
                continue  # no IPv4 address on this one
            try:
                broadcast = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), _SIOCGIFBRDADDR, request)[20:24])
            except OSError:
                broadcast = None
            if ipaddress.ip_address(address).is_loopback or broadcast in ("0.0.0.0", None):
                broadcast = None
            found.append((name, address, broadcast))
    if not found:
        found.append(("", "", "255.255.255.255"))
    return found


# -- asking ------------------------------------------------------------------------------


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, local: Iterable[str]) -> None:
        self.local = list(local)
        self.cores: dict[str, DiscoveredCore] = {}
        self.arrived = asyncio.Event()
        self.errors: list[OSError] = []

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            core = core_from(decode(data, (addr[0], addr[1])), self.local)
        except SoodFormatError:
            return  # other SOOD speakers, or noise: not ours to judge
        if core is not None:
            self.cores[core.core_id] = core
            self.arrived.set()

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)


class SoodClient:
    """One UDP socket that queries for Roon Cores and gathers every reply it gets.

    `query()` sends to every target; replies arrive whenever they do and stay in `cores`
    (by core id, the latest reply winning) until `close()`.
    """

    def __init__(self, targets: Iterable[Target]) -> None:
        self.targets = tuple(targets)
        self._transport: asyncio.DatagramTransport | None = None
        self._replies: _Replies | None = None

    async def open(self) -> "SoodClient":
        loop = asyncio.get_running_loop()
        network = any(not _is_loopback(host) for host, _port in self.targets)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if network:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # Discovery stays on the local network, as Roon's own does.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        # Replies come back to the address the query left from; loopback targets, loopback only.
        sock.bind(("0.0.0.0" if network else "127.0.0.1", 0))
        local = local_addresses() if network else []
        self._transport, self._replies = await loop.create_datagram_endpoint(lambda: _Replies(local), sock=sock)
        return self

    @property
    def cores(self) -> dict[str, DiscoveredCore]:
        return dict(self._replies.cores) if self._replies else {}

    @property
    def errors(self) -> list[OSError]:
        return list(self._replies.errors) if self._replies else []

    def query(self) -> None:
        if self._transport is None:
            raise RuntimeError("the SOOD client is not open")
        message = roon_query()
        for target in self.targets:
            try:
                self._transport.sendto(message, target)
            except OSError as exc:  # an interface gone since the targets were listed
                self._replies.errors.append(exc)

    async def wait_for_reply(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a new reply; True if one came."""
        assert self._replies is not None
        self._replies.arrived.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._replies.arrived.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def discover(targets: Iterable[Target], timeout: float = 1.0) -> list[DiscoveredCore]:
    """Query once and return every Core that replied within `timeout` seconds, by name."""
    client = await SoodClient(targets).open()
    try:
        client.query()
        await asyncio.sleep(timeout)
        return sorted(client.cores.values(), key=lambda core: (core.name.casefold(), core.core_id))
    finally:
        client.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
