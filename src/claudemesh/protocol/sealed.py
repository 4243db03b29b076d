"""What a DM's plaintext holds: bare text, or a sealed document (docs/protocol.md).

A sealed plaintext is the byte ``0x00`` followed by one RFC 8785 JSON object: a message
that names sessions (``to_session``, ``from_session``), or a signed receipt. Sessions and
receipts ride inside the end-to-end box, so the broker routes by member and sees neither.
Text messages never start with ``0x00`` (the daemon refuses them), so the first byte
tells the two forms apart, and a DM without sessions keeps its plaintext, and therefore
its ``body_hash`` and fingerprint, exactly as before.

Receipts travel in batches (one DM to a sender carries up to :data:`MAX_RECEIPTS`), each
batch signed once by the recipient over a domain-tagged digest, under a
``client_message_id`` derived from what it reports on, so a resend after a crash is the
same message to the outbox's lookup table and to the broker. Pure: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

import rfc8785

from claudemesh.protocol.destination import HEX64_RE, NAME_RE

__all__ = [
    "MAX_RECEIPTS",
    "SEAL_MARK",
    "FileRef",
    "Plain",
    "ReceiptItem",
    "ReceiptPath",
    "ReceiptState",
    "Receipts",
    "SealedError",
    "SealedFile",
    "SealedMessage",
    "open_plaintext",
    "seal_file",
    "seal_message",
    "seal_receipts",
]

SEAL_MARK: Final = b"\x00"
VERSION: Final = 1
MAX_CLOCK_MS: Final = 2**53
MAX_RECEIPTS: Final = 128  # per receipt DM: well inside the broker's 64 KiB inline limit


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
class FileRef:
    """A shared file, as its recipient learns it inside the DM: where the ciphertext is
    (``file_id`` at the mesh's broker), how to open it (``key``, ``nonce_prefix``, hex)
    and what it must hash to."""

    file_id: str
    name: str
    size: int  # plaintext bytes
    sha256: str  # of the plaintext, hex
    chunk_bytes: int
    key: str = field(repr=False)
    nonce_prefix: str = ""

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the key."""
        return {"id": self.file_id, "name": self.name, "size": self.size,
                "sha256": self.sha256}

    def to_wire(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "name": self.name, "size": self.size,
                "sha256": self.sha256, "chunk_bytes": self.chunk_bytes, "key": self.key,
                "nonce_prefix": self.nonce_prefix}


@dataclass(frozen=True, slots=True)
class SealedFile:
    ref: FileRef
    text: str | None  # the message that came with it


@dataclass(frozen=True, slots=True)
class ReceiptItem:
    """One step of one message: ``stored`` (filed), or ``surfaced`` (a session read it)."""

    state: ReceiptState
    client_message_id: str
    broker_message_id: str
    session: str | None
    path: ReceiptPath | None  # exactly for ``surfaced``
    at: int  # the recipient's clock, epoch ms

    def to_wire(self) -> dict[str, Any]:
        return {"state": str(self.state), "client_message_id": self.client_message_id,
                "broker_message_id": self.broker_message_id, "session": self.session,
                "path": None if self.path is None else str(self.path), "at": self.at}


@dataclass(frozen=True, slots=True)
class Receipts:
    """Receipts one member (``recipient``) sends one sender, signed once for the batch:
    under load hundreds of messages share one receipt DM and one signature."""

    mesh_id: str
    recipient: str  # who received the messages (and signs)
    sender: str  # who sent them (and gets this)
    items: tuple[ReceiptItem, ...]
    signature: str = ""

    def unsigned(self) -> dict[str, Any]:
        return {"mesh_id": self.mesh_id, "recipient": self.recipient, "sender": self.sender,
                "receipts": [i.to_wire() for i in self.items]}

    def statement(self) -> str:
        """What the recipient signs: the domain tag and the digest of the unsigned JCS."""
        digest = hashlib.sha256(rfc8785.dumps(self.unsigned())).hexdigest()
        return f"claudemesh/receipts/v1|{digest}"

    def client_message_id(self) -> str:
        """The id this batch travels under: the same batch always gets the same id, so a
        resend after a crash is a duplicate to the outbox and the broker."""
        keys = "|".join(sorted(f"{i.state}:{i.client_message_id}" for i in self.items))
        digest = hashlib.sha256(
            f"{self.mesh_id}|{self.recipient}|{keys}".encode()).hexdigest()
        return f"rcpt-{digest[:40]}"


def _seal(doc: dict[str, Any]) -> bytes:
    return SEAL_MARK + rfc8785.dumps(doc)


def seal_message(text: str, *, to_session: str | None, from_session: str | None) -> bytes:
    return _seal({"v": VERSION, "kind": "message", "text": text, "to_session": to_session,
                  "from_session": from_session})


def seal_file(ref: FileRef, text: str | None) -> bytes:
    return _seal({"v": VERSION, "kind": "file", **ref.to_wire(), "text": text})


def seal_receipts(receipts: Receipts) -> bytes:
    return _seal({"v": VERSION, "kind": "receipts", **receipts.unsigned(),
                  "signature": receipts.signature})


def open_plaintext(raw: bytes) -> Plain | SealedMessage | SealedFile | Receipts:
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
    if kind == "receipts":
        _exact_keys(doc, {"v", "kind", "mesh_id", "recipient", "sender", "receipts",
                          "signature"})
        return _receipts(doc)
    if kind == "file":
        _exact_keys(doc, {"v", "kind", "file_id", "name", "size", "sha256", "chunk_bytes",
                          "key", "nonce_prefix", "text"})
        return _file(doc)
    raise SealedError(f"a sealed document of unknown kind {str(kind)[:20]!r}")


_FILE_ID_RE: Final = re.compile(r"[0-9A-Za-z]{16,32}")
_HEX_RE: Final = re.compile(r"[0-9a-f]+")
MAX_FILE_NAME: Final = 255
MAX_CHUNK_BYTES: Final = 144 * 1024  # a chunk and its MAC fit one blob_get (160 KiB)


def _file(doc: dict[str, Any]) -> SealedFile:
    ints = (doc["size"], doc["chunk_bytes"])
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ints) or not (
            0 <= doc["size"] < MAX_CLOCK_MS and 0 < doc["chunk_bytes"] <= MAX_CHUNK_BYTES):
        raise SealedError("a file reference with a malformed size")
    strings = ("file_id", "name", "sha256", "key", "nonce_prefix")
    if not all(isinstance(doc[k], str) for k in strings):
        raise SealedError("a file reference with a malformed field")
    if not (_FILE_ID_RE.fullmatch(doc["file_id"]) and HEX64_RE.fullmatch(doc["sha256"])
            and HEX64_RE.fullmatch(doc["key"]) and len(doc["nonce_prefix"]) == 32
            and _HEX_RE.fullmatch(doc["nonce_prefix"])):
        raise SealedError("a file reference with malformed ids or keys")
    name = doc["name"]
    if not 0 < len(name) <= MAX_FILE_NAME or "/" in name or "\x00" in name or name in (
            ".", ".."):
        raise SealedError("a file reference with a bad file name")
    text = doc["text"]
    if text is not None and (not isinstance(text, str) or not text):
        raise SealedError("a file reference with a malformed message")
    return SealedFile(FileRef(doc["file_id"], name, doc["size"], doc["sha256"],
                              doc["chunk_bytes"], doc["key"], doc["nonce_prefix"]), text)


def _exact_keys(doc: dict[str, Any], keys: set[str]) -> None:
    if set(doc) != keys:
        raise SealedError(f"a sealed document with fields {sorted(doc)[:8]}")


def _session(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise SealedError("a sealed message with an invalid session name")
    return value


_ITEM_KEYS: Final = frozenset({"state", "client_message_id", "broker_message_id", "session",
                              "path", "at"})


def _receipts(doc: dict[str, Any]) -> Receipts:
    if not all(isinstance(doc[k], str) for k in ("mesh_id", "recipient", "sender",
                                                 "signature")):
        raise SealedError("receipts with a malformed field")
    if not (0 < len(doc["mesh_id"]) <= 128 and HEX64_RE.fullmatch(doc["recipient"])
            and HEX64_RE.fullmatch(doc["sender"]) and len(doc["signature"]) == 128):
        raise SealedError("receipts with malformed keys or signature")
    listed = doc["receipts"]
    if not isinstance(listed, list) or not 0 < len(listed) <= MAX_RECEIPTS:
        raise SealedError(f"receipts must list 1-{MAX_RECEIPTS} items")
    items = tuple(_item(i) for i in listed)
    if len({(i.state, i.client_message_id) for i in items}) != len(items):
        raise SealedError("receipts that repeat an item")
    return Receipts(doc["mesh_id"], doc["recipient"], doc["sender"], items, doc["signature"])


def _item(doc: Any) -> ReceiptItem:
    if not isinstance(doc, dict) or set(doc) != _ITEM_KEYS:
        raise SealedError("a receipt with missing or unknown fields")
    if not all(isinstance(doc[k], str) and 0 < len(doc[k]) <= 128
               for k in ("client_message_id", "broker_message_id")):
        raise SealedError("a receipt with a malformed id")
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
    return ReceiptItem(state, doc["client_message_id"], doc["broker_message_id"],
                       _session(doc["session"]), path, at)
