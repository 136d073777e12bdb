"""Notifications: exactly the expected messages reach a real JSON webhook on loopback.

The webhook is an HTTP server the test starts; Apprise posts to it through its json://
plugin, as it would to ntfy or Gotify. Timings are shrunk (what counts as a long backoff,
a settled recovery, the spacing between messages) so the scenarios take a second or two.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from aime_tui.core.faults import NeedsAttention
from aime_tui.core.model import RunState
from aime_tui.notify import Notifier
from scripted import scripted_engine
from waits import wait_until

EXECUTABLE = Path(sys.executable).parent / "aime-tui"
QUICK = {"settle": 0.4, "spacing": 0.2, "gather": 0.05, "retry_delays": (0.05,)}


class Webhook:
    """A JSON webhook on loopback that keeps what it is sent; it can be told to fail."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.paths: list[str] = []  # where each message was posted
        self.failing = 0  # answer 500 to this many posts
        self.posts = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.failing:
            self.failing -= 1
            return web.Response(status=500)
        self.messages.append(await request.json())
        self.paths.append(request.path)
        return web.Response(text="ok")

    def bodies(self) -> list[str]:
        return [message["message"] for message in self.messages]


@pytest.fixture
async def webhook():
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_post("/other", hook.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    hook.url = f"json://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


@pytest.fixture
async def watched(config, webhook):
    """A real engine (store, supervisor) of scripted services, and a notifier on it."""

    async def make(after=30.0, rng=0.0, **behaviour):
        engine, services = scripted_engine(config, engine={"rng": lambda: rng}, **behaviour)
        supervisor = await engine.open()
        notifier = Notifier(supervisor, [webhook.url], after=after, title="aime-tui test", **QUICK)
        notifier.start()
        made.append((engine, notifier))
        return supervisor, services, notifier

    made = []
    yield make
    for engine, notifier in made:
        await notifier.close()
        await engine.close()


async def quiet(webhook, notifier, seconds=0.5):
    """Evidence that nothing more is coming: the notifier has had time to send, and has not."""
    count = len(webhook.messages)
    await asyncio.sleep(seconds)
    assert len(webhook.messages) == count, webhook.bodies()[count:]


async def test_a_restoration_with_one_failure_is_one_message_then_its_recovery(watched, webhook):
    supervisor, services, notifier = await watched(
        roon_tracker={"failures": (OSError("Roon Core 127.0.0.1:9330 refused the connection"),)}
    )
    summary = await supervisor.restore("launch")
    assert list(summary.failed) == ["roon_tracker"]
    await wait_until(lambda: len(webhook.messages) == 2, timeout=5, what="the failure and the recovery")
    first, second = webhook.messages
    assert first["title"] == "aime-tui test" and first["type"] == "failure"
    assert first["message"] == (
        "Restoration after launch: 1 of 3 services failed — roon_tracker: Roon Core 127.0.0.1:9330"
        " refused the connection"
    )
    assert second["type"] == "success"
    assert second["message"].startswith("roon_tracker recovered: running again after ")
    await quiet(webhook, notifier)


async def test_needs_attention_says_what_to_do_and_then_that_it_is_fixed(watched, webhook):
    supervisor, services, notifier = await watched()
    summary = await supervisor.restore("launch")
    assert not summary.failed
    services["tracker"].break_now(NeedsAttention("Last.fm rejected the API key: set lastfm.api_key in config.toml"))
    await wait_until(lambda: webhook.messages, what="the needs-attention message")
    assert webhook.bodies() == [
        "tracker needs attention: Last.fm rejected the API key: set lastfm.api_key in config.toml"
    ]
    assert webhook.messages[0]["type"] == "failure"
    await quiet(webhook, notifier, 0.3)  # it stays down, waiting on the user: said once
    # Sent elsewhere from now on (a reload): the problem told before is still followed.
    notifier.retarget([webhook.url.replace("/hook", "/other")], after=30.0)
    await supervisor.retry_now("tracker")  # the user fixed the key
    await wait_until(lambda: len(webhook.messages) == 2, what="the recovery")
    assert webhook.bodies()[1].startswith("tracker recovered")
    assert webhook.paths == ["/hook", "/other"]
    await quiet(webhook, notifier)


async def test_an_up_service_waiting_on_the_user_is_told_once_and_its_resolution(watched, webhook):
    supervisor, services, notifier = await watched()
    await supervisor.restore("launch")
    roon = services["roon_tracker"]
    roon.report_attention("approve aime-tui in Roon: Settings → Extensions → Enable")
    roon.report_attention("approve aime-tui in Roon: Settings → Extensions → Enable")
    await wait_until(lambda: webhook.messages, what="the needs-attention message")
    roon.report_attention(None, "approved in Roon")
    await wait_until(lambda: len(webhook.messages) == 2, what="the recovery")
    assert webhook.bodies()[0] == "roon_tracker needs attention: approve aime-tui in Roon: Settings → Extensions → Enable"
    assert webhook.bodies()[1].startswith("roon_tracker recovered")
    await quiet(webhook, notifier)


async def test_a_long_backoff_is_told_after_the_delay_and_its_recovery(config, webhook, watched):
    # rng 0.01: retries every 50 ms, then 100, 200 … (full jitter at 1%): failing, not spinning.
    supervisor, services, notifier = await watched(after=0.3, rng=0.01)
    await supervisor.restore("launch")
    scheduler = services["scheduler"]
    scheduler.failures = [OSError("Last.fm unreachable")] * 1000  # every retry fails
    scheduler.break_now(OSError("Last.fm unreachable"))
    await wait_until(lambda: webhook.messages, what="the long backoff message")
    assert len(webhook.messages) == 1
    body = webhook.bodies()[0]
    assert body.startswith("scheduler has not run steadily for ") and body.endswith(
        "(still retrying): Last.fm unreachable"
    ), body
    await quiet(webhook, notifier, 0.4)  # still failing: not told again
    # Between two attempts (one may be starting now), so that retry_now has a wait to cut
    # short; no retry can come between the fix and retry_now (nothing awaits there).
    await wait_until(lambda: supervisor.view("scheduler").state is RunState.BACKOFF, what="the scheduler in backoff")
    scheduler.failures = []
    await supervisor.retry_now("scheduler")  # rather than wait out the grown backoff
    await wait_until(lambda: supervisor.view("scheduler").state is RunState.RUNNING, what="the scheduler back")
    await wait_until(lambda: len(webhook.messages) == 2, what="the recovery")
    assert webhook.bodies()[1].startswith("scheduler recovered: running again after ")
    await quiet(webhook, notifier)


async def test_a_short_backoff_that_recovers_is_not_worth_a_message(watched, webhook):
    supervisor, services, notifier = await watched(after=5.0)
    await supervisor.restore("launch")
    services["scheduler"].break_now(OSError("a blip"))
    await wait_until(lambda: supervisor.view("scheduler").state is RunState.RUNNING and supervisor.view("scheduler").restarts == 1)
    await quiet(webhook, notifier, 0.6)  # past the settling: it was never told, so no recovery
    assert webhook.messages == []


async def test_a_flapping_service_is_one_message_and_one_recovery(watched, webhook):
    supervisor, services, notifier = await watched(after=0.3)
    await supervisor.restore("launch")
    tracker = services["tracker"]
    flaps = 0
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.5
    while loop.time() < until:  # up for a moment, down again, for longer than `after`
        await wait_until(lambda: supervisor.view("tracker").state is RunState.RUNNING, what="the tracker up")
        tracker.break_now(ConnectionResetError("connection reset"))
        flaps += 1
    assert flaps > 5
    await wait_until(lambda: len(webhook.messages) == 2, what="one problem and one recovery")
    assert webhook.bodies()[0].startswith("tracker has not run steadily for ")
    assert webhook.bodies()[1].startswith("tracker recovered")
    await quiet(webhook, notifier)


async def test_a_user_stop_ends_the_problem_without_a_message(watched, webhook):
    supervisor, services, notifier = await watched(after=0.3, rng=0.01)
    await supervisor.restore("launch")
    services["scheduler"].failures = [OSError("down")] * 1000
    services["scheduler"].break_now(OSError("down"))
    await wait_until(lambda: webhook.messages, what="the long backoff message")
    await supervisor.stop("scheduler")
    await quiet(webhook, notifier)
    assert len(webhook.messages) == 1


async def test_what_happens_while_a_message_waits_joins_it(config, webhook, cleanup):
    engine, services = scripted_engine(config, engine={"rng": lambda: 0.0})
    supervisor = await engine.open()
    notifier = Notifier(supervisor, [webhook.url], after=30, settle=30, spacing=0.5, gather=0.05, retry_delays=())
    notifier.start()
    cleanup.push_async_callback(engine.close)
    cleanup.push_async_callback(notifier.close)
    await supervisor.restore("launch")
    services["tracker"].break_now(NeedsAttention("set lastfm.user"))
    await wait_until(lambda: webhook.messages, what="the first message")
    services["roon_tracker"].break_now(NeedsAttention("approve the extension"))
    services["scheduler"].break_now(NeedsAttention("the backup directory is not writable"))
    await wait_until(lambda: len(webhook.messages) == 2, what="the second message")
    assert webhook.bodies()[1] == (
        "roon_tracker needs attention: approve the extension\n"
        "scheduler needs attention: the backup directory is not writable"
    )
    await quiet(webhook, notifier)


async def test_a_failing_webhook_is_retried_a_few_times_then_given_up(config, webhook, caplog, cleanup):
    webhook.failing = 100
    secret_url = webhook.url.replace("json://", "json://ana:hunter2secret@")
    engine, services = scripted_engine(config, engine={"rng": lambda: 0.0})
    supervisor = await engine.open()
    notices = []
    notifier = Notifier(supervisor, [secret_url], after=30, settle=30, spacing=0.1, gather=0.0,
                        retry_delays=(0.05, 0.05), on_notice=lambda text, level: notices.append(text))
    notifier.start()
    cleanup.push_async_callback(engine.close)
    cleanup.push_async_callback(notifier.close)
    with caplog.at_level(logging.DEBUG):
        await supervisor.restore("launch")
        services["tracker"].break_now(NeedsAttention("set lastfm.user"))
        await wait_until(lambda: notices and "not delivered" in notices[-1], what="the given-up notice")
        await asyncio.sleep(0.3)
    assert webhook.posts == 3, "three attempts, then no more"
    assert "after 3 attempts" in notices[-1] and "ana:****@127.0.0.1" in notices[-1]
    assert "hunter2secret" not in caplog.text and "hunter2secret" not in " ".join(notices)


async def test_an_unknown_url_is_said_once_masked_and_the_others_still_get_messages(config, webhook, cleanup):
    engine, services = scripted_engine(config, engine={"rng": lambda: 0.0})
    supervisor = await engine.open()
    notices = []
    notifier = Notifier(supervisor, ["nosuchscheme://token-abcdef123456", webhook.url], after=30, **QUICK,
                        on_notice=lambda text, level: notices.append(text))
    notifier.start()
    cleanup.push_async_callback(engine.close)
    cleanup.push_async_callback(notifier.close)
    await wait_until(lambda: notices, what="the notice about the bad URL")
    assert notices == ["notify: nosuchscheme://********3456 is not a URL Apprise knows; skipped"]
    services["tracker"].failures = [NeedsAttention("set lastfm.user")]
    await supervisor.restore("launch")
    await wait_until(lambda: webhook.messages, what="the message to the good URL")


async def test_the_engine_notifies_when_notify_urls_are_configured(config, webhook, cleanup):
    from aime_tui.config import NotifyConfig

    from aime_tui.core.model import LogEvent

    configured = config.with_overrides(notify=NotifyConfig(urls=(webhook.url, "nosuchscheme://abcdefghijkl")))
    engine, services = scripted_engine(configured, roon_tracker={"failures": (TimeoutError("no answer"),)})
    notices = []
    engine.bus.subscribe(lambda event: isinstance(event, LogEvent) and notices.append(event.text))
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    assert engine.notifier is not None
    await supervisor.restore("launch")
    await wait_until(lambda: webhook.messages, what="the restoration message")
    assert webhook.bodies() == ["Restoration after launch: 1 of 3 services failed — roon_tracker: no answer"]
    assert "notify: nosuchscheme://********ijkl is not a URL Apprise knows; skipped" in notices, "on the bus"


def test_a_launch_without_notify_or_http_imports_neither(tmp_path):
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from aime_tui.config import load_config\n"
        "from aime_tui.engine import Engine\n"
        "async def main():\n"
        f"    config = load_config(config_path=Path({str(tmp_path / 'none.toml')!r}), data_dir=Path({str(tmp_path)!r}), env={{}})\n"
        "    engine = Engine(config)\n"
        "    supervisor = await engine.open()\n"
        "    await engine.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('apprise', 'aiohttp', 'prometheus_client', 'aime_tui') and m.split('.')[-1] in ('apprise', 'aiohttp', 'prometheus_client', 'notify', 'probes')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_notify_test_sends_one_message_and_says_where_masked(tmp_path, webhook):
    secret_url = webhook.url.replace("json://", "json://ana:hunter2secret@")
    config = tmp_path / "config.toml"
    config.write_text(f'[notify]\nurls = ["{secret_url}"]\n', encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        str(EXECUTABLE), "notify", "--test", "--config", str(config),
        "--data-dir", str(tmp_path / "data"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == f"sent   json://ana:****@{webhook.url.removeprefix('json://')}"
    assert len(webhook.messages) == 1 and "test message" in webhook.messages[0]["message"]
    assert b"hunter2secret" not in out + err


def test_notify_without_urls_says_where_to_set_them(tmp_path):
    result = subprocess.run(
        [str(EXECUTABLE), "notify", "--test", "--config", str(tmp_path / "none.toml"),
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"aime-tui: no notification URLs: set [notify] urls in {tmp_path / 'none.toml'} (or AIME_NOTIFY_URLS)"
