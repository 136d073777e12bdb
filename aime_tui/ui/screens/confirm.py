"""A yes/no question asked once before an action that is hard to undo (`X` stops everything)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool]):
    """Answers True for `y`, False for `n` or `esc`; every other key is ignored."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    #question {
        width: auto;
        max-width: 100%;
        height: auto;
        border: round $warning;
        background: $surface;
        padding: 0 2;
        text-style: bold;
    }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question} y/n", id="question")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
