"""`aime-tui init`: write the config file, asking for the Last.fm account in a terminal.

In a terminal it asks for the Last.fm user and API key (the key typed without echo),
tries them once against the configured `api_url`, says what Last.fm answered, and
writes the file with them filled in (0600). Elsewhere (a script, a pipe) it writes the
commented template to fill in. It never writes anything for the demo, which needs no
config, and never overwrites a config file.
"""

from __future__ import annotations

import asyncio
import getpass
import sys

from aime_tui.cli.exits import EXIT_OK, EXIT_USAGE, fail
from aime_tui.config import Config, ConfigError, write_config_template

CHECK_TIMEOUT = 10.0


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


def cmd_init(args, config: Config) -> int:
    if config.demo:
        return fail("the demo needs no config file: run `aime-tui --demo` (built-in fakes, its own data directory)", EXIT_USAGE)
    path = config.config_path
    if path.exists():
        return fail(f"{path} already exists; edit it or move it away first", EXIT_USAGE)
    values: dict[str, str] = {}
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
        write_config_template(path, values)
    except (ConfigError, OSError) as exc:
        return fail(str(exc))
    missing = [key for key in ("user", "api_key") if key not in values]
    if missing:
        keys = " and ".join(f"lastfm.{key}" for key in missing)
        print(f"wrote {path}: set {keys} in it, then run aime-tui")
    else:
        print(f"wrote {path}: run aime-tui")
    return EXIT_OK
