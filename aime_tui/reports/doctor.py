"""`aime-tui doctor`: startup validation, one line per check, with a fix for each failure.

Checks the Python version, that the dependencies import, that the config parses, that
the config and data directories exist (or can be created) and are writable, that the
database opens and passes quick_check, whether an instance runs and answers on its
socket, that the configured endpoints accept a connection, which Roon Cores answer
the discovery query (unless AIME_ROON_DISCOVERY is off), that the notification URLs
parse, and that the HTTP probes' address can be bound. It changes nothing:
the database is opened read-only, and nothing is moved aside or created (writability
is probed with a temporary file that is removed at once). No Textual here.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import socket
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from aime_tui.clients import sood
from aime_tui.config import (
    DB_FILE,
    LOCK_FILE,
    SOCKET_FILE,
    Config,
    ConfigError,
    default_config_path,
    default_data_dir,
    load_config,
)
from aime_tui.control.client import ControlError, Unreachable, instance_running, request
from aime_tui.core.files import UnsafeDataDir, ensure_private_dir, own_files
from aime_tui.core.instance import read_pid
from aime_tui.store.queries import connect_read_only
from aime_tui.services.registry import setting_hint
from aime_tui.store.database import SCHEMA_VERSION

MIN_PYTHON = (3, 11)
# Import name → distribution name, for the versions shown and the fix.
DEPENDENCIES = {
    "textual": "textual",
    "rich": "rich",
    "apscheduler": "APScheduler",
    "aiosqlite": "aiosqlite",
    "httpx": "httpx",
    "websockets": "websockets",
    "platformdirs": "platformdirs",
    "h11": "h11",
}
CONNECT_TIMEOUT = 2.0
#: Seconds the discovery query waits for Cores to answer (they answer in milliseconds).
DISCOVERY_WAIT = 1.0
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    outcome: str
    what: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.outcome:<5} {self.what}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def check_python(version=sys.version_info) -> Check:
    shown = f"python {version[0]}.{version[1]}.{version[2]}"
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check(OK, shown)
    return Check(FAIL, f"{shown} is too old", f"use Python {'.'.join(map(str, MIN_PYTHON))} or newer")


def check_dependencies() -> list[Check]:
    found, checks = [], []
    for module, distribution in DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install can fail in many ways; all mean "reinstall"
            checks.append(Check(FAIL, f"dependency {module} does not import: {exc}", f"pip install --force-reinstall {distribution}"))
            continue
        try:
            found.append(f"{module} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(module)
    if found:
        checks.insert(0, Check(OK, "dependencies: " + ", ".join(found)))
    return checks


def check_config(config_path: Path, env: Mapping[str, str], data_dir: Path | None, demo: bool) -> tuple[Check, Config | None]:
    try:
        config = load_config(config_path=config_path, data_dir=data_dir, env=env, demo=demo)
    except ConfigError as exc:
        return Check(FAIL, f"config: {exc}", f"edit {config_path}, or move it away and run `aime-tui init`"), None
    if not config_path.exists():
        return Check(WARN, f"config {config_path} not found: defaults and AIME_* variables apply", "`aime-tui init` writes one to fill in"), config
    if config.warnings:
        return Check(WARN, "config: " + "; ".join(config.warnings), f"fix the names in {config_path}"), config
    return Check(OK, f"config {config_path} parses"), config


def _writable(directory: Path) -> str | None:
    """None if a file can be created in `directory`, else why not (access() lies to root)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".aime-doctor-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(handle)
    os.unlink(name)
    return None


def check_directory(label: str, directory: Path) -> Check:
    if directory.is_dir():
        why = _writable(directory)
        if why is None:
            return Check(OK, f"{label} {directory} is writable")
        return Check(FAIL, f"{label} {directory} is not writable: {why}", f"chown or chmod {directory} so your user can write to it")
    if directory.exists():
        return Check(FAIL, f"{label} {directory} is not a directory", f"move {directory} away, or point aime-tui elsewhere")
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return Check(FAIL, f"{label} {directory} cannot be created: {parent} is not a directory", f"move {parent} away, or point aime-tui elsewhere")
    why = _writable(parent)
    if why is not None:
        return Check(FAIL, f"{label} {directory} cannot be created in {parent}: {why}", f"create {directory} and make it writable for your user")
    return Check(OK, f"{label} {directory} does not exist yet: it will be created")


def check_private(data_dir: Path) -> list[Check]:
    """The data directory is the user's alone (as launch requires), and its files are private."""
    try:
        ensure_private_dir(data_dir, create=False)
    except UnsafeDataDir as exc:
        what, _, fix = str(exc).partition(" — fix: ")
        return [Check(FAIL, what, fix)]
    if not data_dir.is_dir():
        return []
    wide = []
    for path in (data_dir, *own_files(data_dir)):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_mode & 0o077 and not os.path.islink(path):
            wide.append(f"{path.name if path != data_dir else path} ({info.st_mode & 0o777:04o})")
    if wide:
        return [Check(WARN, f"readable by others: {', '.join(wide)}", "the next launch makes them private (0700/0600)")]
    return [Check(OK, f"data directory {data_dir} and its files are private")]


def check_database(path: Path) -> Check:
    if not path.exists():
        return Check(OK, f"database {path} not created yet: the first launch creates it")
    fix = (
        f"stop aime-tui and restore a copy from {path.parent / 'backups'}, or launch aime-tui:"
        " it moves an unreadable database aside (kept, never deleted) and starts a fresh one"
    )
    try:
        db = connect_read_only(path)
    except sqlite3.Error as exc:
        return Check(FAIL, f"database {path} does not open: {exc}", fix)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
        (version,) = db.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        return Check(FAIL, f"database {path} is unreadable: {exc}", fix)
    finally:
        db.close()
    if rows != [("ok",)]:
        found = "; ".join(str(row[0]) for row in rows[:3])
        return Check(FAIL, f"database {path} fails quick_check: {found}", fix)
    if version > SCHEMA_VERSION:
        return Check(FAIL, f"database {path} has schema {version}, newer than this aime-tui ({SCHEMA_VERSION})", "upgrade aime-tui")
    return Check(OK, f"database {path} passes quick_check (schema {version})")


def check_instance(data_dir: Path) -> Check:
    try:
        running = instance_running(data_dir / LOCK_FILE)
    except OSError as exc:
        return Check(FAIL, f"lock {data_dir / LOCK_FILE} cannot be read: {exc.strerror or exc}", f"remove {data_dir / LOCK_FILE} (no instance can be holding a lock nobody can read)")
    if not running:
        return Check(OK, "no instance running on this data directory")
    pid = read_pid(data_dir / LOCK_FILE) or "unknown"
    try:
        request(data_dir / SOCKET_FILE, {"cmd": "status"}, timeout=CONNECT_TIMEOUT)
    except Unreachable as exc:
        return Check(FAIL, f"instance pid {pid} runs but does not answer: {exc}", f"restart it (kill {pid}, then launch aime-tui again)")
    except ControlError as exc:  # it answered: reachable, whatever it said
        return Check(OK, f"instance pid {pid} runs and answers ({exc})")
    return Check(OK, f"instance pid {pid} runs and answers on {data_dir / SOCKET_FILE}")


def check_endpoint(label: str, host: str, port: int, where: str) -> Check:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return Check(FAIL, f"{label} {host}:{port} unreachable: {why}", f"check the network, or {where}")
    return Check(OK, f"{label} {host}:{port} accepts connections")


def check_endpoints(config: Config) -> list[Check]:
    if config.demo:
        return [Check(OK, "endpoints: the demo's loopback fakes start with the instance")]
    checks = []
    if config.lastfm.missing():
        checks.append(Check(WARN, f"Last.fm: {config.lastfm.missing()} not set, not checked", setting_hint(config.lastfm.missing() or "", config.config_path)))
    else:
        url = urlsplit(config.lastfm.api_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        checks.append(check_endpoint("Last.fm", url.hostname or "", port, f"fix lastfm.api_url in {config.config_path}"))
    if config.roon.host:
        checks.append(check_endpoint("Roon Core", config.roon.host, config.roon.port, f"fix roon.host / roon.port in {config.config_path}"))
    checks.append(check_discovery(config))
    return checks


def check_discovery(config: Config) -> Check:
    """The Roon Cores that answer the discovery query, the way the tracker looks for them."""
    targets = config.roon.discovery
    host_set = bool(config.roon.host)
    if targets == ():
        if host_set:
            return Check(OK, "Roon discovery off (AIME_ROON_DISCOVERY=off): roon.host is used")
        return Check(WARN, "Roon Core: roon.host not set and discovery is off (AIME_ROON_DISCOVERY=off)",
                     f"set roon.host in {config.config_path}, or turn discovery back on")
    try:
        cores = asyncio.run(sood.discover(sood.default_targets() if targets is None else targets, DISCOVERY_WAIT))
    except OSError as exc:
        return Check(WARN, f"Roon discovery could not ask the network: {exc.strerror or exc}",
                     f"set roon.host in {config.config_path}")
    if not cores:
        if host_set:
            return Check(OK, "Roon discovery: no Core answered (roon.host is used)")
        return Check(WARN, "Roon discovery: no Core answered", f"is the Core on this network? if not, set roon.host in {config.config_path}")
    found = "; ".join(f"{core.describe()} (core_id {core.core_id})" for core in cores)
    if len(cores) > 1 and not host_set:
        return Check(OK, f"Roon Cores found: {found}; the one aime-tui last registered with is used,"
                         f" else set roon.host in {config.config_path} to choose")
    return Check(OK, f"Roon Core{'s' * (len(cores) > 1)} found: {found}")


def check_notify(config: Config) -> list[Check]:
    """Every [notify] URL must be one Apprise can parse (it knows 100-odd services)."""
    if not config.notify.urls:
        return []
    from aime_tui.notify import build_targets

    try:
        targets = build_targets(config.notify.urls)
    except ImportError as exc:
        return [Check(FAIL, f"notifications: Apprise does not import: {exc}", "pip install apprise")]
    checks = [
        Check(FAIL, f"notify URL {target.shown} is not one Apprise knows",
              f"fix it in [notify] urls of {config.config_path}: the forms are at https://github.com/caronc/apprise/wiki")
        for target in targets
        if target.plugin is None
    ]
    good = [target.shown for target in targets if target.plugin is not None]
    if good:
        checks.insert(0, Check(OK, f"notify: {', '.join(good)} parse; `aime-tui notify --test` sends one"))
    return checks


def check_http(config: Config, data_dir: Path) -> list[Check]:
    """The [http] address can be bound, or the running instance already serves it."""
    http = config.http
    if not http.enabled:
        return []
    for module, distribution in (("aiohttp.web", "aiohttp"), ("prometheus_client", "prometheus-client")):
        try:
            importlib.import_module(module)
        except Exception as exc:
            return [Check(FAIL, f"http: {distribution} does not import: {exc}", f"pip install {distribution}")]
    where = f"[http] listen in {config.config_path}"
    try:
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((http.host, http.port))
    except OSError as exc:
        if instance_running(data_dir / LOCK_FILE) and _serves_probes(http):
            return [Check(OK, f"http {http.address}: served by the running instance")]
        why = exc.strerror or str(exc)
        return [Check(FAIL, f"http {http.address} cannot be bound: {why}", f"pick another address or port for {where}")]
    return [Check(OK, f"http {http.address} can be bound (/health, /ready, /metrics)")]


def _serves_probes(http) -> bool:
    import httpx

    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(http.host, http.host)
    url = f"http://[{host}]:{http.port}/ready" if ":" in host else f"http://{host}:{http.port}/ready"
    try:
        return "ready" in httpx.get(url, timeout=CONNECT_TIMEOUT).json()
    except Exception:  # not us, or not answering: either way not served by the instance
        return False


def run(*, config_path: Path | None, data_dir: Path | None, demo: bool, env: Mapping[str, str] | None = None) -> list[Check]:
    env = os.environ if env is None else env
    if config_path is None:
        config_path = Path(env["AIME_CONFIG"]) if env.get("AIME_CONFIG") else default_config_path()
    config_check, config = check_config(config_path.expanduser(), env, data_dir, demo)
    if config is not None:
        data_dir = config.data_dir
    elif data_dir is None:
        # The config did not load: the data directory it would have chosen.
        data_dir = Path(env["AIME_DATA_DIR"]) if env.get("AIME_DATA_DIR") else default_data_dir() / ("demo" if demo else "")
    checks = [check_python(), *check_dependencies(), config_check]
    checks.append(check_directory("config directory", config_path.expanduser().parent))
    checks.append(check_directory("data directory", data_dir))
    checks.extend(check_private(data_dir))
    checks.append(check_database(data_dir / DB_FILE))
    checks.append(check_instance(data_dir))
    if config is not None:
        checks.extend(check_endpoints(config))
        checks.extend(check_notify(config))
        checks.extend(check_http(config, data_dir))
    return checks
