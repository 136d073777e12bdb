"""The Last.fm client, the tracker service, and the loopback fake they run against.

Everything talks to a real FakeLastfm over loopback HTTP and a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import ssl
import subprocess
import time
import traceback
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import urlsplit

import httpx
import pytest
from stored import stored_plays
from waits import wait_until

from aime_tui.clients import lastfm as lastfm_api
from aime_tui.clients import pacing
from aime_tui.clients.lastfm import (
    LastfmClient,
    LastfmError,
    RecentTracksPage,
    classify,
)
from aime_tui.config import LastfmConfig
from aime_tui.core.faults import NeedsAttention, RetryAfter
from aime_tui.core.model import RunState, ServiceView
from aime_tui.core.supervisor import Supervisor
from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.services.tracker import LastfmTracker
from aime_tui.store.database import Play, Store

NEWEST = 1_700_000_000
SPACING = 60
USER = "alice"
SECRET = "sekret-KEY-0123456789abcdef"


@pytest.fixture
async def fake():
    server = FakeLastfm(user=USER, api_key=SECRET, plays=450, newest=NEWEST, spacing=SPACING)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake):
    # One try, no pacing: these tests look at what a single answer means.
    async with LastfmClient(fake.url, SECRET, USER, timeout=0.5, rate=1000, tries=1) as lastfm:
        yield lastfm


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries in place wait milliseconds here, not half seconds."""
    monkeypatch.setattr(LastfmTracker, "retry_wait", 0.005)


def tracker_config(fake: FakeLastfm, **changes) -> LastfmConfig:
    config = LastfmConfig(api_url=fake.url, api_key=fake.api_key, user=fake.user, interval=3600, rate=1000)
    return replace(config, **changes)


async def wire(fake: FakeLastfm, **params) -> dict:
    """The fake's JSON as sent, to prove a test exercises the quirk it claims to."""
    query = {"method": "user.getrecenttracks", "user": fake.user, "api_key": fake.api_key,
             "format": "json", **params}
    async with httpx.AsyncClient() as http:
        return (await http.get(fake.url, params=query)).json()


async def wait_of_the_next_request(client: LastfmClient, monkeypatch) -> float:
    """Seconds the client's next request would wait for its slot: the bucket is asked for
    one (it takes it), its sleep recorded rather than slept."""
    asked = [0.0]

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    with monkeypatch.context() as patch:
        patch.setattr(pacing.asyncio, "sleep", sleep)
        await client.bucket.acquire()
    return asked[-1]


async def failure_of(client: LastfmClient, **params) -> LastfmError:
    with pytest.raises(LastfmError) as caught:
        await client.recent_tracks(**params)
    return caught.value


# -- parsing ---------------------------------------------------------------------------


async def test_string_numbers_become_ints(fake, client):
    sent = await wire(fake, limit=200, page=2)
    assert sent["recenttracks"]["@attr"]["totalPages"] == "3"
    assert sent["recenttracks"]["track"][0]["date"]["uts"] == str(NEWEST - 200 * SPACING)

    page = await client.recent_tracks(page=2)

    assert (page.page, page.total_pages, page.total) == (2, 3, 450)
    assert page.plays == fake.history[200:400]
    assert all(type(play.played_at) is int for play in page.plays)
    assert fake.history[0].account == USER and fake.history[0].source == "lastfm"


async def test_a_lone_track_sent_as_an_object_is_read(fake, client):
    sent = await wire(fake, limit=1)
    assert isinstance(sent["recenttracks"]["track"], dict)

    page = await client.recent_tracks(limit=1)

    assert page.plays == fake.history[:1]
    assert page.total_pages == 450


async def test_empty_history_has_no_track_key_and_reads_as_no_plays(cleanup):
    empty = FakeLastfm(user=USER, api_key=SECRET, plays=0)
    await empty.start()
    cleanup.push_async_callback(empty.stop)
    sent = await wire(empty)
    assert "track" not in sent["recenttracks"]
    async with LastfmClient(empty.url, SECRET, USER) as lastfm:
        page = await lastfm.recent_tracks()
    await empty.stop()
    assert page == RecentTracksPage(plays=[], now_playing=None, page=1, total_pages=0, total=0, user=USER)


async def test_now_playing_is_reported_apart_never_as_a_play(fake, client):
    fake.now_playing = True

    page = await client.recent_tracks(limit=5)
    assert page.plays == fake.history[:5]
    assert page.now_playing == fake.now_playing_track
    assert page.now_playing.played_at == 0

    # Alone on the page it comes as a single object; still not a play.
    sent = await wire(fake, **{"from": NEWEST + 1})
    assert sent["recenttracks"]["track"]["@attr"] == {"nowplaying": "true"}
    page = await client.recent_tracks(from_ts=NEWEST + 1)
    assert page.plays == [] and page.now_playing == fake.now_playing_track


async def test_pages_follow_inclusive_from_and_exclusive_to(fake, client):
    from_ts, to_ts = NEWEST - 100 * SPACING, NEWEST - 10 * SPACING
    collected: list[Play] = []
    page_number = 1
    while True:
        page = await client.recent_tracks(page=page_number, limit=20, from_ts=from_ts, to_ts=to_ts)
        collected += page.plays
        if page_number >= page.total_pages:
            break
        page_number += 1

    # history[10] is played exactly at `to`: outside; history[100] exactly at `from`: inside.
    assert collected == fake.history[11:101]
    assert (page.total, page.total_pages) == (90, 5)
    assert [request["page"] for request in fake.requests] == ["1", "2", "3", "4", "5"]
    bounds = {(request["from"], request["to"]) for request in fake.requests}
    assert bounds == {(str(from_ts), str(to_ts))}


async def test_page_size_is_capped_at_200(fake, client):
    page = await client.recent_tracks(limit=500)
    assert page.plays == fake.history[:200]


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, status, message, advice",
    [
        (10, 403, "Invalid API key - You must be granted a valid key by last.fm", "lastfm.api_key"),
        (26, 403, "Suspended API key - Access for your account has been suspended", "new one"),
        (17, 200, "Login: User required to be logged in", "privacy settings"),
        (6, 404, "User not found", "lastfm.user"),
    ],
)
async def test_faults_no_retry_fixes_need_attention(fake, client, code, status, message, advice):
    fake.inject("error", code=code, message=message, status=status)
    failure = await failure_of(client)
    assert (failure.code, failure.status) == (code, status)

    fault = classify(failure)

    assert isinstance(fault, NeedsAttention)
    assert advice in str(fault) and f"error {code}" in str(fault) and message in str(fault)


async def test_the_fake_refuses_a_wrong_key_and_an_unknown_user(fake):
    async with LastfmClient(fake.url, "wrong-key-0000000000", USER) as lastfm:
        wrong_key = await failure_of(lastfm)
    async with LastfmClient(fake.url, SECRET, "nobody") as lastfm:
        unknown_user = await failure_of(lastfm)

    assert (wrong_key.code, wrong_key.status) == (10, 403)
    assert "lastfm.api_key" in str(classify(wrong_key))
    assert (unknown_user.code, unknown_user.message) == (6, "User not found")
    assert "lastfm.user" in str(classify(unknown_user))


@pytest.mark.parametrize(
    "code, message",
    [
        (8, "Operation failed - Most likely the backend service failed. Please try again."),
        (11, "Service Offline - This service is temporarily offline. Try again later."),
        (16, "There was a temporary error processing your request. Please try again"),
    ],
)
async def test_backend_errors_are_transient(fake, client, code, message):
    fake.inject("error", code=code, message=message, status=200)
    failure = await failure_of(client)
    assert classify(failure) is failure
    assert str(failure) == f"Last.fm error {code}: {message}"


async def test_http_500_is_transient_and_faults_are_used_up(fake, client):
    fake.inject("http_500", times=2)
    for _ in range(2):
        failure = await failure_of(client)
        assert classify(failure) is failure
        assert (failure.code, failure.status) == (None, 500)
        assert "HTTP 500" in str(failure)
    assert (await client.recent_tracks(limit=1)).plays == fake.history[:1]


async def test_http_429_honours_retry_after(fake, client, monkeypatch):
    fake.inject("http_429", retry_after=7)
    fault = classify(await failure_of(client))
    assert isinstance(fault, RetryAfter)
    assert fault.delay == 7
    assert "rate limit" in str(fault)
    assert 6 < await wait_of_the_next_request(client, monkeypatch) <= 7


async def test_a_429_without_an_error_payload_is_still_a_rate_limit():
    # A proxy in front of Last.fm may answer 429 with an HTML page instead of error 29.
    fault = classify(LastfmError("Last.fm answered HTTP 429", status=429, retry_after=3))
    assert isinstance(fault, RetryAfter)
    assert fault.delay == 3


async def test_retry_after_may_be_an_http_date(fake, client):
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    fake.inject("http_429", retry_after=format_datetime(later, usegmt=True))
    fault = classify(await failure_of(client))
    assert isinstance(fault, RetryAfter)
    assert 100 <= fault.delay <= 121


@pytest.mark.parametrize("kind, params", [
    ("http_429", {}), ("error", {"code": 29, "message": "Rate Limit Exceeded", "status": 200}),
])
async def test_rate_limits_without_retry_after_wait_a_minute(fake, client, kind, params, monkeypatch):
    fake.inject(kind, **params)
    fault = classify(await failure_of(client))
    assert isinstance(fault, RetryAfter)
    assert fault.delay == 60
    # Every caller of this endpoint and key waits too: the bucket is shared.
    async with LastfmClient(fake.url, SECRET, USER, rate=1000) as other:
        assert 59 < await wait_of_the_next_request(other, monkeypatch) <= 60


async def test_bad_json_is_transient(fake, client):
    fake.inject("bad_json")
    failure = await failure_of(client)
    assert classify(failure) is failure
    assert "not valid JSON" in str(failure)


async def test_a_dropped_connection_is_transient(fake, client):
    fake.inject("drop")
    failure = await failure_of(client)
    assert classify(failure) is failure
    assert str(failure).startswith("cannot reach Last.fm")


async def test_slow_answers_within_the_timeout_arrive(fake, client):
    fake.inject("slow", delay=0.1)
    assert (await client.recent_tracks(limit=1)).plays == fake.history[:1]


@pytest.mark.parametrize("kind", ["slow", "hang"])
async def test_no_answer_within_the_timeout_is_transient(fake, kind):
    fake.inject(kind, delay=5)
    async with LastfmClient(fake.url, SECRET, USER, timeout=0.2, tries=1) as lastfm:
        started = time.monotonic()
        failure = await failure_of(lastfm)
    assert time.monotonic() - started < 1.5
    assert classify(failure) is failure
    assert str(failure) == "no answer from Last.fm within 0.2 s"


async def test_a_dead_server_is_transient():
    gone = FakeLastfm(user=USER, api_key=SECRET, plays=1)
    await gone.start()
    url = gone.url
    await gone.stop()
    async with LastfmClient(url, SECRET, USER, timeout=0.5, rate=1000, tries=1) as lastfm:
        failure = await failure_of(lastfm)
    assert classify(failure) is failure
    assert str(failure).startswith("cannot reach Last.fm")


async def test_the_api_key_appears_in_no_message_repr_or_log(fake, client, store, caplog):
    caplog.set_level(logging.DEBUG)
    faults = [
        ("drop", {}), ("http_500", {}), ("http_429", {"retry_after": 0.05}), ("bad_json", {}),
        ("html", {}), ("truncated", {}), ("slow", {"delay": 2}), ("error", {"code": 10, "message": f"Invalid API key {SECRET}"}),
        ("error", {"code": 8, "message": "Operation failed"}),
    ]
    texts = [repr(client)]
    for kind, params in faults:
        fake.inject(kind, **params)
        failure = await failure_of(client)
        for shown in (failure, classify(failure)):
            texts += [str(shown), repr(shown), "".join(traceback.format_exception(shown))]

    tracker = LastfmTracker(tracker_config(fake), store)
    fake.inject("error", code=10, message=f"Invalid API key {SECRET}")
    with pytest.raises(NeedsAttention) as caught:
        await tracker.poll_once()  # raised from the LastfmError: the chain is printed too
    texts += ["".join(traceback.format_exception(caught.value)), str(tracker.status())]
    texts.append(caplog.text)

    assert "HTTP Request" in caplog.text  # httpx did log its requests, so the check is real
    assert fake.requests and all(request["api_key"] == SECRET for request in fake.requests)
    leaks = [text for text in texts if SECRET in text]
    assert leaks == []


async def test_the_fake_scrobbles_live_while_running(cleanup):
    live = FakeLastfm(user=USER, api_key=SECRET, plays=2, newest=NEWEST, live_every=0.02)
    await live.start()
    cleanup.push_async_callback(live.stop)
    await wait_until(lambda: len(live.history) >= 4, timeout=3.0)
    await live.stop()
    count = len(live.history)
    await asyncio.sleep(0.05)
    assert len(live.history) == count  # stopped means stopped
    assert [play.played_at for play in live.history[-2:]] == [NEWEST, NEWEST - 180]
    assert all(newer.played_at > older.played_at
               for newer, older in zip(live.history, live.history[1:]))


def test_the_fake_refuses_an_unknown_fault():
    with pytest.raises(ValueError, match="unknown fault 'flaky'"):
        FakeLastfm(plays=0).inject("flaky")


# -- the tracker -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "api_key, user, missing", [("", USER, "lastfm.api_key"), (SECRET, "", "lastfm.user")]
)
async def test_start_without_config_names_the_key_and_the_file(
    store, tmp_path, api_key, user, missing
):
    config_path = tmp_path / "config.toml"
    config = LastfmConfig(api_key=api_key, user=user)
    tracker = LastfmTracker(config, store, config_path=config_path)

    with pytest.raises(NeedsAttention) as caught:
        await tracker.start()

    assert str(caught.value) == f"set {missing} in {config_path}"
    assert tracker.status()["running"] is False


async def test_first_poll_stores_exactly_the_newest_page_and_sets_the_cursor(fake, store, cleanup):
    fake.now_playing = True
    tracker = LastfmTracker(tracker_config(fake), store, clock=lambda: 1234.5)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    assert await stored_plays(store) == fake.history[:200]
    assert await store.get_cursor(f"lastfm:{USER}") == str(NEWEST)
    asked = [(request["page"], request["limit"], request.get("from"))
             for request in fake.requests]
    assert asked == [("1", "200", None)]
    playing = fake.now_playing_track
    assert tracker.status() == {
        "running": True,
        "interval": 3600,
        "last_check": 1234.5,
        "tracks_found": 200,
        "plays_total": 200,
        "last_error": None,
        "account": USER,
        "now_playing": f"{playing.artist} – {playing.title}",
        "catching_up": None,
    }


async def test_next_poll_stores_exactly_the_new_plays(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    new = fake.add_plays(3)
    fake.requests.clear()

    assert await tracker.poll_once() == 3

    assert await stored_plays(store) == fake.history[:203]
    assert fake.history[:3] == new[::-1]
    assert await store.count_plays() == 203
    assert await store.get_cursor(f"lastfm:{USER}") == str(new[-1].played_at)
    asked = [(request["page"], request["from"]) for request in fake.requests]
    assert asked == [("1", str(NEWEST))]
    assert tracker.status()["tracks_found"] == 203
    assert tracker.status()["now_playing"] is None

    assert await tracker.poll_once() == 0
    assert await store.count_plays() == 203


async def test_a_long_gap_is_swept_newest_first_each_page_bounded_by_the_last(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    fake.add_plays(450)  # 451 plays from the cursor on
    history = fake.history
    fake.requests.clear()

    assert await tracker.poll_once() == 450

    assert await stored_plays(store) == history[:650]
    asked = [(request["page"], request["from"], request.get("to")) for request in fake.requests]
    # Each request ends (exclusive) just above the oldest second already fetched,
    # which it asks for again whole: a page may end in the middle of a second.
    since = str(NEWEST)
    assert asked == [
        ("1", since, None),
        ("1", since, str(history[199].played_at + 1)),
        ("1", since, str(history[398].played_at + 1)),
    ]
    assert await store.get_cursor(f"lastfm:{USER}") == str(history[0].played_at)
    assert await store.get_cursor(f"lastfm-gaps:{USER}") is None


async def test_a_pass_cut_short_keeps_what_it_stored_and_resumes_with_no_gap(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    fake.add_plays(450)  # 451 plays from the cursor on: three pages
    history = fake.history
    fake.inject("slow", delay=0)  # the newest page
    fake.inject("http_500", times=3)  # every try of the next

    with pytest.raises(LastfmError, match="HTTP 500"):
        await tracker.poll_once()
    # The newest page but its oldest second joined the first poll's 200 plays; the
    # cursor is the newest play, and the gap below it is kept.
    assert await stored_plays(store) == history[:199] + history[450:650]
    assert await store.get_cursor(f"lastfm:{USER}") == str(history[0].played_at)
    assert json.loads(await store.get_cursor(f"lastfm-gaps:{USER}")) == [
        {"low": NEWEST, "high": history[199].played_at + 1, "second_page": 0, "remaining": 252}
    ]
    assert "HTTP 500" in tracker.status()["last_error"]
    assert tracker.status()["catching_up"] == 252

    fake.requests.clear()
    assert await tracker.poll_once() == 251
    assert await stored_plays(store) == history[:650]
    assert fake.requests[1]["to"] == str(history[199].played_at + 1)
    assert tracker.status()["last_error"] is None
    assert tracker.status()["tracks_found"] == 650
    assert tracker.status()["catching_up"] is None


async def test_start_makes_one_request_and_the_loop_catches_up_the_gap(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake, interval=3600), store)
    await tracker.start()
    await tracker.stop()
    fake.add_plays(1000)
    fake.requests.clear()

    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    assert len(fake.requests) == 1, "start() proves the account answers, no more"
    assert tracker.status()["catching_up"] == 1001 - 199
    await wait_until(lambda: tracker.status()["catching_up"] is None, timeout=3.0)
    assert await stored_plays(store) == fake.history[:1200]
    assert tracker.status()["tracks_found"] == 1200


@pytest.mark.parametrize(
    "kind, params, expected",
    [
        ("error", {"code": 26, "message": "Suspended API key"}, NeedsAttention),
        ("http_429", {"retry_after": 5}, RetryAfter),
        ("http_500", {"times": 3}, LastfmError),
    ],
)
async def test_the_poll_loop_stores_new_plays_then_reports_a_classified_fault(
    fake, store, kind, params, expected, cleanup
):
    faults: list[BaseException] = []
    tracker = LastfmTracker(tracker_config(fake, interval=0.05), store)
    tracker.set_fault_handler(lambda service, exc: faults.append(exc))
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    fake.add_plays(2)
    await wait_until(lambda: tracker.status()["tracks_found"] == 202, timeout=3.0)

    fake.inject(kind, **params)
    await wait_until(lambda: faults, timeout=3.0)

    assert type(faults[0]) is expected
    status = tracker.status()
    assert status["running"] is False
    assert status["last_error"] == str(faults[0])
    assert await stored_plays(store) == fake.history[:202]


async def test_start_fails_with_the_reason_when_the_key_is_bad(fake, store):
    tracker = LastfmTracker(tracker_config(fake, api_key="wrong-key-0000000000"), store)
    with pytest.raises(NeedsAttention, match="lastfm.api_key"):
        await tracker.start()
    assert tracker.status()["running"] is False
    assert await store.count_plays() == 0


async def test_start_fails_when_the_network_is_dead(fake, store):
    config = tracker_config(fake)
    await fake.stop()
    tracker = LastfmTracker(config, store)
    with pytest.raises(LastfmError, match="cannot reach Last.fm"):
        await tracker.start()
    assert tracker.status()["running"] is False


async def test_stop_is_idempotent_and_poll_once_works_while_stopped(fake, store):
    fake.now_playing = True
    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    assert tracker.status()["now_playing"] is not None
    await tracker.stop()
    await tracker.stop()
    assert tracker.status()["running"] is False
    assert tracker.status()["now_playing"] is None
    fake.now_playing = False

    fake.add_plays(1)
    assert await tracker.poll_once() == 1
    assert await stored_plays(store) == fake.history[:201]


def poll_loops() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "tracker:poll"]


async def test_starting_again_replaces_the_previous_client_and_loop(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake, interval=0.05), store)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    await tracker.start()
    assert tracker.status()["running"] is True
    assert len(poll_loops()) == 1
    await wait_until(lambda: fake.open_connections == 1, timeout=3.0)  # the old client's socket closed
    await tracker.stop()
    assert poll_loops() == []
    await wait_until(lambda: fake.open_connections == 0, timeout=3.0)


async def test_reset_connections_drops_the_pooled_socket(fake, store, cleanup):
    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    await tracker.poll_once()
    assert fake.connections_accepted == 1  # the pool reuses one socket

    await tracker.reset_connections()
    fake.add_plays(1)
    assert await tracker.poll_once() == 1
    assert fake.connections_accepted == 2


# -- through the supervisor ------------------------------------------------------------


@pytest.fixture
async def supervised(fake, store):
    """Build a Supervisor hosting a tracker on the fake (`await supervised(...)`); closed after."""
    supervisors: list[Supervisor] = []

    async def build(*, rng=lambda: 1.0, restore_timeout: float = 3.0, request_timeout: float = 10.0,
                    **changes) -> tuple[Supervisor, LastfmTracker]:
        tracker = LastfmTracker(tracker_config(fake, **changes), store)
        tracker.request_timeout = request_timeout
        supervisor = Supervisor(store, [tracker], restore_timeout=restore_timeout, rng=rng)
        await supervisor.load()
        supervisors.append(supervisor)
        return supervisor, tracker

    yield build
    for supervisor in supervisors:
        await supervisor.close()


async def settled(supervisor: Supervisor, *states: RunState) -> ServiceView:
    await wait_until(lambda: supervisor.view("tracker").state in states, timeout=3.0)
    return supervisor.view("tracker")


@pytest.mark.parametrize(
    "code, status, message, advice",
    [
        (10, 403, "Invalid API key - You must be granted a valid key by last.fm",
         "Last.fm rejected the API key (error 10): check lastfm.api_key"),
        (26, 403, "Suspended API key - Access for your account has been suspended",
         "Last.fm has suspended this API key (error 26)"),
        (17, 200, "Login: User required to be logged in",
         "Last.fm will not show this user's listening history (error 17"),
        (6, 404, "User not found", "Last.fm does not know this user (error 6): check lastfm.user"),
    ],
)
async def test_supervised_attention_codes_stop_with_what_to_do(
    fake, store, supervised, code, status, message, advice
):
    supervisor, _ = await supervised()
    fake.inject("error", code=code, message=message, status=status)
    await supervisor.start("tracker")

    view = await settled(supervisor, RunState.NEEDS_ATTENTION, RunState.RUNNING, RunState.BACKOFF)
    assert view.state is RunState.NEEDS_ATTENTION
    assert view.reason.startswith(advice) and view.reason.endswith(f"(Last.fm said: {message})")
    assert view.retry_in is None and view.wanted
    asked = len(fake.requests)
    await asyncio.sleep(0.3)
    assert len(fake.requests) == asked == 1, "no retry loop"
    assert await store.count_plays() == 0

    await supervisor.retry_now("tracker")  # the user fixed it and pressed r
    assert (await settled(supervisor, RunState.RUNNING)).reason is None
    assert await stored_plays(store) == fake.history[:200]


@pytest.mark.parametrize(
    "kind, params, wait",
    [
        ("http_429", {"retry_after": 7}, 7.0),
        ("http_429", {}, 60.0),
        ("error", {"code": 29, "message": "Rate Limit Exceeded", "status": 200}, 60.0),
    ],
)
async def test_supervised_rate_limits_wait_as_asked(fake, store, supervised, kind, params, wait):
    supervisor, _ = await supervised()
    fake.inject(kind, **params)
    await supervisor.start("tracker")

    view = await settled(supervisor, RunState.BACKOFF, RunState.RUNNING, RunState.NEEDS_ATTENTION)
    assert view.state is RunState.BACKOFF
    assert wait - 0.5 < view.retry_in <= wait
    assert "rate limit" in view.reason and f"retrying in {wait:g} s" in view.reason


@pytest.mark.parametrize(
    "kind, params, reason",
    [
        ("error", {"code": 8, "message": "Operation failed"}, "Last.fm error 8: Operation failed"),
        ("error", {"code": 11, "message": "Service Offline"}, "Last.fm error 11: Service Offline"),
        ("error", {"code": 16, "message": "Temporary error"}, "Last.fm error 16: Temporary error"),
        ("http_500", {}, "Last.fm answered HTTP 500"),
        ("error", {"code": 8, "message": "Bad gateway", "status": 502}, "Last.fm error 8: Bad gateway"),
        ("bad_json", {}, "Last.fm's answer is not valid JSON"),
        ("drop", {}, "cannot reach Last.fm"),
        ("hang", {}, "no answer from Last.fm within 0.2 s"),
    ],
)
async def test_supervised_transient_faults_back_off_with_jitter_and_recover(
    fake, store, supervised, kind, params, reason
):
    # rng 1.0: the top of each full-jitter range, min(5 s · 2ⁿ, 15 min).
    supervisor, _ = await supervised(request_timeout=0.2)
    fake.inject(kind, times=6, **params)  # every try of the first two starts
    await supervisor.start("tracker")

    view = await settled(supervisor, RunState.BACKOFF, RunState.RUNNING, RunState.NEEDS_ATTENTION)
    assert view.state is RunState.BACKOFF
    assert view.reason.startswith(reason)
    assert 4.5 < view.retry_in <= 5.0

    await supervisor.retry_now("tracker")  # fails again: the wait doubles
    await wait_until(lambda: supervisor.view("tracker").retry_in is not None
                     and supervisor.view("tracker").retry_in > 5, timeout=3.0)
    assert 9.5 < supervisor.view("tracker").retry_in <= 10.0

    await supervisor.retry_now("tracker")  # the fault is gone: running, nothing lost
    await settled(supervisor, RunState.RUNNING)
    assert await stored_plays(store) == fake.history[:200]


async def test_supervised_faults_while_polling_end_in_the_right_state(fake, store, supervised):
    supervisor, tracker = await supervised(interval=0.05)
    await supervisor.start("tracker")
    await settled(supervisor, RunState.RUNNING)

    fake.inject("http_429", retry_after=1)
    view = await settled(supervisor, RunState.BACKOFF)
    assert 0.5 < view.retry_in <= 1.0
    # No request goes before the wait asked for; then the service is back by itself.
    asked = len(fake.requests)
    await settled(supervisor, RunState.RUNNING)
    assert len(fake.requests) == asked + 1
    fake.add_plays(2)
    await wait_until(lambda: tracker.status()["tracks_found"] == 202, timeout=3.0)
    fake.inject("error", code=17, message="Login: User required to be logged in")
    view = await settled(supervisor, RunState.NEEDS_ATTENTION)
    assert "error 17" in view.reason and "privacy settings" in view.reason
    assert await stored_plays(store) == fake.history[:202]


@pytest.fixture
def self_signed(tmp_path):
    """A certificate no CA vouches for, for a loopback TLS server."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_an_https_endpoint_is_still_verified(self_signed):
    """The shared TLS context must not weaken checks: an untrusted certificate is refused."""
    answered = []

    async def answer(reader, writer):
        answered.append(True)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=self_signed)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(2):  # a second client reuses the cached context, with the same checks
            # One try, no pacing: a refused certificate is refused the first time.
            async with LastfmClient(f"https://127.0.0.1:{port}/2.0/", SECRET, USER, timeout=2, rate=1000, tries=1) as lastfm:
                with pytest.raises(LastfmError) as raised:
                    await lastfm.recent_tracks()
            assert "TLS certificate of 127.0.0.1 not trusted" in str(raised.value)
            assert SECRET not in str(raised.value)
    finally:
        server.close()
        await server.wait_closed()
    assert answered == [], "no request got past the TLS handshake"


def openssl(*args: str) -> str:
    made = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return made.stdout


@pytest.fixture
def private_ca(tmp_path):
    """A private CA, as on a home network, and a server context for 127.0.0.1 signed by it.

    Gives the CA as a file, as a hashed directory, and the server's TLS context.
    """
    ca_cert, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=aime-tui test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(ca_key), "-out", str(ca_cert))
    cert, key, request = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "server.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(request))
    extensions = tmp_path / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", "1", "-days", "1", "-extfile", str(extensions), "-out", str(cert))

    ca_dir = tmp_path / "certs"  # the layout SSL_CERT_DIR expects: <subject hash>.0
    ca_dir.mkdir()
    subject_hash = openssl("x509", "-hash", "-noout", "-in", str(ca_cert)).strip()
    (ca_dir / f"{subject_hash}.0").write_bytes(ca_cert.read_bytes())

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return {"SSL_CERT_FILE": ca_cert, "SSL_CERT_DIR": ca_dir, "server": server}


@pytest.fixture
def fresh_tls(monkeypatch):
    """The shared TLS context as a newly started process builds it, from this test's
    environment; dropped again afterwards, so later tests build theirs from the real one."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    lastfm_api._verified_tls.cache_clear()
    yield monkeypatch
    lastfm_api._verified_tls.cache_clear()  # before monkeypatch restores the environment


async def tls_front(backend_url: str, context: ssl.SSLContext) -> asyncio.Server:
    """A loopback TLS server that relays each connection, bytes as they are, to `backend_url`."""
    backend = urlsplit(backend_url)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            backend.hostname, backend.port
        )
        await asyncio.gather(relay(reader, upstream_writer), relay(upstream_reader, writer))

    return await asyncio.start_server(connect, "127.0.0.1", 0, ssl=context)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("trust", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_a_server_signed_by_a_ca_the_user_trusts_is_read(fake, private_ca, fresh_tls, trust):
    """A home server behind a private CA: refused until the user trusts the CA, the way
    httpx reads trust from the environment, then verified and read like Last.fm itself."""
    front = await tls_front(fake.url, private_ca["server"])
    port = front.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}{urlsplit(fake.url).path}"
    texts: list[str] = []
    try:
        async with LastfmClient(url, SECRET, USER, timeout=2, rate=1000, tries=1) as lastfm:
            refused = await failure_of(lastfm)
        assert "TLS certificate of 127.0.0.1 not trusted" in str(refused)
        assert fake.requests == [], "nothing got past the TLS handshake"
        texts += [str(refused), repr(refused), "".join(traceback.format_exception(refused))]

        fresh_tls.setenv(trust, str(private_ca[trust]))
        # The context is built once per process, so trust is read at launch: start afresh.
        lastfm_api._verified_tls.cache_clear()
        async with LastfmClient(url, SECRET, USER, timeout=2, rate=1000) as lastfm:
            page = await lastfm.recent_tracks(limit=5)
            again = await lastfm.recent_tracks(page=2, limit=5)  # over the same verified socket
            fake.inject("error", code=10, message=f"Invalid API key {SECRET}")
            rejected = await failure_of(lastfm)
            texts.append(repr(lastfm))
    finally:
        front.close()
        await front.wait_closed()

    assert page.plays == fake.history[:5] and again.plays == fake.history[5:10]
    assert (page.total, page.total_pages) == (450, 90)
    assert fake.connections_accepted == 1
    assert [request["api_key"] for request in fake.requests] == [SECRET] * 3  # it did go out
    fault = classify(rejected)
    assert isinstance(fault, NeedsAttention) and "lastfm.api_key" in str(fault)
    for shown in (rejected, fault):
        texts += [str(shown), repr(shown), "".join(traceback.format_exception(shown))]
    assert [text for text in texts if SECRET in text] == []


# -- history exactness: what a real Last.fm does now and then --------------------------


async def test_the_now_playing_row_tops_every_page_and_is_never_a_play(fake, client):
    fake.now_playing = True
    sent = await wire(fake, page=2, limit=10)
    tracks = sent["recenttracks"]["track"]
    assert len(tracks) == 11 and tracks[0]["@attr"] == {"nowplaying": "true"}
    assert sent["recenttracks"]["@attr"]["total"] == "450"
    page = await client.recent_tracks(page=2, limit=10)
    assert page.plays == fake.history[10:20]
    assert page.now_playing == fake.now_playing_track


async def test_the_account_is_named_as_lastfm_spells_it(cleanup):
    server = FakeLastfm(user="Bars", api_key=SECRET, plays=3, newest=NEWEST)
    await server.start()
    cleanup.push_async_callback(server.stop)
    async with LastfmClient(server.url, SECRET, "bARS", rate=1000) as lastfm:
        page = await lastfm.recent_tracks()
    await server.stop()
    assert page.user == "Bars"
    assert {play.account for play in page.plays} == {"Bars"}


@pytest.mark.parametrize("kind, params", [
    ("html", {}), ("truncated", {}), ("http_500", {}), ("bad_json", {}), ("drop", {}),
    ("error", {"code": 8, "message": "Operation failed"}),
    ("error", {"code": 11, "message": "Service Offline", "status": 503}),
    ("error", {"code": 16, "message": "There was a temporary error processing your request."}),
])
async def test_one_failed_request_is_tried_again_in_place(fake, kind, params):
    fake.inject(kind, **params)
    async with LastfmClient(fake.url, SECRET, USER, rate=1000, retry_wait=0.005) as lastfm:
        page = await lastfm.recent_tracks(limit=5)
    assert page.plays == fake.history[:5]
    assert len(fake.requests) == 2


async def test_a_fault_that_persists_through_every_try_goes_up(fake):
    fake.inject("html", times=3)
    async with LastfmClient(fake.url, SECRET, USER, rate=1000, retry_wait=0.005) as lastfm:
        failure = await failure_of(lastfm)
    assert str(failure) == "Last.fm answered HTTP 503" and classify(failure) is failure
    assert len(fake.requests) == 3


async def test_error_6_from_an_account_that_answered_before_is_transient_until_it_repeats(fake):
    spurious = {"code": 6, "message": "User not found", "status": 404}
    async with LastfmClient(fake.url, SECRET, USER, rate=1000, retry_wait=0.005) as lastfm:
        fake.inject("error", **spurious)
        with pytest.raises(LastfmError):
            await lastfm.recent_tracks()  # never answered: it means it
        assert len(fake.requests) == 1

        await lastfm.recent_tracks()
        fake.inject("error", **spurious)
        assert (await lastfm.recent_tracks(limit=3)).plays == fake.history[:3]
        assert len(fake.requests) == 4

        fake.inject("error", times=2, **spurious)
        failure = await failure_of(lastfm)
    assert len(fake.requests) == 6
    fault = classify(failure)
    assert isinstance(fault, NeedsAttention) and "check lastfm.user" in str(fault)


async def test_requests_are_paced_by_the_shared_bucket(fake):
    async with LastfmClient(fake.url, SECRET, USER, rate=20) as one, \
            LastfmClient(fake.url, SECRET, USER, rate=20) as two:
        began = time.monotonic()
        await asyncio.gather(*(client.recent_tracks(limit=1) for client in (one, two) * 3))
        elapsed = time.monotonic() - began
    # Six requests from two clients, 1/20 s apart: the fifth interval ends at 0.25 s.
    assert elapsed >= 0.25
    assert len(fake.requests) == 6


async def test_a_spurious_error_6_does_not_stop_a_running_tracker(fake, store, cleanup):
    faults: list[BaseException] = []
    tracker = LastfmTracker(tracker_config(fake, interval=0.02), store)
    tracker.set_fault_handler(lambda service, exc: faults.append(exc))
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    fake.inject("error", code=6, message="User not found", status=404)
    fake.add_plays(2)
    await wait_until(lambda: tracker.status()["tracks_found"] == 202, what="the two new plays")
    assert faults == []
    assert await stored_plays(store) == fake.history[:202]


async def test_the_same_account_in_another_case_is_one_history(store, cleanup):
    server = FakeLastfm(user="Bars", api_key=SECRET, plays=300, newest=NEWEST, spacing=SPACING)
    await server.start()
    cleanup.push_async_callback(server.stop)
    first = LastfmTracker(tracker_config(server, user="bars"), store)
    await first.poll_once()
    server.add_plays(5)
    second = LastfmTracker(tracker_config(server, user="BARS"), store)
    assert await second.poll_once() == 5
    assert second.status()["account"] == "Bars"
    await server.stop()
    assert await stored_plays(store) == server.history[:205]
    names = [name for (name,) in await (await store.db.execute("SELECT name FROM cursors")).fetchall()]
    assert names == ["lastfm:bars"]


async def test_a_migration_merges_an_account_stored_under_two_cases(tmp_path, cleanup):
    import sqlite3

    from aime_tui.store.database import MIGRATIONS

    path = tmp_path / "aime.db"
    rows = [("bars", 100, "A", 1.0), ("bars", 200, "B", 1.0), ("Bars", 200, "B", 2.0),
            ("Bars", 300, "C", 2.0), ("other", 100, "A", 1.0)]
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        db.executemany(
            "INSERT INTO plays (source, account, played_at, artist, title, artist_key, title_key,"
            " stored_at) VALUES ('lastfm', ?, ?, ?, 't', lower(?), 't', ?)",
            [(account, at, artist, artist, stored) for account, at, artist, stored in rows],
        )
        db.executemany("INSERT INTO cursors VALUES (?, ?, ?)", [
            ("lastfm:bars", "200", 1.0), ("lastfm:Bars", "300", 2.0),
            ("backfill:lastfm:Bars", '{"to": 300, "done": true}', 1.0),
            ("backfill:lastfm:bars", '{"to": 200, "done": false}', 2.0),
        ])
    store = await Store.open(path)
    cleanup.push_async_callback(store.close)
    plays = sorted((p.account, p.played_at, p.artist) for p in await stored_plays(store, 10))
    assert plays == [("Bars", 100, "A"), ("Bars", 200, "B"), ("Bars", 300, "C"), ("other", 100, "A")]
    assert await store.get_cursor("lastfm:bars") == "200"  # the older: a catch-up overlaps
    assert json.loads(await store.get_cursor("backfill:lastfm:bars"))["done"] is True
    names = {name for (name,) in await (await store.db.execute("SELECT name FROM cursors")).fetchall()}
    assert names == {"lastfm:bars", "backfill:lastfm:bars"}


async def test_the_dashboard_shows_the_catch_up_progress(fake, store, cleanup):
    from aime_tui.ui.cells import detail_text

    tracker = LastfmTracker(tracker_config(fake), store)
    await tracker.start()
    await tracker.stop()
    fake.add_plays(1000)
    fake.inject("slow", delay=0)  # the newest page answers
    fake.inject("hang")  # the gap's first page does not: the gap stays to fetch
    await tracker.start()
    cleanup.push_async_callback(tracker.stop)
    view = ServiceView(name="tracker", state=RunState.RUNNING, wanted=True, mode=None, reason=None,
                       retry_in=None, restarts=0, status=tracker.status())
    assert "catching up: 802 plays to fetch" in detail_text(view).split(" · ")
