"""The `aime-tui` command: argument parsing, logging, and what a launch becomes.

A launch is the dashboard, the dashboard attached over the control socket when an
instance already runs on the data directory, the headless runner, or a subcommand.
Errors a user can fix end in one line on stderr and an exit code from exits.py, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shlex
import sys
from pathlib import Path

from aime_tui import __version__
from aime_tui.cli.exits import EXIT_CODES, EXIT_FAILED, EXIT_USAGE, exit_codes_for, fail
from aime_tui.config import (
    Config,
    ConfigError,
    load_config,
)
from aime_tui.core.files import UnsafeDataDir, ensure_private_dir
from aime_tui.core.instance import AlreadyRunning, InstanceLock
from aime_tui.core.logfile import PrivateLogHandler
from aime_tui.services.registry import SERVICE_NAMES, moded_service

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_BYTES = 1_000_000
LOG_BACKUPS = 3
ATTACH_TIMEOUT = 2.0


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line a script can log, not the usage block.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # Accepted after a subcommand too (`aime-tui status --data-dir X`); SUPPRESS keeps
    # the subcommand from resetting what was given before it.
    shared = Parser(add_help=False)
    shared.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="the instance's data directory")
    shared.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
    shared.add_argument("--demo", action="store_true", default=argparse.SUPPRESS, help="the demo's data directory")

    parser = Parser(
        prog="aime-tui",
        description="Keyboard-driven control room for a home music server's background services.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aime-tui {__version__}")
    parser.add_argument("--demo", action="store_true", help="run against built-in loopback fakes (no account, no network)")
    parser.add_argument("--headless", action="store_true", help="no UI: run the services, log to stderr, notify systemd")
    parser.add_argument("--data-dir", type=Path, help="where aime.db and friends live (env AIME_DATA_DIR)")
    parser.add_argument("--config", type=Path, help="config file (env AIME_CONFIG)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[shared], help=text, description=text, epilog=exit_codes_for(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command("init", "write the config file (in a terminal: asks for the Last.fm account and tries it once, offers the Roon Cores found)")
    command("status", "the services of the running instance (or the saved desired states)").add_argument(
        "--json", action="store_true", help="machine-readable"
    )
    for verb, text in (
        ("start", "want SERVICE running and start it (saved before acknowledged)"),
        ("stop", "want SERVICE stopped and stop it (saved before acknowledged)"),
        ("retry", "retry SERVICE now: skip its backoff wait, or try again after a fix (a running one has nothing to retry)"),
        ("restart", "stop SERVICE and start it again, whatever its state (wanted on, saved)"),
    ):
        command(verb, text).add_argument("service", metavar="SERVICE", help=", ".join(SERVICE_NAMES))
    command("mode", f"set the {moded_service().name}'s mode (saved)").add_argument(
        "mode", metavar="MODE", help=" or ".join(moded_service().modes)
    )
    command("wake", "make the running instance recover as after a sleep")
    command("reload", "make the running instance read its config file again, as SIGHUP does")
    command("shutdown", "stop the running instance and its services (what they want is kept)")
    command("health", "healthy, degraded or unhealthy (the exit code says which)").add_argument(
        "--json", action="store_true", help="machine-readable"
    )
    command("doctor", "check Python, dependencies, directories, database, config and endpoints")
    history = command("history", "transitions, availability over 24 h and 7 d, restarts and failures")
    history.add_argument("service", metavar="SERVICE", nargs="?", help="one service (default: all)")
    history.add_argument("--limit", type=_positive, default=20, help="transitions shown per service (default 20)")
    history.add_argument("--json", action="store_true", help="machine-readable")
    plays = command("plays", "the newest collected plays")
    plays.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    plays.add_argument("--json", action="store_true", help="machine-readable")
    export = command("export", "write the stored history as CSV, NDJSON or ListenBrainz JSON (streams)")
    export.add_argument("--format", choices=("csv", "ndjson", "listenbrainz"), default="ndjson", help="default ndjson")
    export.add_argument("--since", metavar="DATE", help="from this ISO date or time, inclusive (local unless it has an offset)")
    export.add_argument("--until", metavar="DATE", help="up to this ISO date or time, exclusive")
    export.add_argument("--source", choices=("lastfm", "roon"), help="one source only")
    export.add_argument("-o", "--output", metavar="FILE", type=Path, help="write to FILE (mode 0600) instead of stdout")
    stats = command("stats", "plays per day, top artists, tracks and albums, plays per source")
    stats.add_argument("--period", choices=("7d", "30d", "365d", "all"), default="30d", help="default 30d")
    stats.add_argument("--json", action="store_true", help="machine-readable")
    command("notify", "the notification URLs of [notify] urls, masked").add_argument(
        "--test", action="store_true", help="send each of them a test message"
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def setup_logging(config: Config, *, to_stderr: bool) -> None:
    handlers: list[logging.Handler] = [
        PrivateLogHandler(config.log_path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)
    ]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
    # httpx logs every request URL at INFO, and Last.fm URLs carry the API key.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiosqlite logs statement parameters at DEBUG, and those include the Roon token.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    # APScheduler logs its bookkeeping at INFO ('Added job "…" to job store "default"',
    # each run executed): the scheduler service says what it plans in words instead.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


# Files aime-tui creates are its owner's alone, whatever umask the shell had.
PRIVATE_UMASK = 0o077


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(PRIVATE_UMASK)
    if args.command == "doctor":
        from aime_tui.cli.commands import cmd_doctor

        # Before loading the config: a config that does not parse is one of its findings.
        return cmd_doctor(args)
    try:
        config = load_config(config_path=args.config, data_dir=args.data_dir, demo=args.demo)
    except ConfigError as exc:
        return fail(str(exc))

    if args.command == "init":
        from aime_tui.cli.init import cmd_init

        return cmd_init(args, config)
    try:
        # Refused before anything is read or written there (OpenSSH's StrictModes).
        ensure_private_dir(config.data_dir, create=args.command is None)
    except UnsafeDataDir as exc:
        return fail(str(exc))
    if args.command is not None:
        return _run_command(args, config)

    try:
        lock = InstanceLock(config.lock_path).acquire()
    except AlreadyRunning as exc:
        if not args.headless and _answers(config):
            return run_attached(config, come_back=_come_back(args))
        return fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        return fail(_cannot_use(exc, config))
    try:
        # Only the instance holding the data directory writes (and rotates) aime.log.
        setup_logging(config, to_stderr=args.headless)
    except OSError as exc:
        lock.release()
        return fail(_cannot_use(exc, config))
    try:
        if args.headless:
            from aime_tui.cli.headless import run_headless

            return asyncio.run(run_headless(config))
        from aime_tui.cli.dashboard import run_dashboard

        return run_dashboard(config, lock, come_back=_come_back(args))
    finally:
        lock.release()


def _run_command(args, config: Config) -> int:
    """A subcommand; a file it cannot use (unreadable, not ours) ends in one line, never a traceback."""
    # Imported only here: a dashboard's launch paints sooner without them.
    import sqlite3

    from aime_tui.cli.commands import COMMANDS

    try:
        code = COMMANDS[args.command](args, config)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`aime-tui status | head`): stop quietly, as coreutils do.
        # Pointing stdout at /dev/null keeps the interpreter's final flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        return fail(_cannot_use(exc, config), EXIT_FAILED)
    except sqlite3.Error as exc:
        return fail(f"cannot read {config.db_path}: {exc}", EXIT_FAILED)


def _cannot_use(exc: OSError, config: Config) -> str:
    where = exc.filename or config.data_dir
    why = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        why = "it is a symlink, and aime-tui never writes through one; remove it"
    return f"cannot use {where}: {why}"


def _come_back(args: argparse.Namespace) -> str:
    """The options that find this instance again."""
    words = ["--demo"] if args.demo else []
    if args.data_dir is not None:
        words += ["--data-dir", str(args.data_dir)]
    return "".join(f" {word}" for word in shlex.join(words).split(" ")) if words else ""


def _answers(config: Config) -> bool:
    from aime_tui.cli.commands import _ask
    from aime_tui.control.client import ControlError, Unreachable

    try:
        _ask(config, {"cmd": "status"}, timeout=ATTACH_TIMEOUT)
    except (Unreachable, ControlError):
        return False
    return True


def run_attached(config: Config, *, come_back: str = "") -> int:
    """The dashboard of an instance already running here; `q` and `d` leave it running."""
    from aime_tui.control.remote import RemoteEngine
    from aime_tui.ui.app import AttachedApp

    engine = RemoteEngine(config)
    app = AttachedApp(engine, subtitle=engine.subtitle)
    app.run()
    if app.detached and not app.return_code:
        # Said as `d` says it in the instance's own window: nothing stopped.
        pid = getattr(app.supervisor, "pid", None)
        pid = f" (pid {pid})" if pid else ""
        print(f"aime-tui: detached; the instance{pid} and its services keep running.\n"
              f"  `aime-tui{come_back}` shows them again, `aime-tui shutdown{come_back}` stops them.")
    return app.return_code or 0
