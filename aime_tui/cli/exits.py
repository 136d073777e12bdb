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


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"aime-tui: {message}", file=sys.stderr)
    return code
