"""ULIDs and the shape of a valid ``client_message_id``.

We mint ULIDs here (48-bit millisecond time + 80 random bits, Crockford base32) instead
of importing python-ulid: that package pulls in ``importlib.metadata`` at import and
costs about 58 ms, which the CLI's send path cannot afford (docs/design-deviations.md).
The random bits come from ``os.urandom``, as ``secrets.randbits`` takes them, without
the ``hmac``/OpenSSL import (about 6 ms) that ``secrets`` brings along.
"""

from __future__ import annotations

import os
import re
import time
from typing import Final

__all__ = ["CLIENT_MESSAGE_ID_RE", "ULID_RE", "is_ulid", "is_valid_client_message_id",
           "new_ulid"]

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # 10 bits -> 2 chars
_SHIFTS: Final = tuple(range(120, -1, -10))

# R-CMID-3: 1-128 printable ASCII characters, no space. Anything else is a Phase-A 400.
CLIENT_MESSAGE_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
# What :func:`new_ulid` mints, so what a ``broker_message_id`` looks like (the broker
# names every message with one): 26 Crockford base32 characters, the first 0-7 (128 bits).
ULID_RE: Final = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID; ``now_ms`` defaults to the wall clock."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    value = ((now_ms & ((1 << 48) - 1)) << 80) | int.from_bytes(os.urandom(10))
    # 130 bits (the top two zero) as 13 ten-bit pairs of characters: 13 steps, not 26.
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_valid_client_message_id(value: str) -> bool:
    return CLIENT_MESSAGE_ID_RE.fullmatch(value) is not None


def is_ulid(value: str) -> bool:
    """True for a ULID in canonical (upper-case) form, as the broker writes its ids."""
    return ULID_RE.fullmatch(value) is not None
