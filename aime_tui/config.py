"""Configuration: where files live, the TOML config file, environment overrides.

Owns the fixed names of the design (data files, config keys, AIME_* variables) and the
first-launch defaults. Secrets are kept here and masked wherever they are shown.
"""

from __future__ import annotations

import difflib
import math
import re
import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Mapping

from aime_tui.services import registry
from aime_tui.services.registry import SCHEDULER_MODES

APP_NAME = "aime-tui"

DB_FILE = "aime.db"
LOCK_FILE = "aime.lock"
SOCKET_FILE = "aime.sock"
LOG_FILE = "aime.log"
BACKUP_DIR = "backups"

DEFAULT_LASTFM_URL = "https://ws.audioscrobbler.com/2.0/"
DEFAULT_ROON_PORT = 9330
DEFAULT_NOTIFY_AFTER = 600.0
#: Last.fm suspends API keys that make more requests a second than this.
MAX_LASTFM_RATE = 5.0
#: The least `[scheduler] backfill_interval` may be: below it the rate alone paces.
MIN_BACKFILL_INTERVAL = 0.2


class ConfigError(Exception):
    """A config file or variable that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class LastfmConfig:
    api_url: str = DEFAULT_LASTFM_URL
    api_key: str = ""
    user: str = ""
    interval: float = 120.0
    enabled: bool = True
    #: Requests a second to Last.fm, tracker and backfill together (the loader caps it at 5).
    rate: float = 1.0

    def __repr__(self) -> str:
        # A repr lands in crash tracebacks (Textual shows every frame's locals) and logs.
        return (
            f"LastfmConfig(api_url={self.api_url!r}, api_key={mask_secret(self.api_key)!r},"
            f" user={self.user!r}, interval={self.interval!r}, enabled={self.enabled!r},"
            f" rate={self.rate!r})"
        )

    def missing(self) -> str | None:
        """The first key the tracker cannot run without, or None."""
        if not self.api_key:
            return "lastfm.api_key"
        if not self.user:
            return "lastfm.user"
        return None


@dataclass(frozen=True)
class RoonConfig:
    host: str = ""
    port: int = DEFAULT_ROON_PORT
    enabled: bool = True
    #: Zone names or ids whose plays count; empty: every zone.
    zones: tuple[str, ...] = ()
    #: Where the SOOD discovery query goes when no host is set: None for the network
    #: (multicast and broadcast), () for no discovery, else these host:port targets.
    discovery: tuple[tuple[str, int], ...] | None = None


def parse_discovery(value: object, where: str) -> tuple[tuple[str, int], ...] | None:
    """`AIME_ROON_DISCOVERY`: "off", or a comma-separated list of host:port."""
    text = ",".join(value) if isinstance(value, list) else str(value)
    if text.strip().lower() == "off":
        return ()
    targets = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: {item!r} is not host:port (or use off)")
        targets.append((host, int(port)))
    if not targets:
        raise ConfigError(f"{where}: expected off, or a comma-separated list of host:port")
    return tuple(targets)


def _parse_zones(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: expected a list of zone names or ids, got {value!r}")
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True)
class SchedulerConfig:
    enabled: bool = True
    mode: str = "MAINTENANCE"
    catchup_interval: float = 900.0
    #: Least seconds between backfill pages, if set; else `[lastfm] rate` alone paces them.
    backfill_interval: float | None = None


@dataclass(frozen=True)
class NotifyConfig:
    """Apprise URLs to tell, and how long a wanted service may fail before they are told."""

    urls: tuple[str, ...] = ()
    after: float = DEFAULT_NOTIFY_AFTER

    def __repr__(self) -> str:
        # Apprise URLs carry tokens and passwords.
        return f"NotifyConfig(urls={[mask_url(url) for url in self.urls]!r}, after={self.after!r})"


@dataclass(frozen=True)
class HttpConfig:
    """Where the health, readiness and metrics endpoints listen; no host means off."""

    host: str = ""
    port: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    data_dir: Path
    config_path: Path
    lastfm: LastfmConfig = field(default_factory=LastfmConfig)
    roon: RoonConfig = field(default_factory=RoonConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    restore_timeout: float = 3.0
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    demo: bool = False
    demo_faults: bool = True
    #: Unknown sections and keys found in the file, each with the nearest known key.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def lock_path(self) -> Path:
        return self.data_dir / LOCK_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def backup_dir(self) -> Path:
        return self.data_dir / BACKUP_DIR

    def first_launch_defaults(self) -> dict[str, tuple[bool, str | None]]:
        """Desired state and mode per service before the user has ever toggled one."""
        return registry.first_launch_defaults(self)

    def with_overrides(self, **changes) -> "Config":
        return replace(self, **changes)


def mask_secret(secret: str) -> str:
    """Show just enough of a secret to recognise it: never more than its last 4 characters."""
    if not secret:
        return "(not set)"
    if len(secret) <= 8:
        return "*" * len(secret)
    return "*" * 8 + secret[-4:]


def mask_url(url: str) -> str:
    """A notification URL as it may be shown: its scheme, the rest masked (the tokens and
    passwords are anywhere in it, the host included: tgram://BOT_TOKEN/CHAT)."""
    scheme, found, rest = url.partition("://")
    return f"{scheme}://{mask_secret(rest)}" if found else mask_secret(url)


# platformdirs is imported only when no --data-dir / --config (or environment) says where.


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class NumberRule:
    """The allowed range of one numeric setting."""

    minimum: float
    maximum: float
    integer: bool = False
    unit: str = " s"

    def allowed(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        return f"{kind} from {self.minimum:g} to {self.maximum:g}{self.unit}"


# Every numeric setting, (section, key) → its range: one row each, checked the same way.
NUMBER_RULES: dict[tuple[str, str], NumberRule] = {
    ("lastfm", "interval"): NumberRule(1, 86_400),
    ("roon", "port"): NumberRule(1, 65_535, integer=True, unit=""),
    ("scheduler", "catchup_interval"): NumberRule(1, 7 * 86_400),
    # Last.fm suspends API keys that make more requests a second than that.
    ("lastfm", "rate"): NumberRule(0.01, MAX_LASTFM_RATE, unit=" requests a second"),
    ("scheduler", "backfill_interval"): NumberRule(MIN_BACKFILL_INTERVAL, 3_600),
    ("restore", "timeout"): NumberRule(0.1, 300),
    ("notify", "after"): NumberRule(0, 7 * 86_400),
}
# Sections whose keys are not the fields of one of Config's dataclass sections.
EXTRA_SECTIONS: dict[str, tuple[str, ...]] = {"restore": ("timeout",), "http": ("listen",)}


def _parse_number(value: object, where: str, rule: NumberRule) -> float:
    """A finite number within the rule's range, or a ConfigError naming where and the range."""
    problem = f"{where}: expected {rule.allowed()}, got {value!r}"
    if isinstance(value, bool):
        raise ConfigError(problem)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(problem) from None
    if not math.isfinite(number) or not rule.minimum <= number <= rule.maximum:
        raise ConfigError(problem)
    if rule.integer and number != int(number):
        raise ConfigError(problem)
    return number


def known_keys() -> dict[str, tuple[str, ...]]:
    """Each config section and its keys: the fields of Config's section dataclasses."""
    sections: dict[str, tuple[str, ...]] = {}
    for item in fields(Config):
        factory = item.default_factory
        if factory is not MISSING and is_dataclass(factory):
            sections[item.name] = tuple(sub.name for sub in fields(factory))
    sections.update(EXTRA_SECTIONS)
    return sections


def unknown_key_warnings(data: dict, path: Path) -> tuple[str, ...]:
    """One line per unknown section or key, with the nearest known one when there is one."""
    known = known_keys()
    warnings = []

    def nearest(name: str, choices) -> str:
        close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""

    for section, keys in data.items():
        if section not in known:
            warnings.append(f"{path}: unknown section [{section}] ignored{nearest(section, known)}")
            continue
        if not isinstance(keys, dict):
            continue
        for key in keys:
            if key not in known[section]:
                warnings.append(
                    f"{path} [{section}]: unknown key {key!r} ignored{nearest(key, known[section])}"
                )
    return tuple(warnings)


def _parse_mode(value: object, where: str) -> str:
    mode = str(value).strip().upper()
    if mode not in SCHEDULER_MODES:
        raise ConfigError(f"{where}: expected MAINTENANCE or MASSIVE, got {value!r}")
    return mode


def _parse_urls(value: object, where: str) -> tuple[str, ...]:
    """A list of Apprise URLs; a string (an environment variable) holds them space-separated."""
    if isinstance(value, str):
        return tuple(value.split())
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise ConfigError(f"{where}: expected a list of URLs in quotes, like [\"ntfy://ntfy.sh/my-topic\"]")
    return tuple(url.strip() for url in value if url.strip())


def _parse_listen(value: object, where: str) -> HttpConfig:
    """HOST:PORT, [IPv6]:PORT, or a bare PORT (loopback); "" is off."""
    text = str(value).strip()
    if not text:
        return HttpConfig()
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT like \"127.0.0.1:9180\", got {value!r}")
    return HttpConfig(host=host, port=int(port_text))


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None


def _section(data: dict, name: str, path: Path) -> dict:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return section


def load_config(
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    demo: bool = False,
) -> Config:
    """Build the config: defaults, then the TOML file, then AIME_* variables, then flags."""
    env = os.environ if env is None else env
    if config_path is None:
        config_path = Path(env["AIME_CONFIG"]) if env.get("AIME_CONFIG") else default_config_path()
    config_path = config_path.expanduser()
    data = _read_toml(config_path)

    lastfm_raw = dict(_section(data, "lastfm", config_path))
    roon_raw = dict(_section(data, "roon", config_path))
    scheduler_raw = dict(_section(data, "scheduler", config_path))
    restore_raw = dict(_section(data, "restore", config_path))
    # The demo tells nobody and listens nowhere unless asked in its own environment: the
    # file's URLs and port belong to the real instance (its phone, its monitor, its port).
    notify_raw = {} if demo else dict(_section(data, "notify", config_path))
    http_raw = {} if demo else dict(_section(data, "http", config_path))

    # Environment beats the file: the usual order for services run under systemd or docker.
    env_keys = {
        "AIME_LASTFM_API_URL": (lastfm_raw, "api_url"),
        "AIME_LASTFM_API_KEY": (lastfm_raw, "api_key"),
        "AIME_LASTFM_USER": (lastfm_raw, "user"),
        "AIME_ROON_HOST": (roon_raw, "host"),
        "AIME_ROON_PORT": (roon_raw, "port"),
        "AIME_ROON_DISCOVERY": (roon_raw, "discovery"),
        "AIME_ENABLE_SCHEDULER": (scheduler_raw, "enabled"),
        "AIME_SCHEDULER_MODE": (scheduler_raw, "mode"),
        "AIME_RESTORE_TIMEOUT": (restore_raw, "timeout"),
        "AIME_NOTIFY_URLS": (notify_raw, "urls"),
        "AIME_HTTP_LISTEN": (http_raw, "listen"),
    }
    sources = {}
    for variable, (target, key) in env_keys.items():
        if env.get(variable, "") != "":
            target[key] = env[variable]
            sources[id(target), key] = variable

    def where(target: dict, section: str, key: str) -> str:
        return sources.get((id(target), key), f"{config_path} [{section}] {key}")

    def number(target: dict, section: str, key: str, default: float) -> float:
        rule = NUMBER_RULES[section, key]
        return _parse_number(target.get(key, default), where(target, section, key), rule)

    lastfm = LastfmConfig(
        api_url=str(lastfm_raw.get("api_url", DEFAULT_LASTFM_URL)),
        api_key=str(lastfm_raw.get("api_key", "")),
        user=str(lastfm_raw.get("user", "")),
        interval=number(lastfm_raw, "lastfm", "interval", 120),
        enabled=_parse_bool(lastfm_raw.get("enabled", True), where(lastfm_raw, "lastfm", "enabled")),
        rate=number(lastfm_raw, "lastfm", "rate", 1.0),
    )
    roon = RoonConfig(
        host=str(roon_raw.get("host", "")),
        port=int(number(roon_raw, "roon", "port", DEFAULT_ROON_PORT)),
        enabled=_parse_bool(roon_raw.get("enabled", True), where(roon_raw, "roon", "enabled")),
        zones=_parse_zones(roon_raw.get("zones", []), where(roon_raw, "roon", "zones")),
        discovery=(
            parse_discovery(roon_raw["discovery"], where(roon_raw, "roon", "discovery"))
            if "discovery" in roon_raw else None
        ),
    )
    scheduler = SchedulerConfig(
        enabled=_parse_bool(
            scheduler_raw.get("enabled", True), where(scheduler_raw, "scheduler", "enabled")
        ),
        mode=_parse_mode(
            scheduler_raw.get("mode", "MAINTENANCE"), where(scheduler_raw, "scheduler", "mode")
        ),
        catchup_interval=number(scheduler_raw, "scheduler", "catchup_interval", 900),
        # Unset: `[lastfm] rate` alone paces the backfill.
        backfill_interval=(
            number(scheduler_raw, "scheduler", "backfill_interval", 0)
            if "backfill_interval" in scheduler_raw else None
        ),
    )
    restore_timeout = number(restore_raw, "restore", "timeout", 3.0)
    notify = NotifyConfig(
        urls=_parse_urls(notify_raw.get("urls", []), where(notify_raw, "notify", "urls")),
        after=number(notify_raw, "notify", "after", DEFAULT_NOTIFY_AFTER),
    )
    http = _parse_listen(http_raw.get("listen", ""), where(http_raw, "http", "listen"))

    if data_dir is None:
        data_dir = Path(env["AIME_DATA_DIR"]) if env.get("AIME_DATA_DIR") else None
    if data_dir is None:
        data_dir = default_data_dir() / "demo" if demo else default_data_dir()

    return Config(
        data_dir=data_dir.expanduser(),
        config_path=config_path,
        lastfm=lastfm,
        roon=roon,
        scheduler=scheduler,
        restore_timeout=restore_timeout,
        notify=notify,
        http=http,
        demo=demo,
        demo_faults=_parse_bool(env.get("AIME_DEMO_FAULTS", "1"), "AIME_DEMO_FAULTS"),
        warnings=unknown_key_warnings(data, config_path),
    )


CONFIG_TEMPLATE = """\
# aime-tui configuration. Environment variables (AIME_*) override these values.
# Secrets here are never logged or shown in full.

[lastfm]
# Last.fm API endpoint; point it elsewhere only for testing.
api_url = "https://ws.audioscrobbler.com/2.0/"
# Your API key, from https://www.last.fm/api/account/create  (AIME_LASTFM_API_KEY)
api_key = ""
# The Last.fm user whose listening history is collected.  (AIME_LASTFM_USER)
user = ""
# Seconds between polls of user.getRecentTracks.
interval = 120
# Requests a second to Last.fm, tracker and backfill together (at most 5).
rate = 1
# Start the tracker on first launch; afterwards your toggles are remembered.
enabled = true

[roon]
# Leave host empty to find the Core on the network (SOOD discovery, as every Roon
# extension does); set it when the Core is on another network.  (AIME_ROON_HOST)
host = ""
# The Core's port when host is set: 9330 on current Cores, 9100 on older ones.  (AIME_ROON_PORT)
port = 9330
enabled = true
# Only these zones (names or ids) count as plays; empty: every zone.
# zones = ["Living Room", "Kitchen"]

[scheduler]
# Start the collection scheduler on first launch.  (AIME_ENABLE_SCHEDULER)
enabled = true
# MAINTENANCE (incremental catch-up, nightly optimise and backup)
# or MASSIVE (the same, plus a full-history backfill, resumable).  (AIME_SCHEDULER_MODE)
mode = "MAINTENANCE"

[restore]
# Seconds each service gets to start when services are restored.  (AIME_RESTORE_TIMEOUT)
timeout = 3.0

[notify]
# Apprise URLs to tell when a restoration fails, a service needs attention or keeps
# failing, and when it recovers: ntfy://ntfy.sh/TOPIC, gotify://HOST/TOKEN,
# mailto://USER:PASSWORD@HOST, json://HOST/PATH …  (AIME_NOTIFY_URLS, space-separated)
urls = []
# Seconds a wanted service may stay in backoff before you are told.
after = 600

[http]
# Serve /health, /ready and /metrics here, e.g. "127.0.0.1:9180"; "" is off.
# Only an address you write here is listened on.  (AIME_HTTP_LISTEN)
listen = ""
"""


def write_config_template(
    path: Path, lastfm: Mapping[str, str] | None = None, roon: Mapping[str, object] | None = None
) -> None:
    """Write the commented config, with the values given filled in ([lastfm] `user`,
    `api_key`; [roon] `host`, `port`, `enabled`); refuse to overwrite one the user may have
    filled in."""
    if path.exists():
        raise ConfigError(f"{path} already exists; edit it or move it away first")
    import json

    def filled(section: str, values: Mapping[str, object]) -> str:
        # Each key is replaced within its own section: `port` and `enabled` recur in others.
        head, found, rest = text.partition(f"\n[{section}]\n")
        body, next_header, tail = rest.partition("\n[")
        for key, value in values.items():
            # A JSON string, number or boolean is a valid TOML value (same escapes).
            body = re.sub(rf"^{key} = .*$", lambda _: f"{key} = {json.dumps(value)}", body, count=1, flags=re.M)
        return head + found + body + next_header + tail

    text = CONFIG_TEMPLATE
    text = filled("lastfm", lastfm or {})
    text = filled("roon", roon or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the API key is never readable by others, even briefly.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
        out.write(text)
