"""B1 of an accept and its answers (broker/accept.py), without a broker process.

The same checks through a running broker are tests/integration/broker/test_accept.py;
these pin each refusal and each ``send_result`` shape of docs/protocol.md one by one.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from claudemesh.broker.accept import check_send, error_result, send_result
from claudemesh.broker.store.base import AcceptKind, AcceptOutcome
from claudemesh.errors import InvalidEnvelope, PayloadTooLarge, RateLimited
from claudemesh.protocol.fingerprint import canonical_meta, request_fingerprint
from claudemesh.protocol.frames import PlainBody, Send

PUB = "ab" * 32
NONCE = "A" * 32  # 24 bytes of base64


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plain(text: str = "hello", *, ref: str = "general", **fields: Any) -> Send:
    doc: dict[str, Any] = {
        "type": "send", "req_id": "r-1", "client_message_id": "c-1", "envelope_version": "1",
        "destination_kind": "topic", "destination_ref": ref, "priority": "next",
        "body_hash": sha(text), "body": {"kind": "plain", "text": text}}
    return Send.model_validate({**doc, **fields})


def boxed(size: int = 32, *, ref: str = PUB, **fields: Any) -> Send:
    ciphertext = base64.b64encode(b"\x01" * size).decode("ascii")
    doc: dict[str, Any] = {
        "type": "send", "req_id": "r-1", "client_message_id": "c-1", "envelope_version": "1",
        "destination_kind": "dm", "destination_ref": ref, "priority": "now",
        "body_hash": "cd" * 32, "body": {"kind": "crypto_box", "nonce": NONCE,
                                         "ciphertext": ciphertext}}
    return Send.model_validate({**doc, **fields})


def refusal(frame: Send, *, inline_bytes: int = 65_536) -> InvalidEnvelope:
    with pytest.raises(InvalidEnvelope) as caught:
        check_send(frame, inline_bytes=inline_bytes)
    return caught.value


# check_send: what passes, and the fingerprint it returns


def test_a_topic_send_is_fingerprinted_over_its_canonical_meta_and_body_hash() -> None:
    meta = {"z": 1, "a": [1.5, "é"]}
    frame = plain("deploy", ref="@ops", priority="now", reply_to="01PREVIOUS", meta=meta)
    assert check_send(frame, inline_bytes=100) == request_fingerprint(
        destination_kind="topic", destination_ref="@ops", reply_to_id="01PREVIOUS",
        priority="now", meta_canonical=canonical_meta(meta), body_hash_hex=sha("deploy"))


def test_a_dm_is_fingerprinted_over_the_declared_body_hash_it_cannot_check() -> None:
    assert check_send(boxed(), inline_bytes=100) == request_fingerprint(
        destination_kind="dm", destination_ref=PUB, reply_to_id=None, priority="now",
        meta_canonical=b"", body_hash_hex="cd" * 32)


@pytest.mark.parametrize("ref", ["general", "@ops", "*", "a-b_c.1"])
def test_topic_group_and_broadcast_refs_pass(ref: str) -> None:
    assert len(check_send(plain(ref=ref), inline_bytes=100)) == 32


def test_meta_order_does_not_change_the_fingerprint() -> None:
    one = check_send(plain(meta={"a": 1, "b": 2}), inline_bytes=100)
    assert check_send(plain(meta={"b": 2, "a": 1}), inline_bytes=100) == one
    assert check_send(plain(meta={"a": 1, "b": 3}), inline_bytes=100) != one


# check_send: each B1 refusal


def test_another_envelope_version_is_refused() -> None:
    assert "unsupported envelope_version '2'" in refusal(plain(envelope_version="2")).detail


@pytest.mark.parametrize("ref", ["general", "@", "@-x", "*"])
def test_a_queue_ref_is_an_at_group(ref: str) -> None:
    """``queue`` is anycast (issue 15): to a group only."""
    assert "@group (anycast)" in refusal(plain(destination_kind="queue", ref=ref)).detail


def test_a_queue_body_is_plain_and_an_at_group_passes() -> None:
    assert "plain text" in refusal(boxed(destination_kind="queue", ref="@ops")).detail
    check_send(plain(destination_kind="queue", ref="@ops"), inline_bytes=1024)


@pytest.mark.parametrize("ref", ["AB" * 32, "ab" * 31, "general"])
def test_a_dm_ref_must_be_a_lower_case_hex_pubkey(ref: str) -> None:
    assert "64-hex" in refusal(boxed(ref=ref)).detail


def test_a_dm_in_plain_text_is_refused() -> None:
    frame = plain(destination_kind="dm", ref=PUB)
    assert "must be crypto_box" in refusal(frame).detail


def test_a_topic_with_an_encrypted_body_is_refused() -> None:
    frame = boxed(destination_kind="topic", ref="general")
    assert "plain text" in refusal(frame).detail


@pytest.mark.parametrize("ref", ["@", "two words", "#general", "**"])
def test_a_topic_ref_that_is_no_name_is_refused(ref: str) -> None:
    assert "topic name" in refusal(plain(ref=ref)).detail


def test_a_plain_body_whose_hash_differs_is_refused_with_the_reason() -> None:
    error = refusal(plain("hello", body_hash=sha("HELLO")))
    assert error.to_wire() == {"error": "invalid_envelope",
                               "detail": "body_hash is not the sha256 of the plain body",
                               "reason": "body_hash_mismatch"}


def test_ciphertext_that_is_not_base64_is_refused() -> None:
    frame = boxed()
    frame = frame.model_copy(update={"body": frame.body.model_copy(update={"ciphertext": "A"})})
    assert refusal(frame).detail == "ciphertext is not valid base64"


def test_meta_rfc8785_cannot_write_is_refused() -> None:
    assert "canonicalised" in refusal(plain(meta={"n": 2**60})).detail


def test_a_lone_surrogate_the_model_let_through_is_still_refused() -> None:
    bad = plain().model_copy(update={"reply_to": "x\udc00"})
    assert "unpaired surrogate" in refusal(bad).detail
    text = "hi\ud800"
    body = PlainBody.model_construct(kind="plain", text=text)
    assert "unpaired surrogate" in refusal(plain().model_copy(update={"body": body})).detail


def test_plain_size_is_counted_in_utf8_bytes_up_to_the_limit() -> None:
    text = "é" * 50  # 100 bytes, 50 characters
    assert check_send(plain(text), inline_bytes=100)
    with pytest.raises(PayloadTooLarge) as caught:
        check_send(plain(text), inline_bytes=99)
    assert caught.value.to_wire() == {
        "error": "payload_too_large",
        "detail": "body of 100 bytes exceeds max_payload.inline_bytes (99)", "limit": 99}


def test_box_size_is_counted_in_decoded_ciphertext_bytes() -> None:
    assert check_send(boxed(64), inline_bytes=64)  # its base64 is 88 characters
    with pytest.raises(PayloadTooLarge) as caught:
        check_send(boxed(65), inline_bytes=64)
    assert caught.value.fields == {"limit": 64}


def test_the_size_limit_is_checked_after_the_kind_and_hash() -> None:
    # A bad hash on an oversized body is the 400, not the 413: the body is not trusted yet.
    assert refusal(plain("x" * 10, body_hash=sha("y")), inline_bytes=1).fields == {
        "reason": "body_hash_mismatch"}


# send_result: §4.5b's three answers


FINGERPRINT = bytes(range(32))


def outcome(kind: AcceptKind, **fields: Any) -> AcceptOutcome:
    base: dict[str, Any] = {"broker_message_id": "01BROKER", "history_id": "01HISTORY",
                            "stored_fingerprint": FINGERPRINT,
                            "first_seen_at": 1_764_165_600_123, "history_available": True}
    return AcceptOutcome(kind, **{**base, **fields})


def test_created_is_201_with_the_ids_and_nothing_of_a_duplicate() -> None:
    assert send_result("r-1", "c-1", outcome(AcceptKind.CREATED, recipients=(("u2", 7),))) == {
        "type": "send_result", "req_id": "r-1", "client_message_id": "c-1", "code": 201,
        "broker_message_id": "01BROKER", "history_id": "01HISTORY", "duplicate": False}


def test_a_duplicate_is_200_with_the_first_ids_history_and_first_seen_time() -> None:
    assert send_result("r-2", "c-1", outcome(AcceptKind.DUPLICATE)) == {
        "type": "send_result", "req_id": "r-2", "client_message_id": "c-1", "code": 200,
        "broker_message_id": "01BROKER", "history_id": "01HISTORY", "duplicate": True,
        "history_available": True, "first_seen_at": "2025-11-26T14:00:00.123Z"}


def test_a_pruned_duplicate_says_its_history_is_gone() -> None:
    answer = send_result("r-2", "c-1", outcome(AcceptKind.DUPLICATE, history_id=None,
                                               history_available=False))
    assert (answer["history_id"], answer["history_available"]) == (None, False)


def test_a_conflict_is_409_with_16_hex_of_the_stored_fingerprint_and_no_ids() -> None:
    assert send_result("r-3", "c-1", outcome(AcceptKind.CONFLICT)) == {
        "type": "send_result", "req_id": "r-3", "client_message_id": "c-1", "code": 409,
        "error": "idempotency_key_reused", "conflict": "request_fingerprint_mismatch",
        "broker_fingerprint_prefix": "0001020304050607"}


def test_an_error_result_carries_the_status_and_the_error_fields() -> None:
    assert error_result("r-4", "c-9", PayloadTooLarge("too big", limit=10)) == {
        "type": "send_result", "req_id": "r-4", "client_message_id": "c-9", "code": 413,
        "error": "payload_too_large", "detail": "too big", "limit": 10}
    answer = error_result("r-5", "c-9", RateLimited("slow down", retry_after_ms=250))
    assert (answer["code"], answer["error"], answer["retry_after_ms"]) == (
        429, "rate_limited", 250)
