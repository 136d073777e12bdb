"""The command line: `aime-tui`, its subcommands and the headless runner."""
