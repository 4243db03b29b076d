"""What a DM's plaintext holds: bare text, or a sealed document (docs/protocol.md).

A sealed plaintext is the byte ``0x00`` followed by one RFC 8785 JSON object: a message
that names sessions (``to_session``, ``from_session``), or a signed receipt. Sessions and
receipts ride inside the end-to-end box, so the broker routes by member and sees neither.
Text messages never start with ``0x00`` (the daemon refuses them), so the first byte
tells the two forms apart, and a DM without sessions keeps its plaintext, and therefore
its ``body_hash`` and fingerprint, exactly as before.

Receipts are signed by the recipient over a domain-tagged statement, and travel under a
``client_message_id`` derived from the message they report on, so a resend after a crash
is the same message to the outbox's lookup table and to every inbox. Pure: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from claudemesh.protocol.destination import HEX64_RE, NAME_RE

__all__ = [
    "SEAL_MARK",
    "Plain",
    "Receipt",
    "ReceiptPath",
    "ReceiptState",
    "SealedError",
    "SealedMessage",
    "open_plaintext",
    "receipt_client_message_id",
    "receipt_statement",
    "seal_message",
    "seal_receipt",
]

SEAL_MARK: Final = b"\x00"
VERSION: Final = 1
MAX_CLOCK_MS: Final = 2**53


class SealedError(ValueError):
    """A sealed plaintext that does not parse: the DM is stored as undecryptable."""


class ReceiptState(enum.StrEnum):
    STORED = "stored"
    SURFACED = "surfaced"


class ReceiptPath(enum.StrEnum):
    """How a message reached the agent (``surfaced`` receipts)."""

    MCP_PUSH = "mcp_push"
    HOOK = "hook"
    TOOL_CALL = "tool_call"
    POLL = "poll"


@dataclass(frozen=True, slots=True)
class Plain:
    text: str


@dataclass(frozen=True, slots=True)
class SealedMessage:
    text: str
    to_session: str | None
    from_session: str | None


@dataclass(frozen=True, slots=True)
class Receipt:
    state: ReceiptState
    mesh_id: str
    client_message_id: str
    broker_message_id: str
    recipient: str  # who received the message (and signs)
    sender: str  # who sent the message (and gets the receipt)
    session: str | None
    path: ReceiptPath | None
    at: int  # the recipient's clock, epoch ms
    signature: str = ""

    def statement(self) -> str:
        return receipt_statement(self)

    def to_wire(self) -> dict[str, Any]:
        return {"state": str(self.state), "mesh_id": self.mesh_id,
                "client_message_id": self.client_message_id,
                "broker_message_id": self.broker_message_id, "recipient": self.recipient,
                "sender": self.sender, "session": self.session,
                "path": None if self.path is None else str(self.path), "at": self.at,
                "signature": self.signature}


def receipt_statement(r: Receipt) -> str:
    """What the recipient signs; ``session`` and ``path`` are empty when null."""
    return ("claudemesh/receipt/v1"
            f"|{r.mesh_id}|{r.client_message_id}|{r.broker_message_id}|{r.state}"
            f"|{r.recipient}|{r.sender}|{r.session or ''}|{r.path or ''}|{r.at}")


def receipt_client_message_id(state: ReceiptState, *, mesh_id: str, client_message_id: str,
                              recipient: str) -> str:
    """The id a receipt travels under: one per (message, recipient, state)."""
    digest = hashlib.sha256(
        f"{mesh_id}|{client_message_id}|{recipient}".encode()).hexdigest()
    return f"rcpt-{state}-{digest[:40]}"


def _seal(doc: dict[str, Any]) -> bytes:
    return SEAL_MARK + rfc8785.dumps(doc)


def seal_message(text: str, *, to_session: str | None, from_session: str | None) -> bytes:
    return _seal({"v": VERSION, "kind": "message", "text": text, "to_session": to_session,
                  "from_session": from_session})


def seal_receipt(receipt: Receipt) -> bytes:
    return _seal({"v": VERSION, "kind": "receipt", "receipt": receipt.to_wire()})


def open_plaintext(raw: bytes) -> Plain | SealedMessage | Receipt:
    """Classify and check a DM's opened plaintext.

    Raises:
        SealedError: not UTF-8, or a sealed document that is malformed (unknown kind or
            field, wrong types, bad session names): the caller stores it undecryptable.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SealedError("the content is not UTF-8 text") from None
    if not raw.startswith(SEAL_MARK):
        return Plain(text)
    try:
        doc = json.loads(text[1:])
    except ValueError:
        raise SealedError("a sealed document that is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise SealedError("a sealed document of an unknown version")
    kind = doc.get("kind")
    if kind == "message":
        _exact_keys(doc, {"v", "kind", "text", "to_session", "from_session"})
        if not isinstance(doc["text"], str) or not doc["text"]:
            raise SealedError("a sealed message without text")
        return SealedMessage(doc["text"], _session(doc["to_session"]),
                             _session(doc["from_session"]))
    if kind == "receipt":
        _exact_keys(doc, {"v", "kind", "receipt"})
        return _receipt(doc["receipt"])
    raise SealedError(f"a sealed document of unknown kind {str(kind)[:20]!r}")


def _exact_keys(doc: dict[str, Any], keys: set[str]) -> None:
    if set(doc) != keys:
        raise SealedError(f"a sealed document with fields {sorted(doc)[:8]}")


def _session(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise SealedError("a sealed message with an invalid session name")
    return value


_RECEIPT_KEYS: Final = frozenset({"state", "mesh_id", "client_message_id",
                                  "broker_message_id", "recipient", "sender", "session",
                                  "path", "at", "signature"})


def _receipt(doc: Any) -> Receipt:
    if not isinstance(doc, dict) or set(doc) != _RECEIPT_KEYS:
        raise SealedError("a receipt with missing or unknown fields")
    strings = ("mesh_id", "client_message_id", "broker_message_id", "recipient", "sender",
               "signature")
    if not all(isinstance(doc[k], str) and 0 < len(doc[k]) <= 256 for k in strings):
        raise SealedError("a receipt with a malformed field")
    if not (HEX64_RE.fullmatch(doc["recipient"]) and HEX64_RE.fullmatch(doc["sender"])):
        raise SealedError("a receipt whose keys are not 64-hex")
    at = doc["at"]
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < MAX_CLOCK_MS:
        raise SealedError("a receipt with a malformed time")
    try:
        state = ReceiptState(doc["state"])
        path = None if doc["path"] is None else ReceiptPath(doc["path"])
    except ValueError:
        raise SealedError("a receipt of an unknown state or path") from None
    if (state is ReceiptState.SURFACED) != (path is not None):
        raise SealedError("a receipt's path must be given exactly for surfaced")
    return Receipt(state, doc["mesh_id"], doc["client_message_id"], doc["broker_message_id"],
                   doc["recipient"], doc["sender"], _session(doc["session"]), path, at,
                   doc["signature"])
