import contextlib
import os
import signal
import tempfile
import time
import warnings
from pathlib import Path

import loopback_only
import pytest

# Nothing a test does reaches beyond this machine: Roon discovery is off unless a test
# points it at its own loopback responder, and datagrams anywhere but loopback are
# refused, here and in every Python child (sitecustomize on PYTHONPATH).
GUARD_DIR = Path(__file__).parent / "netguard"

loopback_only.install()
os.environ["AIME_ROON_DISCOVERY"] = "off"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))
_NET_LOG = Path(tempfile.mkdtemp(prefix="aime-netguard-")) / "refused.log"
os.environ[loopback_only.LOG_VARIABLE] = str(_NET_LOG)

# Screens show local times: pin the zone so snapshots read the same on every machine.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture(autouse=True)
def loopback_only_datagrams():
    """Fails the test that sent (or had a child send) a datagram beyond loopback."""
    yield
    refused = _NET_LOG.read_text(encoding="utf-8") if _NET_LOG.exists() else ""
    _NET_LOG.unlink(missing_ok=True)
    assert not refused, f"datagrams beyond loopback were attempted:\n{refused}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_run(tmp_path_factory):
    """Processes started in the tests' directories (instances, which outlive their
    terminal by design, and benchmark children) are ended when the run ends, also after
    a failure that skipped a test's own stop; each is named in a warning, so a test that
    leaks one is seen rather than leaving it running on the machine."""
    root = str(tmp_path_factory.getbasetemp())
    yield
    left = _live_processes_mentioning(root)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        named = "; ".join(f"{pid}: {command[:200]}" for pid, command in left)
        warnings.warn(f"{len(left)} process(es) a test started were still running at the end, killed: {named}")


def _live_processes_mentioning(text: str) -> list[tuple[int, str]]:
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                state = file.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if text in command and state != b"Z":
            found.append((int(entry.name), command))
    return found


@pytest.fixture
async def cleanup():
    """Stops what a test started itself, however the test ends: register with
    `cleanup.push_async_callback(tracker.stop)` or `cleanup.callback(server.close)`;
    the last registered runs first. Ask for it last, so it runs before the other
    fixtures' teardown (what the test started stops before the store it writes to)."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.fixture
def store_clock():
    """The wall clock the `store` fixture's store stamps rows with; a module replaying
    history at known times overrides it."""
    return time.time


@pytest.fixture
async def store(tmp_path, store_clock):
    """A store on a fresh database file in the test's directory, closed afterwards."""
    from aime_tui.store.database import Store

    store = await Store.open(tmp_path / "aime.db", clock=store_clock)
    yield store
    await store.close()


@pytest.fixture
async def roon():
    """Start fake Roon Cores on loopback (`await roon(**options)`); every one is stopped afterwards."""
    from aime_tui.demo.roon_fake import FakeRoonCore

    cores: list[FakeRoonCore] = []

    async def start(**options) -> FakeRoonCore:
        core = FakeRoonCore(**options)
        await core.start()
        cores.append(core)
        return core

    yield start
    for core in cores:
        await core.stop()


@pytest.fixture
def config(tmp_path):
    from aime_tui.config import load_config

    env = {"AIME_ROON_DISCOVERY": "off"}
    return load_config(config_path=tmp_path / "config.toml", data_dir=tmp_path / "data", env=env)


def pytest_sessionfinish(session, exitstatus):
    """A test that fails before closing its database leaves aiosqlite's worker thread
    running, and it is not a daemon: the run would report the failure, then never exit.
    Stop whatever connections are left: Connection.stop() needs no event loop (a test's
    loop is closed by now), and does nothing to one already closed."""
    import gc

    import aiosqlite

    # type(), not isinstance(): a dead weak proxy among the objects raises on isinstance.
    for connection in [obj for obj in gc.get_objects() if type(obj) is aiosqlite.Connection]:
        connection.stop()
