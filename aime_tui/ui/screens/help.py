"""The help screen (`?`): the keys of this app, grouped, for the part of the screen in use.

What it lists is given to it (see AimeApp.help_groups): the focused part's own keys
first, worded for what they do here, then the app's keys by group. `?` or `esc` closes
it; it scrolls when the terminal is short.
"""

from __future__ import annotations

from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (heading, [(keys, what they do)]) in the order shown.
HelpGroups = Sequence[tuple[str, Sequence[tuple[str, str]]]]


def help_table(groups: HelpGroups) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column()
    for index, (heading, keys) in enumerate(groups):
        if index:
            table.add_row("", "")
        table.add_row("", Text(heading, style="bold underline"))
        for key, text in keys:
            table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark", "dismiss", "close", show=False)]
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    #help {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        border-title-align: left;
        border-subtitle-align: right;
        background: $surface;
        padding: 0 1;
    }
    #help-keys {
        width: 100%;
    }
    """

    def __init__(self, groups: HelpGroups) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as frame:
            frame.border_title = "Keys"
            frame.border_subtitle = "? or esc closes"
            yield Static(help_table(self.groups), id="help-keys")
