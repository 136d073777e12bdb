"""The dashboard process: it hosts the engine, shows it while it has a terminal, and
runs on headless when the window goes.

The process the shell started forks at once (before any thread exists): the child
hosts the engine and the window; the parent only waits, passing signals on, and exits
with the child's exit code, or with 0 as soon as the child says it detached. That is
what lets `d` give the shell its prompt back while the services keep running in the
same process, with nothing restarted. The child holds the instance lock and the
control socket throughout, so `aime-tui` attaches to it and `aime-tui shutdown` stops it.

When the terminal goes (SIGHUP, or a hung-up terminal: failed writes, end-of-file) the
app ends without touching the terminal again; the process then lets go of it (stdin,
stdout and stderr to /dev/null, a session of its own, SIGHUP ignored), says so in
aime.log, and carries on as the headless runner does until SIGTERM, SIGINT or
`aime-tui shutdown`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from aime_tui.cli.headless import arm_watchdog, stop_on_signals, until_shutdown

if TYPE_CHECKING:
    from aime_tui.config import Config
    from aime_tui.core.instance import InstanceLock

log = logging.getLogger(__name__)

#: Once the terminal is gone, how long the app may take to end before the process goes
#: on without waiting for it.
APP_EXIT_WAIT = 3.0
DETACHED, LOST = b"d", b"l"


class Handoff:
    """The child's end of the pipe to the waiting parent."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def say(self, what: bytes) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.write(fd, what)
            except OSError:
                pass  # the parent is gone already
            os.close(fd)


def fork_host(lock: "InstanceLock") -> Handoff:
    """Fork; returns in the child. The parent waits for it and never returns."""
    if threading.active_count() > 1 or not sys.stdin.isatty():
        return Handoff(None)  # not safe to fork, or nobody waits for a prompt
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        lock.write_pid(os.getpid())
        return Handoff(write_end)
    os.close(write_end)
    lock.forget()  # the child's copy of the descriptor holds the lock
    _wait_for_host(pid, read_end)


def _wait_for_host(pid: int, read_end: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, lambda signum, frame: _pass_on(pid, signum))
    word = b""
    try:
        word = os.read(read_end, 1)
    except OSError:
        pass
    if word in (DETACHED, LOST):
        os._exit(0)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    sys.stdout.flush()
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _pass_on(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def let_go_of_terminal() -> None:
    """Nothing of ours reads or writes the terminal any more, and its hang-up is ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for signum in (signal.SIGTSTP, signal.SIGCONT, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    try:
        os.setsid()  # no controlling terminal: no signal of its comes here again
    except OSError:
        pass  # a session leader already (nobody waits for a prompt)


def run_dashboard(config: "Config", lock: "InstanceLock", *, come_back: str) -> int:
    handoff = fork_host(lock)
    # Importing Textual and the engine builds tens of thousands of objects that all live
    # as long as the app; the collector's passes over them as they appear cost ~50 ms.
    # The app turns the collector back on once the launch restoration has been shown.
    gc.disable()
    return asyncio.run(_host(config, handoff, come_back))


async def _host(config: "Config", handoff: Handoff, come_back: str) -> int:
    from aime_tui.ui.app import AimeApp

    def make_engine():
        from aime_tui.engine import Engine

        engine = Engine(config)
        asyncio.ensure_future(_quit_on_shutdown(engine, app))
        return engine

    app = AimeApp(make_engine, subtitle="demo" if config.demo else "home server")
    loop = asyncio.get_running_loop()

    def on_hangup(signum, frame) -> None:
        # At once, not on the loop's next turn: the SIGCONT that comes with a hang-up
        # must find the terminal dropped already.
        app.drop_output()
        loop.call_soon_threadsafe(app.terminal_lost, "SIGHUP")

    stopping = False

    def on_stop() -> None:
        nonlocal stopping
        stopping = True
        arm_watchdog()
        app.exit()

    signal.signal(signal.SIGHUP, on_hangup)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop)

    running = asyncio.create_task(app.run_async(), name="app")
    leaving = asyncio.create_task(app.wait_for_lost_terminal(), name="terminal-watch")
    await asyncio.wait({running, leaving}, return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        # The terminal is gone: give the app a moment to end, then go on without it.
        done, _ = await asyncio.wait({running}, timeout=APP_EXIT_WAIT)
        if not done:
            log.warning("the window did not close within %.0f s of losing the terminal: carrying on without it", APP_EXIT_WAIT)
    leaving.cancel()
    app.stop_listening()  # in case the window never got as far as closing
    if stopping or app.outcome == "quit" or app.engine_error is not None:
        if app.engine is not None:  # closed with the window already, unless it was lost first
            if app.engine_started is not None:
                app.engine_started.cancel()
            await app.engine.close()
        handoff.say(b"")
        return app.return_code or 0
    app.begin_engine()  # the terminal went before the first frame: start it all the same
    engine = app.engine
    assert engine is not None
    if app.outcome == "detach":
        try:
            print(
                f"aime-tui: detached; the services keep running in the background (pid {os.getpid()}).\n"
                f"  `aime-tui{come_back}` shows them again, `aime-tui shutdown{come_back}` stops them.",
                flush=True,
            )
        except OSError:
            pass  # the terminal went meanwhile
    let_go_of_terminal()
    handoff.say(DETACHED if app.outcome == "detach" else LOST)
    stop_on_signals(engine, reload=False)
    why = "detached (d)" if app.outcome == "detach" else f"terminal lost ({app.lost_terminal})"
    log.warning(
        "%s: running on in the background (pid %d); `aime-tui%s` attaches, `aime-tui shutdown%s` stops it",
        why, os.getpid(), come_back, come_back,
    )
    try:
        started = app.engine_started
        if started is not None and not started.done():
            await until_shutdown(engine, asyncio.shield(started))
        if app.engine_error is not None:
            log.error("could not open the engine: %s", app.engine_error)
            return 2
        await until_shutdown(engine)
    finally:
        if app.engine_started is not None:
            app.engine_started.cancel()
        await engine.close()
    log.info("stopped (pid %d)", os.getpid())
    return 0


async def _quit_on_shutdown(engine, app) -> None:
    """`aime-tui shutdown` while the window is open: quit as `q` does."""
    await engine.shutdown_requested.wait()
    if app.is_running:
        app.exit()
