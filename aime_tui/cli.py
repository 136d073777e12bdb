"""The `aime-tui` command: the dashboard, headless mode, and the commands of a second shell.

Owns argument parsing, logging setup, the headless runner (with systemd notifications),
the dashboard (attached over the control socket when an instance already runs on the
data directory), and the subcommands. `status`, `start`, `stop`, `retry`, `mode`, `wake` and `health`
talk to the running instance over its control socket; with no instance running,
`status`, `start`, `stop` and `mode` read or change the saved desired states directly
(holding the instance lock meanwhile, so no launch races them). `history`, `plays` and
`doctor` only read, through read-only connections.

Errors a user can fix end in one line on stderr and an exit code from EXIT_CODES,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import signal
import socket
import sqlite3
import sys
import time
from dataclasses import asdict
from datetime import datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import (
    SCHEDULER_MODES,
    SERVICE_NAMES,
    SOCKET_FILE,
    Config,
    ConfigError,
    load_config,
    write_config_template,
)
from .control import WAKE_CLIENT_TIMEOUT, ControlError, Unreachable, instance_running, request
from .instance import AlreadyRunning, InstanceLock, read_pid
from .store import StoreError
from .supervisor import RestoreSummary, format_duration

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_BYTES = 1_000_000
LOG_BACKUPS = 3
ATTACH_TIMEOUT = 2.0

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNHEALTHY = 0, 1, 2, 3, 4
EXIT_CODES = """\
exit codes:
  0  done; health: healthy
  1  not done: health degraded, a doctor check failed, the change was refused,
     nothing to act on (no instance for retry/wake), another instance already runs
  2  bad usage: unknown service or mode, bad arguments, unreadable config,
     unusable data directory
  3  an instance holds the data directory but does not answer on its control socket
  4  health: unhealthy (no instance, database unreachable, no wanted service running)
"""
STATE_SYMBOL = {
    "running": "●", "starting": "◌", "stopping": "◌", "backoff": "◌", "stopped": "○", "needs attention": "✖",
}


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
            name, parents=[shared], help=text, description=text, epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command("init", "write a commented config file to fill in")
    command("status", "the services of the running instance (or the saved desired states)").add_argument(
        "--json", action="store_true", help="machine-readable"
    )
    for verb, text in (
        ("start", "want SERVICE running and start it (saved before acknowledged)"),
        ("stop", "want SERVICE stopped and stop it (saved before acknowledged)"),
        ("retry", "retry SERVICE now, skipping its backoff wait"),
    ):
        command(verb, text).add_argument("service", metavar="SERVICE", help=", ".join(SERVICE_NAMES))
    command("mode", "set the scheduler's mode (saved)").add_argument("mode", metavar="MODE", help=" or ".join(SCHEDULER_MODES))
    command("wake", "make the running instance recover as after a sleep")
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
        RotatingFileHandler(config.log_path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    ]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
    # httpx logs every request URL at INFO, and Last.fm URLs carry the API key.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiosqlite logs statement parameters at DEBUG, and those include the Roon token.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"aime-tui: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        # Before loading the config: a config that does not parse is one of its findings.
        return cmd_doctor(args)
    try:
        config = load_config(config_path=args.config, data_dir=args.data_dir, demo=args.demo)
    except ConfigError as exc:
        return fail(str(exc))

    if args.command == "init":
        try:
            write_config_template(config.config_path)
        except (ConfigError, OSError) as exc:
            return fail(str(exc))
        print(f"wrote {config.config_path}: fill in [lastfm] and [roon], then run aime-tui")
        return 0
    if args.command is not None:
        return COMMANDS[args.command](args, config)

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lock = InstanceLock(config.lock_path).acquire()
    except AlreadyRunning as exc:
        if not args.headless and _answers(config):
            return run_attached(config)
        return fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        return fail(f"cannot use data directory {config.data_dir}: {exc.strerror or exc}")
    try:
        # Only the instance holding the data directory writes (and rotates) aime.log.
        setup_logging(config, to_stderr=args.headless)
    except OSError as exc:
        lock.release()
        return fail(f"cannot use data directory {config.data_dir}: {exc.strerror or exc}")
    try:
        if args.headless:
            return asyncio.run(run_headless(config))
        return run_dashboard(config)
    finally:
        lock.release()


def run_dashboard(config: Config) -> int:
    # Importing Textual and the engine builds tens of thousands of objects that all live
    # as long as the app; the collector's passes over them as they appear cost ~50 ms.
    # The app turns the collector back on once its first frame is painted.
    gc.disable()
    from .engine import Engine
    from .ui.app import AimeApp

    app = AimeApp(Engine(config), subtitle="demo" if config.demo else "home server")
    app.run()
    return app.return_code or 0


def _answers(config: Config) -> bool:
    try:
        _ask(config, {"cmd": "status"}, timeout=ATTACH_TIMEOUT)
    except (Unreachable, ControlError):
        return False
    return True


def run_attached(config: Config) -> int:
    """The dashboard of an instance already running here; quitting leaves it running."""
    from .ui.app import AimeApp
    from .ui.remote import RemoteEngine

    engine = RemoteEngine(config)
    app = AimeApp(engine, subtitle=engine.subtitle)
    app.run()
    return app.return_code or 0


# -- headless ------------------------------------------------------------------------------


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are doing; a no-op when it did not start us."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.connect(address)
            notify.sendall(message.encode())
    except OSError as exc:
        logging.getLogger(__name__).warning("could not notify systemd: %s", exc)


async def run_headless(config: Config) -> int:
    from .engine import Engine

    engine = Engine(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    try:
        supervisor = await engine.open()
        engine.start_background()
        summary = await supervisor.restore("launch")
        sd_notify(f"READY=1\nSTATUS={summary.line()}")
        # Later restorations (after a wake) update the status systemctl shows.
        supervisor.subscribe(lambda event: isinstance(event, RestoreSummary) and sd_notify(f"STATUS={event.line()}"))
        await stop.wait()
    except StoreError as exc:
        return fail(str(exc))
    finally:
        sd_notify("STOPPING=1")
        await engine.close()
    return 0


# -- talking to the instance, or to the database when none runs -------------------------------


def _ask(config: Config, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    options = {} if timeout is None else {"timeout": timeout}
    return request(config.data_dir / SOCKET_FILE, message, **options)


def _unreachable(config: Config, exc: Exception) -> int:
    pid = read_pid(config.lock_path) or "unknown"
    return fail(f"instance pid {pid} holds {config.data_dir} but does not answer: {exc}", EXIT_UNREACHABLE)


def _with_instance(config: Config, live: Callable[[], int], offline: Callable[[], int], *, create: bool) -> int:
    """live() when an instance holds the data directory, else offline() holding its lock.

    Without `create`, a data directory that does not exist is left alone.
    """
    if not config.data_dir.is_dir() and not create:
        return offline()
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lock = InstanceLock(config.lock_path).acquire()
    except AlreadyRunning:
        try:
            return live()
        except Unreachable as exc:
            return _unreachable(config, exc)
        except ControlError as exc:
            return fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        return fail(f"cannot use data directory {config.data_dir}: {exc.strerror or exc}")
    try:
        return offline()
    finally:
        lock.release()


def _save_offline(config: Config, change: Callable) -> int | None:
    """Apply `change(store)` to the database (durably); an exit code if it failed."""
    from .store import Store

    async def apply() -> None:
        store = await Store.open(config.db_path)
        try:
            if store.moved_aside is not None:
                print(f"aime-tui: the database was unreadable: moved aside to {store.moved_aside}", file=sys.stderr)
            await store.ensure_defaults(config.first_launch_defaults())
            await change(store)
        finally:
            await store.close()

    try:
        asyncio.run(apply())
    except StoreError as exc:
        return fail(str(exc), EXIT_FAILED)
    return None


def _check_service(name: str) -> str | None:
    if name in SERVICE_NAMES:
        return None
    return f"unknown service {name!r} (known: {', '.join(SERVICE_NAMES)})"


def _saved_views(config: Config) -> list[dict[str, Any]]:
    """What status shows with no instance: the saved desired states (or first-launch defaults)."""
    defaults = config.first_launch_defaults()
    saved: dict[str, tuple[bool, str | None]] = {}
    if config.db_path.exists():
        from .history import connect_read_only

        db = connect_read_only(config.db_path)
        try:
            rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
        finally:
            db.close()
        saved = {name: (bool(active), mode) for name, active, mode in rows}
    views = []
    for name in SERVICE_NAMES:
        wanted, mode = saved.get(name, defaults[name])
        views.append({
            "name": name, "state": "stopped", "wanted": wanted, "mode": mode, "reason": None,
            "retry_in": None, "restarts": 0, "status": {}, "uptime": None,
        })
    return views


# -- subcommands ------------------------------------------------------------------------------


def cmd_status(args, config: Config) -> int:
    def show(answer: dict[str, Any]) -> int:
        if args.json:
            print(json.dumps(answer, default=str, indent=2))
            return EXIT_OK
        if answer["instance"] is None:
            print(f"no running instance on {config.data_dir}: saved desired states (applied at next launch)")
        else:
            instance = answer["instance"]
            print(f"instance pid {instance['pid']} · up {format_duration(instance['uptime'])} · {instance['data_dir']}")
            if instance.get("summary"):
                print(instance["summary"]["line"])
        print("\n".join(status_table(answer["services"])))
        return EXIT_OK

    def live() -> int:
        answer = _ask(config, {"cmd": "status"})
        services = answer.pop("services")
        return show({"instance": answer, "services": services})

    def offline() -> int:
        try:
            return show({"instance": None, "services": _saved_views(config)})
        except sqlite3.Error as exc:
            return fail(f"cannot read {config.db_path}: {exc}", EXIT_FAILED)

    return _with_instance(config, live, offline, create=False)


def status_table(views: list[dict[str, Any]]) -> list[str]:
    """A `pm2 list`-like table of wire views."""
    header = ("name", "state", "wanted", "mode", "uptime", "↺", "last check", "found", "last error")
    rows = [header]
    for view in views:
        status = view.get("status") or {}
        state = view["state"]
        label = f"{STATE_SYMBOL.get(state, '?')} {state}"
        if state == "backoff" and view.get("retry_in") is not None:
            label += f" {math.ceil(view['retry_in'])}s"  # like the dashboard: never "0s" while waiting
        rows.append((
            view["name"],
            label,
            "on" if view["wanted"] else "off",
            view.get("mode") or "–",
            short_duration(view.get("uptime")),
            str(view.get("restarts", 0)),
            _when(status.get("last_check")),
            f"{status.get('tracks_found') or 0:,}",
            view.get("reason") or status.get("last_error") or "–",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in rows]


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _when(epoch: float | None) -> str:
    if not epoch:
        return "–"
    moment = datetime.fromtimestamp(epoch)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date() else "%m-%d %H:%M")


def cmd_start_stop(args, config: Config) -> int:
    if problem := _check_service(args.service):
        return fail(problem)
    name, wanted = args.service, args.command == "start"

    def live() -> int:
        _ask(config, {"cmd": args.command, "service": name})
        doing = "starting" if wanted else "stopping"
        print(f"{name}: {args.command} saved; the running instance is {doing} it")
        return EXIT_OK

    def offline() -> int:
        code = _save_offline(config, lambda store: store.set_desired(name, wanted, "user"))
        if code is None:
            print(f"{name}: wanted {'on' if wanted else 'off'} — no running instance: saved, applies at next launch")
        return code or EXIT_OK

    return _with_instance(config, live, offline, create=True)


def cmd_mode(args, config: Config) -> int:
    mode = args.mode.upper()
    if mode not in SCHEDULER_MODES:
        return fail(f"unknown mode {args.mode!r} (modes: {', '.join(SCHEDULER_MODES)})")

    def live() -> int:
        answer = _ask(config, {"cmd": "mode", "mode": mode})
        print(f"{answer['service']}: mode {mode} saved and applied")
        return EXIT_OK

    def offline() -> int:
        code = _save_offline(config, lambda store: store.set_mode("scheduler", mode, "user"))
        if code is None:
            print(f"scheduler: mode {mode} — no running instance: saved, applies at next launch")
        return code or EXIT_OK

    return _with_instance(config, live, offline, create=True)


def _live_only(config: Config, what: str, live: Callable[[], int]) -> int:
    def offline() -> int:
        return fail(f"no running instance on {config.data_dir}: nothing to {what}", EXIT_FAILED)

    return _with_instance(config, live, offline, create=False)


def cmd_retry(args, config: Config) -> int:
    if problem := _check_service(args.service):
        return fail(problem)

    def live() -> int:
        _ask(config, {"cmd": "retry", "service": args.service})
        print(f"{args.service}: retrying now")
        return EXIT_OK

    return _live_only(config, "retry", live)


def cmd_wake(args, config: Config) -> int:
    def live() -> int:
        answer = _ask(config, {"cmd": "wake"}, timeout=WAKE_CLIENT_TIMEOUT)
        print(answer["summary"]["line"])
        return EXIT_OK

    return _live_only(config, "wake", live)


def cmd_health(args, config: Config) -> int:
    from .health import DEGRADED, HEALTHY, no_instance

    if not instance_running(config.lock_path):
        report, code = no_instance(f"no instance running on {config.data_dir}", now=time.time()), EXIT_UNHEALTHY
    else:
        try:
            report = _ask(config, {"cmd": "health"})
        except (Unreachable, ControlError) as exc:
            pid = read_pid(config.lock_path) or "unknown"
            report = no_instance(f"instance pid {pid} does not answer: {exc}", now=time.time())
            code = EXIT_UNREACHABLE
        else:
            code = {HEALTHY: EXIT_OK, DEGRADED: EXIT_FAILED}.get(report["status"], EXIT_UNHEALTHY)
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print("\n".join(health_lines(report)))
    return code


def health_lines(report: dict[str, Any]) -> list[str]:
    lines = [report["status"]]
    if "uptime" in report:
        database = report["database"]
        reachable = "reachable" if database["reachable"] else f"unreachable ({database['error']})"
        errors = report["errors"]
        lines[0] += (
            f" · up {format_duration(report['uptime'])} · database {reachable}"
            f" · last hour: {errors['errors_last_hour']} errors, {errors['warnings_last_hour']} warnings"
        )
        for name, service in report["services"].items():
            wanted = "wanted" if service["wanted"] else "not wanted"
            lines.append(f"  {name:<13} {STATE_SYMBOL.get(service['state'], '?')} {service['state']:<16} {wanted}")
    lines += [f"  problem: {problem}" for problem in report.get("problems", [])]
    return lines


def cmd_doctor(args) -> int:
    from .doctor import FAIL, run

    checks = run(config_path=args.config, data_dir=args.data_dir, demo=args.demo)
    for check in checks:
        print(check.line())
    failed = sum(check.outcome == FAIL for check in checks)
    print(f"{failed} check{'s' if failed != 1 else ''} failed" if failed else "all checks passed")
    return EXIT_FAILED if failed else EXIT_OK


def _read(config: Config, work: Callable[[], int]) -> int:
    if not config.db_path.exists():
        print(f"nothing recorded yet: no database at {config.db_path}")
        return EXIT_OK
    try:
        return work()
    except sqlite3.Error as exc:
        return fail(f"cannot read {config.db_path}: {exc}", EXIT_FAILED)


def cmd_history(args, config: Config) -> int:
    from . import history

    if args.service and (problem := _check_service(args.service)):
        return fail(problem)
    names = [args.service] if args.service else list(SERVICE_NAMES)

    def work() -> int:
        alive = instance_running(config.lock_path)
        histories = history.load(config.db_path, names, now=time.time(), alive=alive, limit=args.limit)
        if args.json:
            print(json.dumps([asdict(item) for item in histories], indent=2))
        else:
            print("\n".join(line for item in histories for line in history.report_lines(item)))
        return EXIT_OK

    return _read(config, work)


def cmd_plays(args, config: Config) -> int:
    from .history import connect_read_only, stamp

    def work() -> int:
        db = connect_read_only(config.db_path)
        try:
            rows = db.execute(
                "SELECT source, account, played_at, artist, title, album FROM plays"
                " ORDER BY played_at DESC, id DESC LIMIT ?",
                (args.limit,),
            ).fetchall()
        finally:
            db.close()
        keys = ("source", "account", "played_at", "artist", "title", "album")
        plays = [dict(zip(keys, row)) for row in rows]
        if args.json:
            print(json.dumps(plays, indent=2, ensure_ascii=False))
            return EXIT_OK
        if not plays:
            print("no plays collected yet")
        for play in plays:
            album = f"  [{play['album']}]" if play["album"] else ""
            print(f"{stamp(play['played_at'])}  {play['artist']} – {play['title']}{album}  ({play['source']})")
        return EXIT_OK

    return _read(config, work)


COMMANDS: dict[str, Callable[..., int]] = {
    "status": cmd_status,
    "start": cmd_start_stop,
    "stop": cmd_start_stop,
    "retry": cmd_retry,
    "mode": cmd_mode,
    "wake": cmd_wake,
    "health": cmd_health,
    "history": cmd_history,
    "plays": cmd_plays,
}


if __name__ == "__main__":
    sys.exit(main())
