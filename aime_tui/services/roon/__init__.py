"""The Roon tracker: `session` (finding the Core, the MOO session, the status Roon shows)
and `listening` (when what a zone plays becomes a play)."""

from aime_tui.services.roon.session import (
    APPROVE_HINT,
    LOOKING_HINT,
    NEW_CORE_HINT,
    REAPPROVE_HINT,
    RoonTracker,
    handshake_budget,
)

__all__ = ["APPROVE_HINT", "LOOKING_HINT", "NEW_CORE_HINT", "REAPPROVE_HINT", "RoonTracker", "handshake_budget"]
