"""The key bar at the bottom: the keys of the screen, as many as fit, never cut.

Textual's footer lays every key out in a row and lets the ones that do not fit fall off
the right edge, `q quit` first. This bar keeps the keys that must always be there (help
and quit, or detach, on the dashboard; a screen names its own, such as back and search)
and adds the others in their order while they fit, the command palette's last.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

#: Keys shown at any width by default: help, and quit (or detach, in an attached dashboard).
ALWAYS = ("question_mark", "q")
GAP = "  "


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        padding: 0 1;
        background: $footer-background;
        color: $footer-foreground;
    }
    """

    def __init__(self, *, always: tuple[str, ...] = ALWAYS, **kwargs) -> None:
        super().__init__(**kwargs)
        #: The bound keys (as Textual names them: "question_mark", "escape") kept at any width.
        self.always = always

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.refresh_keys)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self) -> None:
        self.refresh_keys()

    def _bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self.refresh_keys()

    def shown(self) -> list[tuple[str, str]]:
        """(key, description) of the keys on the bar now, left to right."""
        return self._fit(self.content_region.width)

    def refresh_keys(self) -> None:
        items = self.shown()
        text = Text()
        for index, (key, description) in enumerate(items):
            if index:
                text.append(GAP)
            text.append(key, style="bold")
            text.append(f" {description}")
        self.update(text)

    def _candidates(self) -> tuple[list[tuple[str, str, str]], tuple[str, str] | None]:
        """The bar's keys in order as (bound key, key shown, description), and the palette's."""
        keys: list[tuple[str, str, str]] = []
        seen = set()
        palette = None
        for key, (_, binding, enabled, _) in self.screen.active_bindings.items():
            if binding.action == "command_palette" and self.app.ENABLE_COMMAND_PALETTE:
                palette = (self._key(binding), "palette")
                continue
            if not binding.show or not enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            keys.append((key, self._key(binding), binding.description))
        return keys, palette

    def _key(self, binding: Binding) -> str:
        return self.app.get_key_display(binding)

    def _fit(self, width: int) -> list[tuple[str, str]]:
        keys, palette = self._candidates()

        def length(items) -> int:
            return sum(len(key) + 1 + len(text) for _, key, text in items) + len(GAP) * max(len(items) - 1, 0)

        kept = [item for item in keys if item[0] in self.always]
        for item in keys:
            if item in kept:
                continue
            trial = [other for other in keys if other in kept or other is item]
            if length(trial) <= width:
                kept = trial
        if palette is not None and length([*kept, ("", *palette)]) <= width:
            kept = [*kept, ("", *palette)]
        return [(key, text) for _, key, text in kept]
