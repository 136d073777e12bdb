"""The demo environment: loopback fakes started in-process, and a config pointing at them.

`aime-tui --demo` needs no account and no network. With faults on (the default;
AIME_DEMO_FAULTS=0 turns them off) the Roon fake answers the first handshake too late,
so the launch summary shows a real timeout and the service then recovers by itself.
The Roon tracker finds the fake Core the way it finds a real one, by SOOD discovery,
with the query sent to the fake's loopback responder only.
"""

from __future__ import annotations

from dataclasses import replace

from aime_tui.config import Config
from aime_tui.demo.lastfm_fake import FakeLastfm
from aime_tui.demo.roon_fake import FakeRoonCore, FakeSoodResponder

DEMO_USER = "demo"
DEMO_API_KEY = "demo-api-key-0000"
DEMO_PLAYS = 3000
# Short intervals so that a few minutes of demo show polls, plays and a whole backfill.
DEMO_POLL_INTERVAL = 15.0
DEMO_NEW_PLAY_EVERY = 20.0
DEMO_BACKFILL_INTERVAL = 1.0
#: Requests a second to the demo's Last.fm: the most the real one allows.
DEMO_RATE = 5.0
DEMO_CATCHUP_INTERVAL = 60.0


class DemoEnvironment:
    def __init__(self, *, faults: bool = True) -> None:
        self.faults = faults
        self.lastfm: FakeLastfm | None = None
        self.roon: FakeRoonCore | None = None
        self.sood: FakeSoodResponder | None = None

    async def start(self, config: Config) -> Config:
        self.lastfm = FakeLastfm(
            user=DEMO_USER, api_key=DEMO_API_KEY, plays=DEMO_PLAYS, live_every=DEMO_NEW_PLAY_EVERY,
            record_requests=False,
        )
        await self.lastfm.start()
        self.roon = FakeRoonCore(zones=2)
        await self.roon.start()
        self.sood = FakeSoodResponder([self.roon])
        await self.sood.start()
        if self.faults:
            # Late enough to miss the restore timeout once; the backoff retry then succeeds.
            self.roon.delay_handshakes(config.restore_timeout + 2.0, count=1)
        return replace(
            config,
            lastfm=replace(
                config.lastfm,
                api_url=self.lastfm.url,
                api_key=DEMO_API_KEY,
                user=DEMO_USER,
                interval=DEMO_POLL_INTERVAL,
                enabled=True,
                rate=DEMO_RATE,
            ),
            roon=replace(
                config.roon, host="", enabled=True, discovery=(("127.0.0.1", self.sood.port),)
            ),
            scheduler=replace(
                config.scheduler,
                enabled=True,
                backfill_interval=DEMO_BACKFILL_INTERVAL,
                catchup_interval=DEMO_CATCHUP_INTERVAL,
            ),
        )

    async def stop(self) -> None:
        for fake in (self.lastfm, self.sood, self.roon):
            if fake is not None:
                await fake.stop()
        self.lastfm = self.roon = self.sood = None
