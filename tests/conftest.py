import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Test helpers (scripted services) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# Nothing a test does reaches beyond this machine: Roon discovery is off unless a test
# points it at its own loopback responder, and datagrams anywhere but loopback are
# refused, here and in every Python child (sitecustomize on PYTHONPATH).
GUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(GUARD_DIR))
import loopback_only  # noqa: E402

loopback_only.install()
os.environ["AIME_ROON_DISCOVERY"] = "off"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))
_NET_LOG = Path(tempfile.mkdtemp(prefix="aime-netguard-")) / "refused.log"
os.environ[loopback_only.LOG_VARIABLE] = str(_NET_LOG)
# The kill -9 test shares its child and its check with the benchmarks package at the
# repository root. Appended, not prepended: `aime_tui` still comes from the installed package.
sys.path.append(str(Path(__file__).resolve().parent.parent))

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


@pytest.fixture
def config(tmp_path):
    from aime_tui.config import load_config

    env = {"AIME_ROON_DISCOVERY": "off"}
    return load_config(config_path=tmp_path / "config.toml", data_dir=tmp_path / "data", env=env)


def pytest_sessionfinish(session, exitstatus):
    """A test that fails before closing its database leaves aiosqlite's worker thread
    running, and it is not a daemon: the run would report the failure, then never exit.
    Close whatever connections are still open, each on a loop of its own."""
    import asyncio
    import gc

    import aiosqlite

    # type(), not isinstance(): a dead weak proxy among the objects raises on isinstance.
    for connection in [obj for obj in gc.get_objects() if type(obj) is aiosqlite.Connection]:
        # Only a live worker can answer close(); one that died (its loop closed under a
        # query) would leave close() waiting forever, and keeps nothing alive anyway.
        if connection._running and connection._thread.is_alive():
            asyncio.run(asyncio.wait_for(connection.close(), 5))
