"""WebSocket frames a client sends to the broker (docs/protocol.md), validated on parse.

Every frame is one JSON object with a ``type``. Models are frozen, strict and refuse
unknown fields (R-IN-5's defence in depth, applied at the broker too). The JSON itself is
read with :mod:`claudemesh.protocol.strictjson` first, so duplicate keys and NaN never
reach a model. :func:`parse_client_frame` is the one entry point; it raises
:class:`FrameError` carrying the error code the broker answers with.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from claudemesh.protocol.destination import DISPLAY_NAME_RE, NAME_RE
from claudemesh.protocol.features import DEFAULT_MAX_SESSIONS, MEMBER_SESSIONS
from claudemesh.protocol.strictjson import JsonError, loads_object

__all__ = [
    "BLOB_DATA_MAX",
    "FEATURE_FIELDS",
    "BlobBegin",
    "BlobGet",
    "BlobPut",
    "BlobStatus",
    "BoxBody",
    "ClientAck",
    "ClientFrame",
    "EpochKey",
    "FeatureNegotiationRequest",
    "FrameError",
    "Hello",
    "HistoryItem",
    "Join",
    "JoinGroup",
    "LeaveGroup",
    "ListBlobs",
    "ListGroups",
    "ListPeers",
    "ListTopics",
    "PlainBody",
    "SealedKey",
    "Send",
    "SessionEntry",
    "SetProfile",
    "Subscribe",
    "TopicBoxBody",
    "TopicEpoch",
    "TopicHistory",
    "TopicKeys",
    "Unsubscribe",
    "decode_frame",
    "parse_client_frame",
    "parse_history_item",
    "parse_push",
    "validate_client_frame",
]

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex128 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ReqId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ClientMessageId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]
Name = Annotated[str, StringConstraints(pattern=f"^{NAME_RE.pattern}$")]
DisplayName = Annotated[str, StringConstraints(pattern=f"^{DISPLAY_NAME_RE.pattern}$")]
Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$",
                                          max_length=4 * 1024 * 1024)]
ShortText = Annotated[str, StringConstraints(max_length=512)]
#: A group member's role label: a name of at most 32 characters.
Role = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
HISTORY_MAX: Final = 1000  # messages per topic_history page
Nonce24 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{32}$")]  # 24 bytes
SealText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$",
                                            max_length=512)]
Epoch = Annotated[int, Field(ge=1, le=2**31 - 1)]


class FrameError(ValueError):
    """A frame the broker refuses; ``code`` is the wire error code."""

    def __init__(self, code: str, detail: str, doc: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        doc = doc or {}
        self.frame_type = doc.get("type") if isinstance(doc.get("type"), str) else None
        self.req_id = doc.get("req_id") if isinstance(doc.get("req_id"), str) else None
        cmid = doc.get("client_message_id")
        self.client_message_id = cmid if isinstance(cmid, str) else None


class _Frame(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Join(_Frame):
    """Redeem an invite: register ``pubkey`` as a member (pre-hello)."""

    type: Literal["join"]
    invite: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    pubkey: Hex64
    display_name: DisplayName
    timestamp_ms: Annotated[int, Field(ge=0)]
    signature: Hex128


class Hello(_Frame):
    type: Literal["hello"]
    mesh_id: Ident
    member_id: Ident
    pubkey: Hex64
    timestamp_ms: Annotated[int, Field(ge=0)]
    nonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32,64}$")]
    signature: Hex128
    client: Annotated[str, StringConstraints(max_length=64)] | None = None


class FeatureNegotiationRequest(_Frame):
    type: Literal["feature_negotiation_request"]
    req_id: ReqId | None = None
    require: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=32)
    optional: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=32)


class PlainBody(_Frame):
    kind: Literal["plain"]
    text: Annotated[str, StringConstraints(min_length=1)]


class BoxBody(_Frame):
    kind: Literal["crypto_box"]
    nonce: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{32}$")]  # 24 bytes
    ciphertext: Base64


class TopicBoxBody(_Frame):
    """A topic post sealed with ``crypto_secretbox`` under the key of ``epoch``."""

    kind: Literal["topic_box"]
    epoch: Epoch
    nonce: Nonce24
    ciphertext: Base64


Body = Annotated[PlainBody | BoxBody | TopicBoxBody, Field(discriminator="kind")]


class Send(_Frame):
    type: Literal["send"]
    req_id: ReqId
    client_message_id: ClientMessageId
    envelope_version: Annotated[str, StringConstraints(max_length=8)]
    destination_kind: Literal["dm", "topic", "queue"]
    destination_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    priority: Literal["now", "next", "low"]
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    meta: dict[str, Any] | None = None
    body_hash: Hex64
    body: Body


class ClientAck(_Frame):
    type: Literal["client_ack"]
    delivery_ids: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]] = Field(
        min_length=1, max_length=1024)


class Subscribe(_Frame):
    type: Literal["subscribe"]
    req_id: ReqId
    topic: Name


class Unsubscribe(_Frame):
    type: Literal["unsubscribe"]
    req_id: ReqId
    topic: Name


class SealedKey(_Frame):
    """An epoch key sealed (crypto_box) to the member with ``pubkey``."""

    pubkey: Hex64
    nonce: Nonce24
    ciphertext: SealText


class TopicKeys(_Frame):
    type: Literal["topic_keys"]
    req_id: ReqId
    topic: Name


class TopicEpoch(_Frame):
    """Start epoch ``epoch`` of ``topic`` (a compare-and-set: docs/protocol.md)."""

    type: Literal["topic_epoch"]
    req_id: ReqId
    topic: Name
    epoch: Epoch
    membership_version: Annotated[int, Field(ge=0, le=2**62)]
    keys: list[SealedKey] = Field(max_length=10_000)


class ListTopics(_Frame):
    type: Literal["list_topics"]
    req_id: ReqId


class TopicHistory(_Frame):
    """A page of a topic's stored messages, newest first, below the ``before`` cursor."""

    type: Literal["topic_history"]
    req_id: ReqId
    topic: Name
    before: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")] | None = None
    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX)] = 50


class JoinGroup(_Frame):
    type: Literal["join_group"]
    req_id: ReqId
    group: Name
    role: Role | None = None  # None: keep the role already held (if any)


class ListGroups(_Frame):
    type: Literal["list_groups"]
    req_id: ReqId


class LeaveGroup(_Frame):
    type: Literal["leave_group"]
    req_id: ReqId
    group: Name


class ListPeers(_Frame):
    type: Literal["list_peers"]
    req_id: ReqId


class SessionEntry(_Frame):
    """One live session of a member, as its daemon publishes it (``member_sessions``)."""

    name: Name
    summary: ShortText | None = None
    status: Literal["idle", "working", "dnd"] | None = None
    harness: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


def _unique_names(sessions: list[SessionEntry]) -> list[SessionEntry]:
    seen: set[str] = set()
    for entry in sessions:
        if entry.name in seen:
            raise ValueError(f"session name {entry.name!r} appears more than once")
        seen.add(entry.name)
    return sessions


class SetProfile(_Frame):
    type: Literal["set_profile"]
    req_id: ReqId
    summary: ShortText | None = None
    status: Literal["idle", "working", "dnd"] | None = None
    visible: bool | None = None
    avatar: ShortText | None = None
    title: Annotated[str, StringConstraints(max_length=128)] | None = None
    bio: Annotated[str, StringConstraints(max_length=2048)] | None = None
    capabilities: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = (
        Field(default=None, max_length=64))
    # member_sessions: the whole list, replacing the previous one ([] clears it)
    sessions: Annotated[list[SessionEntry], AfterValidator(_unique_names)] | None = Field(
        default=None, max_length=DEFAULT_MAX_SESSIONS)


class EpochKey(_Frame):
    """The epoch key of a topic_box push, sealed to its recipient by ``sealer_pubkey``,
    and the membership version its epoch was made for."""

    sealer_pubkey: Hex64
    nonce: Nonce24
    ciphertext: SealText
    membership_version: Annotated[int, Field(ge=0, le=2**62)]


# Blobs (shared files, docs/protocol.md "Blobs"): ciphertext only, in slices that keep a
# blob_put or a blob_get answer well inside the 256 KiB frame limit once in base64.
BLOB_DATA_MAX: Final = 160 * 1024
FileId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{16,32}$")]
# No pattern: the handler's strict base64 decode checks the alphabet in the same pass
# (a regex over 175 KB cost as much again, bench/files.py).
BlobData = Annotated[str, StringConstraints(max_length=(BLOB_DATA_MAX + 2) // 3 * 4)]


class BlobBegin(_Frame):
    """Start (or resume) an upload: the answer's ``received`` is where to go on. Who may
    fetch it: the members named in ``recipients``, or the subscribers of ``topic`` at the
    time they fetch; exactly one of the two."""

    type: Literal["blob_begin"]
    req_id: ReqId
    file_id: FileId
    size: Annotated[int, Field(ge=0)]
    recipients: list[Hex64] | None = Field(default=None, min_length=1, max_length=1024)
    topic: Name | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> BlobBegin:
        if (self.recipients is None) == (self.topic is None):
            raise ValueError("give exactly one of 'recipients' and 'topic'")
        return self


class BlobPut(_Frame):
    """Bytes at ``offset``: exactly the stored length (an append), or already stored."""

    type: Literal["blob_put"]
    req_id: ReqId
    file_id: FileId
    offset: Annotated[int, Field(ge=0)]
    data: BlobData


class BlobStatus(_Frame):
    type: Literal["blob_status"]
    req_id: ReqId
    file_id: FileId


class BlobGet(_Frame):
    type: Literal["blob_get"]
    req_id: ReqId
    file_id: FileId
    offset: Annotated[int, Field(ge=0)]
    length: Annotated[int, Field(ge=1, le=BLOB_DATA_MAX)]


class ListBlobs(_Frame):
    type: Literal["list_blobs"]
    req_id: ReqId


class HistoryItem(_Frame):
    """A stored message as the broker hands it on: a push without its delivery (a
    ``topic_history`` item), and the fields every push carries."""

    mesh_id: Ident
    client_message_id: ClientMessageId
    broker_message_id: Ident
    history_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    sender_pubkey: Hex64
    sender_name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    destination_kind: Literal["dm", "topic", "queue"]
    destination_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    priority: Literal["now", "next", "low"]
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    meta: dict[str, Any] | None = None
    body_hash: Hex64
    body: Body
    created_at: Annotated[str, StringConstraints(max_length=40)]
    epoch_key: EpochKey | None = None  # topic_box only: the recipient's own sealed key


class Push(HistoryItem):
    """A delivery from the broker to a member (the daemon validates it: R-IN-5)."""

    type: Literal["push"]
    delivery_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]


_PUSH: Final[TypeAdapter[Push]] = TypeAdapter(Push)
_HISTORY_ITEM: Final[TypeAdapter[HistoryItem]] = TypeAdapter(HistoryItem)


def parse_history_item(doc: dict[str, Any]) -> HistoryItem:
    """Validate one ``topic_history`` item. Raises FrameError ``invalid_frame``."""
    try:
        return _HISTORY_ITEM.validate_python(doc)
    except ValidationError as exc:
        raise FrameError("invalid_frame", _describe(exc.errors()[0], tagged=False), doc) from None


def parse_push(doc: dict[str, Any]) -> Push:
    """Validate a push (already decoded). Raises FrameError ``invalid_frame``."""
    try:
        return _PUSH.validate_python(doc)
    except ValidationError as exc:
        raise FrameError("invalid_frame", _describe(exc.errors()[0], tagged=False), doc) from None


ClientFrame = (Join | Hello | FeatureNegotiationRequest | Send | ClientAck | Subscribe
               | Unsubscribe | ListTopics | TopicHistory | JoinGroup | LeaveGroup | ListGroups
               | ListPeers | SetProfile | BlobBegin | BlobPut | BlobStatus | BlobGet | ListBlobs
               | TopicKeys | TopicEpoch)

# Fields that exist only with a feature. A broker that does not advertise the feature
# refuses them as unknown fields, exactly as a model without them would.
FEATURE_FIELDS: Final = {MEMBER_SESSIONS: ("set_profile", "sessions")}

_ADAPTER: Final[TypeAdapter[ClientFrame]] = TypeAdapter(
    Annotated[ClientFrame, Field(discriminator="type")])
FRAME_TYPES: Final = frozenset(
    m.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for m in (Join, Hello, FeatureNegotiationRequest, Send, ClientAck, Subscribe, Unsubscribe,
              ListTopics, TopicHistory, JoinGroup, LeaveGroup, ListGroups, ListPeers,
              SetProfile, BlobBegin, BlobPut, BlobStatus, BlobGet, ListBlobs, TopicKeys,
              TopicEpoch))


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Parse one text frame.

    Raises:
        FrameError: ``malformed_frame`` (not one strict JSON object, or no ``type``),
            ``unknown_type``, or ``invalid_frame`` naming the first bad field. It keeps
            the frame's type, ``req_id`` and ``client_message_id`` when they were usable,
            so the answer can be matched (a bad ``send`` still gets its ``send_result``).
    """
    return validate_client_frame(decode_frame(raw))


def decode_frame(raw: str | bytes) -> dict[str, Any]:
    """The frame's JSON object. Raises FrameError ``malformed_frame``."""
    try:
        return loads_object(raw)
    except JsonError as exc:
        raise FrameError("malformed_frame", f"frame is {exc}") from None


def validate_client_frame(doc: dict[str, Any], *,
                          features: Container[str] | None = None) -> ClientFrame:
    """A decoded frame as its model (see :func:`parse_client_frame` for the errors).

    ``features`` is what the broker advertises; the fields of :data:`FEATURE_FIELDS` whose
    feature is not in it are unknown fields. None takes every field.
    """
    kind = doc.get("type")
    if not isinstance(kind, str):
        raise FrameError("malformed_frame", "frame has no string 'type'", doc)
    if kind not in FRAME_TYPES:
        raise FrameError("unknown_type", f"unknown frame type {kind[:64]!r}", doc)
    if features is not None:
        for feature, (frame_type, name) in FEATURE_FIELDS.items():
            if kind == frame_type and name in doc and feature not in features:
                raise FrameError("invalid_frame", f"unknown field {name!r}", doc)
    try:
        return _ADAPTER.validate_python(doc)
    except ValidationError as exc:
        raise FrameError("invalid_frame", _describe(exc.errors()[0]), doc) from None


def _describe(error: Any, *, tagged: bool = True) -> str:
    loc = [str(p) for p in error["loc"]]
    field = ".".join(loc[1:] if tagged else loc) or "frame"  # a union's loc[0] is its tag
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    if error["type"] == "missing":
        return f"missing field {field!r}"
    return f"field {field!r}: {error['msg']}"
