"""A 50,000-play backfill, SIGKILLed halfway while late scrobbles keep landing inside
the history, resumes with no gap, no duplicate, no refetch, and ends with exactly the
server's history.

The Last.fm fake runs here, in the test; the backfill runs in a real child process
against it and a real SQLite file. The fake's request log shows exactly which bounds
each run asked for.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from waits import wait_until

from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.store.database import normalise

CHILD = Path(__file__).parent / "backfill_child.py"
PLAYS = 50_000
#: Pages of 199 new plays each (the oldest second of a page is asked for again with the next).
PAGES = -(-PLAYS // 199)
NEWEST = 1_700_000_000
INTERVAL = "0.005"
#: Bounds on each step, far above what a step takes (a run of half the pages is about
#: 1.5 s here, and five times that on a loaded two-core machine): a failure, not a pace.
STEP_TIMEOUT = 60


async def run_child(fake: FakeLastfm, data_dir: Path) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(data_dir), fake.url, fake.api_key, fake.user, INTERVAL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    line = await asyncio.wait_for(child.stdout.readline(), STEP_TIMEOUT)
    assert line == b"ready\n", (line, await child.stderr.read())
    return child


def pages_asked(requests: list[dict]) -> list[str]:
    """The `to` bound of each backfill page (reconciliation's counts ask for one play)."""
    return [r["to"] for r in requests if r["limit"] == "200" and "to" in r]


def served_keys(fake: FakeLastfm) -> list[tuple]:
    """The fake's history as the store keys it (an identical duplicate is one play)."""
    return sorted({(p.played_at, normalise(p.artist), normalise(p.title)) for p in fake.history})


def backfill_cursor(db: sqlite3.Connection, user: str) -> dict:
    # By name: the cursors table also keeps the scheduler's other jobs' last runs.
    [value] = db.execute("SELECT value FROM cursors WHERE name = ?", (f"backfill:lastfm:{user}",)).fetchone()
    return json.loads(value)


async def until_pages_asked(fake: FakeLastfm, child: asyncio.subprocess.Process, count: int) -> None:
    """Wait for the child to have asked for `count` pages; fail (not hang) if it died first."""
    async def asked() -> bool:
        if len(pages_asked(fake.requests)) >= count:
            return True
        assert child.returncode is None, (child.returncode, await child.stderr.read())
        return False

    await wait_until(asked, timeout=STEP_TIMEOUT, what=f"{count} pages asked")


@pytest.mark.xdist_group("cpu")  # busy on a core: one such test at a time
async def test_a_killed_backfill_resumes_without_a_gap_a_duplicate_or_a_refetch(tmp_path, cleanup):
    # A late play every 20 requests, anywhere in the history, while both runs page.
    fake = FakeLastfm(user="kill", api_key="kill-test-key-0000", plays=PLAYS, newest=NEWEST,
                      spacing=60, late_every=20, late_window=PLAYS * 60, late_limit=10)
    await fake.start()
    cleanup.push_async_callback(fake.stop)
    first = await run_child(fake, tmp_path)
    # Kill somewhere inside the cycle of a page halfway: fetching, parsing or committing it.
    await until_pages_asked(fake, first, PAGES // 2)
    await asyncio.sleep(random.Random(4).uniform(0, 0.02))
    first.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
    first_pages = pages_asked(fake.requests)
    asked_before = len(fake.requests)
    late_before = len(fake.late_plays)

    with sqlite3.connect(tmp_path / "aime.db") as db:
        cursor = backfill_cursor(db, fake.user)
        stored = db.execute("SELECT COUNT(*) FROM plays").fetchone()[0]
    assert 0 < cursor["pages_done"] < PAGES, "killed in the middle"
    # A page and its cursor commit together: exactly the plays the cursor counts are in.
    assert stored == cursor["plays"]
    # Each page asked for the plays below the oldest second of the one before.
    assert first_pages[: cursor["pages_done"] - 1] == sorted(first_pages[: cursor["pages_done"] - 1], key=int, reverse=True)

    second = await run_child(fake, tmp_path)
    out, err = await asyncio.wait_for(second.communicate(), STEP_TIMEOUT)
    assert (second.returncode, out) == (0, b"done\n"), err.decode()[-2000:]
    await fake.stop()
    assert 0 < late_before < len(fake.late_plays) == 10, "late plays landed during both runs"
    resumed_pages = pages_asked(fake.requests[asked_before:])
    assert resumed_pages[0] == str(cursor["sweep"]["high"]), "resumed from the cursor, no new probe"
    # Only the page in flight at the kill, fetched but never committed, is asked for again.
    assert set(first_pages) & set(resumed_pages) <= {str(cursor["sweep"]["high"])}

    with sqlite3.connect(tmp_path / "aime.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT played_at, artist_key, title_key FROM plays").fetchall()
        final = backfill_cursor(db, fake.user)
    assert sorted(rows) == served_keys(fake), "exactly the server's history, late plays included"
    assert (final["done"], final["reconciled"]) == (True, True)
