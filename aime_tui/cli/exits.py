"""Exit codes every subcommand shares, and the one-line failure they end in."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNHEALTHY = 0, 1, 2, 3, 4
EXIT_CODES = """\
exit codes:
  0  done; health: healthy
  1  not done: health degraded, a doctor check failed, the change was refused,
     nothing to act on (no instance for retry/wake/shutdown), another instance
     already runs, an instance asked to shut down still runs
  2  bad usage: unknown service or mode, bad arguments, unreadable config,
     unusable data directory
  3  an instance holds the data directory but does not answer on its control socket
  4  health: unhealthy (no instance, database unreachable, no wanted service running)
"""


_USAGE = "bad usage: bad arguments, unreadable config, unusable data directory"
_UNANSWERED = "an instance holds the data directory but does not answer on its control socket"
_USAGE_SERVICE = "bad usage: unknown service, bad arguments, unreadable config, unusable data directory"

#: Each subcommand's own exit codes, for its --help.
COMMAND_EXIT_CODES: dict[str, dict[int, str]] = {
    "init": {0: "the config file is written",
             2: "bad usage: --demo (the demo needs no config), a config file is already there, bad arguments"},
    "status": {0: "shown", 1: "the database cannot be read", 2: _USAGE, 3: _UNANSWERED},
    "start": {0: "saved (and being acted on, when an instance runs)", 1: "refused: the change could not be saved",
              2: _USAGE_SERVICE, 3: _UNANSWERED},
    "stop": {0: "saved (and being acted on, when an instance runs)", 1: "refused: the change could not be saved",
             2: _USAGE_SERVICE, 3: _UNANSWERED},
    "retry": {0: "retrying now",
              1: "nothing to retry (the service is running, starting or not wanted), or no instance runs",
              2: _USAGE_SERVICE, 3: _UNANSWERED},
    "restart": {0: "restarting", 1: "no instance runs, or it refused", 2: _USAGE_SERVICE, 3: _UNANSWERED},
    "mode": {0: "saved (and applied, when an instance runs)", 1: "refused: the change could not be saved",
             2: "bad usage: unknown mode, bad arguments, unreadable config", 3: _UNANSWERED},
    "wake": {0: "recovered; the summary is printed", 1: "no instance runs, or it refused", 2: _USAGE, 3: _UNANSWERED},
    "reload": {0: "read again and applied; what changed is printed", 1: "no instance runs, the file did not read, or a change could not be applied (printed)", 2: _USAGE, 3: _UNANSWERED},
    "health": {0: "healthy", 1: "degraded (some wanted service is not running)", 2: _USAGE, 3: _UNANSWERED,
               4: "unhealthy (no instance, database unreachable, no wanted service running)"},
    "doctor": {0: "every check passed (warnings allowed)", 1: "a check failed", 2: "bad arguments"},
    "history": {0: "shown", 1: "the database cannot be read", 2: _USAGE_SERVICE},
    "plays": {0: "shown", 1: "the database cannot be read", 2: _USAGE},
}


def exit_codes_for(command: str) -> str:
    """The --help epilog of one subcommand: its own codes, or all of them."""
    codes = COMMAND_EXIT_CODES.get(command)
    if codes is None:
        return EXIT_CODES
    return "exit codes:\n" + "".join(f"  {code}  {meaning}\n" for code, meaning in sorted(codes.items()))


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"aime-tui: {message}", file=sys.stderr)
    return code
