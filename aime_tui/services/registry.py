"""The hosted services, by name: how each is built, what it wants at first launch, its
modes, and how a missing setting is asked for.

The one list the engine builds its services from, the config takes its service names,
modes and first-launch defaults from, and the CLI checks names against. Cheap to
import: a service's module (and its HTTP or WebSocket library) is imported only when
the service is built.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:
    from aime_tui.config import Config
    from aime_tui.services.base import Service
    from aime_tui.store.database import Store

MAINTENANCE = "MAINTENANCE"
MASSIVE = "MASSIVE"
SCHEDULER_MODES = (MAINTENANCE, MASSIVE)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    #: Builds the service, given those built before it (the scheduler catches up through the tracker).
    build: Callable[["Config", "Store", Mapping[str, "Service"]], "Service"]
    #: Desired state and mode before the user has ever toggled it: from the config file and environment.
    first_launch: Callable[["Config"], tuple[bool, str | None]]
    modes: tuple[str, ...] = ()
    #: What its work depends on in the config: a reload restarts it when this changes.
    #: Desired states and modes are left out: the file's are only first-launch defaults.
    settings: Callable[["Config"], object] = lambda config: config


def _tracker(config: "Config", store: "Store", built: Mapping[str, "Service"]) -> "Service":
    from aime_tui.services.tracker import LastfmTracker

    return LastfmTracker(config.lastfm, store, config_path=config.config_path)


def _roon(config: "Config", store: "Store", built: Mapping[str, "Service"]) -> "Service":
    from aime_tui.services.roon import RoonTracker

    return RoonTracker(config.roon, store, config_path=config.config_path, start_timeout=config.restore_timeout)


def _scheduler(config: "Config", store: "Store", built: Mapping[str, "Service"]) -> "Service":
    from aime_tui.services.scheduler import CollectionScheduler

    return CollectionScheduler(
        config.scheduler,
        config.lastfm,
        store,
        backup_dir=config.backup_dir,
        config_path=config.config_path,
        catch_up=built["tracker"].poll_once,  # type: ignore[attr-defined]
    )


SERVICES = (
    ServiceSpec(
        "tracker", _tracker, lambda config: (config.lastfm.enabled, None),
        settings=lambda config: replace(config.lastfm, enabled=True),
    ),
    ServiceSpec(
        "roon_tracker", _roon, lambda config: (config.roon.enabled, None),
        settings=lambda config: (replace(config.roon, enabled=True), config.restore_timeout),
    ),
    ServiceSpec(
        "scheduler", _scheduler, lambda config: (config.scheduler.enabled, config.scheduler.mode), SCHEDULER_MODES,
        settings=lambda config: (
            replace(config.scheduler, enabled=True, mode=""), replace(config.lastfm, enabled=True)
        ),
    ),
)
SERVICE_NAMES = tuple(spec.name for spec in SERVICES)


def build_services(config: "Config", store: "Store") -> list["Service"]:
    built: dict[str, Service] = {}
    for spec in SERVICES:
        built[spec.name] = spec.build(config, store, built)
    return list(built.values())


def first_launch_defaults(config: "Config") -> dict[str, tuple[bool, str | None]]:
    return {spec.name: spec.first_launch(config) for spec in SERVICES}


def moded_service() -> ServiceSpec:
    """The service `aime-tui mode` sets: the one that has modes."""
    (spec,) = (spec for spec in SERVICES if spec.modes)
    return spec


def unknown_service(name: str) -> str | None:
    """Why `name` names no service (with the names that do), or None if it does."""
    if name in SERVICE_NAMES:
        return None
    return f"unknown service {name!r} (known: {', '.join(SERVICE_NAMES)})"


def setting_hint(key: str, config_path: Path | None) -> str:
    """How a service asks for a setting it cannot run without."""
    where = config_path if config_path is not None else "the config file"
    return f"set {key} in {where}"


def settings_of(config: "Config", name: str) -> object:
    """What the service `name` takes from the config; the whole config for one not listed."""
    for spec in SERVICES:
        if spec.name == name:
            return spec.settings(config)
    return config
