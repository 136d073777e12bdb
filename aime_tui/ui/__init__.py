"""The Textual user interface: the only part of aime-tui that imports Textual."""
