"""Private by default and calm under faults, against real processes, real other users,
a real full disk and a real swapped database file.

Tests that need another user run as root (as CI does) and drop to `nobody` in a child;
they are skipped, saying why, otherwise. The full-disk test mounts a tiny tmpfs, and is
skipped when mounting is not allowed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from benchmarks.common import free_port
from waits import wait_until, wait_until_sync

from aime_tui.control.client import Unreachable, request
from aime_tui.core.logfile import PrivateLogHandler
from aime_tui.store.database import Store

EXECUTABLE = Path(sys.executable).with_name("aime-tui")
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as another user (nobody) in a child")


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@functools.cache
def nobody_python() -> tuple[str, dict[str, str]] | None:
    """An interpreter `nobody` may run that imports aime_tui (ours may sit in root's home)."""
    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env = {**os.environ, "PYTHONPATH": path}
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import aime_tui.cli.main"], preexec_fn=as_nobody, env=env,
                capture_output=True, timeout=30,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, env
    return None


def run_as_nobody(args: list[str], *, env: dict[str, str] | None = None, cli: bool = False, **options):
    found = nobody_python()
    if found is None:
        pytest.skip("no Python interpreter that the user nobody may run imports aime_tui here")
    python, base = found
    prefix = [python, "-c", "from aime_tui.cli.main import main; raise SystemExit(main())"] if cli else [python]
    return subprocess.run(
        [*prefix, *args], preexec_fn=as_nobody, env={**(env or os.environ), "PYTHONPATH": base["PYTHONPATH"]},
        capture_output=True, text=True, timeout=30, **options,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AIME_DEMO_FAULTS": "0", "AIME_CONFIG": str(tmp / "no-config.toml"), **extra}


class Instance:
    """`aime-tui --demo --headless` in a subprocess, with stderr collected in a thread."""

    def __init__(self, data_dir: Path, env: dict[str, str], *, umask: int = 0o022) -> None:
        self.data_dir = data_dir
        self.env = env
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(EXECUTABLE), "--demo", "--headless", "--data-dir", str(data_dir)],
            env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(umask),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def said(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_until_sync(lambda: self.said(text) or self.process.poll() is not None, timeout=timeout, what=text)
        assert self.said(text), "".join(self.lines[-20:])

    def cli(self, *args: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXECUTABLE), *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, timeout=30, **options,
        )

    def ask(self, message: dict, timeout: float = 10.0) -> dict:
        return request(self.data_dir / "aime.sock", message, timeout=timeout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(15)
        self._reader.join(5)
        return self.process.returncode


@pytest.fixture
def shared_tmp():
    """A directory another user can traverse (pytest's own are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aime-privacy-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def running():
    """One headless instance, started with a careless umask (000), where others can look."""
    tmp = Path(tempfile.mkdtemp(prefix="aime-privacy-"))
    tmp.chmod(0o755)
    instance = Instance(tmp / "data", env_for(tmp), umask=0)
    instance.wait_for("Restored")
    yield instance
    instance.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# -- modes -------------------------------------------------------------------------------


def test_a_fresh_start_makes_the_directory_and_every_file_private_whatever_the_umask(running):
    data = running.data_dir
    wait_until_sync(lambda: (data / "aime.db-wal").exists() and (data / "aime.db-shm").exists())
    assert mode(data) == 0o700
    for name in ("aime.db", "aime.db-wal", "aime.db-shm", "aime.log", "aime.lock", "aime.sock"):
        assert mode(data / name) == 0o600, name


def test_wider_modes_are_tightened_at_start_and_said_once(tmp_path):
    data = tmp_path / "data"
    first = Instance(data, env_for(tmp_path))
    first.wait_for("Restored")
    assert first.stop() == 0
    data.chmod(0o755)
    (data / "aime.db").chmod(0o644)
    (data / "aime.log").chmod(0o644)
    second = Instance(data, env_for(tmp_path))
    second.wait_for("Restored")
    assert second.stop() == 0
    said = second.said("made private")
    assert len(said) == 1 and "aime.db 0644 → 0600" in said[0] and "aime.log 0644 → 0600" in said[0]
    assert (mode(data), mode(data / "aime.db"), mode(data / "aime.log")) == (0o700, 0o600, 0o600)


async def test_backups_are_private_whatever_the_umask(tmp_path):
    store = await Store.open(tmp_path / "aime.db")
    previous = os.umask(0)
    try:
        await store.backup_to(tmp_path / "backups" / "copy.db")
    finally:
        os.umask(previous)
        await store.close()
    assert mode(tmp_path / "backups") == 0o700
    assert mode(tmp_path / "backups" / "copy.db") == 0o600


def test_log_rotations_are_private_and_no_symlink_is_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    log_path = tmp_path / "aime.log"
    previous = os.umask(0)
    try:
        handler = PrivateLogHandler(log_path, maxBytes=200, backupCount=2)
        logger = logging.Logger("rotation-test")
        logger.addHandler(handler)
        for n in range(20):
            logger.warning("line %d %s", n, "x" * 40)
        handler.close()
        rotations = sorted(tmp_path.glob("aime.log*"))
        assert len(rotations) == 3
        assert all(mode(path) == 0o600 for path in rotations)
        # A symlink put in place of the log (a race past the directory check) is not followed.
        log_path.unlink()
        log_path.symlink_to(victim)
        with pytest.raises(OSError) as refused:
            PrivateLogHandler(log_path)
        assert refused.value.errno == 40  # ELOOP
    finally:
        os.umask(previous)
    assert victim.read_text() == "untouched\n"


def test_a_log_that_cannot_be_written_says_nothing_on_stderr_then_counts(tmp_path, capfd):
    handler = PrivateLogHandler(tmp_path / "aime.log")
    logger = logging.Logger("full-test")
    logger.addHandler(handler)
    full = open("/dev/full", "w")  # every write fails with ENOSPC, like a full disk
    handler.stream.close()
    handler.stream = full
    logger.warning("lost")
    assert handler.lost == 1 and handler.stream is None  # dropped, reopened at the next record
    logger.warning("written")
    handler.close()
    assert "Logging error" not in capfd.readouterr().err
    text = (tmp_path / "aime.log").read_text()
    assert "1 log lines could not be written (No space left on device)" in text
    assert text.endswith("written\n") and "lost" not in text


# -- other users --------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("directory_mode", [None, 0o711], ids=["as made", "directory opened up"])
def test_another_user_can_read_nothing_and_reach_nothing(running, directory_mode):
    data = running.data_dir
    probe = (
        "import socket, sys\n"
        "denied = []\n"
        "for name in ('aime.db', 'aime.db-wal', 'aime.log', 'aime.lock'):\n"
        f"    try: open({str(data)!r} + '/' + name, 'rb').read(1)\n"
        "    except PermissionError: denied.append(name)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect({str(data / 'aime.sock')!r})\n"
        "except PermissionError: denied.append('aime.sock')\n"
        "print(' '.join(denied))\n"
    )
    # As made, the directory alone keeps others out; opened up, each file still does.
    if directory_mode is not None:
        data.chmod(directory_mode)
    try:
        done = run_as_nobody(["-c", probe])
    finally:
        data.chmod(0o700)
    assert done.stdout.split() == ["aime.db", "aime.db-wal", "aime.log", "aime.lock", "aime.sock"], done.stderr


@needs_root
def test_the_server_serves_its_owner_and_root_and_refuses_another_uid(shared_tmp):
    """As systemd's user manager and tmux do: the owner, and root (who can read its files
    anyway); anyone else is refused, however the modes were loosened."""
    found = nobody_python()
    if found is None:
        pytest.skip("no Python interpreter that the user nobody may run imports aime_tui here")
    python, base = found
    data = shared_tmp / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    env = {**env_for(shared_tmp, HOME=str(shared_tmp)), "PYTHONPATH": base["PYTHONPATH"]}
    owner = subprocess.Popen(
        [python, "-c", "from aime_tui.cli.main import main; raise SystemExit(main())", "--headless",
         "--data-dir", str(data)], preexec_fn=as_nobody, env=env, stderr=subprocess.PIPE, text=True,
    )
    sock = data / "aime.sock"
    other = 65533  # neither the owner (nobody) nor root
    ask = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(sock)!r})\n"
        "try: s.sendall(b'{\"cmd\": \"stop\", \"service\": \"scheduler\"}\\n')\n"
        "except BrokenPipeError: pass  # refused before it could send\n"
        "print(s.makefile().readline())\n"
    )
    try:
        wait_until_sync(lambda: sock.exists() or owner.poll() is not None, timeout=20, what="the socket")
        assert owner.poll() is None, owner.stderr.read()
        # Loosen both the directory and the socket by hand: the peer check still holds.
        data.chmod(0o711)
        sock.chmod(0o666)

        def as_other() -> None:
            os.setgroups([])
            os.setgid(other)
            os.setuid(other)

        refused = subprocess.run([python, "-c", ask], preexec_fn=as_other, env=env, capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode == 0, refused.stderr
        assert json.loads(refused.stdout) == {"ok": False, "error": f"refused: uid {other} does not own this instance"}
        # Root, with no CLI (it sends nothing to a socket that is not root's): served.
        served = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=30)
        assert json.loads(served.stdout) == {"ok": True, "service": "scheduler", "wanted": False}, served.stderr
    finally:
        owner.send_signal(signal.SIGTERM)
        out = owner.communicate(timeout=15)[1]
    assert owner.returncode == 0, out
    assert f"refused a connection from uid {other}" in out
    assert "refused a connection from uid 0" not in out
    with sqlite3.connect(data / "aime.db") as db:
        assert db.execute("SELECT is_active FROM service_states WHERE service_name = 'scheduler'").fetchone() == (0,)


@needs_root
def test_the_client_sends_nothing_to_a_socket_that_is_not_its_users(shared_tmp):
    planted = shared_tmp / "aime.sock"
    shared_tmp.chmod(0o777)
    listener = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({str(planted)!r}); s.listen(4)\n"
        "print('listening', flush=True)\n"
        "conn, _ = s.accept(); conn.settimeout(2)\n"
        "try: data = conn.recv(100)\n"
        "except OSError: data = b''\n"
        "print('got', repr(data), flush=True)\n"
    )
    found = nobody_python()
    if found is None:
        pytest.skip("no Python interpreter that the user nobody may run here")
    fake = subprocess.Popen([found[0], "-c", listener], preexec_fn=as_nobody, stdout=subprocess.PIPE, text=True)
    assert fake.stdout.readline().strip() == "listening"
    with pytest.raises(Unreachable, match=f"belongs to uid {NOBODY}, not to you: not sending anything"):
        request(planted, {"cmd": "stop", "service": "scheduler"}, timeout=2)
    # Owned by us on disk, but served by someone else: the peer's uid says so.
    os.chown(planted, 0, 0)
    with pytest.raises(Unreachable, match=f"served by uid {NOBODY}, not by you: not sending anything"):
        request(planted, {"cmd": "stop", "service": "scheduler"}, timeout=2)
    assert fake.stdout.readline().strip() == "got b''"
    fake.wait(5)


@needs_root
def test_a_data_directory_others_can_write_or_own_is_refused_with_the_fix(shared_tmp):
    writable = shared_tmp / "writable"
    writable.mkdir()
    writable.chmod(0o777)
    (writable / "aime.sock").symlink_to("/nonexistent")  # what a stranger might plant
    done = subprocess.run(
        [str(EXECUTABLE), "stop", "scheduler", "--data-dir", str(writable)],
        env=env_for(shared_tmp), capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"aime-tui: data directory {writable} is writable by its group and other users (mode 0777)"
        f" — fix: chmod 700 {writable}\n"
    )
    assert "saved" not in done.stdout
    theirs = shared_tmp / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    done = subprocess.run(
        [str(EXECUTABLE), "--headless", "--demo", "--data-dir", str(theirs)],
        env=env_for(shared_tmp), capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"aime-tui: data directory {theirs} belongs to nobody (uid {NOBODY}), not to you")
    assert done.stderr.count("\n") == 1
    doctor = subprocess.run(
        [str(EXECUTABLE), "doctor", "--data-dir", str(writable)],
        env=env_for(shared_tmp), capture_output=True, text=True, timeout=30,
    )
    assert f"FAIL  data directory {writable} is writable by its group and other users (mode 0777) — fix: chmod 700 {writable}" in doctor.stdout
    assert doctor.returncode == 1


def test_a_planted_log_symlink_is_refused_and_not_followed(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (data / "aime.log").symlink_to(victim)
    done = subprocess.run(
        [str(EXECUTABLE), "--headless", "--demo", "--data-dir", str(data)],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 2
    assert done.stderr == f"aime-tui: cannot use {data / 'aime.log'}: it is a symlink, and aime-tui never writes through one; remove it\n"
    assert victim.read_text() == "untouched\n"


@needs_root
@pytest.mark.parametrize("command", [
    ["status"], ["health"], ["history"], ["plays"], ["start", "tracker"], ["mode", "MASSIVE"], ["--headless", "--demo"],
])
def test_a_foreign_lock_is_one_line_and_an_exit_code_in_every_subcommand(shared_tmp, command):
    data = shared_tmp / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    lock = data / "aime.lock"
    lock.write_text("1\n")
    lock.chmod(0o600)  # root's, unreadable to nobody
    done = run_as_nobody([*command, "--data-dir", str(data)], env=env_for(shared_tmp, HOME=str(shared_tmp)), cli=True)
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"aime-tui: {lock} belongs to root (uid 0), not to you (nobody (uid {NOBODY}))"
        " — fix: remove it or have it chowned to you; aime-tui never uses another user's files\n"
    )
    assert done.returncode == 2


@needs_root
def test_doctor_shows_a_foreign_lock_as_a_fail_line(shared_tmp):
    data = shared_tmp / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    (data / "aime.lock").write_text("1\n")
    done = run_as_nobody(["doctor", "--data-dir", str(data)], env=env_for(shared_tmp, HOME=str(shared_tmp)), cli=True)
    assert "Traceback" not in done.stderr + done.stdout
    assert f"FAIL  {data / 'aime.lock'} belongs to root (uid 0)" in done.stdout
    assert done.returncode == 1


# -- the control socket -------------------------------------------------------------------


def test_500_clients_at_once_are_all_answered(running):
    path = running.data_dir / "aime.sock"
    barrier = threading.Barrier(500)

    def one(_):
        barrier.wait()
        return request(path, {"cmd": "status"}, timeout=30)["pid"]

    with ThreadPoolExecutor(500) as pool:
        pids = list(pool.map(one, range(500)))
    assert pids == [running.process.pid] * 500


def _send_raw(path: Path, line: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        try:
            conn.sendall(line)
        except BrokenPipeError:
            pass  # answered and closed before the rest was read
        return json.loads(conn.makefile("rb").readline())


@pytest.mark.parametrize("line, error", [
    (b"[" * 30000 + b"]" * 30000 + b"\n", "bad request: nested too deeply"),
    (b'{"cmd": "status", "pad": "' + b"x" * 1_000_000 + b'"}\n', "bad request: longer than 65536 bytes"),
    (b"\xff\xfe\n", "bad request: "),
    (b"[1, 2]\n", "bad request: a request is a JSON object"),
], ids=["nested", "too-long", "not-utf8", "not-an-object"])  # a megabyte id would reach every child's environment
def test_a_malformed_line_gets_an_answer_and_is_no_error_of_the_instance(running, line, error):
    before = running.ask({"cmd": "health"})["errors"]["errors_total"]
    answer = _send_raw(running.data_dir / "aime.sock", line)
    assert answer["ok"] is False and answer["error"].startswith(error)
    health = running.ask({"cmd": "health"})
    assert health["errors"]["errors_total"] == before
    assert not running.said("Traceback")


# -- config numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("text, key, allowed", [
    ("[roon]\nport = inf\n", "[roon] port", "a whole number from 1 to 65535"),
    ("[roon]\nport = 99999999999\n", "[roon] port", "a whole number from 1 to 65535"),
    ("[restore]\ntimeout = 1e9\n", "[restore] timeout", "a number from 0.1 to 300 s"),
    ("[restore]\ntimeout = nan\n", "[restore] timeout", "a number from 0.1 to 300 s"),
])
def test_a_bad_number_is_one_line_naming_file_key_and_range(tmp_path, text, key, allowed):
    config = tmp_path / "config.toml"
    config.write_text(text)
    done = subprocess.run(
        [str(EXECUTABLE), "--headless", "--data-dir", str(tmp_path / "data"), "--config", str(config)],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=20,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"aime-tui: {config} {key}: expected {allowed}, got ")
    assert done.stderr.count("\n") == 1


def test_unknown_keys_are_warned_about_once_at_launch(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[lastfm]\napi_kee = "x"\n[bogus]\n')
    instance = Instance(tmp_path / "data", {**env_for(tmp_path), "AIME_CONFIG": str(config)})
    instance.wait_for("Restored")
    assert instance.stop() == 0
    assert len(instance.said("unknown key 'api_kee' ignored (did you mean api_key?)")) == 1
    assert len(instance.said("unknown section [bogus] ignored")) == 1


# -- the database file under the instance -------------------------------------------------


def _saved(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT service_name, is_active FROM service_states").fetchall())


@pytest.mark.parametrize("fault", ["replaced", "wal deleted"])
def test_the_database_swapped_under_the_instance_loses_nothing_acknowledged(tmp_path, fault):
    data = tmp_path / "data"
    instance = Instance(data, env_for(tmp_path))
    instance.wait_for("Restored")
    assert instance.cli("stop", "tracker").returncode == 0
    if fault == "replaced":
        (data / "aime.db").unlink()
        sqlite3.connect(data / "aime.db").close()  # an empty database where ours was
    else:
        (data / "aime.db-wal").unlink()
    done = instance.cli("stop", "roon_tracker")
    assert done.returncode == 0, done.stderr
    health = instance.ask({"cmd": "health"})
    assert health["database"]["reachable"] is True
    assert instance.stop() == 0
    saved = _saved(data / "aime.db")
    assert saved == {"tracker": 0, "roon_tracker": 0, "scheduler": 1}
    assert list(data.glob("aime.db.corrupt-*")), "the old file is kept"
    assert len(instance.said("while in use: moved aside to")) == 1
    assert not instance.said("Traceback")


def test_health_checks_the_file_on_disk_and_a_data_directory_deleted_whole_is_made_again(tmp_path):
    import fcntl

    import httpx

    port = free_port()
    data = tmp_path / "data"
    instance = Instance(data, env_for(tmp_path, AIME_HTTP_LISTEN=f"127.0.0.1:{port}"))
    instance.wait_for("serving /health")
    instance.wait_for("Restored")
    # The database renamed away: `health` notices, and a fresh one carries on.
    (data / "aime.db").rename(data / "elsewhere.db")
    health = instance.cli("health")
    # Noticed by that check, unless a write of the demo's got there first: either way the
    # instance says it, and health counts it.
    instance.wait_for("was deleted while in use: moved aside")
    if "database: database" in health.stdout:
        assert "was deleted while in use: moved aside" in health.stdout
    else:
        assert "last hour: 1 error" in health.stdout, health.stdout
    assert set(_saved(data / "aime.db")) == {"tracker", "roon_tracker", "scheduler"}

    # The whole directory deleted: made again, with everything the instance held.
    assert instance.cli("stop", "tracker").returncode == 0
    assert instance.cli("mode", "MASSIVE").returncode == 0
    with sqlite3.connect(data / "aime.db") as db:
        plays = db.execute("SELECT COUNT(*) FROM plays").fetchone()[0]
    assert plays > 0, "the demo's history is stored"
    shutil.rmtree(data)
    # Noticed where a replaced database is: here a health check (a write or a wake too).
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    assert health["database"]["reachable"] is True
    instance.wait_for(f"data directory {data} was deleted while in use")
    line = instance.said(f"data directory {data} was deleted while in use")
    assert len(line) == 1, instance.lines[-10:]
    assert line[0].rstrip().endswith(
        f"data directory {data} was deleted while in use: made it again (0700) with a fresh database"
        " holding what the instance held; made aime.log, aime.lock, aime.sock again"
    )
    # Said by the health check that recovered, unless a write of the demo's got there first.
    recovered = health["database"]["recovered"]
    assert recovered is None or recovered in line[0]
    wait_until_sync(lambda: (data / "aime.sock").exists(), what="the control socket listening again")
    assert mode(data) == 0o700
    for name in ("aime.db", "aime.log", "aime.lock", "aime.sock"):
        assert mode(data / name) == 0o600, name
    assert "was deleted while in use" in (data / "aime.log").read_text(), "said in the new log"
    # The lock is held again: a second launch here would be refused, not run beside it.
    with open(data / "aime.lock") as lock:
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock.read().strip() == str(instance.process.pid)
    status = instance.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert {s["name"]: (s["wanted"], s["mode"]) for s in json.loads(status.stdout)["services"]} == {
        "tracker": (False, None), "roon_tracker": (True, None), "scheduler": (True, "MASSIVE"),
    }
    assert instance.stop() == 0
    with pytest.raises(httpx.TransportError):  # the probes went with the instance
        httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
    assert _saved(data / "aime.db") == {"tracker": 0, "roon_tracker": 1, "scheduler": 1}
    with sqlite3.connect(data / "aime.db") as db:
        assert db.execute("SELECT COUNT(*) FROM plays").fetchone()[0] >= plays, "the history carried over"
        assert db.execute("SELECT mode FROM service_states WHERE service_name = 'scheduler'").fetchone() == ("MASSIVE",)
    assert not instance.said("Traceback")


async def test_an_idle_instance_notices_its_data_directory_deleted_by_itself(config, cleanup):
    """No write, wake or health check needed: the engine looks at its files now and then,
    so it takes its lock again before a second launch could start beside it."""
    from aime_tui.core.model import LogEvent
    from scripted import scripted_engine

    engine, _ = scripted_engine(config, engine={"file_check_every": 0.05})
    said = []
    engine.bus.subscribe(lambda event: isinstance(event, LogEvent) and said.append(event.text))
    supervisor = await engine.open()
    cleanup.push_async_callback(engine.close)
    await engine.launch()
    await supervisor.stop("scheduler")
    shutil.rmtree(config.data_dir)
    await wait_until(lambda: [text for text in said if "was deleted while in use" in text], what="the recovery")
    assert _saved(config.data_dir / "aime.db")["scheduler"] == 0
    assert mode(config.data_dir) == 0o700 and (config.data_dir / "aime.lock").exists()
    await wait_until(lambda: (config.data_dir / "aime.sock").exists(), what="the control socket again")


async def test_a_closed_store_never_makes_a_deleted_directory_again(tmp_path):
    from aime_tui.store.database import StoreError

    data = tmp_path / "scratch"
    threads_before = set(threading.enumerate())
    store = await Store.open(data / "aime.db")
    await store.close()
    shutil.rmtree(data)  # its owner cleans up; a late write from a stopping task follows
    with pytest.raises(StoreError, match="is closed"):
        await store.set_desired("tracker", True, "user")
    assert not data.exists()
    # No connection thread of this store's left (other tests' may run in this process).
    await wait_until(lambda: set(threading.enumerate()) <= threads_before, what="no connection thread left")


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'mount failed'}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_disk_filled_during_a_backfill_is_said_once_and_the_instance_carries_on(tiny_disk, tmp_path):
    data = tiny_disk / "data"
    instance = Instance(data, env_for(tmp_path, AIME_SCHEDULER_MODE="MASSIVE"))
    instance.wait_for("Restored")
    filler = _fill(tiny_disk)
    instance.wait_for("disk full: cannot write", timeout=30)

    def refused() -> int:
        health = instance.ask({"cmd": "health"})
        assert health["status"] != "healthy" and health["problems"][0].startswith("disk full: ")
        return health["database"]["refused_writes"]

    # Services keep writing into the full disk meanwhile: none of that says anything more.
    wait_until_sync(lambda: refused() >= 5, timeout=30, what="writes refused while the disk is full")
    stop = instance.cli("stop", "tracker")
    assert stop.returncode in (0, 1), stop.stderr
    if stop.returncode == 1:
        assert "disk full" in stop.stderr and stop.stderr.count("\n") == 1
    filler.unlink()
    instance.wait_for("disk space is back", timeout=30)
    assert instance.process.poll() is None, "the instance kept running"
    assert instance.cli("stop", "roon_tracker").returncode == 0
    assert instance.stop() == 0
    said = "".join(instance.lines)
    assert said.count("disk full: cannot write") == 1
    back = instance.said("disk space is back")[0]
    assert int(back.split("(")[-1].split()[0]) >= 5, back  # "(N writes were refused)"
    assert "Traceback" not in said and "Logging error" not in said
    assert _saved(data / "aime.db")["roon_tracker"] == 0
    if stop.returncode == 0:
        assert _saved(data / "aime.db")["tracker"] == 0


@needs_root
@pytest.mark.parametrize("unreadable, command", [
    ("aime.lock", ["status"]), ("aime.lock", ["health"]), ("aime.lock", ["history"]), ("aime.lock", ["--headless", "--demo"]),
    ("aime.db", ["status"]), ("aime.db", ["plays"]), ("aime.db", ["stop", "tracker"]), ("aime.db", ["--headless", "--demo"]),
    ("aime.log", ["--headless", "--demo"]),
])
def test_an_unreadable_file_of_ones_own_is_one_line_and_an_exit_code(shared_tmp, unreadable, command):
    data = shared_tmp / "data"
    env = env_for(shared_tmp, HOME=str(shared_tmp))
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    made = run_as_nobody(["start", "tracker", "--data-dir", str(data)], env=env, cli=True)  # a real database
    assert made.returncode == 0, made.stderr
    (data / "aime.log").write_text("")
    (data / "aime.log").chmod(0o600)
    os.chown(data / "aime.log", NOBODY, NOBODY)
    (data / unreadable).chmod(0)
    done = run_as_nobody([*command, "--data-dir", str(data)], env=env, cli=True)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("\n") <= 1
    if done.stderr:
        assert done.stderr.startswith("aime-tui: ") and (unreadable in done.stderr or "database" in done.stderr), done.stderr
        assert done.returncode in (1, 2)
