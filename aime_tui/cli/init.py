"""`aime-tui init`: write the config file, asking for the Last.fm account and the Roon
Core in a terminal.

In a terminal it asks for the Last.fm user and API key (the key typed without echo),
tries them once against the configured `api_url`, and says what Last.fm answered; then
whether to collect Roon plays, and if so offers the Cores that answer SOOD discovery
(where `AIME_ROON_DISCOVERY` points, the network otherwise) to pick one, or a host and
port to type. It writes the file with those filled in (0600). Elsewhere (a script, a
pipe) it writes the commented template to fill in. It never writes anything for the
demo, which needs no config, and never overwrites a config file.
"""

from __future__ import annotations

import asyncio
import getpass
import sys

from aime_tui.cli.exits import EXIT_OK, EXIT_USAGE, fail
from aime_tui.config import Config, ConfigError, write_config_template

CHECK_TIMEOUT = 10.0
#: Seconds the discovery query waits for Cores to answer (they answer in milliseconds).
DISCOVERY_WAIT = 1.0
DEFAULT_ROON_PORT = 9330


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def check_lastfm(api_url: str, api_key: str, user: str, *, timeout: float = CHECK_TIMEOUT) -> tuple[bool, str]:
    """Try the account once: (worked, what Last.fm said in words)."""
    from aime_tui.clients.lastfm import LastfmClient, LastfmError, classify

    async def ask():
        async with LastfmClient(api_url, api_key, user, timeout=timeout) as lastfm:
            return await lastfm.recent_tracks(limit=1)

    try:
        page = asyncio.run(ask())
    except LastfmError as exc:
        return False, str(classify(exc))
    plays = f"{page.total:,} play{'s' if page.total != 1 else ''}"
    return True, f"Last.fm knows {user}: {plays} so far"


def find_cores(config: Config) -> tuple[list, str]:
    """The Cores that answer discovery, the way the tracker looks for them, and why there
    are none when there are none."""
    from aime_tui.clients import sood

    targets = config.roon.discovery
    if targets == ():
        return [], "discovery is off (AIME_ROON_DISCOVERY=off)"
    try:
        cores = asyncio.run(sood.discover(sood.default_targets() if targets is None else targets, DISCOVERY_WAIT))
    except OSError as exc:
        return [], f"discovery could not ask the network: {exc.strerror or exc}"
    return cores, "" if cores else "no Roon Core answered on this network"


def _yes(question: str) -> bool:
    return input(f"{question} [Y/n]: ").strip().lower() not in ("n", "no")


def ask_roon(config: Config) -> dict[str, object]:
    """[roon] values: off, a Core picked from those discovered, or a host and port typed
    (nothing: found by discovery at each launch)."""
    if not _yes("Collect Roon plays?"):
        return {"enabled": False}
    print("Looking for Roon Cores…")
    cores, why = find_cores(config)
    if cores:
        for number, core in enumerate(cores, 1):
            print(f"  {number}. {core.describe()}")
        print("  0. another: type its host and port")
        while True:
            answer = input(f"Which Core? [1-{len(cores)}, 0; enter: 1]: ").strip() or "1"
            if answer.isdigit() and int(answer) <= len(cores):
                break
            print(f"  a number from 0 to {len(cores)}, please")
        if int(answer):
            core = cores[int(answer) - 1]
            print(f"using {core.describe()}")
            return {"host": core.host, "port": core.port}
    else:
        print(f"{why}: type the Core's host, or leave it empty to look for it at each launch")
    host = input("Roon Core host: ").strip()
    if not host:
        return {}
    while True:
        port = input(f"Roon Core port [{DEFAULT_ROON_PORT}; 9100 on older Cores]: ").strip() or str(DEFAULT_ROON_PORT)
        if port.isdigit() and 1 <= int(port) <= 65535:
            return {"host": host, "port": int(port)}
        print("  a port from 1 to 65535, please")


def cmd_init(args, config: Config) -> int:
    if config.demo:
        return fail("the demo needs no config file: run `aime-tui --demo` (built-in fakes, its own data directory)", EXIT_USAGE)
    path = config.config_path
    if path.exists():
        return fail(f"{path} already exists; edit it or move it away first", EXIT_USAGE)
    values: dict[str, str] = {}
    roon: dict[str, object] = {}
    if _interactive():
        print(f"Writing {path}. Leave a value empty to fill it in later.")
        try:
            user = input("Last.fm user: ").strip()
            api_key = getpass.getpass("Last.fm API key (typed without echo; from https://www.last.fm/api/account/create): ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return fail("nothing written", EXIT_USAGE)
        values = {key: value for key, value in (("user", user), ("api_key", api_key)) if value}
        if user and api_key:
            worked, said = check_lastfm(config.lastfm.api_url, api_key, user)
            print(said if worked else f"tried once and it did not work: {said}")
            if not worked:
                print("writing them anyway: fix the file, then start aime-tui (or retry the tracker with r)")
        try:
            roon = ask_roon(config)
        except (EOFError, KeyboardInterrupt):
            print()
            return fail("nothing written", EXIT_USAGE)
    try:
        write_config_template(path, values, roon)
    except (ConfigError, OSError) as exc:
        return fail(str(exc))
    missing = [key for key in ("user", "api_key") if key not in values]
    if missing:
        keys = " and ".join(f"lastfm.{key}" for key in missing)
        print(f"wrote {path}: set {keys} in it, then run aime-tui")
    else:
        print(f"wrote {path}: run aime-tui")
    return EXIT_OK
