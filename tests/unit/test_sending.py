"""sending.py: the one way a send becomes an envelope, checked against the broker's B1.

Real keys and real crypto_box: a DM is opened with the recipient's secret to see what
was sealed, and every wire frame is parsed and checked by broker/accept.py, so the daemon
and the broker are seen to agree on the fingerprint byte for byte.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest

from claudemesh.broker.accept import check_send
from claudemesh.config import MeshConfig
from claudemesh.crypto import (
    BoxedBody,
    CryptoFailure,
    MemberKey,
    box_decrypt,
    new_topic_key,
    secretbox_decrypt,
    verify,
)
from claudemesh.errors import InvalidRequest, PayloadTooLarge, UnknownDestination
from claudemesh.protocol.destination import Destination, DestinationKind
from claudemesh.protocol.envelope import FrozenSend, wire_part
from claudemesh.protocol.fingerprint import canonical_meta, request_fingerprint
from claudemesh.protocol.frames import Send
from claudemesh.protocol.sealed import (
    FileRef,
    Plain,
    ReceiptItem,
    ReceiptPath,
    Receipts,
    ReceiptState,
    SealedFile,
    SealedMessage,
    open_plaintext,
)
from claudemesh.protocol.strictjson import dumps, loads_object
from claudemesh.sending import (
    BOX_OVERHEAD,
    Prepared,
    prepare,
    prepare_file,
    prepare_receipts,
    reseal,
    wire_bytes,
    wire_frame,
    with_req_id,
)

ALICE = MemberKey.generate()
BOB = MemberKey.generate()
MESH = MeshConfig(slug="demo", mesh_id="m-1", member_id="u-alice", display_name="alice",
                  broker_url="ws://127.0.0.1:1/ws", pubkey=ALICE.pubkey,
                  secret_key=ALICE.secret_key)
TOPIC = Destination(DestinationKind.TOPIC, "general")
DM = Destination(DestinationKind.DM, BOB.pubkey)


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def send(dest: Destination, message: str = "hello", *, priority: str = "next",
         reply_to: str | None = None, meta: dict[str, Any] | None = None,
         inline_limit: int | None = None, to_session: str | None = None,
         from_session: str | None = None) -> Prepared:
    return prepare(MESH, dest, message, priority=priority, reply_to=reply_to, meta=meta,
                   inline_limit=inline_limit, to_session=to_session,
                   from_session=from_session)


def opened(prepared: Prepared) -> bytes:
    """What BOB reads from a DM ALICE prepared."""
    body = prepared.frozen.body
    assert body["kind"] == "crypto_box"
    return box_decrypt(BoxedBody(body["nonce"], body["ciphertext"]),
                       recipient_secret_hex=BOB.secret_key, sender_pubkey_hex=ALICE.pubkey)


def broker_fingerprint(prepared: Prepared, cmid: str = "c-1") -> bytes:
    """The fingerprint the broker computes from the frame the daemon would send."""
    frame = Send.model_validate({**wire_frame(cmid, prepared.frozen), "req_id": "r-1"})
    return check_send(frame, inline_bytes=65_536)


def test_a_topic_send_is_plain_text_with_its_hash_and_fingerprint() -> None:
    meta = {"b": [1, "é"], "a": 2}
    prepared = send(Destination(DestinationKind.TOPIC, "@ops"), "déploy", priority="now",
                    reply_to="01PREV", meta=meta)
    digest = sha("déploy".encode())
    assert prepared.frozen.body == {"kind": "plain", "text": "déploy"}
    assert (prepared.frozen.mesh, prepared.frozen.destination_kind,
            prepared.frozen.destination_ref, prepared.frozen.priority,
            prepared.frozen.reply_to, prepared.frozen.meta, prepared.frozen.body_hash) == (
        "demo", "topic", "@ops", "now", "01PREV", meta, digest)
    assert prepared.fingerprint == request_fingerprint(
        destination_kind="topic", destination_ref="@ops", reply_to_id="01PREV",
        priority="now", meta_canonical=canonical_meta(meta), body_hash_hex=digest)
    assert broker_fingerprint(prepared) == prepared.fingerprint


def test_empty_meta_is_frozen_as_none_and_fingerprints_as_no_meta() -> None:
    assert send(TOPIC, meta={}).frozen.meta is None
    assert send(TOPIC, meta={}).fingerprint == send(TOPIC, meta=None).fingerprint


def test_a_dm_opens_for_the_recipient_to_exactly_the_message() -> None:
    prepared = send(DM, "secret plan")
    assert opened(prepared) == b"secret plan"
    assert open_plaintext(opened(prepared)) == Plain("secret plan")
    assert prepared.frozen.body_hash == sha(b"secret plan")
    assert broker_fingerprint(prepared) == prepared.fingerprint


def test_a_dm_is_encrypted_anew_but_fingerprints_the_same() -> None:
    one, two = send(DM, "again"), send(DM, "again")
    assert one.frozen.body["nonce"] != two.frozen.body["nonce"]
    assert one.fingerprint == two.fingerprint
    assert send(DM, "again!").fingerprint != one.fingerprint


def test_a_dm_with_sessions_seals_them_and_its_hash_covers_them() -> None:
    prepared = send(DM, "review this", to_session="build", from_session="review")
    raw = opened(prepared)
    assert open_plaintext(raw) == SealedMessage("review this", "build", "review")
    assert prepared.frozen.body_hash == sha(raw) != sha(b"review this")
    assert prepared.fingerprint != send(DM, "review this").fingerprint
    assert prepared.fingerprint != send(DM, "review this", to_session="other").fingerprint
    assert broker_fingerprint(prepared) == prepared.fingerprint


def test_a_topic_carries_no_sessions() -> None:
    prepared = send(TOPIC, "hi all", to_session="build", from_session="review")
    assert prepared == send(TOPIC, "hi all")


def test_topic_size_is_the_utf8_text_up_to_the_limit() -> None:
    assert send(TOPIC, "é" * 50, inline_limit=100)
    with pytest.raises(PayloadTooLarge) as caught:
        send(TOPIC, "é" * 50, inline_limit=99)
    assert caught.value.fields == {"limit": 99}
    assert "message of 100 bytes" in caught.value.detail and "'demo'" in caught.value.detail


def test_dm_size_counts_the_box_overhead_the_broker_will_see() -> None:
    limit = 100
    fits = send(DM, "x" * (limit - BOX_OVERHEAD), inline_limit=limit)
    assert len(base64.b64decode(fits.frozen.body["ciphertext"])) == limit
    with pytest.raises(PayloadTooLarge):
        send(DM, "x" * (limit - BOX_OVERHEAD + 1), inline_limit=limit)


def test_no_negotiated_limit_means_no_size_check() -> None:
    assert send(TOPIC, "x" * 200_000, inline_limit=None).frozen.body["text"] == "x" * 200_000


def test_meta_rfc8785_cannot_write_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="field 'meta' cannot be canonicalised"):
        send(TOPIC, meta={"n": 2**60})


def test_a_dm_to_a_key_that_is_no_curve_point_is_an_unknown_destination() -> None:
    with pytest.raises(UnknownDestination) as caught:
        send(Destination(DestinationKind.DM, "ab" * 32))
    assert caught.value.fields == {"to": "ab" * 32}


def test_the_wire_frame_is_the_frozen_envelope_under_its_id() -> None:
    prepared = send(TOPIC, "hi", meta={"k": 1}, reply_to="01PREV")
    assert wire_frame("c-7", prepared.frozen) == {
        "type": "send", "client_message_id": "c-7", "envelope_version": "1",
        "destination_kind": "topic", "destination_ref": "general", "priority": "next",
        "reply_to": "01PREV", "meta": {"k": 1}, "body_hash": sha(b"hi"),
        "body": {"kind": "plain", "text": "hi"}}


RECEIPTS = Receipts("m-1", ALICE.pubkey, BOB.pubkey, (
    ReceiptItem(ReceiptState.STORED, "c-1", "b-1", None, None, 1_000),
    ReceiptItem(ReceiptState.SURFACED, "c-1", "b-1", "build", ReceiptPath.HOOK, 2_000)))


def test_receipts_go_to_the_sender_as_a_sealed_signed_dm() -> None:
    prepared = prepare_receipts(MESH, RECEIPTS)
    assert (prepared.frozen.destination_kind, prepared.frozen.destination_ref,
            prepared.frozen.priority, prepared.frozen.meta) == ("dm", BOB.pubkey, "next", None)
    got = open_plaintext(opened(prepared))
    assert isinstance(got, Receipts)
    assert got.items == RECEIPTS.items and got.sender == BOB.pubkey
    verify(ALICE.pubkey, got.statement(), got.signature)  # raises unless ALICE signed it
    assert broker_fingerprint(prepared) == prepared.fingerprint


def test_the_same_receipt_batch_is_the_same_message() -> None:
    one, two = prepare_receipts(MESH, RECEIPTS), prepare_receipts(MESH, RECEIPTS)
    assert one.fingerprint == two.fingerprint
    assert one.frozen.body_hash == two.frozen.body_hash
    fewer = Receipts("m-1", ALICE.pubkey, BOB.pubkey, RECEIPTS.items[:1])
    assert prepare_receipts(MESH, fewer).fingerprint != one.fingerprint


# The drain's send, spliced from the stored envelope, against what the daemon sent before
# issue 13: decode the payload, build the frame, add the req_id, encode it all.


def old_frame(cmid: str, frozen: FrozenSend, req_id: str) -> dict[str, Any]:
    """The frame exactly as sending.wire_frame and BrokerLink.submit built it."""
    return {**{"type": "send", "client_message_id": cmid,
               "envelope_version": frozen.envelope_version,
               "destination_kind": frozen.destination_kind,
               "destination_ref": frozen.destination_ref, "priority": frozen.priority,
               "reply_to": frozen.reply_to, "meta": frozen.meta,
               "body_hash": frozen.body_hash, "body": frozen.body}, "req_id": req_id}


def old_layout(frozen: FrozenSend) -> bytes:
    """A payload as FrozenSend.to_bytes wrote it before issue 13 (field order)."""
    return dumps({name: getattr(frozen, name) for name in FrozenSend.__slots__})


SAMPLES = [
    pytest.param(lambda: send(TOPIC, "hi"), id="plain"),
    pytest.param(lambda: send(TOPIC, "déploy 😀 日本語 עברית \u2028 \"q\" \\ \n\t\x01 \x7f",
                              reply_to="01PREV", priority="now",
                              meta={"é": [1, 2.5, -0.0, 1e300, True, None, {"z": "😀"}],
                                    "a": "x" * 300}), id="unicode-and-meta"),
    pytest.param(lambda: send(TOPIC, "ü" * 600_000), id="large-unicode-body"),
    pytest.param(lambda: send(DM, "psst" * 50_000, to_session="build"), id="large-dm"),
    pytest.param(lambda: prepare_receipts(MESH, RECEIPTS), id="receipts"),
]


@pytest.mark.parametrize("make", SAMPLES)
@pytest.mark.parametrize("cmid", ["01JC8Z6Y3T0Q9V1W2X3Y4Z5A6B", 'odd"\\id~!', "x" * 128])
def test_the_spliced_send_is_byte_for_byte_the_old_encoding(make: Any, cmid: str) -> None:
    frozen = make().frozen
    payload = frozen.to_bytes()
    assert wire_part(payload, "demo") is not None  # the splice, not the fallback, is tested
    for req_id in ("1", "4294967296"):
        spliced = with_req_id(wire_bytes(cmid, "demo", payload), req_id)
        expected = old_frame(cmid, FrozenSend.from_bytes(payload), req_id)
        assert spliced == dumps(expected)
        assert loads_object(spliced) == expected  # the broker's strict parser takes it
        assert Send.model_validate(loads_object(spliced)).client_message_id == cmid


@pytest.mark.parametrize("make", SAMPLES[:2])
def test_payloads_from_before_the_layout_and_odd_ids_still_encode_the_old_way(
        make: Any) -> None:
    frozen = make().frozen
    new, old = frozen.to_bytes(), old_layout(frozen)
    assert len(new) == len(old) and new != old  # same members: payload_bytes is unchanged
    assert wire_part(old, "demo") is None and wire_part(new, "work") is None
    for cmid, payload, mesh in [("c-1", old, "demo"), ("c-1", new, "work"),
                                ("has space", new, "demo"), ("dé", new, "demo")]:
        assert with_req_id(wire_bytes(cmid, mesh, payload), "7") == dumps(
            old_frame(cmid, frozen, "7"))


def test_the_wire_frame_dict_and_the_spliced_bytes_agree() -> None:
    prepared = send(TOPIC, "hi", meta={"k": 1}, reply_to="01PREV")
    assert wire_bytes("c-7", "demo", prepared.frozen.to_bytes()) == dumps(
        wire_frame("c-7", prepared.frozen))


def test_req_id_goes_last_as_the_dict_merge_put_it() -> None:
    for frame in ({}, {"type": "list_peers"}, {"a": [1, {"b": "é"}], "z": None}):
        assert with_req_id(dumps(frame), "12") == dumps({**frame, "req_id": "12"})


def test_the_splice_decodes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = send(TOPIC, "hi").frozen.to_bytes()

    def decoded(cls: type[FrozenSend], raw: bytes) -> FrozenSend:
        raise AssertionError("the payload was decoded")

    monkeypatch.setattr(FrozenSend, "from_bytes", classmethod(decoded))
    assert wire_bytes("c-1", "demo", payload).endswith(payload[len(b'{"mesh":"demo",'):])


def test_a_resealed_topic_post_keeps_everything_but_its_seal() -> None:
    """The drain's answer to ``stale_epoch``: the same plaintext under the new epoch's key,
    and the same fingerprint at the broker, so a retry still dedupes."""
    old, new = new_topic_key(), new_topic_key()
    first = prepare(MESH, Destination(DestinationKind.TOPIC, "news"), "sealed twice",
                    priority="now", reply_to="01PREV", meta={"a": 1}, inline_limit=None,
                    topic_key=(1, old))
    again = FrozenSend.from_bytes(reseal(first.frozen.to_bytes(), old, 2, new))
    body = again.body
    assert (body["kind"], body["epoch"]) == ("topic_box", 2)
    assert secretbox_decrypt(BoxedBody(body["nonce"], body["ciphertext"]), new) == (
        secretbox_decrypt(BoxedBody(first.frozen.body["nonce"],
                                    first.frozen.body["ciphertext"]), old))
    assert dataclasses.replace(again, body=first.frozen.body) == first.frozen
    assert broker_fingerprint(Prepared(first.fingerprint, again)) == first.fingerprint
    with pytest.raises(CryptoFailure):  # not the key it was sealed with
        reseal(first.frozen.to_bytes(), new, 2, new)
    with pytest.raises(CryptoFailure):  # a DM is never re-sealed
        reseal(send(DM).frozen.to_bytes(), old, 2, new)


def test_a_file_reference_goes_to_a_member_or_sealed_to_an_encrypted_topic() -> None:
    ref = FileRef("F" * 26, "a.txt", 3, "ab" * 32, 131072, "cd" * 32, "ef" * 16)
    key = bytes(range(32))
    posted = prepare_file(MESH, TOPIC, ref, "see", priority="next", inline_limit=None,
                          topic_key=(4, key))
    body = posted.frozen.body
    assert (body["kind"], body["epoch"]) == ("topic_box", 4)
    raw = secretbox_decrypt(BoxedBody(body["nonce"], body["ciphertext"]), key)
    assert open_plaintext(raw) == SealedFile(ref, "see")
    again = prepare_file(MESH, TOPIC, ref, "see", priority="next", inline_limit=None,
                         topic_key=(5, bytes(32)))
    assert again.fingerprint == posted.fingerprint  # a retry under a later epoch dedupes
    for dest, topic_key in ((TOPIC, None), (Destination(DestinationKind.TOPIC, "@ops"), (1, key)),
                            (Destination(DestinationKind.TOPIC, "*"), (1, key))):
        with pytest.raises(InvalidRequest):  # never in the clear
            prepare_file(MESH, dest, ref, None, priority="next", inline_limit=None,
                         topic_key=topic_key)
