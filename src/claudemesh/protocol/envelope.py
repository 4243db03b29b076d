"""The frozen send envelope stored in ``outbox.payload`` (R-OBX-3, R-FP-3, DESIGN §5.2).

It holds everything the drain needs to put a send on the wire, decided once at accept,
so every retry sends the same bytes. ``client_message_id`` is deliberately not inside:
it lives in its own column, and a requeue copies the payload under a fresh id (R-RQ-2).

``body`` is the wire body: ``{"kind": "plain", "text"}`` for topics, groups and broadcast,
``{"kind": "crypto_box", "nonce", "ciphertext"}`` for a DM, encrypted once at accept
(so the outbox never holds a DM's plaintext). ``body_hash`` is always the sha256 of the
plaintext the caller sent, which is what the fingerprint covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from claudemesh.protocol.fingerprint import ENVELOPE_VERSION
from claudemesh.protocol.strictjson import dumps

__all__ = ["FrozenSend"]


@dataclass(frozen=True, slots=True)
class FrozenSend:
    mesh: str
    destination_kind: str
    destination_ref: str
    priority: str
    reply_to: str | None
    meta: dict[str, Any] | None
    body: dict[str, str]
    body_hash: str
    envelope_version: str = ENVELOPE_VERSION

    def to_bytes(self) -> bytes:
        # Built by hand: dataclasses.asdict deep-copies every field, about 7 % of an
        # accept's event-loop time in bench/accept.py's profile.
        fields = {name: getattr(self, name) for name in self.__slots__}
        return dumps(fields)

    @classmethod
    def from_bytes(cls, raw: bytes) -> FrozenSend:
        return cls(**orjson.loads(raw))
