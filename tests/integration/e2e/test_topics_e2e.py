"""End-to-end encrypted topics through real daemons and a real broker (issue 15 item 3):
the broker stores only ciphertext, a later subscriber reads only the epochs made after it
joined, a leaver gets no key of the next epoch, and keys survive a daemon restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brokerkit import Client, Mesh, clients
from claudemesh.clock import iso_ms, now_ms
from claudemesh.crypto import new_topic_key, secretbox_encrypt
from helpers import DaemonHandle
from meshkit import Mesh2, heard_membership, inbox, joined_daemon, link_state, wait_for
from sharekit import seal_epoch


def sub(daemon: DaemonHandle, topic: str, *, on: bool = True) -> dict[str, Any]:
    path = "/v1/topic/subscribe" if on else "/v1/topic/unsubscribe"
    answer = daemon.uds().request("POST", path, {"topic": topic})
    assert answer.status == 200, answer.body
    return dict(answer.body)


def post(daemon: DaemonHandle, topic: str, text: str) -> None:
    sent = daemon.send({"to": f"#{topic}", "message": text})
    assert sent.status == 202, sent.body


def bodies(daemon: DaemonHandle) -> list[str | None]:
    return [m["body"] for m in inbox(daemon) if m["topic"] is not None]


def keyring(daemon: DaemonHandle, mesh_id: str, topic: str) -> list[int]:
    path: Path = daemon.paths.daemon_dir / "topic_keys.json"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    return sorted(int(e) for e in doc["meshes"].get(mesh_id, {}).get(topic, {}).get(
        "epochs", {}))


def heard(daemon: DaemonHandle, pair: Mesh2, topic: str) -> bool:
    return heard_membership(daemon, pair.broker, topic)


def key_rows(pair: Mesh2, member_id: str) -> list[int]:
    return [int(r[0]) for r in pair.broker.query(
        "SELECT epoch FROM topic_epoch_key WHERE member_id = ? AND topic = 'news'"
        " ORDER BY epoch", member_id)]


def broker_bytes(pair: Mesh2) -> bytes:
    db = Path(pair.broker.db)
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def test_encrypted_topic_lifecycle(pair: Mesh2) -> None:
    alice, bob = pair.alice, pair.bob
    mesh_id = alice.meshes[0]["mesh_id"]
    carol = joined_daemon(pair.invite, "carol")
    try:
        member = {n: d.meshes[0]["member_id"] for n, d in
                  (("alice", alice), ("bob", bob), ("carol", carol))}
        assert sub(alice, "news")["changed"] and sub(bob, "#news")["changed"]
        # (a) bob reads it; the broker's files hold no plaintext
        post(alice, "news", "MARKERzq7 first")
        wait_for(lambda: "MARKERzq7 first" in bodies(bob))
        stored = pair.broker.query("SELECT body FROM message WHERE destination_ref = 'news'")
        assert [json.loads(r[0])["kind"] for r in stored] == ["topic_box"]
        assert b"MARKERzq7" not in broker_bytes(pair)
        assert key_rows(pair, member['bob']) == [1] and keyring(bob, mesh_id, "news") == [1]

        # (b) carol joins later: no key for epoch 1, but she reads what comes after
        sub(carol, "news")
        wait_for(lambda: heard(alice, pair, "news"))
        post(alice, "news", "MARKERzq7 second")
        wait_for(lambda: "MARKERzq7 second" in bodies(carol))
        assert 1 not in key_rows(pair, member['carol'])
        assert 1 not in keyring(carol, mesh_id, "news")
        assert "MARKERzq7 first" not in bodies(carol)
        second = key_rows(pair, member['carol'])[-1]
        assert second >= 2

        # (c) bob leaves: the next epoch is not his
        sub(bob, "news", on=False)
        wait_for(lambda: heard(alice, pair, "news"))
        post(alice, "news", "MARKERzq7 third")
        wait_for(lambda: "MARKERzq7 third" in bodies(carol))
        third = key_rows(pair, member['carol'])[-1]
        assert third > second
        assert third not in key_rows(pair, member['bob'])
        assert third not in keyring(bob, mesh_id, "news")
        assert "MARKERzq7 third" not in bodies(bob)
        assert b"MARKERzq7" not in broker_bytes(pair)

        # (e) restarts keep working: the keys come back from topic_keys.json
        for daemon in (alice, carol):
            daemon.stop()
            daemon.start()
        wait_for(lambda: link_state(alice) == "open" and link_state(carol) == "open")
        post(alice, "news", "MARKERzq7 after restart")
        wait_for(lambda: "MARKERzq7 after restart" in bodies(carol))
        assert key_rows(pair, member['carol'])[-1] == third  # no new epoch was needed
        assert all(m["undecryptable"] is None for m in inbox(carol) if m["topic"])
    finally:
        carol.cleanup()


async def test_the_broker_refuses_plain_and_unknown_epochs(pair: Mesh2) -> None:
    """(d): once a topic has epochs, a plain post or one with an epoch it does not have
    is refused with its own code."""
    sub(pair.alice, "ops")
    sub(pair.bob, "ops")
    post(pair.alice, "ops", "sealed")
    wait_for(lambda: "sealed" in bodies(pair.bob))
    mesh = Mesh(pair.broker, pair.alice.meshes[0]["mesh_id"], pair.invite)
    dave = mesh.join("dave")
    async with clients((pair.broker.url, dave)) as (d,):
        assert isinstance(d, Client)
        plain = await d.post("#ops", "in the clear")
        assert (plain["code"], plain["error"]) == (400, "topic_encrypted")
        forged = d.envelope("#ops", "x", "forged-1", body={
            "kind": "topic_box", "epoch": 99, "nonce": "A" * 32, "ciphertext": "AAAA"})
        refused = await d.request(forged)
        assert (refused["code"], refused["error"]) == (400, "unknown_epoch")
        assert (await d.post("#fresh", "no epochs, no subscribers: stays plain"))[
            "error"] == "destination_not_found"


async def test_a_post_whose_key_does_not_open_for_a_reader_is_kept_undecryptable(
        pair: Mesh2) -> None:
    """A sender sealed the epoch's key to bob as a key of another topic (a broken or
    hostile sender; the broker cannot tell): bob's daemon stores the post with no body
    and says why (R-IN-8), and acks it; the others read it. Once the membership moves,
    the broker refuses a new post under that epoch (``stale_epoch``), while the post it
    took is still answered as a duplicate."""
    sub(pair.alice, "hist")
    sub(pair.bob, "hist")
    mesh = Mesh(pair.broker, pair.alice.meshes[0]["mesh_id"], pair.invite)
    dave = mesh.join("dave")
    async with clients((pair.broker.url, dave)) as (d,):
        assert (await d.request({"type": "subscribe", "topic": "hist"}))["type"] == "result"
        state = await d.request({"type": "topic_keys", "topic": "hist"})
        key = new_topic_key()
        sealed = seal_epoch(dave, "hist", 1, key, state["subscribers"],
                            named=lambda pk: "other" if pk == pair.bob_key else "hist")
        made = await d.request({"type": "topic_epoch", "topic": "hist", "epoch": 1,
                                "membership_version": state["membership_version"],
                                "keys": sealed})
        assert made["type"] == "result", made
        text = "MARKERzq7 miskeyed"

        def under_epoch_1(cmid: str) -> dict[str, Any]:
            boxed = secretbox_encrypt(text.encode(), key)
            return d.envelope("#hist", text, cmid, body={
                "kind": "topic_box", "epoch": 1, "nonce": boxed.nonce,
                "ciphertext": boxed.ciphertext})

        sent = await d.request(under_epoch_1("miskeyed-1"))
        assert sent["code"] == 201, sent
        wait_for(lambda: text in bodies(pair.alice))
        [kept] = wait_for(lambda: [m for m in inbox(pair.bob)
                                   if m["client_message_id"] == "miskeyed-1"])
        assert kept["body"] is None
        assert "no key for epoch 1" in kept["undecryptable"]
        wait_for(lambda: not pair.broker.query(
            "SELECT 1 FROM delivery_queue q JOIN member m ON m.id = q.recipient_member_id"
            " WHERE m.pubkey = ? AND q.acked_at IS NULL", pair.bob_key))

        sub(pair.bob, "hist", on=False)
        stale = await d.request(under_epoch_1("miskeyed-2"))
        assert (stale["code"], stale["error"]) == (409, "stale_epoch"), stale
        assert stale["membership_version"] == state["membership_version"] + 1
        again = await d.request(under_epoch_1("miskeyed-1"))  # taken before the change
        assert (again["code"], again["duplicate"]) == (200, True), again
        assert pair.broker.query("SELECT count(*) FROM message WHERE client_message_id"
                                 " LIKE 'miskeyed-%'") == [(1,)]


def test_a_post_queued_before_a_leave_is_resealed_under_the_next_epoch(pair: Mesh2) -> None:
    """alice's post was sealed at accept, under epoch 1 (carol has its key), and waits in
    her outbox (``deliver_at``); carol leaves before it goes out. The broker refuses it
    (``stale_epoch``), alice's drain seals it again under a new epoch that carol is not
    given, and bob reads it once. Nothing of it is stored under a key carol holds."""
    alice, bob = pair.alice, pair.bob
    carol = joined_daemon(pair.invite, "carol")
    try:
        carol_id = carol.meshes[0]["member_id"]
        for daemon in (alice, bob, carol):
            sub(daemon, "late")
        wait_for(lambda: heard(alice, pair, "late"))
        post(alice, "late", "MARKERzq7 before")
        wait_for(lambda: "MARKERzq7 before" in bodies(carol))
        due = now_ms() + 2_000
        queued = alice.send({"to": "#late", "message": "MARKERzq7 queued",
                             "deliver_at": iso_ms(due)})
        assert queued.status == 202 and queued.body["status"] == "scheduled", queued.body
        cmid = queued.body["client_message_id"]
        sub(carol, "late", on=False)
        [got] = wait_for(lambda: [m for m in inbox(bob) if m["client_message_id"] == cmid],
                         timeout=20)
        assert got["body"] == "MARKERzq7 queued" and got["undecryptable"] is None
        [(body,)] = pair.broker.query("SELECT body FROM message WHERE client_message_id = ?",
                                      cmid)
        epoch = json.loads(body)["epoch"]
        assert epoch >= 2
        carols = [int(r[0]) for r in pair.broker.query(
            "SELECT epoch FROM topic_epoch_key WHERE member_id = ? AND topic = 'late'",
            carol_id)]
        assert carols and epoch not in carols
        assert all(m["client_message_id"] != cmid for m in inbox(carol))
        row = alice.uds().call("GET", f"/v1/outbox?client_message_id={cmid}")
        [sent] = row["items"]
        assert sent["status"] == "done" and sent["attempts"] == 2, sent
        metrics = alice.uds().call("GET", "/v1/metrics")
        assert next(line for line in metrics.splitlines() if line.startswith(
            "cm_daemon_send_total") and 'result="resealed"' in line).endswith(" 1.0")
    finally:
        carol.cleanup()
