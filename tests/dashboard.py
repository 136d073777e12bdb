"""Reading the dashboard under Pilot."""

from __future__ import annotations


def cell(app, row: str, column: str) -> str:
    """A cell's text, or "" while the engine is still opening and the table is empty."""
    if app.supervisor is None:
        return ""
    return str(app.table.get_cell(row, column))
