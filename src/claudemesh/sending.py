"""How a send becomes a wire envelope, in one place for every sender.

The daemon's ``/v1/send`` (then its drain), and ``claudemesh send --no-daemon`` going
straight to the broker, both use :func:`prepare` and :func:`wire_frame`. So a message has
the same fingerprint and the same envelope whichever way it travels, and a retry with the
same ``client_message_id`` is recognised by the broker either way (DESIGN §5.2).

The drain does not rebuild the frame on each attempt: :func:`wire_bytes` splices the id
around the envelope's stored encoding, and :func:`with_req_id` appends the attempt's
``req_id``, giving the same bytes as encoding :func:`wire_frame` plus ``req_id`` would.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.config import MeshConfig
from claudemesh.crypto import (
    BoxedBody,
    CryptoFailure,
    MemberKey,
    box_encrypt,
    secretbox_decrypt,
    secretbox_encrypt,
)
from claudemesh.errors import InvalidRequest, PayloadTooLarge, UnknownDestination
from claudemesh.protocol.destination import Destination, DestinationKind
from claudemesh.protocol.envelope import WIRE_FIELDS, FrozenSend, wire_part
from claudemesh.protocol.fingerprint import MetaError, canonical_meta, request_fingerprint
from claudemesh.protocol.ids import is_valid_client_message_id
from claudemesh.protocol.sealed import FileRef, Receipts, seal_file, seal_message, seal_receipts
from claudemesh.protocol.strictjson import dumps

__all__ = ["BOX_OVERHEAD", "Prepared", "prepare", "prepare_file", "prepare_receipts", "reseal",
           "sign_receipts",
           "wire_bytes", "wire_frame", "with_req_id"]

BOX_OVERHEAD: Final = 16  # crypto_box's (and secretbox's) MAC: the broker counts ciphertext
_SEND_HEAD: Final = b'{"type":"send","client_message_id":'


@dataclass(frozen=True, slots=True)
class Prepared:
    fingerprint: bytes
    frozen: FrozenSend


def prepare(mesh: MeshConfig, dest: Destination, message: str, *, priority: str,
            reply_to: str | None, meta: dict[str, Any] | None,
            inline_limit: int | None, to_session: str | None = None,
            from_session: str | None = None,
            topic_key: tuple[int, bytes] | None = None) -> Prepared:
    """Check size, encrypt a DM to its recipient, fingerprint, and freeze the envelope.

    A DM with a session on either end carries a sealed plaintext (protocol.sealed), and
    its ``body_hash`` covers the sessions too; topics carry no sessions. A ``#topic`` post
    with ``topic_key`` (epoch, key) is sealed with that epoch's key (``topic_box``); the
    ``body_hash`` is of the plaintext either way, so the fingerprint does not depend on
    the epoch and a retry dedupes.

    Raises:
        PayloadTooLarge: larger than the broker's negotiated ``inline_bytes`` (A-47).
        InvalidRequest: ``meta`` cannot be canonicalised (RFC 8785).
        UnknownDestination: the DM pubkey is not a valid ed25519 key.
    """
    is_dm = dest.kind is DestinationKind.DM
    raw = seal_message(message, to_session=to_session, from_session=from_session) if (
        is_dm and (to_session or from_session)) else message.encode("utf-8")
    return _prepare_raw(mesh, dest, raw, message, priority=priority, reply_to=reply_to,
                        meta=meta, inline_limit=inline_limit,
                        topic_key=None if is_dm else topic_key)


def prepare_file(mesh: MeshConfig, dest: Destination, ref: FileRef, message: str | None, *,
                 priority: str, inline_limit: int | None,
                 topic_key: tuple[int, bytes] | None = None) -> Prepared:
    """The message that hands a shared file over: the reference and its key, sealed
    inside a DM's crypto_box, or a ``#topic`` post sealed with the epoch key
    ``topic_key`` (the broker sees neither). Never in the clear: groups and broadcasts
    have no key, and a topic needs one.

    Raises:
        InvalidRequest: ``dest`` is neither a DM nor a ``#topic`` with ``topic_key``.
        PayloadTooLarge / UnknownDestination: as :func:`prepare`.
    """
    is_topic = dest.kind is DestinationKind.TOPIC and dest.ref[0] not in "@*"
    if dest.kind is not DestinationKind.DM and not (is_topic and topic_key is not None):
        raise InvalidRequest("files go to one member (a DM) or an encrypted #topic")
    return _prepare_raw(mesh, dest, seal_file(ref, message), "", priority=priority,
                        reply_to=None, meta=None, inline_limit=inline_limit,
                        topic_key=topic_key if is_topic else None)


def sign_receipts(mesh: MeshConfig, receipts: Receipts) -> Receipts:
    """The batch with this member's signature over its statement."""
    signature = MemberKey.from_secret(mesh.secret_key).sign(receipts.statement())
    return Receipts(receipts.mesh_id, receipts.recipient, receipts.sender, receipts.items,
                    signature)


def prepare_receipts(mesh: MeshConfig, receipts: Receipts) -> Prepared:
    """Signed receipts as a sealed DM back to the messages' sender. Deterministic in
    everything the fingerprint covers (ed25519 signs deterministically), so a resend of
    the same batch is the same message.

    Raises:
        UnknownDestination: the sender's key is not a valid ed25519 key.
    """
    signed = sign_receipts(mesh, receipts)
    return _prepare_raw(mesh, Destination(DestinationKind.DM, receipts.sender),
                        seal_receipts(signed), "", priority="next", reply_to=None, meta=None,
                        inline_limit=None)


def _prepare_raw(mesh: MeshConfig, dest: Destination, raw: bytes, text: str, *,
                 priority: str, reply_to: str | None, meta: dict[str, Any] | None,
                 inline_limit: int | None,
                 topic_key: tuple[int, bytes] | None = None) -> Prepared:
    is_dm = dest.kind is DestinationKind.DM
    size = len(raw) + (BOX_OVERHEAD if is_dm or topic_key is not None else 0)
    if inline_limit is not None and size > inline_limit:
        raise PayloadTooLarge(f"message of {size} bytes exceeds the broker's max_payload"
                              f" ({inline_limit} bytes) for mesh {mesh.slug!r}",
                              limit=inline_limit)
    try:
        meta_canonical = canonical_meta(meta)
    except MetaError as exc:
        raise InvalidRequest(f"field 'meta' cannot be canonicalised (RFC 8785): {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    fingerprint = request_fingerprint(
        destination_kind=str(dest.kind), destination_ref=dest.ref, reply_to_id=reply_to,
        priority=priority, meta_canonical=meta_canonical, body_hash_hex=digest)
    body: dict[str, Any]
    if is_dm:
        body = _encrypt(raw, dest, mesh.secret_key)
    elif topic_key is not None:
        boxed = secretbox_encrypt(raw, topic_key[1])
        body = {"kind": "topic_box", "epoch": topic_key[0], "nonce": boxed.nonce,
                "ciphertext": boxed.ciphertext}
    else:
        body = {"kind": "plain", "text": text}
    frozen = FrozenSend(mesh=mesh.slug, destination_kind=str(dest.kind),
                        destination_ref=dest.ref, priority=priority, reply_to=reply_to,
                        meta=meta or None, body=body, body_hash=digest)
    return Prepared(fingerprint, frozen)


def reseal(payload: bytes, old_key: bytes, epoch: int, key: bytes) -> bytes:
    """A stored topic_box envelope sealed again under ``epoch`` (the broker refused the old
    epoch, ``stale_epoch``). Everything else stays: the ``body_hash`` is of the plaintext,
    so the fingerprint, and a retry's dedupe, do not change.

    Raises:
        CryptoFailure: the stored body is not a topic_box that opens with ``old_key``.
    """
    frozen = FrozenSend.from_bytes(payload)
    body = frozen.body
    if body.get("kind") != "topic_box":
        raise CryptoFailure("only a topic_box is re-sealed")
    raw = secretbox_decrypt(BoxedBody(str(body["nonce"]), str(body["ciphertext"])), old_key)
    boxed = secretbox_encrypt(raw, key)
    return dataclasses.replace(frozen, body={"kind": "topic_box", "epoch": epoch,
                                             "nonce": boxed.nonce,
                                             "ciphertext": boxed.ciphertext}).to_bytes()


def _encrypt(raw: bytes, dest: Destination, secret_key: str) -> dict[str, str]:
    """DMs are encrypted once, at accept, to the recipient (DESIGN §5.2)."""
    try:
        boxed = box_encrypt(raw, sender_secret_hex=secret_key, recipient_pubkey_hex=dest.ref)
    except CryptoFailure:
        raise UnknownDestination(f"{dest.ref[:16]}… is not a valid member public key",
                                 to=dest.ref) from None
    return {"kind": "crypto_box", "nonce": boxed.nonce, "ciphertext": boxed.ciphertext}


def wire_frame(client_message_id: str, frozen: FrozenSend) -> dict[str, Any]:
    """The broker ``send`` frame: the id plus the envelope frozen at accept."""
    frame: dict[str, Any] = {"type": "send", "client_message_id": client_message_id}
    for name in WIRE_FIELDS:
        frame[name] = getattr(frozen, name)
    return frame


def wire_bytes(client_message_id: str, mesh: str, payload: bytes) -> bytes:
    """``dumps(wire_frame(client_message_id, FrozenSend.from_bytes(payload)))``, spliced
    from the stored envelope without decoding it.

    The splice needs the envelope in :meth:`FrozenSend.to_bytes`'s layout and an id of
    printable ASCII (R-CMID-3), which every JSON encoder writes alike; anything else (a
    payload from before the layout) is decoded and encoded as before.
    """
    part = wire_part(payload, mesh) if is_valid_client_message_id(client_message_id) else None
    if part is None:
        return dumps(wire_frame(client_message_id, FrozenSend.from_bytes(payload)))
    return b"".join((_SEND_HEAD, dumps(client_message_id), b",", part))


def with_req_id(encoded: bytes, req_id: str) -> bytes:
    """``dumps({**frame, "req_id": req_id})`` for ``encoded = dumps(frame)``, a frame
    without a ``req_id``: the member goes last, as the dict merge puts it."""
    comma = b"," if len(encoded) > 2 else b""  # a compact empty object is b"{}"
    return b"".join((memoryview(encoded)[:-1], comma, b'"req_id":', dumps(req_id), b"}"))
