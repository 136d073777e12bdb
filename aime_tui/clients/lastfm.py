"""Async client for Last.fm's `user.getRecentTracks`, and what its failures mean.

Owns the wire format (every number a string, a lone track sent as an object instead of
a list, the now-playing entry without a date and on every page, the account's canonical
name in `@attr.user`), sorting failures into "needs attention", "retry after" and
"transient", retrying a failed request in place a few times before a fault goes up,
pacing every request through the shared token bucket, and keeping the API key out of
every message, repr and log line. No Textual here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from aime_tui.clients.network import log_raw, network_failure
from aime_tui.clients.pacing import bucket_for
from aime_tui.config import mask_secret
from aime_tui.core.faults import NeedsAttention, RetryAfter
from aime_tui.store.database import Play

log = logging.getLogger(__name__)

SOURCE = "lastfm"
MAX_PAGE_SIZE = 200
RATE_LIMITED = 29
USER_NOT_FOUND = 6
#: Tries of one request before its fault goes up (the design's 2-3 in place).
TRIES = 3
# Without a Retry-After header, wait at least this long after a rate limit (design rule).
MIN_RATE_LIMIT_WAIT = 60.0
KEY_PAGE = "https://www.last.fm/api/account/create"

# Faults no retry fixes, with what the user should do about each.
_ATTENTION = {
    10: "Last.fm rejected the API key (error 10): check lastfm.api_key; "
        f"keys are issued at {KEY_PAGE}",
    26: f"Last.fm has suspended this API key (error 26): create a new one at {KEY_PAGE} "
        "and set lastfm.api_key",
    17: "Last.fm will not show this user's listening history (error 17: private profile or "
        "login required): untick 'Hide recent listening information' in the account's privacy "
        "settings on last.fm, or set lastfm.user to a public profile",
    6: "Last.fm does not know this user (error 6): check lastfm.user",
}

_API_KEY_PARAM = re.compile(r"(api_key=)[^&\s\"']+")


class _RedactApiKey(logging.Filter):
    """httpx logs every request URL at INFO, query string and API key included."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report, not ours
            return True
        record.msg, record.args = _API_KEY_PARAM.sub(r"\1<redacted>", message), None
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(existing, _RedactApiKey) for existing in _httpx_log.filters):
    _httpx_log.addFilter(_RedactApiKey())


@dataclass(frozen=True)
class RecentTracksPage:
    plays: list[Play]
    now_playing: Play | None
    page: int
    total_pages: int
    total: int
    #: The account's name as Last.fm spells it (`@attr.user`), whatever case was asked.
    user: str = ""


class LastfmError(Exception):
    """An error payload from Last.fm (`code`) or a failed exchange (`code` is None).

    `status` is the HTTP status when there was one; `retry_after` the seconds asked for
    by a Retry-After header. Messages never contain the API key.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"Last.fm error {code}: {message}" if code is not None else message)


def classify(exc: Exception) -> Exception:
    """Sort a failure into NeedsAttention, RetryAfter, or the original (transient) exception."""
    if not isinstance(exc, LastfmError):
        return exc
    if exc.code in _ATTENTION:
        return NeedsAttention(f"{_ATTENTION[exc.code]} (Last.fm said: {exc.message})")
    if exc.code == RATE_LIMITED or exc.status == 429:
        delay = exc.retry_after if exc.retry_after is not None else MIN_RATE_LIMIT_WAIT
        return RetryAfter(f"Last.fm rate limit reached ({exc}); retrying in {delay:g} s", delay)
    return exc


def _retry_after_seconds(header: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _as_list(tracks: Any) -> list[dict]:
    # Last.fm's JSON is converted from XML: one track comes as an object, none as nothing.
    if tracks is None:
        return []
    if isinstance(tracks, dict):
        return [tracks]
    return list(tracks)


def _text(field: Any) -> str:
    if isinstance(field, dict):
        return str(field.get("#text") or field.get("name") or "")
    return "" if field is None else str(field)


def _mbid(field: Any) -> str | None:
    # Last.fm sends "" for an unknown MBID; stored as unknown, not as an empty id.
    value = field.get("mbid") if isinstance(field, dict) else field
    return (value.strip() or None) if isinstance(value, str) else None


def _mbids(track: dict) -> tuple[str | None, str | None, str | None]:
    """The track's (recording), artist's and album's (release) MusicBrainz ids."""
    return _mbid(track.get("mbid")), _mbid(track.get("artist")), _mbid(track.get("album"))


def parse_recent_tracks(data: dict, user: str) -> RecentTracksPage:
    """Turn a decoded `recenttracks` answer into plays; raises KeyError/TypeError/ValueError."""
    recent = data["recenttracks"]
    attr = recent.get("@attr", {})
    # The canonical spelling: `bars` and `Bars` are one account and one history.
    user = str(attr.get("user") or user)
    plays: list[Play] = []
    now_playing: Play | None = None
    for track in _as_list(recent.get("track")):
        artist, title = _text(track.get("artist")), _text(track.get("name"))
        album = _text(track.get("album"))
        if track.get("@attr", {}).get("nowplaying") == "true":
            now_playing = Play(SOURCE, user, 0, artist, title, album)
        elif isinstance(track.get("date"), dict):
            played_at = int(track["date"]["uts"])
            plays.append(Play(SOURCE, user, played_at, artist, title, album, *_mbids(track)))
    return RecentTracksPage(
        plays=plays,
        now_playing=now_playing,
        page=int(attr.get("page", 1)),
        total_pages=int(attr.get("totalPages", 0)),
        total=int(attr.get("total", 0)),
        user=user,
    )


def _tls_for(url: str) -> ssl.SSLContext:
    """The TLS settings for `url`: httpx would load the CA bundle for every new client
    (about 25 ms each, at launch and again at every wake); load it once per process,
    and not at all for a plain-http endpoint."""
    if httpx.URL(url).scheme == "https":
        return _verified_tls()
    # Never used for http; and if it were, with no CA loaded it trusts nothing.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@functools.cache
def _verified_tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _retried_in_place(exc: LastfmError, answered: bool, previous: LastfmError | None) -> bool:
    """Whether a failed request is worth another try now rather than a fault."""
    if exc.code == RATE_LIMITED or exc.status == 429:
        return False  # the server said how long to wait: the bucket and the supervisor wait
    if exc.code == USER_NOT_FOUND:
        # Last.fm says "User not found" now and then during long paging: an account that
        # has answered before gets one more try; the same answer again means it.
        return answered and (previous is None or previous.code != USER_NOT_FOUND)
    return exc.code not in _ATTENTION


class LastfmClient:
    """One user's recent tracks over a pooled HTTP client; every failure is a LastfmError.

    Each request takes a slot from the endpoint's shared token bucket (`rate` requests a
    second) and is tried up to `tries` times, with short jittered waits of about
    `retry_wait` seconds, before its failure is raised. `answered` says the account has
    answered before (set it when the store already holds its history).
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        user: str,
        *,
        timeout: float = 10.0,
        rate: float = 1.0,
        tries: int = TRIES,
        retry_wait: float = 0.5,
    ) -> None:
        self.api_url = api_url
        self.user = user
        self.timeout = timeout
        self.tries = tries
        self.retry_wait = retry_wait
        self.answered = False
        self.bucket = bucket_for(api_url, api_key, rate)
        self._api_key = api_key
        self._http = self._new_http()

    def __repr__(self) -> str:
        masked = mask_secret(self._api_key)
        return f"LastfmClient({self.api_url!r}, user={self.user!r}, api_key={masked!r})"

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout, headers={"User-Agent": "aime-tui"}, verify=_tls_for(self.api_url)
        )

    async def __aenter__(self) -> "LastfmClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def reset(self) -> None:
        """Drop pooled connections: after a sleep they look alive but are not."""
        old, self._http = self._http, self._new_http()
        await old.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _scrub(self, text: str) -> str:
        if not self._api_key:
            return text
        masked = mask_secret(self._api_key)
        for form in {self._api_key, quote(self._api_key, safe=""), quote_plus(self._api_key)}:
            text = text.replace(form, masked)
        return _API_KEY_PARAM.sub(r"\1<redacted>", text)

    async def recent_tracks(
        self,
        *,
        page: int = 1,
        limit: int = MAX_PAGE_SIZE,
        from_ts: int | None = None,
        to_ts: int | None = None,
    ) -> RecentTracksPage:
        """One page, newest first, of the plays with `from_ts` <= played_at < `to_ts`."""
        previous: LastfmError | None = None
        attempt = 0
        while True:
            await self.bucket.acquire()
            try:
                answer = await self._request(page=page, limit=limit, from_ts=from_ts, to_ts=to_ts)
            except LastfmError as exc:
                if exc.code == RATE_LIMITED or exc.status == 429:
                    wait = exc.retry_after if exc.retry_after is not None else MIN_RATE_LIMIT_WAIT
                    self.bucket.hold(wait)
                attempt += 1
                if attempt >= self.tries or not _retried_in_place(exc, self.answered, previous):
                    raise
                previous = exc
                wait = self.retry_wait * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                log.info("Last.fm request failed (%s); trying again in %.1f s", exc, wait)
                await asyncio.sleep(wait)
            else:
                self.answered = True
                return answer

    async def _request(
        self, *, page: int, limit: int, from_ts: int | None, to_ts: int | None
    ) -> RecentTracksPage:
        params: dict[str, str | int] = {
            "method": "user.getrecenttracks",
            "user": self.user,
            "api_key": self._api_key,
            "format": "json",
            "limit": limit,
            "page": page,
        }
        if from_ts is not None:
            params["from"] = from_ts
        if to_ts is not None:
            params["to"] = to_ts

        # The failure is built inside the except clause but raised outside it, so the
        # original httpx exception (which may carry the URL and key) is not chained.
        failure: LastfmError | None = None
        try:
            response = await self._http.get(self.api_url, params=params)
        except httpx.TimeoutException:
            failure = LastfmError(f"no answer from Last.fm within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            url = httpx.URL(self.api_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            detail = network_failure(exc, url.host, port, timeout=self.timeout)
            log_raw("Last.fm request", exc, scrub=self._scrub)
            failure = LastfmError(f"cannot reach Last.fm: {detail or self._scrub(str(exc)) or type(exc).__name__}")
        if failure is not None:
            raise failure
        return self._read(response)

    def _read(self, response: httpx.Response) -> RecentTracksPage:
        status = response.status_code
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        try:
            data = response.json()
        except ValueError:
            data = None

        if isinstance(data, dict) and "error" in data:
            try:
                code: int | None = int(data["error"])
            except (TypeError, ValueError):
                code = None
            message = self._scrub(str(data.get("message") or "no message"))
            raise LastfmError(message, code=code, status=status, retry_after=retry_after)
        if status >= 400:
            raise LastfmError(
                f"Last.fm answered HTTP {status}", status=status, retry_after=retry_after
            )
        if data is None:
            raise LastfmError("Last.fm's answer is not valid JSON", status=status)
        try:
            return parse_recent_tracks(data, self.user)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            shape_error = LastfmError(f"Last.fm's answer has an unexpected shape ({detail})")
        raise shape_error
