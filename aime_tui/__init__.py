"""aime-tui: a keyboard-driven control room for a home music server's background services."""

__version__ = "0.1.0"
