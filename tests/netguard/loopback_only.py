"""Datagrams from the test run go to loopback only: the guard refuses any other destination.

Installed in the test process by conftest.py and in every Python child it starts (through
`sitecustomize` beside this file, on PYTHONPATH). A refused send raises before anything
leaves the socket and is written to the file named by AIME_TEST_NET_LOG, which the suite
checks after every test: a test that would reach the real multicast group or a broadcast
address fails, even when the code under test swallowed the error.
"""

from __future__ import annotations

import ipaddress
import os
import socket

LOG_VARIABLE = "AIME_TEST_NET_LOG"


class OffLoopback(AssertionError):
    """A test tried to send a datagram beyond this machine."""


def is_loopback(address) -> bool:
    if not isinstance(address, tuple):
        return True  # a Unix socket path
    host = str(address[0]).split("%")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "<broadcast>", or a name that could resolve anywhere


def _refuse(address) -> None:
    where = os.environ.get(LOG_VARIABLE)
    if where:
        with open(where, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()}: datagram to {address!r}\n")
    raise OffLoopback(f"a test tried to send a datagram to {address!r}: loopback only")


def install() -> None:
    if getattr(socket.socket, "_loopback_only", False):
        return
    real_sendto, real_connect = socket.socket.sendto, socket.socket.connect

    def sendto(self, data, *args):
        if not is_loopback(args[-1]):
            _refuse(args[-1])
        return real_sendto(self, data, *args)

    def connect(self, address):
        if self.type == socket.SOCK_DGRAM and not is_loopback(address):
            _refuse(address)
        return real_connect(self, address)

    socket.socket.sendto = sendto
    socket.socket.connect = connect
    socket.socket._loopback_only = True
