"""The floor for any Textual app: a title bar and a footer, nothing else.

Launched in the same pseudo-terminal as `aime-tui --demo`, it shows what exec → first
paint costs before aime-tui does any work of its own.
"""

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Label

READY = b"textual floor ready"


class Floor(App):
    BINDINGS = [Binding("q", "quit", "quit")]

    def compose(self) -> ComposeResult:
        yield Label(READY.decode())
        yield Footer()


if __name__ == "__main__":
    Floor().run()
