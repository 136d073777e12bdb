"""The loopback Last.fm fake in a process of its own, so that serving it costs the
measured event loop nothing: prints its URL, serves until its standard input closes.

    python -m benchmarks.lastfm_server PLAYS [LATENCY]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from aime_tui.demo.lastfm_fake import FakeLastfm

from .common import REPO

USER = "bench"
API_KEY = "bench-api-key-0000"
NEWEST = 1_700_000_000


async def serve(plays: int, latency: float = 0.0) -> None:
    # A long history must not cost memory per request: requests are not recorded.
    fake = FakeLastfm(user=USER, api_key=API_KEY, plays=plays, newest=NEWEST, latency=latency,
                      record_requests=False)
    await fake.start()
    print(fake.url, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await fake.stop()


@contextmanager
def lastfm_server(plays: int, latency: float = 0.0) -> Iterator[str]:
    """Run the fake with `plays` plays (answering `latency` s late) in a child process; yields its URL."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lastfm_server", str(plays), str(latency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        url = child.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1"):
            raise RuntimeError(f"the Last.fm fake did not start (said {url!r})")
        yield url
    finally:
        child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
