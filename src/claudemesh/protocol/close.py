"""WebSocket close codes of the broker protocol (docs/protocol.md, "Close codes").

Defined here once so the broker that closes and the daemon that reads a close agree on
the numbers; :class:`claudemesh.errors` subclasses name theirs by member.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode"]


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # "joined", or a clean end
    GOING_AWAY = 1001  # broker shutdown, daemon stopping
    POLICY = 1008  # a refusal without a code of its own
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # also the keepalive ping timeout
    AUTH_FAILED = 4001  # bad_signature, stale_timestamp, replayed_nonce, unknown_member
    MEMBER_REVOKED = 4002
    REPLACED = 4003  # replaced_by_newer_connection
    ALREADY_CONNECTED = 4004  # member_already_connected
    HELLO_TIMEOUT = 4008
    FEATURE_UNAVAILABLE = 4010  # the negotiation failure kind is the reason text
