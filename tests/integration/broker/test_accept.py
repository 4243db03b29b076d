"""The atomic, deduplicating accept (§4.5b, §4.6.2, §4.7) through a real broker."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest

from brokerkit import BrokerProcess, Client, Mesh, clients, new_broker, sha
from claudemesh.crypto import MemberKey
from claudemesh.protocol.fingerprint import canonical_meta, request_fingerprint


def dedupe_rows(broker: BrokerProcess, cmid: str) -> list[tuple[object, ...]]:
    return broker.query("SELECT broker_message_id, destination_kind, destination_ref,"
                        " hex(request_fingerprint) FROM client_message_dedupe"
                        " WHERE client_message_id = ?", cmid)


async def test_created_then_duplicate_then_conflict(broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await b.request({"type": "subscribe", "topic": "general"})
        first = await a.post("#general", "hello", "k-1", meta={"z": 1, "a": [1.5]})
        assert first["code"] == 201 and first["duplicate"] is False
        assert re.fullmatch(r"[0-9A-Z]{26}", first["broker_message_id"])
        again = await a.post("#general", "hello", "k-1", meta={"a": [1.5], "z": 1})
        assert again["code"] == 200 and again["duplicate"] is True
        assert (again["broker_message_id"], again["history_id"]) == (
            first["broker_message_id"], first["history_id"])
        assert again["history_available"] is True
        assert again["first_seen_at"].endswith("Z")
        conflict = await a.post("#general", "HELLO", "k-1")
        assert conflict["code"] == 409
        assert conflict["error"] == "idempotency_key_reused"
        assert conflict["conflict"] == "request_fingerprint_mismatch"
        [row] = dedupe_rows(broker, "k-1")
        assert conflict["broker_fingerprint_prefix"] == str(row[3])[:16].lower()
        push = await b.next("push")
        assert push["client_message_id"] == "k-1"
        await b.nothing("push", 0.3)
    assert broker.query("SELECT count(*) FROM message") == [(1,)]
    assert broker.query("SELECT count(*) FROM delivery_queue") == [(1,)]


async def test_the_broker_recomputes_the_daemons_fingerprint(broker: BrokerProcess,
                                                             mesh: Mesh) -> None:
    alice = mesh.join("alice")
    meta = {"b": 2, "a": {"x": [1, "é"]}}
    async with clients((broker.url, alice)) as (a,):
        await a.request({"type": "join_group", "group": "ops"})
        assert (await a.post("@ops", "deploy", "fp-1", meta=meta, priority="now",
                             reply_to="01PREVIOUS"))["code"] == 201
    expected = request_fingerprint(destination_kind="topic", destination_ref="@ops",
                                   reply_to_id="01PREVIOUS", priority="now",
                                   meta_canonical=canonical_meta(meta),
                                   body_hash_hex=sha("deploy"))
    [row] = dedupe_rows(broker, "fp-1")
    assert (row[1], row[2], str(row[3]).lower()) == ("topic", "@ops", expected.hex())


async def test_twenty_senders_racing_one_key_make_one_message_and_one_delivery_each(
        broker: BrokerProcess, mesh: Mesh) -> None:
    senders = [mesh.join(f"s{i}") for i in range(20)]
    reader, watcher = mesh.join("reader"), mesh.join("watcher")
    async with clients(*((broker.url, s) for s in [*senders, reader, watcher])) as opened:
        *racers, r, w = opened
        for c in (r, w):
            await c.request({"type": "subscribe", "topic": "race"})
        frames = [c.envelope("#race", "same text", "race-1") for c in racers]
        answers = await asyncio.gather(*(c.request(f) for c, f in zip(racers, frames, strict=True)))
        codes = sorted(a["code"] for a in answers)
        assert codes == [200] * 19 + [201]
        assert len({a["broker_message_id"] for a in answers}) == 1
        for c in (r, w):
            push = await c.next("push")
            assert push["client_message_id"] == "race-1"
            await c.nothing("push", 0.3)
    assert broker.query("SELECT count(*) FROM message") == [(1,)]
    # one delivery per recipient: the reader, the watcher, and no sender (each of the 20
    # is a sender; only the winner is excluded, the 19 others were not subscribed)
    assert broker.query("SELECT count(*) FROM delivery_queue") == [(2,)]


@pytest.mark.parametrize("case", ["plain_dm", "boxed_topic", "hash_mismatch", "version",
                                  "queue", "bad_ref", "bad_meta", "bad_base64"])
async def test_b1_refusals_leave_no_dedupe_row(broker: BrokerProcess, mesh: Mesh,
                                               case: str) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        await a.request({"type": "subscribe", "topic": "t"})
        good = {"dm": a.envelope(bob.pubkey, "hi", "b1"), "topic": a.envelope("#t", "hi", "b1")}
        bad = {
            "plain_dm": {**good["dm"], "body": {"kind": "plain", "text": "hi"}},
            "boxed_topic": {**good["topic"], "body": good["dm"]["body"]},
            "hash_mismatch": {**good["topic"], "body_hash": sha("other")},
            "version": {**good["topic"], "envelope_version": "2"},
            "queue": {**good["topic"], "destination_kind": "queue"},
            "bad_ref": {**good["topic"], "destination_ref": "-bad"},
            "bad_meta": {**good["topic"], "meta": {"n": 2**60}},
            "bad_base64": {**good["dm"], "body": {**good["dm"]["body"], "ciphertext": "@@@="}},
        }[case]
        answer = await a.request(bad)
        assert answer["code"] == 400, answer
        assert answer["error"] in ("invalid_envelope", "invalid_frame")
        assert dedupe_rows(broker, "b1") == []
        ok = await a.request(good["dm" if case in ("plain_dm", "bad_base64") else "topic"])
        assert ok["code"] == 201, ok


async def test_an_oversize_body_is_413_and_the_id_stays_free() -> None:
    broker = new_broker("--inline-bytes", "2048")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice)) as (a,):
            await a.request({"type": "subscribe", "topic": "t"})
            big = await a.post("#t", "x" * 2049, "big")
            assert (big["code"], big["error"], big["limit"]) == (413, "payload_too_large", 2048)
            boxed = await a.post(bob.pubkey, "y" * 2040, "big-dm")  # + 16-byte MAC
            assert boxed["code"] == 413
            assert dedupe_rows(broker, "big") == dedupe_rows(broker, "big-dm") == []
            assert (await a.post("#t", "x" * 2048, "big"))["code"] == 201
    finally:
        broker.cleanup()


async def test_the_rate_limit_is_a_structured_429_with_retry_after() -> None:
    broker = new_broker("--rate-per-s", "2", "--rate-burst", "3")
    try:
        alice = broker.create_mesh().join("alice")
        async with clients((broker.url, alice)) as (a,):
            await a.request({"type": "subscribe", "topic": "t"})
            codes = [(await a.post("#t", f"m{i}", f"rl-{i}"))["code"] for i in range(3)]
            limited = await a.post("#t", "m3", "rl-3")
            assert codes == [201, 201, 201]
            assert (limited["code"], limited["error"]) == (429, "rate_limited")
            assert 0 < limited["retry_after_ms"] <= 500
            assert dedupe_rows(broker, "rl-3") == []
            await asyncio.sleep(limited["retry_after_ms"] / 1000 + 0.05)
            assert (await a.post("#t", "m3", "rl-3"))["code"] == 201
    finally:
        broker.cleanup()


@pytest.mark.parametrize("to", ["dm-unknown", "#missing", "@nobody"])
async def test_b2_refusals_roll_the_claim_back(broker: BrokerProcess, mesh: Mesh,
                                               to: str) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    target = MemberKey.generate().pubkey if to == "dm-unknown" else to
    async with clients((broker.url, alice)) as (a,):
        answer = await a.post(target, "hi", "b2")
        assert (answer["code"], answer["error"]) == (404, "destination_not_found")
        assert dedupe_rows(broker, "b2") == []
        assert broker.query("SELECT count(*) FROM message") == [(0,)]
        fixed = {"dm-unknown": bob.pubkey, "#missing": "#missing", "@nobody": "@nobody"}[to]
        if to == "#missing":
            await a.request({"type": "subscribe", "topic": "missing"})
        if to == "@nobody":
            await a.request({"type": "join_group", "group": "nobody"})
        assert (await a.post(fixed, "hi", "b2"))["code"] == 201


async def test_a_dm_to_a_revoked_member_is_404(broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    broker.cli("mesh", "revoke", bob.pubkey, "--db", str(broker.db))
    async with clients((broker.url, alice)) as (a,):
        assert (await a.post(bob.pubkey, "hi"))["code"] == 404


async def test_the_dm_body_the_broker_stores_is_ciphertext(broker: BrokerProcess,
                                                           mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        assert (await a.post(bob.pubkey, "top secret", "dm-1"))["code"] == 201
    [(body,)] = broker.query("SELECT body FROM message")
    assert "top secret" not in body
    assert base64.b64encode(b"top secret").decode() not in body
    assert '"kind":"crypto_box"' in body


async def test_a_bad_frame_keeps_its_req_id(broker: BrokerProcess, mesh: Mesh) -> None:
    alice = mesh.join("alice")
    client, _ = await Client.hello(broker.url, alice)
    try:
        answer = await client.request({"type": "send", "client_message_id": "x"})
        assert (answer["type"], answer["code"], answer["error"]) == (
            "send_result", 400, "invalid_frame")
        assert answer["client_message_id"] == "x"
        assert "missing field" in answer["detail"]
        other = await client.request({"type": "subscribe", "topic": "-bad"})
        assert (other["type"], other["code"]) == ("error", "invalid_frame")
    finally:
        await client.close()
