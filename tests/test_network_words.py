"""Network failures reach the user in words (refused, DNS, timed out, TLS not trusted),
and the raw error reaches the log file."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess

import httpx
import pytest

from aime_tui.clients.lastfm import LastfmClient, LastfmError
from aime_tui.clients.moo import MooConnectError, MooConnection
from aime_tui.clients.network import network_failure

SECRET = "0123456789abcdef0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_refused_connection_to_lastfm_says_so_and_logs_the_raw_error(caplog):
    caplog.set_level(logging.INFO)
    port = closed_port()
    async with LastfmClient(f"http://127.0.0.1:{port}/2.0/", SECRET, "rj", timeout=2, rate=1000, tries=1) as lastfm:
        with pytest.raises(LastfmError) as raised:
            await lastfm.recent_tracks()
    assert str(raised.value) == f"cannot reach Last.fm: connection refused by 127.0.0.1:{port}"
    assert "Errno" not in str(raised.value)
    raw = [record.getMessage() for record in caplog.records if "raw error" in record.getMessage()]
    assert raw and "ConnectionRefusedError" in raw[0] and "[Errno 111]" in raw[0]
    assert SECRET not in caplog.text


async def test_a_refused_connection_to_a_roon_core_says_so():
    port = closed_port()
    with pytest.raises(MooConnectError) as raised:
        await MooConnection.connect(f"ws://127.0.0.1:{port}/api", open_timeout=2)
    assert raised.value.reason == f"connection refused by 127.0.0.1:{port}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_an_untrusted_certificate_says_so(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LastfmClient(f"https://127.0.0.1:{port}/2.0/", SECRET, "rj", timeout=2, rate=1000, tries=1) as lastfm:
            with pytest.raises(LastfmError) as raised:
                await lastfm.recent_tracks()
    finally:
        server.close()
        await server.wait_closed()
    assert str(raised.value) == "cannot reach Last.fm: TLS certificate of 127.0.0.1 not trusted (self-signed certificate)"


async def test_a_connect_that_times_out_says_after_how_long():
    # A listening socket whose backlog is full leaves the next connect hanging, on loopback.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            async with httpx.AsyncClient(timeout=0.3) as http:
                with pytest.raises(httpx.HTTPError) as raised:
                    await http.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()
    assert network_failure(raised.value, "127.0.0.1", port, timeout=0.3) == f"timed out after 0.3 s reaching 127.0.0.1:{port}"


def test_a_failed_dns_lookup_names_the_host():
    # No real lookup (it could leave the machine): the exception httpx raises for one.
    try:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as lookup:
            raise httpx.ConnectError(str(lookup)) from lookup
    except httpx.ConnectError as exc:
        failure = exc
    assert network_failure(failure, "ws.audioscrobbler.com", 443) == "DNS lookup failed for ws.audioscrobbler.com"
    assert network_failure(ValueError("not a network failure"), "example.org") is None
    assert network_failure(ConnectionRefusedError(111, "refused"), "::1", 9330) == "connection refused by [::1]:9330"
