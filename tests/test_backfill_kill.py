"""A 50,000-play backfill, SIGKILLed halfway, resumes with no gap, no duplicate, no refetch.

The Last.fm fake runs here, in the test; the backfill runs in a real child process
against it and a real SQLite file. The fake's request log shows exactly which pages
each run fetched.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from pathlib import Path

from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.store.database import Play

CHILD = Path(__file__).parent / "backfill_child.py"
PLAYS = 50_000
PAGES = PLAYS // 200
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


def pages_asked(requests: list[dict]) -> list[int]:
    return [int(r["page"]) for r in requests if "to" in r]


def backfill_cursor(db: sqlite3.Connection, user: str) -> dict:
    # By name: the cursors table also keeps the scheduler's other jobs' last runs.
    [value] = db.execute("SELECT value FROM cursors WHERE name = ?", (f"backfill:lastfm:{user}",)).fetchone()
    return json.loads(value)


async def until_pages_asked(fake: FakeLastfm, child: asyncio.subprocess.Process, count: int) -> None:
    """Wait for the child to have asked for `count` pages; fail (not hang) if it died first."""
    async def poll():
        while len(pages_asked(fake.requests)) < count:
            assert child.returncode is None, (child.returncode, await child.stderr.read())
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), STEP_TIMEOUT)


async def test_a_killed_backfill_resumes_without_a_gap_a_duplicate_or_a_refetch(tmp_path):
    fake = FakeLastfm(user="kill", api_key="kill-test-key-0000", plays=PLAYS, newest=NEWEST, spacing=60)
    await fake.start()
    try:
        first = await run_child(fake, tmp_path)
        # Kill somewhere inside the cycle of page 125: fetching, parsing or committing it.
        await until_pages_asked(fake, first, PAGES // 2)
        await asyncio.sleep(random.Random(4).uniform(0, 0.02))
        first.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
        first_pages = pages_asked(fake.requests)
        asked_before = len(fake.requests)

        with sqlite3.connect(tmp_path / "aime.db") as db:
            cursor = backfill_cursor(db, fake.user)
            stored = db.execute("SELECT COUNT(*) FROM plays").fetchone()[0]
        assert 0 < cursor["pages_done"] < PAGES, "killed in the middle"
        # A page and its cursor commit together: exactly the pages the cursor counts are in.
        assert stored == 200 * cursor["pages_done"]
        assert first_pages[: cursor["pages_done"]] == list(range(PAGES, cursor["next_page"], -1))

        second = await run_child(fake, tmp_path)
        out, err = await asyncio.wait_for(second.communicate(), STEP_TIMEOUT)
        assert (second.returncode, out) == (0, b"done\n"), err.decode()[-2000:]
    finally:
        await fake.stop()

    resumed_pages = pages_asked(fake.requests[asked_before:])
    assert len(fake.requests) - asked_before == len(resumed_pages), "no new probe: resumed from the cursor"
    assert resumed_pages == list(range(cursor["next_page"], 0, -1))
    # Only the page in flight at the kill, fetched but never committed, is fetched again.
    assert set(first_pages) & set(resumed_pages) <= {cursor["next_page"]}

    with sqlite3.connect(tmp_path / "aime.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute(
            "SELECT source, account, played_at, artist, title, album FROM plays ORDER BY played_at DESC"
        ).fetchall()
        final = backfill_cursor(db, fake.user)
    assert [Play(*row) for row in rows] == fake.history
    assert (final["done"], final["pages_done"], final["plays"]) == (True, PAGES, PLAYS)
