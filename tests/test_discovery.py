"""Roon as it really runs: discovery, one identity per Core, keepalive, the status Roon shows.

Against real things only: fake Cores (MOO WebSocket servers) and their SOOD responder on
loopback UDP, a real SQLite store, real child processes for the network guard. The
discovery query goes to the responder's loopback port and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

import loopback_only
from aime_tui.clients import sood
from aime_tui.config import RoonConfig, load_config
from aime_tui.core.faults import NeedsAttention
from aime_tui.demo.roon_fake import FakeRoonCore, FakeSoodResponder
from aime_tui.reports import doctor
from aime_tui.services.roon import LOOKING_HINT, NEW_CORE_HINT, RoonTracker
from aime_tui.store import roon_cores
from aime_tui.store.database import MIGRATIONS, Play, Store
from clocks import fast_clock
from stored import roon_token, stored_plays
from waits import wait_until

ZONE = "Living Room"
CONFIG_PATH = Path("/etc/aime/config.toml")


@pytest.fixture
async def responder():
    """A loopback SOOD responder for the given Cores (`await responder([core, ...])`)."""
    started: list[FakeSoodResponder] = []

    async def start(answering: list[FakeRoonCore], **options) -> FakeSoodResponder:
        sood_responder = FakeSoodResponder(answering, **options)
        await sood_responder.start()
        started.append(sood_responder)
        return sood_responder

    yield start
    for sood_responder in started:
        await sood_responder.stop()


@pytest.fixture
async def tracker_for(store):
    """Trackers with no host, discovering through `targets`; all stopped afterwards."""
    trackers: list[RoonTracker] = []

    def build(targets, *, host="", port=9330, zones=(), clock=time.time, on: Store = store, **attributes) -> RoonTracker:
        config = RoonConfig(host=host, port=port, zones=tuple(zones), discovery=tuple(targets))
        tracker = RoonTracker(config, on, config_path=CONFIG_PATH, clock=clock)
        for name, value in attributes.items():
            setattr(tracker, name, value)
        trackers.append(tracker)
        return tracker

    yield build
    for tracker in trackers:
        await tracker.stop()


def target(sood_responder: FakeSoodResponder) -> list[tuple[str, int]]:
    return [("127.0.0.1", sood_responder.port)]


# -- the SOOD codec ---------------------------------------------------------------------


def test_the_query_is_what_roon_extensions_send():
    query = sood.roon_query("c64e3888-f2f2-4c4a-9f89-2093ae4217a6")
    expected = (
        b"SOOD\x02Q"
        + b"\x10query_service_id" + b"\x00\x24" + sood.ROON_SERVICE_ID.encode()
        + b"\x04_tid" + b"\x00\x24" + b"c64e3888-f2f2-4c4a-9f89-2093ae4217a6"
    )
    assert query == expected
    assert sood.decode(query).properties == {
        "query_service_id": "00720724-5143-4a9b-abac-0e50cba674bb",
        "_tid": "c64e3888-f2f2-4c4a-9f89-2093ae4217a6",
    }


def test_a_reply_names_the_core_and_may_say_where_to_reach_it():
    props = {
        "name": "Study Core", "display_version": "2.0", "unique_id": "core-1",
        "service_id": sood.ROON_SERVICE_ID, "http_port": "9330", "tcp_port": "9332", "empty": "", "none": None,
    }
    plain = sood.decode(sood.encode(sood.REPLY, props), ("192.0.2.7", 9003))
    assert plain.properties["empty"] == "" and plain.properties["none"] is None
    assert sood.core_from(plain) == sood.DiscoveredCore("core-1", "Study Core", "192.0.2.7", 9330, "2.0")

    moved = sood.decode(
        sood.encode(sood.REPLY, {**props, "_replyaddr": "198.51.100.4", "_replyport": "9101"}), ("192.0.2.7", 9003)
    )
    assert (moved.host, moved.port) == ("198.51.100.4", 9101)
    assert "_replyaddr" not in moved.properties
    assert sood.core_from(moved).host == "198.51.100.4"
    # A Core on this machine answering from one of its addresses is reached on loopback.
    assert sood.core_from(plain, local_addresses=["192.0.2.7"]).host == "127.0.0.1"


@pytest.mark.parametrize(
    "data, error",
    [
        (b"SOOD\x01Q", "not a SOOD version 2"),
        (b"SOOD\x02", "no message type"),
        (b"SOOD\x02R\x00", "empty name"),
        (b"SOOD\x02R\x05name", "runs past the end"),
        (b"SOOD\x02R\x04name\x00", "no value length"),
        (b"SOOD\x02R\x04name\x00\x09short", "runs past the end"),
        (b"SOOD\x02R\x04name\x00\x02\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_sood_messages_are_refused(data, error):
    with pytest.raises(sood.SoodFormatError, match=error):
        sood.decode(data)


def test_replies_for_other_services_or_without_an_id_are_no_core():
    other = sood.decode(sood.encode(sood.REPLY, {"service_id": "something-else", "unique_id": "x", "http_port": "1"}))
    unnamed = sood.decode(sood.encode(sood.REPLY, {"service_id": sood.ROON_SERVICE_ID, "http_port": "1"}))
    query = sood.decode(sood.roon_query())
    assert sood.core_from(other) is None and sood.core_from(unnamed) is None and sood.core_from(query) is None


def test_the_default_targets_are_the_multicast_group_and_broadcasts():
    # Computed only, never sent: the interfaces are read with ioctls, no datagram leaves.
    targets = sood.default_targets()
    assert targets[0] == ("239.255.90.90", 9003)
    assert all(port == 9003 and not host.startswith("127.") for host, port in targets)


# -- nothing leaves this machine ----------------------------------------------------------


def test_the_run_points_discovery_nowhere_but_loopback():
    config = load_config(config_path=Path("/nonexistent/config.toml"), data_dir=Path("/tmp/unused"))
    targets = config.roon.discovery
    assert targets is not None, "AIME_ROON_DISCOVERY must be set for the test run"
    assert all(loopback_only.is_loopback(target) for target in targets)


def test_a_datagram_to_the_multicast_group_or_a_broadcast_fails_the_test(tmp_path):
    log = Path(os.environ[loopback_only.LOG_VARIABLE])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for address in [("239.255.90.90", 9003), ("<broadcast>", 9003), ("192.168.1.255", 9003)]:
            with pytest.raises(loopback_only.OffLoopback):
                udp.sendto(b"SOOD\x02Q", address)
        with pytest.raises(loopback_only.OffLoopback):
            udp.connect(("239.255.90.90", 9003))
        udp.sendto(b"fine", ("127.0.0.1", 9))  # loopback passes
    assert log.read_text().count("datagram to") == 4
    log.unlink()  # this test's own attempts are the point of it

    # A child process inherits the guard: its attempt is refused and recorded too.
    child = subprocess.run(
        [sys.executable, "-c",
         "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('239.255.90.90', 9003))"],
        capture_output=True, text=True, timeout=20,
    )
    assert child.returncode != 0 and "OffLoopback" in child.stderr
    assert "239.255.90.90" in log.read_text()
    log.unlink()


# -- finding the Core ---------------------------------------------------------------------


async def test_with_no_host_the_tracker_finds_the_core_and_connects(roon, responder, tracker_for, store):
    core = await roon(zones=2)
    sood_responder = await responder([core])
    tracker = tracker_for(target(sood_responder))
    await tracker.start()
    status = tracker.status()
    assert (status["core"], status["core_id"], status["zones"]) == ("Demo Core", core.core_id, 2)
    assert status["endpoint"] == f"127.0.0.1:{core.port}"
    assert [query["query_service_id"] for query in sood_responder.queries] == [sood.ROON_SERVICE_ID]
    assert await roon_cores.saved_core_id(store) == core.core_id


async def test_reply_address_overrides_are_followed(roon, responder, tracker_for):
    core = await roon()
    # The reply comes from the responder but points at the Core's own address and port.
    sood_responder = await responder([core], reply_address=("127.0.0.1", core.port))
    tracker = tracker_for(target(sood_responder))
    await tracker.start()
    assert tracker.status()["endpoint"] == f"127.0.0.1:{core.port}"


async def test_several_cores_need_the_user_to_choose_unless_one_is_saved(roon, responder, tracker_for, store):
    kitchen = await roon(core_name="Kitchen Core", seed=1)
    study = await roon(core_name="Study Core", seed=2)
    sood_responder = await responder([kitchen, study])
    tracker = tracker_for(target(sood_responder))
    with pytest.raises(NeedsAttention) as refused:
        await tracker.start()
    assert str(refused.value) == (
        f"several Cores found: Kitchen Core (127.0.0.1:{kitchen.port}), Study Core (127.0.0.1:{study.port});"
        f" set roon.host in {CONFIG_PATH}"
    )
    assert kitchen.connected == study.connected == 0

    # Registered once with Study Core: that one is picked again among several.
    await roon_cores.save_registration(store, study.core_id, "Study Core", "study-token")
    await tracker.start()
    assert tracker.status()["core_id"] == study.core_id
    assert study.registrations == ["study-token"] and kitchen.registrations == []


async def test_a_configured_host_wins_over_discovery(roon, responder, tracker_for):
    found = await roon(core_name="Found Core", seed=1)
    configured = await roon(core_name="Configured Core", seed=2)
    sood_responder = await responder([found])
    tracker = tracker_for(target(sood_responder), host="127.0.0.1", port=configured.port)
    await tracker.start()
    assert tracker.status()["core"] == "Configured Core"
    assert sood_responder.queries == [], "no query at all"


async def test_no_core_yet_keeps_looking_and_connects_once_one_answers(roon, tracker_for, cleanup):
    # The responder's port is taken now, answered later: as a Core switched on after us.
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))
    port = quiet.getsockname()[1]
    tracker = tracker_for([("127.0.0.1", port)], requery_every=0.1)
    resolved: list[str | None] = []
    tracker.set_attention_handler(lambda service, reason, done: resolved.append(done))
    await tracker.start()
    assert tracker.attention == LOOKING_HINT.format(where=CONFIG_PATH)
    assert tracker.status()["core"] is None

    core = await roon()
    quiet.close()
    sood_responder = FakeSoodResponder([core])
    await sood_responder.start(port=port)
    cleanup.push_async_callback(sood_responder.stop)
    await wait_until(lambda: tracker.attention is None, what="the tracker to find the Core")
    assert tracker.status()["zones"] == 2
    assert resolved[-1] == f"found Roon Core Demo Core at 127.0.0.1:{core.port}"
    assert len(sood_responder.queries) >= 1


async def test_doctor_lists_the_cores_that_answer(roon, responder, tmp_path):
    kitchen = await roon(core_name="Kitchen Core", seed=1)
    study = await roon(core_name="Study Core", seed=2)
    sood_responder = await responder([kitchen, study])
    env = {"AIME_ROON_DISCOVERY": sood_responder.target}
    # The doctor blocks while it waits for answers: run it off the loop the responder is on.
    checks = await asyncio.to_thread(
        doctor.run, config_path=tmp_path / "none.toml", data_dir=tmp_path / "data", demo=False, env=env
    )
    [found] = [check for check in checks if "Roon Cores found" in check.what]
    assert found.outcome == doctor.OK
    assert f"Kitchen Core at 127.0.0.1:{kitchen.port} (core_id {kitchen.core_id})" in found.what
    assert f"Study Core at 127.0.0.1:{study.port} (core_id {study.core_id})" in found.what

    off = doctor.run(config_path=tmp_path / "none.toml", data_dir=tmp_path / "data", demo=False,
                     env={"AIME_ROON_DISCOVERY": "off"})
    assert any("discovery is off" in check.what and check.outcome == doctor.WARN for check in off)


# -- one identity per Core ----------------------------------------------------------------


async def test_plays_belong_to_the_core_id_through_a_rename(roon, store, cleanup):
    core = await roon(tick=0.02, time_scale=50)
    clock = fast_clock(50)
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store, clock=clock)
    cleanup.push_async_callback(tracker.stop)
    core.set_track(ZONE, "Sault", "Wildfires", "Untitled (Black Is)", 30)
    await tracker.start()
    await wait_until(lambda: tracker.status()["tracks_found"] >= 1, what="a play")
    await tracker.stop()

    core.rename("Upstairs Core")
    await tracker.start()
    assert tracker.status()["core"] == "Upstairs Core"
    plays = await stored_plays(store, 1000)
    assert {play.account for play in plays} == {core.core_id}
    known = await roon_cores.known_cores(store)
    assert [(entry.core_id, entry.name, entry.has_token) for entry in known] == [
        (core.core_id, "Upstairs Core", True)
    ]
    assert len(core.registrations) == 2 and core.registrations[1] is not None, "same token after a rename"


async def test_a_new_core_asks_for_approval_in_its_own_words(roon, store, cleanup):
    first = await roon(core_name="Home Core", seed=1)
    second = await roon(core_name="Cabin Core", seed=2, require_approval=True)
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=first.port, discovery=()), store)
    cleanup.push_async_callback(tracker.stop)
    await tracker.start()
    assert tracker.attention is None
    await tracker.stop()
    tracker.reconfigure(load_config(config_path=Path("/nonexistent.toml"), data_dir=Path("/tmp/unused"),
                                    env={"AIME_ROON_HOST": "127.0.0.1", "AIME_ROON_PORT": str(second.port)}))
    await tracker.start()
    assert tracker.attention == NEW_CORE_HINT.format(name="Cabin Core")
    assert second.registrations == [None], "never the other Core's token"
    second.approve()
    await wait_until(lambda: tracker.attention is None, what="approval")
    assert {entry.name: entry.has_token for entry in await roon_cores.known_cores(store)} == {
        "Home Core": True, "Cabin Core": True,
    }
    assert await roon_token(store, first.core_id) != await roon_token(store, second.core_id)


def _schema_2_database(path: Path, plays: list[tuple], token: str) -> None:
    """A database as the version before core ids left it."""
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        db.executescript(migration)
    db.execute("PRAGMA user_version = 2")
    db.executemany(
        "INSERT INTO plays (source, account, played_at, artist, title, album, artist_key, title_key, stored_at)"
        " VALUES (?, ?, ?, ?, ?, ?, lower(?), lower(?), 0)",
        [(source, account, at, artist, title, "", artist, title) for source, account, at, artist, title in plays],
    )
    db.execute("INSERT INTO settings (key, value) VALUES ('roon.token', ?)", (token,))
    db.commit()
    db.close()


async def test_the_migration_moves_plays_and_token_to_the_core_without_duplicates(roon, tmp_path, cleanup):
    core = await roon(core_name="Demo Core")
    core._tokens.add("token-from-before")  # the Core issued it to the older version
    path = tmp_path / "aime.db"
    _schema_2_database(path, [
        ("roon", "Demo Core", 1000, "Björk", "Jóga"),
        ("roon", "Demo Core", 2000, "Burial", "Archangel"),
        ("roon", "Other Core", 3000, "Sault", "Wildfires"),
        ("lastfm", "Demo Core", 1000, "Björk", "Jóga"),
    ], "token-from-before")
    store = await Store.open(path)
    cleanup.push_async_callback(store.close)
    assert await store.get_setting("roon.token") is None
    # A play already stored under the core id (the same play) must not become two.
    await store.insert_plays([Play("roon", core.core_id, 2000, "Burial", "Archangel")])
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store)
    await tracker.start()
    await tracker.stop()
    assert core.registrations == ["token-from-before"]
    assert await roon_token(store, core.core_id) == "token-from-before"
    rows = sorted((p.source, p.account, p.played_at) for p in await stored_plays(store, 100))
    assert rows == [
        ("lastfm", "Demo Core", 1000),
        ("roon", "Other Core", 3000),  # another Core's: it claims them when it is met
        ("roon", core.core_id, 1000),
        ("roon", core.core_id, 2000),
    ]
    assert store.play_total("roon") == 3, "the totals lose the duplicate too"
    async with store.db.execute("SELECT kind, value FROM roon_unclaimed") as cursor:
        assert await cursor.fetchall() == [("account", "Other Core")]


# -- keepalive ------------------------------------------------------------------------------


async def test_pings_start_before_registration_and_are_answered(roon, store, cleanup):
    core = await roon(require_approval=True, ping_interval=0.05)
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store)
    cleanup.push_async_callback(tracker.stop)
    await tracker.start()
    assert tracker.attention is not None, "not approved yet"
    await wait_until(lambda: core.pings_before_registration >= 2, what="pings before registration")


def keepalive_tracker(core, store, scale: float, cleanup) -> tuple[RoonTracker, list[BaseException]]:
    """A tracker on `core` with a keepalive shortened for tests, and the faults it reports."""
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store, clock=fast_clock(scale))
    tracker.keepalive_interval, tracker.keepalive_timeout, tracker.close_timeout = 0.2, 0.5, 0.5
    faults: list[BaseException] = []
    tracker.set_fault_handler(lambda service, exc: faults.append(exc))
    cleanup.push_async_callback(tracker.stop)
    return tracker, faults


async def test_a_half_open_socket_is_noticed_and_the_play_in_progress_carries_over_once(roon, store, cleanup):
    scale = 20
    core = await roon(zones=1, tick=0.05, time_scale=scale)
    tracker, faults = keepalive_tracker(core, store, scale, cleanup)
    core.set_track(ZONE, "Aphex Twin", "Avril 14th", "Drukqs", 50)  # a play after 25 s heard
    await tracker.start()
    await wait_until(lambda: core.seek_position(ZONE) >= 5, what="5 s of the track")
    began = time.monotonic()
    assert core.half_open() == 1
    await wait_until(lambda: faults, timeout=8, what="the dead socket to be noticed")
    noticed = time.monotonic() - began
    # Interval + pong wait + closing, with room for a loaded machine: TCP alone would take
    # minutes to notice.
    assert noticed < 3 * (0.2 + 0.5 + 0.5), noticed
    assert "keepalive ping timeout" in str(faults[0])

    await tracker.start()  # what the supervisor does after its backoff
    await wait_until(lambda: tracker.status()["tracks_found"] >= 1, timeout=10, what="the play")
    await wait_until(lambda: core.current_track(ZONE).title != "Avril 14th", timeout=10, what="the next track")
    await asyncio.sleep(0.2)
    plays = [play for play in await stored_plays(store, 100) if play.title == "Avril 14th"]
    assert len(plays) == 1


async def test_a_track_that_ends_while_the_socket_is_dead_is_still_stored(roon, store, cleanup):
    scale = 20
    core = await roon(zones=1, tick=0.05, time_scale=scale)
    tracker, faults = keepalive_tracker(core, store, scale, cleanup)
    core.set_track(ZONE, "The xx", "Intro", "xx", 60)  # a play after 30 s heard
    await tracker.start()
    await wait_until(lambda: core.seek_position(ZONE) >= 10, what="10 s of the track")
    core.half_open()
    await wait_until(lambda: faults, timeout=5, what="the dead socket to be noticed")
    await wait_until(lambda: core.current_track(ZONE).title != "Intro", timeout=10, what="the track's end")
    await tracker.start()
    await wait_until(lambda: tracker.status()["tracks_found"] >= 1, timeout=5, what="the play")
    plays = [play for play in await stored_plays(store, 100) if play.title == "Intro"]
    assert len(plays) == 1


# -- what Roon shows, and which zones count --------------------------------------------------


async def test_roons_extensions_page_shows_what_the_tracker_does(roon, store, cleanup):
    core = await roon(zones=3, tick=0.02, time_scale=50)
    tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=core.port, discovery=()), store, clock=fast_clock(50))
    cleanup.push_async_callback(tracker.stop)
    await store.insert_plays([Play("roon", core.core_id, 1000 + n, "Artist", f"Song {n}") for n in range(1411)])
    await tracker.start()
    expected = {"message": "collecting: 1,411 plays, 3 zones", "is_error": False}
    await wait_until(lambda: core.extension_status.get("com.aime.tui") == expected, what="Roon to show it")
    core.set_track(ZONE, "Sault", "Wildfires", "Untitled (Black Is)", 20)
    await wait_until(
        lambda: core.extension_status["com.aime.tui"]["message"].startswith("collecting: 1,41") and
        core.extension_status["com.aime.tui"]["message"] != "collecting: 1,411 plays, 3 zones",
        what="the status to count the new play",
    )
    assert core.extension_status["com.aime.tui"]["message"] == "collecting: 1,412 plays, 3 zones"


async def test_only_the_configured_zones_count(roon, store, cleanup):
    core = await roon(zones=2, tick=0.02, time_scale=50)
    config = RoonConfig(host="127.0.0.1", port=core.port, discovery=(), zones=("kitchen",))
    tracker = RoonTracker(config, store, clock=fast_clock(50))
    cleanup.push_async_callback(tracker.stop)
    core.set_track("Kitchen", "Burial", "Archangel", "Untrue", 20)
    core.set_track(ZONE, "Sault", "Wildfires", "Untitled (Black Is)", 20)
    await tracker.start()
    counted = {entry["zone"]: entry["counted"] for entry in tracker.status()["now_playing"]}
    assert counted == {"Kitchen": True, ZONE: False}
    await wait_until(lambda: tracker.status()["tracks_found"] >= 1, what="the Kitchen play")
    await wait_until(lambda: core.current_track(ZONE).title != "Wildfires", what="the other zone's track end")
    titles = {play.title for play in await stored_plays(store, 100)}
    assert "Archangel" in titles and "Wildfires" not in titles
    await wait_until(
        lambda: core.extension_status.get("com.aime.tui", {}).get("message", "").endswith("1 of 2 zones"),
        what="the status to say which zones count",
    )


# -- our frames, read by a decoder that is not ours ------------------------------------------


def independent_decode(frame: bytes) -> dict:
    """MOO/1 as node-roon-api's parser reads it, written from its source, not from moo.py."""
    lines, index = [], 0
    while True:
        end = frame.index(b"\n", index)
        line = frame[index:end].decode()
        index = end + 1
        if line == "":
            break
        lines.append(line)
    magic, verb, rest = lines[0].split(" ", 2)
    assert magic.startswith("MOO/") and magic[4:].isdigit()
    message = {"verb": verb, "name": rest, "headers": {}}
    for line in lines[1:]:
        key, value = line.split(":", 1)
        message["headers"][key] = value.lstrip(" ")
    length = int(message["headers"].get("Content-Length", "0"))
    body = frame[index:index + length]
    assert len(body) == length
    if length:
        assert message["headers"]["Content-Type"] == "application/json"
        message["body"] = json.loads(body.decode("utf-8"))
    else:
        assert index == len(frame), "data after headers without a Content-Length"
    assert "Request-Id" in message["headers"]
    return message


def independent_frame(verb: str, name: str, request_id: str, body=None) -> bytes:
    head = f"MOO/1 {verb} {name}\nRequest-Id: {request_id}\n"
    if body is None:
        return (head + "\n").encode()
    data = json.dumps(body).encode()
    return (head + f"Content-Length: {len(data)}\nContent-Type: application/json\n\n").encode() + data


async def test_our_frames_read_right_with_an_independent_decoder(store):
    """A Core scripted with hand-made frames; every frame the tracker sends is read by
    `independent_decode`. The Core uses string request ids, as Roon's parser allows."""
    received: list[dict] = []

    async def core(websocket):
        await websocket.send(independent_frame("REQUEST", "com.roonlabs.ping:1/ping", "core-ping-1"))
        async for frame in websocket:
            message = independent_decode(frame)
            received.append(message)
            request_id = message["headers"]["Request-Id"]
            if message["name"] == "com.roonlabs.registry:1/info":
                await websocket.send(independent_frame("COMPLETE", "Success", request_id, {
                    "core_id": "c0ffee", "display_name": "Hand Core", "display_version": "2.0"}))
            elif message["name"] == "com.roonlabs.registry:1/register":
                await websocket.send(independent_frame("COMPLETE", "Registered", request_id, {
                    "core_id": "c0ffee", "display_name": "Hand Core", "token": "hand-token",
                    "provided_services": ["com.roonlabs.transport:2"], "http_port": 9330}))
                await websocket.send(independent_frame(
                    "REQUEST", "com.roonlabs.status:1/subscribe_status", "status-sub", {"subscription_key": 0}))
            elif message["name"] == "com.roonlabs.transport:2/subscribe_zones":
                await websocket.send(independent_frame("CONTINUE", "Subscribed", request_id, {"zones": []}))

    async with serve(core, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        tracker = RoonTracker(RoonConfig(host="127.0.0.1", port=port, discovery=()), store)
        try:
            await tracker.start()
            await wait_until(lambda: len(received) >= 5, what="every reply")
        finally:
            await tracker.stop()

    by_id = {message["headers"]["Request-Id"]: message for message in received}
    assert (by_id["core-ping-1"]["verb"], by_id["core-ping-1"]["name"]) == ("COMPLETE", "Success")
    assert by_id["status-sub"]["name"] == "Subscribed"
    assert by_id["status-sub"]["body"] == {"message": "connected; no zones yet", "is_error": False}
    requests = [message for message in received if message["verb"] == "REQUEST"]
    assert [message["name"] for message in requests] == [
        "com.roonlabs.registry:1/info",
        "com.roonlabs.registry:1/register",
        "com.roonlabs.transport:2/subscribe_zones",
    ]
    registration = requests[1]["body"]
    assert registration["extension_id"] == "com.aime.tui"
    assert registration["provided_services"] == ["com.roonlabs.ping:1", "com.roonlabs.status:1"]
    assert registration["required_services"] == ["com.roonlabs.transport:2"]
    assert requests[2]["body"] == {"subscription_key": 1}
