"""A broker connection's states and legal moves, as data.

Theory of operation. A connection starts AWAITING_HELLO: only ``hello`` and ``join`` are
read. An accepted hello moves it to OPEN, where every other frame is served; a ``join``
answers and closes without ever opening. However it ends (client close, refused hello,
hello timeout, revocation, replacement, broker shutdown), the read loop's exit moves it
to CLOSED, which is final. Pure: no socket, no clock.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TERMINAL", "TRANSITIONS", "IllegalSessionMove", "SessionState", "check_move"]


class SessionState(enum.StrEnum):
    AWAITING_HELLO = "awaiting_hello"  # only hello or join are read
    OPEN = "open"  # hello accepted: a member, its pump, every frame served
    CLOSED = "closed"  # the read loop is over


TRANSITIONS: Final[dict[SessionState, frozenset[SessionState]]] = {
    SessionState.AWAITING_HELLO: frozenset({SessionState.OPEN, SessionState.CLOSED}),
    SessionState.OPEN: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}
TERMINAL: Final = frozenset({SessionState.CLOSED})


class IllegalSessionMove(ValueError):
    def __init__(self, old: SessionState, new: SessionState) -> None:
        super().__init__(f"session cannot move from {old} to {new}")
        self.old, self.new = old, new


def check_move(old: SessionState, new: SessionState) -> None:
    """Raises IllegalSessionMove unless the table allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        raise IllegalSessionMove(old, new)
