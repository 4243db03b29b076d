"""B1 of an accept (daemon-spec §4.6.2, R-BRK-5): checks with no side effects, then the
inputs of the store's one transaction, and the answer frames (§4.5b over WS, A-30).

B1 refuses, leaving no dedupe row: an unsupported envelope version or destination kind
(``queue`` is anycast and takes only an ``@group``), a body of the wrong kind for its
destination (DMs must be ``crypto_box``, so a DM can never travel in the clear by
mistake; a ``#topic`` takes ``plain`` until it has a key epoch and ``topic_box`` of an
existing epoch after, see :mod:`.topic_keys`; groups, anycast and the broadcast take
``plain``), a plain body whose hash is
not the declared ``body_hash``, meta that RFC 8785 cannot canonicalise, a body larger than
``max_payload.inline_bytes``, and the per-member rate limit. The fingerprint is then
recomputed from the fields the broker sees plus the declared ``body_hash`` (DESIGN §5.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    AcceptOutcome,
    Delivery,
    Member,
    SealedEpochKey,
)
from claudemesh.clock import iso_ms
from claudemesh.errors import ClaudemeshError, InvalidEnvelope, PayloadTooLarge
from claudemesh.protocol.destination import HEX64_RE, NAME_RE
from claudemesh.protocol.fingerprint import (
    ENVELOPE_VERSION,
    MetaError,
    canonical_meta,
    fingerprint_prefix,
    request_fingerprint,
)
from claudemesh.protocol.frames import BoxBody, PlainBody, Send, TopicBoxBody

__all__ = ["accept_input", "check_send", "deliveries_for", "error_result", "push_frame",
           "send_result"]

DAY_MS = 86_400_000


def check_send(frame: Send, *, inline_bytes: int) -> bytes:
    """B1 schema and size checks; returns the fingerprint. Raises 400/413 errors."""
    if frame.envelope_version != ENVELOPE_VERSION:
        raise InvalidEnvelope(f"unsupported envelope_version {frame.envelope_version!r};"
                              f" this broker speaks {ENVELOPE_VERSION!r}")
    _check_destination(frame)
    ref = frame.destination_ref
    size = _body_size(frame.body, frame.body_hash)
    if size > inline_bytes:
        raise PayloadTooLarge(f"body of {size} bytes exceeds max_payload.inline_bytes"
                              f" ({inline_bytes})", limit=inline_bytes)
    _utf8(frame.reply_to)
    try:  # also refuses lone surrogates inside meta
        meta = canonical_meta(frame.meta)
    except MetaError as exc:
        raise InvalidEnvelope(f"meta cannot be canonicalised (RFC 8785): {exc}") from None
    return request_fingerprint(
        destination_kind=frame.destination_kind, destination_ref=ref,
        reply_to_id=frame.reply_to, priority=frame.priority, meta_canonical=meta,
        body_hash_hex=frame.body_hash)


def _check_destination(frame: Send) -> None:
    """The ref must fit its kind, and the body kind must fit the destination."""
    ref = frame.destination_ref
    if frame.destination_kind == "queue":  # anycast: one member of a group (issue 15)
        if not (ref.startswith("@") and NAME_RE.fullmatch(ref[1:])):
            raise InvalidEnvelope("a queue destination_ref is an @group (anycast)")
        if not isinstance(frame.body, PlainBody):
            raise InvalidEnvelope("anycast bodies are plain text, as group bodies are")
    elif frame.destination_kind == "dm":
        if not HEX64_RE.fullmatch(ref):
            raise InvalidEnvelope("a dm destination_ref is a 64-hex lower-case pubkey")
        if not isinstance(frame.body, BoxBody):
            raise InvalidEnvelope("a dm body must be crypto_box: DMs are end-to-end encrypted")
    else:
        name = ref[1:] if ref.startswith("@") else ref
        if ref != "*" and not NAME_RE.fullmatch(name):
            raise InvalidEnvelope("a topic destination_ref is a topic name, @group or *")
        if isinstance(frame.body, BoxBody):
            raise InvalidEnvelope("topic, group and broadcast bodies are plain text or,"
                                  " for an encrypted #topic, topic_box")
        if isinstance(frame.body, TopicBoxBody) and (ref == "*" or ref.startswith("@")):
            raise InvalidEnvelope("topic_box bodies go to #topics only; groups and the"
                                  " broadcast are not end-to-end encrypted yet")


def _utf8(text: str | None) -> None:
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEnvelope("text with an unpaired surrogate is not valid Unicode") from None


def _body_size(body: PlainBody | BoxBody | TopicBoxBody, body_hash: str) -> int:
    if isinstance(body, PlainBody):
        _utf8(body.text)
        raw = body.text.encode("utf-8")
        if hashlib.sha256(raw).hexdigest() != body_hash:
            raise InvalidEnvelope("body_hash is not the sha256 of the plain body",
                                  reason="body_hash_mismatch")
        return len(raw)
    try:
        return len(base64.b64decode(body.ciphertext, validate=True))
    except binascii.Error:
        raise InvalidEnvelope("ciphertext is not valid base64") from None


def accept_input(frame: Send, fingerprint: bytes, *, sender: Member, mesh_dedupe_mode: str,
                 retention_days: int, broker_message_id: str, now_ms: int) -> AcceptInput:
    expires = None if mesh_dedupe_mode == "permanent" else now_ms + retention_days * DAY_MS
    return AcceptInput(
        mesh_id=sender.mesh_id, sender_member_id=sender.id, sender_pubkey=sender.pubkey,
        sender_name=sender.display_name, broker_message_id=broker_message_id,
        client_message_id=frame.client_message_id, fingerprint=fingerprint,
        destination_kind=frame.destination_kind, destination_ref=frame.destination_ref,
        priority=frame.priority, reply_to=frame.reply_to,
        meta_json=None if not frame.meta else json.dumps(frame.meta, ensure_ascii=False),
        body_json=frame.body.model_dump_json(), body_hash=frame.body_hash, now_ms=now_ms,
        dedupe_expires_at=expires,
        epoch=frame.body.epoch if isinstance(frame.body, TopicBoxBody) else None)


def deliveries_for(frame: Send, request: AcceptInput, outcome: AcceptOutcome,
                   epoch_keys: dict[str, SealedEpochKey] | None = None) -> list[Delivery]:
    """The pushes a CREATED accept owes its recipients, built without another read;
    a topic_box push carries its recipient's sealed key from ``epoch_keys``."""
    body = frame.body.model_dump()
    keys = epoch_keys or {}
    return [Delivery(delivery_id, member_id, request.mesh_id, request.broker_message_id,
                     request.client_message_id, outcome.history_id, request.sender_pubkey,
                     request.sender_name, request.destination_kind, request.destination_ref,
                     request.priority, request.reply_to, frame.meta or None, body,
                     request.body_hash, request.now_ms,
                     None if (k := keys.get(member_id)) is None else k.wire())
            for member_id, delivery_id in outcome.recipients]


def send_result(req_id: str, client_message_id: str, outcome: AcceptOutcome) -> dict[str, Any]:
    """§4.5b's three answers, carried in a ``send_result`` frame with ``code`` (A-30)."""
    base = {"type": "send_result", "req_id": req_id, "client_message_id": client_message_id}
    if outcome.kind is AcceptKind.CONFLICT:
        return {**base, "code": 409, "error": "idempotency_key_reused",
                "conflict": "request_fingerprint_mismatch",
                "broker_fingerprint_prefix": fingerprint_prefix(outcome.stored_fingerprint)}
    duplicate = outcome.kind is AcceptKind.DUPLICATE
    frame = {**base, "code": 200 if duplicate else 201,
             "broker_message_id": outcome.broker_message_id,
             "history_id": outcome.history_id, "duplicate": duplicate}
    if duplicate:
        frame["history_available"] = outcome.history_available
        frame["first_seen_at"] = iso_ms(outcome.first_seen_at)
    return frame


def error_result(req_id: str, client_message_id: str, exc: ClaudemeshError) -> dict[str, Any]:
    return {"type": "send_result", "req_id": req_id, "client_message_id": client_message_id,
            "code": exc.http_status, **exc.to_wire()}


def push_frame(d: Delivery) -> dict[str, Any]:
    frame = {
        "type": "push", "delivery_id": str(d.delivery_id), "mesh_id": d.mesh_id,
        "client_message_id": d.client_message_id, "broker_message_id": d.broker_message_id,
        "history_id": d.history_id, "sender_pubkey": d.sender_pubkey,
        "sender_name": d.sender_name, "destination_kind": d.destination_kind,
        "destination_ref": d.destination_ref, "priority": d.priority, "reply_to": d.reply_to,
        "meta": d.meta, "body": d.body, "body_hash": d.body_hash,
        "created_at": iso_ms(d.created_at),
    }
    if d.body.get("kind") == "topic_box":  # the recipient's own sealed key, or null
        frame["epoch_key"] = d.epoch_key
    return frame
