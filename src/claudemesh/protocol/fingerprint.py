"""Request fingerprint (daemon-spec §4.4, R-FP-1..3; DESIGN §5.2).

::

    sha256( envelope_version 0x00 destination_kind 0x00 destination_ref 0x00
            reply_to_id_or_empty 0x00 priority 0x00 meta_canonical_json 0x00 body_hash )

Decisions on A-14: ``body_hash`` is the sha256 **hex** of the UTF-8 message the caller
sent (DESIGN §5.2, the spec's text, not the TS reference's raw digest); ``meta`` absent,
``null`` or ``{}`` all canonicalise to the empty string (A-14c); the default priority is
``next`` (A-14d). Pure: no I/O, no clock. Daemon and broker both call
:func:`request_fingerprint`, so they agree byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import rfc8785

__all__ = [
    "ENVELOPE_VERSION",
    "FINGERPRINT_PREFIX_BYTES",
    "MetaError",
    "body_hash",
    "canonical_meta",
    "fingerprint_prefix",
    "request_fingerprint",
]

ENVELOPE_VERSION: Final = "1"
FINGERPRINT_PREFIX_BYTES: Final = 8  # R-ACC-3: 8 bytes = 16 hex characters
_SEP: Final = b"\x00"


class MetaError(ValueError):
    """``meta`` cannot be canonicalised (RFC 8785 refuses it): the request is invalid."""


def canonical_meta(meta: Mapping[str, Any] | None) -> bytes:
    """RFC 8785 JCS bytes of ``meta``; absent, null and empty all give ``b""`` (A-14c).

    Raises:
        MetaError: a value JCS cannot represent (integer beyond 2**53, NaN, a lone
            surrogate, a non-string key).
    """
    if not meta:
        return b""
    try:
        return rfc8785.dumps(dict(meta))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MetaError(str(exc)) from exc
    except RecursionError:
        raise MetaError("meta is nested too deeply") from None


def body_hash(message: str) -> str:
    """sha256 hex of the UTF-8 message (DESIGN §5.2). A lone surrogate raises ValueError."""
    return hashlib.sha256(message.encode("utf-8")).hexdigest()


def request_fingerprint(
    *,
    destination_kind: str,
    destination_ref: str,
    reply_to_id: str | None,
    priority: str,
    meta_canonical: bytes,
    body_hash_hex: str,
    envelope_version: str = ENVELOPE_VERSION,
) -> bytes:
    """The 32-byte fingerprint of R-FP-1. No NUL follows ``body_hash``."""
    parts = (
        envelope_version.encode("ascii"),
        destination_kind.encode("ascii"),
        destination_ref.encode("utf-8"),
        (reply_to_id or "").encode("utf-8"),
        priority.encode("ascii"),
        meta_canonical,
        body_hash_hex.encode("ascii"),
    )
    return hashlib.sha256(_SEP.join(parts)).digest()


def fingerprint_prefix(fingerprint: bytes) -> str:
    """The 16-hex prefix shown in every 409 (R-ACC-3)."""
    return fingerprint[:FINGERPRINT_PREFIX_BYTES].hex()
