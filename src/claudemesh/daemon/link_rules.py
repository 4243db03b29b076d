"""The broker link's rules as data: its states, legal moves, backoff, and close codes.

Theory of operation. Each joined mesh has one link. It connects (CONNECTING), says hello
and checks the broker's features (NEGOTIATING), then serves (OPEN). When the connection
drops it waits (BACKOFF) and tries again, with delays 500 ms x 2 up to 30 s, +-25 %
jitter (R-CFG-2), reset by every successful hello. Some ends are final and stop the
retrying: a broker whose features fail validation (INCOMPATIBLE, close 4010, DESIGN
§5.4), and a broker that says this identity must not come back (REJECTED: revoked 4002,
replaced 4003, already connected 4004, or a hello refused for an unknown key or a bad
signature), and a broker whose TLS key is not the pinned one (UNTRUSTED: nothing is sent
to it, issue 14). CLOSED is the daemon stopping. Pure: the RNG is passed in.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from typing import Final

from claudemesh.backoff import Schedule
from claudemesh.protocol.close import CloseCode

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "CloseVerdict",
    "IllegalLinkMove",
    "LinkState",
    "backoff_delays",
    "check_move",
    "classify_close",
]

INITIAL_BACKOFF_S: Final = 0.5
BACKOFF_FACTOR: Final = 2.0
MAX_BACKOFF_S: Final = 30.0
JITTER: Final = 0.25


class LinkState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    NEGOTIATING = "negotiating"
    OPEN = "open"
    BACKOFF = "backoff"
    INCOMPATIBLE = "incompatible"
    REJECTED = "rejected"
    UNTRUSTED = "untrusted"
    CLOSED = "closed"


TRANSITIONS: Final[dict[LinkState, frozenset[LinkState]]] = {
    LinkState.DISCONNECTED: frozenset({LinkState.CONNECTING, LinkState.CLOSED}),
    LinkState.CONNECTING: frozenset({LinkState.NEGOTIATING, LinkState.BACKOFF,
                                     LinkState.UNTRUSTED, LinkState.CLOSED}),
    LinkState.NEGOTIATING: frozenset({LinkState.OPEN, LinkState.BACKOFF,
                                      LinkState.INCOMPATIBLE, LinkState.REJECTED,
                                      LinkState.CLOSED}),
    LinkState.OPEN: frozenset({LinkState.BACKOFF, LinkState.REJECTED, LinkState.CLOSED}),
    LinkState.BACKOFF: frozenset({LinkState.CONNECTING, LinkState.CLOSED}),
    LinkState.INCOMPATIBLE: frozenset({LinkState.CLOSED}),
    LinkState.REJECTED: frozenset({LinkState.CLOSED}),
    LinkState.UNTRUSTED: frozenset({LinkState.CLOSED}),
    LinkState.CLOSED: frozenset(),
}
TERMINAL: Final = frozenset({LinkState.INCOMPATIBLE, LinkState.REJECTED, LinkState.UNTRUSTED,
                             LinkState.CLOSED})


class IllegalLinkMove(ValueError):
    def __init__(self, old: LinkState, new: LinkState) -> None:
        super().__init__(f"link cannot move from {old} to {new}")
        self.old, self.new = old, new


def check_move(old: LinkState, new: LinkState) -> None:
    """Raises IllegalLinkMove unless the table allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        raise IllegalLinkMove(old, new)


def backoff_delays(rng: random.Random, *, initial_s: float = INITIAL_BACKOFF_S,
                   factor: float = BACKOFF_FACTOR, cap_s: float = MAX_BACKOFF_S,
                   jitter: float = JITTER) -> Iterator[float]:
    """Reconnect delays: ``initial * factor**n`` capped at ``cap``, each +-``jitter``."""
    return Schedule(initial_s, cap_s, factor, jitter).delays(rng)


class CloseVerdict(enum.Enum):
    RETRY = "retry"
    REJECTED = "rejected"


_FINAL_CLOSE_CODES: Final = frozenset({CloseCode.MEMBER_REVOKED, CloseCode.REPLACED,
                                       CloseCode.ALREADY_CONNECTED})
_FINAL_HELLO_ERRORS: Final = frozenset({"unknown_member", "bad_signature", "member_revoked",
                                        "member_already_connected"})


def classify_close(code: int | None, hello_error: str | None = None) -> CloseVerdict:
    """What a closed connection means: retry later, or never come back."""
    if code in _FINAL_CLOSE_CODES or hello_error in _FINAL_HELLO_ERRORS:
        return CloseVerdict.REJECTED
    return CloseVerdict.RETRY
