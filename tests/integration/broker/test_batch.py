"""``frame_batch``: batch frames both ways, against a real broker process (both stores)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from brokerkit import BrokerProcess, Client, Mesh, new_broker

ASK_BATCH = {"type": "feature_negotiation_request", "require": [], "optional": ["frame_batch"]}


async def batched_hello(url: str, ident: Any) -> Client:
    client, ack = await Client.hello(url, ident)
    assert ack["features"]["frame_batch"] == {
        "params": {"version": 1, "max_frames": 256, "max_bytes": 131072}}
    answer = await client.request(ASK_BATCH)
    assert answer["type"] == "feature_negotiation_response"
    return client


async def test_a_batch_of_sends_gets_one_answer_per_send_and_batched_pushes(
        broker: BrokerProcess, mesh: Mesh, store_kind: str) -> None:
    """On SQLite one group commit finishes the accepts in one turn, so their answers and
    pushes share batches; PostgreSQL commits each on its own and may answer one by one."""
    alice_id, bob_id = mesh.join("alice"), mesh.join("bob")
    alice = await batched_hello(broker.url, alice_id)
    bob = await batched_hello(broker.url, bob_id)
    try:
        sends = [{**alice.envelope(bob_id.pubkey, f"m{i}", f"c{i}"), "req_id": f"b{i}"}
                 for i in range(40)]
        sends[7]["body_hash"] = "0" * 64  # still a valid DM: the broker cannot check it
        sends[9] = {**alice.envelope("#nobody", "x", "c9"), "req_id": "b9"}  # 404
        sends[11] = {**sends[11], "body_hash": "x"}  # malformed: 400, still answered
        await alice.send({"type": "batch", "frames": sends})
        answers = {}
        while len(answers) < len(sends):
            frame = await alice.next("send_result")
            answers[frame["req_id"]] = frame
        codes = {req_id: answer["code"] for req_id, answer in answers.items()}
        assert codes.pop("b9") == 404 and codes.pop("b11") == 400
        assert set(codes.values()) == {201}
        if store_kind == "sqlite":
            assert alice.batches >= 1, "40 accepts in one commit never left as one batch"

        pushes = [await bob.next("push") for _ in range(38)]
        assert sorted(p["client_message_id"] for p in pushes) == sorted(
            f"c{i}" for i in range(40) if i not in (9, 11))
        assert [int(p["delivery_id"]) for p in pushes] == sorted(
            int(p["delivery_id"]) for p in pushes), "pushes left accept order"
        if store_kind == "sqlite":
            assert bob.batches >= 1
        await bob.send({"type": "batch", "frames": [
            {"type": "client_ack", "delivery_ids": [p["delivery_id"] for p in pushes[:20]]},
            {"type": "client_ack", "delivery_ids": [p["delivery_id"] for p in pushes[20:]]}]})
        # Frames are handled concurrently (acks have no answer): poll for their effect.
        deadline = time.monotonic() + 10
        query = "SELECT count(*) FROM delivery_queue WHERE acked_at IS NULL"
        while (pending := broker.query(query)) != [(0,)] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert pending == [(0,)]
    finally:
        await alice.close()
        await bob.close()


async def test_answers_written_in_one_turn_leave_as_one_batch(broker: BrokerProcess,
                                                              mesh: Mesh) -> None:
    client, _ = await Client.hello(broker.url, mesh.join("alice"))
    try:
        asks = [{**ASK_BATCH, "req_id": f"n{i}"} for i in range(10)]
        await client.send({"type": "batch", "frames": asks})
        answers = [await client.next("feature_negotiation_response") for _ in asks]
        assert [a["req_id"] for a in answers] == [f"n{i}" for i in range(10)]
        # The first answer leaves alone (batching starts after it); the nine others,
        # written in the same event-loop turn, share one frame.
        assert client.batches == 1
    finally:
        await client.close()


async def test_a_client_that_did_not_ask_gets_single_frames(broker: BrokerProcess,
                                                            mesh: Mesh) -> None:
    alice_id, bob_id = mesh.join("alice"), mesh.join("bob")
    alice = await batched_hello(broker.url, alice_id)
    bob, _ = await Client.hello(broker.url, bob_id)
    try:
        sends = [{**alice.envelope(bob_id.pubkey, "hi", f"c{i}"), "req_id": f"b{i}"}
                 for i in range(30)]
        await alice.send({"type": "batch", "frames": sends})
        for _ in sends:
            assert (await alice.next("send_result"))["code"] == 201
        for _ in sends:
            await bob.next("push")
        assert bob.batches == 0
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.parametrize(("case", "detail"), [
    ("nested", "batches do not nest"),
    ("empty", "1 to 256 frames, not 0"),
    ("too_many", "1 to 256 frames, not 257"),
    ("not_objects", "every frame in a batch is a JSON object"),
    ("extra_key", "exactly {type, frames"),
    ("not_a_list", "exactly {type, frames"),
])
async def test_bad_batches_get_an_error_and_the_connection_stays(
        broker: BrokerProcess, mesh: Mesh, case: str, detail: str) -> None:
    alice_id = mesh.join("alice")
    alice = await batched_hello(broker.url, alice_id)
    try:
        ack: dict[str, Any] = {"type": "client_ack", "delivery_ids": ["1"]}
        frames: Any = {
            "nested": [{"type": "batch", "frames": [ack]}], "empty": [],
            "too_many": [ack] * 257, "not_objects": [ack, 3], "extra_key": [ack],
            "not_a_list": {"0": ack}}[case]
        frame = {"type": "batch", "frames": frames}
        if case == "extra_key":
            frame["req_id"] = "x"
        await alice.send(frame)
        error = await alice.next("error")
        assert error["code"] == "invalid_frame" and detail in error["detail"], error
        assert (await alice.request({"type": "list_topics"}))["type"] == "result"
    finally:
        await alice.close()


async def test_an_inner_frame_is_refused_like_a_lone_one(broker: BrokerProcess,
                                                        mesh: Mesh) -> None:
    alice = await batched_hello(broker.url, mesh.join("alice"))
    try:
        await alice.send({"type": "batch", "frames": [
            {"type": "hello", "req_id": "h"}, {"type": "nope"},
            {"type": "list_topics", "req_id": "ok"}]})
        first, second = await alice.next("error"), await alice.next("error")
        assert first["code"] == "invalid_frame"  # a hello missing its fields
        assert second["code"] == "unknown_type"
        assert (await alice.next("result", req_id="ok"))["topics"] == []
    finally:
        await alice.close()


async def test_a_batch_before_hello_is_not_a_way_around_it(broker: BrokerProcess,
                                                          mesh: Mesh) -> None:
    alice_id = mesh.join("alice")
    client = await Client.open(broker.url, alice_id)
    try:
        await client.send({"type": "batch", "frames": [{"type": "list_topics", "req_id": "x"}]})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "unknown_type"
    finally:
        await client.close()


async def test_the_error_before_a_revocation_close_is_not_lost_in_the_cork(
        broker: BrokerProcess, mesh: Mesh) -> None:
    bob_id = mesh.join("bob")
    bob = await batched_hello(broker.url, bob_id)
    result = broker.cli("mesh", "revoke", bob_id.pubkey, "--db", str(broker.db), "--json")
    assert result.returncode == 0, result.stderr
    assert (await bob.next("error"))["code"] == "member_revoked"
    assert (await bob.closed())[0] == 4002


async def test_a_broker_without_frame_batch_neither_reads_nor_writes_batches() -> None:
    broker = new_broker("--omit-feature", "frame_batch")
    try:
        mesh = broker.create_mesh()
        alice_id, bob_id = mesh.join("alice"), mesh.join("bob")
        alice, ack = await Client.hello(broker.url, alice_id)
        bob, _ = await Client.hello(broker.url, bob_id)
        assert "frame_batch" not in ack["features"]
        await bob.request(ASK_BATCH)  # asking for it changes nothing
        send = {**alice.envelope(bob_id.pubkey, "hi", secrets.token_hex(4)), "req_id": "s"}
        await alice.send({"type": "batch", "frames": [send]})
        assert (await alice.next("error"))["code"] == "unknown_type"
        assert (await alice.request(alice.envelope(bob_id.pubkey, "a", "c1")))["code"] == 201
        assert (await alice.request(alice.envelope(bob_id.pubkey, "b", "c2")))["code"] == 201
        await bob.next("push")
        await bob.next("push")
        assert bob.batches == 0
        await alice.close()
        await bob.close()
    finally:
        broker.cleanup()

