"""Encrypted topics through a real broker (SQLite and PostgreSQL): the ``topic_keys`` and
``topic_epoch`` frames, the body rules of a topic with epochs, the recipient's own sealed
key on every topic_box push (fresh and re-pushed from the store), and the
``topic_membership`` event."""

from __future__ import annotations

import base64
import hashlib

from brokerkit import BrokerProcess, Client, Identity, Mesh, clients
from claudemesh.crypto import (
    BoxedBody,
    box_decrypt,
    new_topic_key,
    secretbox_decrypt,
    secretbox_encrypt,
)
from claudemesh.protocol.topic_epochs import key_from_plaintext
from sharekit import seal_epoch


def seal_to(sender: Identity, topic: str, epoch: int, key: bytes,
            *members: Identity) -> list[dict[str, str]]:
    return seal_epoch(sender, topic, epoch, key, (m.pubkey for m in members))


def topic_box(cmid: str, topic: str, epoch: int, key: bytes, text: str) -> dict[str, object]:
    boxed = secretbox_encrypt(text.encode(), key)
    return {"type": "send", "client_message_id": cmid, "envelope_version": "1",
            "destination_kind": "topic", "destination_ref": topic, "priority": "next",
            "reply_to": None, "meta": None,
            "body_hash": hashlib.sha256(text.encode()).hexdigest(),
            "body": {"kind": "topic_box", "epoch": epoch, "nonce": boxed.nonce,
                     "ciphertext": boxed.ciphertext}}


def open_push(push: dict[str, object], me: Identity, topic: str) -> str:
    sealed = push["epoch_key"]
    assert isinstance(sealed, dict)
    body = push["body"]
    assert isinstance(body, dict)
    raw = box_decrypt(BoxedBody(sealed["nonce"], sealed["ciphertext"]),
                      recipient_secret_hex=me.key.secret_key,
                      sender_pubkey_hex=sealed["sealer_pubkey"])
    key = key_from_plaintext(raw, me.mesh_id, topic, int(body["epoch"]))
    assert key is not None
    return secretbox_decrypt(BoxedBody(body["nonce"], body["ciphertext"]), key).decode()


async def subscribe(c: Client, topic: str) -> None:
    assert (await c.request({"type": "subscribe", "topic": topic}))["type"] == "result"


async def test_epochs_keys_pushes_and_refusals(broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    async with clients((broker.url, alice), (broker.url, bob), (broker.url, carol)) as (
            a, b, c):
        await subscribe(a, "news")
        await subscribe(b, "news")
        assert (await a.post("#news", "still plain"))["code"] == 201  # no epoch yet
        await b.next("push", body={"kind": "plain", "text": "still plain"})
        keys = await a.request({"type": "topic_keys", "topic": "news"})
        assert (keys["membership_version"], keys["current_epoch"], keys["keys"]) == (2, 0, [])
        assert sorted(keys["subscribers"]) == sorted([alice.pubkey, bob.pubkey])
        key = new_topic_key()
        made = await a.request({"type": "topic_epoch", "topic": "news", "epoch": 1,
                                "membership_version": 2,
                                "keys": seal_to(alice, "news", 1, key, alice, bob)})
        assert (made["type"], made["epoch"], made["current_epoch"]) == ("result", 1, 1)
        lost = await b.request({"type": "topic_epoch", "topic": "news", "epoch": 1,
                                "membership_version": 2,
                                "keys": seal_to(bob, "news", 1, new_topic_key(), alice, bob)})
        assert (lost["type"], lost["code"], lost["current_epoch"],
                lost["membership_version"]) == ("error", "epoch_conflict", 1, 2)
        leaver = await a.request({"type": "topic_epoch", "topic": "news", "epoch": 2,
                                  "membership_version": 2,
                                  "keys": seal_to(alice, "news", 2, key, alice, bob, carol)})
        assert leaver["code"] == "epoch_conflict"  # carol is no subscriber
        # bob's view: only his own sealed copy of epoch 1
        [mine] = (await b.request({"type": "topic_keys", "topic": "news"}))["keys"]
        assert (mine["epoch"], mine["sealer_pubkey"]) == (1, alice.pubkey)

        sent = await a.request(topic_box("enc-1", "news", 1, key, "secret words"))
        assert sent["code"] == 201, sent
        push = await b.next("push", client_message_id="enc-1")
        assert open_push(push, bob, "news") == "secret words"
        assert push["epoch_key"]["membership_version"] == 2
        plain = await a.post("#news", "leak")
        assert (plain["code"], plain["error"]) == (400, "topic_encrypted")
        unknown = await a.request(topic_box("enc-2", "news", 9, key, "x"))
        assert (unknown["code"], unknown["error"]) == (400, "unknown_epoch")
        group = await a.request({**topic_box("enc-3", "@ops", 1, key, "x")})
        assert (group["code"], group["error"]) == (400, "invalid_envelope")
        assert (await a.post("*", "broadcast stays plain"))["code"] == 201

        await subscribe(c, "news")  # alice and bob hear that the membership moved
        event = await a.next("event", event="topic_membership", membership_version=3)
        assert (event["topic"], event["mesh_id"]) == ("news", alice.mesh_id)
        await b.next("event", event="topic_membership", membership_version=3)
        assert [k["epoch"] for k in (await c.request(
            {"type": "topic_keys", "topic": "news"}))["keys"]] == []  # nothing before it
        raw = broker.query("SELECT body FROM message WHERE client_message_id = 'enc-1'")
        assert "secret words" not in str(raw) and "topic_box" in str(raw)

        # revoking a subscriber moves the membership too, and its subscribers hear it
        assert broker.cli("mesh", "revoke", carol.pubkey, "--db", str(broker.db)).returncode == 0
        await a.next("event", event="topic_membership", membership_version=4, timeout=10)
        state = await a.request({"type": "topic_keys", "topic": "news"})
        assert sorted(state["subscribers"]) == sorted([alice.pubkey, bob.pubkey])


async def test_a_re_push_from_the_store_carries_the_key(broker: BrokerProcess,
                                                        mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    key = new_topic_key()
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await subscribe(a, "ops")
        await subscribe(b, "ops")
        made = await a.request({"type": "topic_epoch", "topic": "ops", "epoch": 1,
                                "membership_version": 2,
                                "keys": seal_to(alice, "ops", 1, key, alice, bob)})
        assert made["type"] == "result"
        await b.close()  # offline: the push waits in the store
        assert (await a.request(topic_box("later", "ops", 1, key, "read me later")))[
            "code"] == 201
    async with clients((broker.url, bob)) as (b2,):
        push = await b2.next("push", client_message_id="later")
        assert open_push(push, bob, "ops") == "read me later"
        assert base64.b64decode(push["body"]["nonce"])  # the body as accepted
