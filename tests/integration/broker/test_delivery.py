"""At-least-once delivery with client_ack (DESIGN §5.7) through a real broker process."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]

from brokerkit import BrokerProcess, Client, Mesh, clients, new_broker
from claudemesh.crypto import BoxedBody, box_decrypt
from meshkit import wait_for


def pending(broker: BrokerProcess) -> int:
    [(n,)] = broker.query("SELECT count(*) FROM delivery_queue WHERE acked_at IS NULL")
    return int(n)


async def test_a_dm_to_an_offline_member_waits_and_is_pushed_on_connect(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        sent = await a.post(bob.pubkey, "are you there?", "dm-1", meta={"k": "v"},
                            priority="now")
        assert sent["code"] == 201
    assert pending(broker) == 1
    b, _ = await Client.hello(broker.url, bob)
    try:
        push = await b.next("push")
        assert push["client_message_id"] == "dm-1"
        assert push["broker_message_id"] == sent["broker_message_id"]
        assert push["history_id"] == sent["history_id"]
        assert (push["sender_pubkey"], push["sender_name"]) == (alice.pubkey, "alice")
        assert (push["destination_kind"], push["destination_ref"]) == ("dm", bob.pubkey)
        assert (push["priority"], push["meta"]) == ("now", {"k": "v"})
        assert push["created_at"].endswith("Z")
        text = box_decrypt(BoxedBody(push["body"]["nonce"], push["body"]["ciphertext"]),
                           recipient_secret_hex=bob.key.secret_key,
                           sender_pubkey_hex=alice.pubkey)
        assert text == b"are you there?"
        await b.ack(push["delivery_id"])
        await asyncio.sleep(0.3)
        assert pending(broker) == 0
    finally:
        await b.close()
    b2, _ = await Client.hello(broker.url, bob)
    try:
        await b2.nothing("push", 0.5)
    finally:
        await b2.close()


async def test_a_push_is_delivered_only_when_acked(broker: BrokerProcess, mesh: Mesh) -> None:
    """1. bob gets a push and drops without acking; 2. it is pushed again on reconnect;
    3. acked, it never comes back."""
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await a.post(bob.pubkey, "one", "once-1")
        first = await b.next("push")
    b2, _ = await Client.hello(broker.url, bob)
    try:
        again = await b2.next("push")
        assert (again["delivery_id"], again["client_message_id"]) == (
            first["delivery_id"], "once-1")
        await b2.ack(again["delivery_id"])
        await asyncio.sleep(0.2)
    finally:
        await b2.close()
    b3, _ = await Client.hello(broker.url, bob)
    try:
        await b3.nothing("push", 0.5)
    finally:
        await b3.close()


async def test_an_unacked_push_is_pushed_again_after_the_lease() -> None:
    broker = new_broker("--delivery-lease", "0.5")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
            await a.post(bob.pubkey, "lease", "lease-1")
            first = await b.next("push")
            second = await b.next("push", timeout=3)
            assert second["delivery_id"] == first["delivery_id"]
            await b.ack(second["delivery_id"])
            await b.nothing("push", 1.2)
    finally:
        broker.cleanup()


async def test_kill_9_between_accept_and_push_loses_nothing() -> None:
    """1. accept a DM for offline bob; 2. SIGKILL the broker; 3. restart on the same file;
    4. bob connects: pushed; no ack, reconnect: pushed again; ack: done."""
    broker = new_broker()
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice)) as (a,):
            sent = await a.post(bob.pubkey, "survive", "kill-1")
            assert sent["code"] == 201
        broker.kill9()
        broker.start()
        for _ in range(2):
            b, _ = await Client.hello(broker.url, bob)
            push = await b.next("push")
            assert push["broker_message_id"] == sent["broker_message_id"]
            await b.close()
        b, _ = await Client.hello(broker.url, bob)
        push = await b.next("push")
        await b.ack(push["delivery_id"])
        await asyncio.sleep(0.2)
        await b.close()
        assert pending(broker) == 0
        async with clients((broker.url, alice)) as (a,):
            dup = await a.post(bob.pubkey, "survive", "kill-1")
            assert (dup["code"], dup["broker_message_id"]) == (200, sent["broker_message_id"])
    finally:
        broker.cleanup()


async def test_topics_groups_and_broadcast_reach_the_right_members(broker: BrokerProcess,
                                                                   mesh: Mesh) -> None:
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    async with clients((broker.url, alice), (broker.url, bob), (broker.url, carol)) as (a, b, c):
        assert (await b.request({"type": "subscribe", "topic": "news"}))["changed"] is True
        assert (await b.request({"type": "subscribe", "topic": "news"}))["changed"] is False
        await c.request({"type": "subscribe", "topic": "news"})
        await c.request({"type": "unsubscribe", "topic": "news"})
        topics = await a.request({"type": "list_topics"})
        assert topics["topics"] == [{"topic": "news", "subscribers": 1, "subscribed": False}]
        await a.post("#news", "extra!", "t-1")
        assert (await b.next("push"))["destination_ref"] == "news"
        await c.nothing("push", 0.3)
        await a.request({"type": "join_group", "group": "ops"})
        await c.request({"type": "join_group", "group": "ops"})
        await a.post("@ops", "page", "g-1")
        assert (await c.next("push"))["destination_ref"] == "@ops"
        await b.nothing("push", 0.3)
        await a.nothing("push", 0.1)
        await a.post("*", "all hands", "all-1")
        for client in (b, c):
            assert (await client.next("push"))["client_message_id"] == "all-1"
        await a.nothing("push", 0.3)


async def test_pushes_follow_accept_order_and_a_backlog_beyond_the_window_drains(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        answers = await a.request_many([a.envelope(bob.pubkey, f"m{i}", f"o-{i:04d}")
                                        for i in range(600)])
        assert {x["code"] for x in answers} == {201}
    b, _ = await Client.hello(broker.url, bob)
    try:
        seen: list[str] = []
        while len(seen) < 600:
            push = await b.next("push")
            seen.append(push["client_message_id"])
            await b.ack(push["delivery_id"])
        assert seen == [f"o-{i:04d}" for i in range(600)]
        await b.nothing("push", 0.3)
    finally:
        await b.close()
    # client_ack has no answer: the broker applies acks in batches after the frame, so
    # the last ones may land just after the close.
    wait_for(lambda: pending(broker) == 0)


@contextlib.asynccontextmanager
async def rows_locked(broker: BrokerProcess) -> AsyncIterator[None]:
    """Hold the store's delivery rows (PostgreSQL) or its write lock (SQLite) in another
    connection, so the broker's next ack waits until the block ends."""
    if broker.dsn is None:
        conn = sqlite3.connect(broker.db, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.close()  # rolls back: the lock is gone
        return
    pg = await asyncpg.connect(broker.dsn)
    try:
        async with pg.transaction():
            await pg.execute("SELECT seq FROM mesh.delivery_queue FOR UPDATE")
            yield
    finally:
        await pg.close()


async def test_an_ack_sent_just_before_the_close_is_applied(
        broker: BrokerProcess, mesh: Mesh) -> None:
    """1. Bob receives a push; the store is held so his ack's write must wait.
    2. Bob acks and closes at once; the store is let go a moment after the close.
    3. The ack still lands: the broker finishes the frames read before a close instead of
       cancelling them (the delivery stayed pending and was pushed again)."""
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        assert (await a.post(bob.pubkey, "ack me", "dm-late-ack"))["code"] == 201
    b, _ = await Client.hello(broker.url, bob)
    push = await b.next("push")
    async with rows_locked(broker):
        await b.ack(push["delivery_id"])
        await b.close()
        await asyncio.sleep(1.0)
    wait_for(lambda: pending(broker) == 0, timeout=10)
