"""The R-ACC-2 lookup table through HTTP, for the states reachable without a broker:
no row, pending, aborted (inflight, done and dead are covered at store level in
tests/unit/daemon/store/test_outbox.py until the drain exists)."""

from __future__ import annotations

import re

from claudemesh.crypto import MemberKey
from helpers import DaemonHandle

PEER = MemberKey.generate().pubkey  # a valid key: DMs are encrypted to it at accept
PREFIX = re.compile(r"[0-9a-f]{16}")


def base(**over: object) -> dict[str, object]:
    body: dict[str, object] = {"to": "#general", "message": "hello", "client_message_id": "k-1"}
    body.update(over)
    return body


def test_first_send_returns_202_queued_and_persists_a_pending_row(daemon: DaemonHandle) -> None:
    resp = daemon.send(base())
    assert resp.status == 202
    assert resp.body["client_message_id"] == "k-1"
    assert resp.body["status"] == "queued"
    assert daemon.db_rows() == [("k-1", "pending", 0, None)]
    [item] = daemon.outbox()
    assert item["id"] == resp.body["outbox_id"]
    assert item["mesh"] == "demo"
    assert item["destination"] == "#general"
    assert item["priority"] == "next"


def test_pending_row_with_matching_fingerprint_returns_202_and_writes_nothing(
        daemon: DaemonHandle) -> None:
    first = daemon.send(base())
    again = daemon.send(base())
    assert again.status == 202
    assert again.body == first.body
    assert len(daemon.db_rows()) == 1


def test_pending_row_with_different_request_returns_409_with_both_prefixes(
        daemon: DaemonHandle) -> None:
    first = daemon.send(base())
    resp = daemon.send(base(message="DIFFERENT BODY"))
    assert resp.status == 409
    assert resp.body["error"] == "idempotency_key_reused"
    assert resp.body["conflict"] == "outbox_pending_fingerprint_mismatch"
    assert resp.body["client_message_id"] == "k-1"
    assert PREFIX.fullmatch(resp.body["daemon_fingerprint_prefix"])
    assert PREFIX.fullmatch(resp.body["request_fingerprint_prefix"])
    assert resp.body["daemon_fingerprint_prefix"] != resp.body["request_fingerprint_prefix"]
    [item] = daemon.outbox()
    assert item["fingerprint_prefix"] == resp.body["daemon_fingerprint_prefix"]
    assert item["id"] == first.body["outbox_id"]


def test_every_fingerprinted_field_makes_a_mismatch(daemon: DaemonHandle) -> None:
    assert daemon.send(base(meta={"a": 1})).status == 202
    variants = [
        {"to": "#other"},
        {"to": "@team"},
        {"to": "*"},
        {"to": PEER},
        {"priority": "now"},
        {"reply_to": "01JD3Y2M8Q6V1T0ZK5B7X9C4RW"},
        {"meta": {"a": 2}},
        {"meta": None},
        {"message": "hello "},
    ]
    for over in variants:
        resp = daemon.send({**base(meta={"a": 1}), **over})
        assert resp.status == 409, over
        assert resp.body["conflict"] == "outbox_pending_fingerprint_mismatch"
    assert len(daemon.db_rows()) == 1


def test_meta_key_order_does_not_change_the_fingerprint(daemon: DaemonHandle) -> None:
    assert daemon.send(base(meta={"z": 1, "a": {"y": 2, "b": [1.0, "x"]}})).status == 202
    resp = daemon.send(base(meta={"a": {"b": [1, "x"], "y": 2}, "z": 1}))
    assert resp.status == 202
    assert len(daemon.db_rows()) == 1


def test_empty_meta_and_absent_meta_are_the_same_request(daemon: DaemonHandle) -> None:
    assert daemon.send(base(meta={})).status == 202
    assert daemon.send(base()).status == 202
    assert daemon.send(base(meta=None)).status == 202
    assert len(daemon.db_rows()) == 1


def test_explicit_default_priority_is_the_same_request(daemon: DaemonHandle) -> None:
    assert daemon.send(base()).status == 202
    assert daemon.send(base(priority="next")).status == 202
    assert len(daemon.db_rows()) == 1


def test_aborted_rows_answer_409_for_match_and_mismatch(daemon: DaemonHandle) -> None:
    old = daemon.send(base())
    requeued = daemon.uds().call("POST", "/v1/outbox/requeue", {"id": old.body["outbox_id"]})
    match = daemon.send(base())
    assert match.status == 409
    assert match.body["conflict"] == "outbox_aborted_fingerprint_match"
    mismatch = daemon.send(base(message="other"))
    assert mismatch.status == 409
    assert mismatch.body["conflict"] == "outbox_aborted_fingerprint_mismatch"
    statuses = {cmid: status for cmid, status, _, _ in daemon.db_rows()}
    assert statuses == {"k-1": "aborted", requeued["new_client_message_id"]: "pending"}


def test_daemon_mints_a_ulid_when_the_caller_gives_no_id(daemon: DaemonHandle) -> None:
    resp = daemon.send({"to": "#general", "message": "hi"})
    assert resp.status == 202
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", resp.body["client_message_id"])
    again = daemon.send({"to": "#general", "message": "hi"})
    assert again.body["client_message_id"] != resp.body["client_message_id"]
    assert len(daemon.db_rows()) == 2


def test_idempotency_key_header_is_the_id(daemon: DaemonHandle) -> None:
    body = {"to": "#general", "message": "hi"}
    resp = daemon.send(body, {"Idempotency-Key": "hdr-1"})
    assert resp.status == 202
    assert resp.body["client_message_id"] == "hdr-1"
    same = daemon.send({**body, "client_message_id": "hdr-1"}, {"Idempotency-Key": "hdr-1"})
    assert same.status == 202
    assert len(daemon.db_rows()) == 1


def test_header_and_body_ids_that_differ_are_refused_without_consuming_either(
        daemon: DaemonHandle) -> None:
    body = {"to": "#general", "message": "hi", "client_message_id": "body-id"}
    resp = daemon.send(body, {"Idempotency-Key": "header-id"})
    assert resp.status == 400
    assert "differ" in resp.body["detail"]
    assert daemon.db_rows() == []
    assert daemon.send(body).status == 202
    assert daemon.send({**body, "client_message_id": "header-id"}).status == 202


def test_dm_to_a_pubkey_is_stored_lower_case_and_matches_any_case(daemon: DaemonHandle) -> None:
    upper = PEER.upper()
    assert daemon.send(base(to=upper)).status == 202
    assert daemon.send(base(to=upper.lower())).status == 202
    [item] = daemon.outbox()
    assert item["destination"] == upper.lower()
