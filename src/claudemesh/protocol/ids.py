"""ULIDs and the shape of a valid ``client_message_id``.

We mint ULIDs here (48-bit millisecond time + 80 random bits, Crockford base32) instead
of importing python-ulid: that package pulls in ``importlib.metadata`` at import and
costs about 58 ms, which the CLI's send path cannot afford (docs/design-deviations.md).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Final

__all__ = ["CLIENT_MESSAGE_ID_RE", "is_valid_client_message_id", "new_ulid"]

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# R-CMID-3: 1-128 printable ASCII characters, no space. Anything else is a Phase-A 400.
CLIENT_MESSAGE_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID; ``now_ms`` defaults to the wall clock."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    value = ((now_ms & ((1 << 48) - 1)) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_valid_client_message_id(value: str) -> bool:
    return CLIENT_MESSAGE_ID_RE.fullmatch(value) is not None
