"""The frozen send envelope stored in ``outbox.payload`` (R-OBX-3, R-FP-3, DESIGN §5.2).

It holds everything the drain needs to put a send on the wire, decided once at accept,
so every retry sends the same bytes. ``client_message_id`` is deliberately not inside:
it lives in its own column, and a requeue copies the payload under a fresh id (R-RQ-2).

``body`` is the wire body: ``{"kind": "plain", "text"}`` for topics, groups and broadcast,
``{"kind": "crypto_box", "nonce", "ciphertext"}`` for a DM, and
``{"kind": "topic_box", "epoch", "nonce", "ciphertext"}`` for a post to an encrypted
``#topic``, each encrypted once at accept (so the outbox never holds their plaintext).
``body_hash`` is always the sha256 of the plaintext the caller sent, which is what the
fingerprint covers.

Encoded once. :meth:`FrozenSend.to_bytes` writes ``mesh`` first and then the ``send``
frame's members in the frame's own order (:data:`WIRE_FIELDS`), so the stored bytes after
``{"mesh":…,`` are that part of the frame exactly as it goes on the wire, and
:func:`wire_part` hands them out without parsing: each attempt splices its ids around
them (``sending.wire_bytes``) instead of decoding and re-encoding the body. Payloads
written before this layout (``destination_kind`` second) still decode with
:meth:`FrozenSend.from_bytes`; :func:`wire_part` answers None for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from claudemesh.protocol.fingerprint import ENVELOPE_VERSION
from claudemesh.protocol.strictjson import dumps

__all__ = ["WIRE_FIELDS", "FrozenSend", "wire_part"]

# The send frame's envelope members, in the frame's order (after type and client_message_id).
WIRE_FIELDS: Final = ("envelope_version", "destination_kind", "destination_ref", "priority",
                      "reply_to", "meta", "body_hash", "body")
_FIRST_WIRE_KEY: Final = b'"envelope_version":'


@dataclass(frozen=True, slots=True)
class FrozenSend:
    mesh: str
    destination_kind: str
    destination_ref: str
    priority: str
    reply_to: str | None
    meta: dict[str, Any] | None
    body: dict[str, Any]
    body_hash: str
    envelope_version: str = ENVELOPE_VERSION

    def to_bytes(self) -> bytes:
        # Built by hand: dataclasses.asdict deep-copies every field, about 7 % of an
        # accept's event-loop time in bench/accept.py's profile. ``mesh`` first, then the
        # wire members in wire order: see wire_part.
        fields = {"mesh": self.mesh}
        for name in WIRE_FIELDS:
            fields[name] = getattr(self, name)
        return dumps(fields)

    @classmethod
    def from_bytes(cls, raw: bytes) -> FrozenSend:
        return cls(**orjson.loads(raw))


def wire_part(raw: bytes, mesh: str) -> memoryview | None:
    """The stored envelope's wire members, ``"envelope_version":…`` through the closing
    brace, as a view of ``raw``; None unless ``raw`` is in :meth:`FrozenSend.to_bytes`'s
    layout for ``mesh`` (a payload written before it, or one for another mesh)."""
    head = b'{"mesh":' + dumps(mesh) + b","
    if raw.startswith(head) and raw.startswith(_FIRST_WIRE_KEY, len(head)):
        return memoryview(raw)[len(head):]
    return None
