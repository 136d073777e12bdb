"""The subcommands of a second shell: status, start, stop, retry, restart, mode, wake,
shutdown, health, doctor, history, plays, export, stats and notify.

`status`, `start`, `stop`, `retry`, `restart`, `mode`, `wake`, `shutdown` and `health` talk to the running
instance over its control socket; with no instance running, `status`, `start`, `stop`
and `mode` read or change the saved desired states directly (holding the instance lock
meanwhile, so no launch races them). `history`, `plays`, `export`, `stats` and `doctor`
only read, through read-only connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

from aime_tui.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_UNREACHABLE,
    fail,
)
from aime_tui.cli.rendering import health_lines, status_table
from aime_tui.config import SOCKET_FILE, Config
from aime_tui.control.client import ControlError, Unreachable, instance_running, request
from aime_tui.control.protocol import WAKE_CLIENT_TIMEOUT, view_from_wire, view_to_wire
from aime_tui.core.instance import AlreadyRunning, InstanceLock, read_pid
from aime_tui.core.model import RunState, ServiceView
from aime_tui.format import duration, stamp
from aime_tui.services.registry import SERVICE_NAMES, moded_service, unknown_service
from aime_tui.store.database import StoreError


#: Where each service's plays come from, for the totals `status` shows with no instance.
SOURCE_OF = {"tracker": "lastfm", "scheduler": "lastfm", "roon_tracker": "roon"}


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
        return fail(f"cannot use {exc.filename or config.data_dir}: {exc.strerror or exc}")
    try:
        return offline()
    finally:
        lock.release()


def _save_offline(config: Config, change: Callable) -> int | None:
    """Apply `change(store)` to the database (durably); an exit code if it failed."""
    from aime_tui.store.database import Store

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


def _saved_views(config: Config) -> list[ServiceView]:
    """What status shows with no instance: the saved desired states (or first-launch defaults)."""
    defaults = config.first_launch_defaults()
    saved: dict[str, tuple[bool, str | None]] = {}
    totals: dict[str, int] = {}
    if config.db_path.exists():
        from aime_tui.store.queries import connect_read_only, totals_by_source

        db = connect_read_only(config.db_path)
        try:
            rows = db.execute("SELECT service_name, is_active, mode FROM service_states").fetchall()
            totals = totals_by_source(db)
        finally:
            db.close()
        saved = {name: (bool(active), mode) for name, active, mode in rows}
    views = []
    for name in SERVICE_NAMES:
        wanted, mode = saved.get(name, defaults[name])
        views.append(ServiceView(
            name, RunState.STOPPED, wanted, mode, reason=None, retry_in=None, restarts=0,
            status={"plays_total": totals.get(SOURCE_OF[name], 0), "tracks_found": 0},
        ))
    return views


def cmd_status(args, config: Config) -> int:
    def show(instance: dict[str, Any] | None, views: list[ServiceView]) -> int:
        if args.json:
            answer = {"instance": instance, "services": [view_to_wire(view) for view in views]}
            print(json.dumps(answer, default=str, indent=2))
            return EXIT_OK
        if instance is None:
            print(f"no running instance on {config.data_dir}: saved desired states (applied at next launch)")
        else:
            print(f"instance pid {instance['pid']} · up {duration(instance['uptime'])} · {instance['data_dir']}")
            if instance.get("summary"):
                print(instance["summary"]["line"])
        print("\n".join(status_table(views)))
        return EXIT_OK

    def live() -> int:
        answer = _ask(config, {"cmd": "status"})
        services = answer.pop("services")
        return show(answer, [view_from_wire(wire) for wire in services])

    def offline() -> int:
        try:
            return show(None, _saved_views(config))
        except sqlite3.Error as exc:
            return fail(f"cannot read {config.db_path}: {exc}", EXIT_FAILED)

    return _with_instance(config, live, offline, create=False)


def cmd_start_stop(args, config: Config) -> int:
    if problem := unknown_service(args.service):
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
    mode, moded = args.mode.upper(), moded_service()
    if mode not in moded.modes:
        return fail(f"unknown mode {args.mode!r} (modes: {', '.join(moded.modes)})")

    def live() -> int:
        answer = _ask(config, {"cmd": "mode", "mode": mode})
        print(f"{answer['service']}: mode {mode} saved and applied")
        return EXIT_OK

    def offline() -> int:
        code = _save_offline(config, lambda store: store.set_mode(moded.name, mode, "user"))
        if code is None:
            print(f"{moded.name}: mode {mode} — no running instance: saved, applies at next launch")
        return code or EXIT_OK

    return _with_instance(config, live, offline, create=True)


def _live_only(config: Config, what: str, live: Callable[[], int]) -> int:
    def offline() -> int:
        return fail(f"no running instance on {config.data_dir}: nothing to {what}", EXIT_FAILED)

    return _with_instance(config, live, offline, create=False)


def cmd_retry(args, config: Config) -> int:
    if problem := unknown_service(args.service):
        return fail(problem)

    def live() -> int:
        # A service that is running has nothing to retry: the instance refuses (exit 1)
        # and says so; `restart` is the verb that restarts it.
        _ask(config, {"cmd": "retry", "service": args.service})
        print(f"{args.service}: retrying now")
        return EXIT_OK

    return _live_only(config, "retry", live)


def cmd_restart(args, config: Config) -> int:
    if problem := unknown_service(args.service):
        return fail(problem)

    def live() -> int:
        _ask(config, {"cmd": "restart", "service": args.service})
        print(f"{args.service}: wanted on (saved); the running instance is restarting it")
        return EXIT_OK

    return _live_only(config, "restart", live)


def cmd_wake(args, config: Config) -> int:
    def live() -> int:
        answer = _ask(config, {"cmd": "wake"}, timeout=WAKE_CLIENT_TIMEOUT)
        print(answer["summary"]["line"])
        return EXIT_OK

    return _live_only(config, "wake", live)


def cmd_reload(args, config: Config) -> int:
    def live() -> int:
        answer = _ask(config, {"cmd": "reload"}, timeout=WAKE_CLIENT_TIMEOUT)  # restarts run under it
        for line in answer["lines"]:
            print(line.removeprefix("reload: "))
        return EXIT_FAILED if answer["failed"] else EXIT_OK

    return _live_only(config, "reload", live)


SHUTDOWN_WAIT = 10.0


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_shutdown(args, config: Config) -> int:
    """Stop the running instance (its services stop, what they want is kept); returns once
    its process is gone."""

    def live() -> int:
        pid = _ask(config, {"cmd": "shutdown"}).get("pid", "unknown")
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while instance_running(config.lock_path) or _alive(pid):
            if time.monotonic() > deadline:
                return fail(f"instance pid {pid} was asked to stop but still runs after {SHUTDOWN_WAIT:.0f} s", EXIT_FAILED)
            time.sleep(0.05)
        print(f"stopped the instance (pid {pid}); its wanted services start again at the next launch")
        return EXIT_OK

    return _live_only(config, "shut down", live)


def cmd_health(args, config: Config) -> int:
    from aime_tui.reports.health import DEGRADED, HEALTHY, no_instance

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


def cmd_doctor(args) -> int:
    from aime_tui.reports.doctor import FAIL, run

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
    from aime_tui.reports import history

    if args.service and (problem := unknown_service(args.service)):
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
    from aime_tui.store.queries import connect_read_only
    from aime_tui.store.roon_cores import core_names

    def work() -> int:
        db = connect_read_only(config.db_path)
        try:
            rows = db.execute(
                "SELECT source, account, played_at, artist, title, album FROM plays"
                " ORDER BY played_at DESC, id DESC LIMIT ?",
                (args.limit,),
            ).fetchall()
            cores = core_names(db)
        finally:
            db.close()
        keys = ("source", "account", "played_at", "artist", "title", "album")
        plays = [dict(zip(keys, row)) for row in rows]
        for play in plays:
            # A Roon play's account is its Core's core_id (stable across renames); the name
            # is what a person reads. None for other sources, or a Core never met by name.
            play["core_name"] = cores.get(play["account"]) if play["source"] == "roon" else None
        if args.json:
            print(json.dumps(plays, indent=2, ensure_ascii=False))
            return EXIT_OK
        if not plays:
            print("no plays collected yet")
        for play in plays:
            album = f"  [{play['album']}]" if play["album"] else ""
            source = f"roon · {play['core_name']}" if play["core_name"] else play["source"]
            print(f"{stamp(play['played_at'])}  {play['artist']} – {play['title']}{album}  ({source})")
        return EXIT_OK

    return _read(config, work)


def cmd_export(args, config: Config) -> int:
    from aime_tui.reports.export import ExportError, export, export_to_file, parse_moment

    try:
        since = None if args.since is None else parse_moment(args.since, flag="--since")
        until = None if args.until is None else parse_moment(args.until, flag="--until")
    except ExportError as exc:
        return fail(str(exc))
    if not config.db_path.exists():
        return fail(f"nothing to export: no database at {config.db_path}", EXIT_FAILED)
    options = {"fmt": args.format, "since": since, "until": until, "source": args.source}
    try:
        if args.output is None:
            export(config.db_path, sys.stdout, **options)
            sys.stdout.flush()
        else:
            count = export_to_file(config.db_path, args.output, **options)
            print(f"wrote {count:,} plays to {args.output}", file=sys.stderr)
    except ExportError as exc:
        return fail(str(exc), EXIT_FAILED)
    except sqlite3.Error as exc:
        return fail(f"cannot read {config.db_path}: {exc}", EXIT_FAILED)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def cmd_stats(args, config: Config) -> int:
    from aime_tui.reports import stats
    from aime_tui.store.queries import connect_read_only

    def work() -> int:
        db = connect_read_only(config.db_path)
        try:
            report = stats.compute(db, args.period, now=time.time())
        finally:
            db.close()
        if args.json:
            print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        else:
            print("\n".join(stats.report_lines(report)))
        return EXIT_OK

    return _read(config, work)


def cmd_notify(args, config: Config) -> int:
    """List the notification URLs (masked); with --test, send each one a message."""
    urls = config.notify.urls
    if not urls:
        return fail(f"no notification URLs: set [notify] urls in {config.config_path} (or AIME_NOTIFY_URLS)", EXIT_FAILED)
    from aime_tui.notify import INFO, build_targets, send

    targets = build_targets(urls)
    unknown = [target for target in targets if target.plugin is None]
    for target in unknown:
        print(f"not a URL Apprise knows: {target.shown}")
    if not args.test:
        for target in targets:
            if target.plugin is not None:
                print(target.shown)
        print("`aime-tui notify --test` sends each of them a test message")
        return EXIT_FAILED if unknown else EXIT_OK
    import socket

    failed = send(targets, f"aime-tui on {socket.gethostname()}", "A test message from aime-tui: notifications reach you.", INFO)
    for target in targets:
        if target.plugin is not None:
            print(f"{'FAILED' if target in failed else 'sent  '} {target.shown}")
    return EXIT_FAILED if failed or unknown else EXIT_OK


COMMANDS: dict[str, Callable[..., int]] = {
    "status": cmd_status,
    "start": cmd_start_stop,
    "stop": cmd_start_stop,
    "retry": cmd_retry,
    "restart": cmd_restart,
    "mode": cmd_mode,
    "wake": cmd_wake,
    "reload": cmd_reload,
    "shutdown": cmd_shutdown,
    "health": cmd_health,
    "history": cmd_history,
    "plays": cmd_plays,
    "export": cmd_export,
    "stats": cmd_stats,
    "notify": cmd_notify,
}
