"""Files shared to an encrypted ``#topic`` (issue 15, item 7) through real daemons and a
real broker: the reference travels as a topic post sealed with the epoch key, the blob is
bound to the topic (its subscribers at download time may fetch it, nobody else), every
subscriber files the reference once and downloads the same bytes, a retry with the same
``client_message_id`` sends nothing twice, and the broker holds no plaintext of the file,
its name or its message."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sharekit
from brokerkit import BrokerProcess, Client, Mesh, clients
from claudemesh.crypto import new_topic_key, secretbox_encrypt
from claudemesh.protocol.sealed import seal_message
from helpers import DaemonHandle, cli
from meshkit import Mesh2, inbox, joined_daemon, wait_for
from sharekit import seal_epoch, sha256

MARKER = b"TOPIC-FILE-PLAINTEXT-7c2d"
NAME = "secret-plan-zq9.bin"
TEXT = "MSGMARKERzq9 the plan is attached"


def make_file(where: Path, size: int, name: str = NAME) -> Path:
    return sharekit.make_file(where, size, name, MARKER)


def sub(daemon: DaemonHandle, topic: str, *, on: bool = True) -> None:
    path = "/v1/topic/subscribe" if on else "/v1/topic/unsubscribe"
    answer = daemon.uds().request("POST", path, {"topic": topic})
    assert answer.status == 200, answer.body


def share(daemon: DaemonHandle, body: dict[str, Any]) -> Any:
    return daemon.uds(timeout=120).request("POST", "/v1/file/share", body)


def get(daemon: DaemonHandle, file_id: str) -> Any:
    return daemon.uds(timeout=120).request("GET", "/v1/file/get?" + urlencode({"id": file_id}))


def file_messages(daemon: DaemonHandle) -> list[dict[str, Any]]:
    return [m for m in inbox(daemon) if m.get("file")]


def broker_bytes(broker: BrokerProcess) -> bytes:
    """Everything the broker keeps on disk: the SQLite file, its WAL, and the blobs."""
    db = Path(broker.db)
    files = [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm")]
    files += sorted(Path(f"{broker.db}.blobs").glob("*"))
    return b"".join(p.read_bytes() for p in files if p.is_file())


async def as_outsider(pair: Mesh2, file_id: str) -> list[dict[str, Any]]:
    """dave, a member of the mesh who does not read #news, asks the broker for the blob."""
    dave = Mesh(pair.broker, pair.alice.meshes[0]["mesh_id"], pair.invite).join("dave")
    async with clients((pair.broker.url, dave)) as (d,):
        assert isinstance(d, Client)
        return [await d.request({"type": "blob_get", "file_id": file_id, "offset": 0,
                                 "length": 1024}),
                await d.request({"type": "blob_status", "file_id": file_id}),
                await d.request({"type": "list_blobs"})]


def test_a_file_to_an_encrypted_topic_reaches_each_subscriber_once(pair: Mesh2) -> None:
    alice, bob = pair.alice, pair.bob
    carol = joined_daemon(pair.invite, "carol")
    try:
        sub(bob, "news")
        sub(carol, "#news")
        source = make_file(alice.config_dir, 700_000)
        shared = share(alice, {"path": str(source), "to": "#news", "message": TEXT})
        assert shared.status == 202, shared.body
        body = shared.body
        assert (body["to"], body["status"], body["file"]["sha256"]) == (
            "#news", "queued", sha256(source))
        for reader in (bob, carol):
            [message] = wait_for(lambda r=reader: file_messages(r))
            assert (message["topic"], message["destination"], message["body"]) == (
                "news", "#news", TEXT)
            assert message["file"] == body["file"] and message["undecryptable"] is None
            got = get(reader, body["file"]["id"])
            assert got.status == 200, got.body
            assert sha256(Path(got.body["path"])) == sha256(source)
            [row] = reader.uds().call("GET", "/v1/file/list")["files"]
            assert (row["direction"], row["topic"], row["peer_pubkey"]) == (
                "in", "news", pair.alice_key)
        [mine] = alice.uds().call("GET", "/v1/file/list")["files"]
        assert (mine["direction"], mine["topic"], mine["peer_pubkey"]) == ("out", "news", "#news")
        # The reference went as a sealed topic post; the blob is bound to the topic.
        [(kind,)] = [(json.loads(r[0])["kind"],) for r in pair.broker.query(
            "SELECT body FROM message WHERE client_message_id = ?", body["client_message_id"])]
        assert kind == "topic_box"
        assert pair.broker.query("SELECT recipients, topic FROM blob") == [("[]", "news")]
        # A member who does not read the topic is refused the blob (403), and sees none.
        got_refused, status_refused, listed = asyncio.run(as_outsider(pair, body["file"]["id"]))
        assert (got_refused["type"], got_refused["code"]) == ("error", "not_subscribed")
        assert status_refused["code"] == "not_subscribed"
        assert listed["blobs"] == []
        # The same client_message_id again: the finished upload, no second message.
        again = share(alice, {"path": str(source), "to": "#news", "message": TEXT,
                              "client_message_id": body["client_message_id"]})
        assert again.status == 202, again.body
        assert (again.body["file"], again.body["upload"]["bytes_sent"]) == (body["file"], 0)
        assert again.body["outbox_id"] == body["outbox_id"]
        barrier = alice.send({"to": "#news", "message": "after the retry"})
        assert barrier.status == 202, barrier.body
        for reader in (bob, carol):
            wait_for(lambda r=reader: any(m["body"] == "after the retry" for m in inbox(r)))
            assert len(file_messages(reader)) == 1
        assert pair.broker.query("SELECT count(*) FROM message WHERE client_message_id = ?",
                                 body["client_message_id"]) == [(1,)]
        # Nothing the broker keeps holds the file, its name or its message in the clear.
        stored = broker_bytes(pair.broker)
        for secret in (MARKER, NAME.encode(), TEXT.encode(), b"MSGMARKERzq9"):
            assert secret not in stored, secret
        # Readers are the subscribers at download time: bob leaves and is refused.
        sub(bob, "news", on=False)
        left = get(bob, body["file"]["id"])
        assert (left.status, left.body["error"]) == (403, "not_subscribed"), left.body
    finally:
        carol.cleanup()


def test_topic_destinations_without_a_key_are_refused_before_anything_is_stored(
        pair: Mesh2) -> None:
    alice = pair.alice
    source = make_file(alice.config_dir, 10_000)
    missing = share(alice, {"path": str(source), "to": "#nosuch"})
    assert (missing.status, missing.body["error"]) == (404, "destination_not_found")
    sub(pair.bob, "empty")
    sub(pair.bob, "empty", on=False)  # the topic exists, with no subscriber and no epoch
    unread = share(alice, {"path": str(source), "to": "#empty"})
    assert (unread.status, unread.body["error"]) == (422, "file_destination_unsupported")
    assert "no subscriber" in unread.body["detail"]
    for to in ("@ops", "*"):
        refused = share(alice, {"path": str(source), "to": to})
        assert (refused.status, refused.body["error"]) == (422, "file_destination_unsupported")
        assert "group or broadcast" in refused.body["detail"], refused.body
    assert pair.broker.query("SELECT count(*) FROM blob") == [(0,)]
    assert alice.outbox() == []
    assert alice.uds().call("GET", "/v1/file/list")["files"] == []


def test_cli_shares_to_a_topic_with_json(pair: Mesh2, tmp_path: Path) -> None:
    sub(pair.bob, "builds")
    source = make_file(tmp_path, 200_000, "log.txt")
    shared = cli(pair.alice.env, "file", "share", str(source), "#builds", "-m", "the log",
                 "--json")
    assert shared.returncode == 0, shared.stderr
    answer = json.loads(shared.stdout)
    assert (answer["to"], answer["file"]["sha256"]) == ("#builds", sha256(source))
    [message] = wait_for(lambda: file_messages(pair.bob))
    assert (message["topic"], message["body"]) == ("builds", "the log")
    listed = cli(pair.alice.env, "file", "list")
    assert listed.returncode == 0, listed.stderr
    assert "#builds" in listed.stdout and "log.txt" in listed.stdout


async def test_a_sealed_session_message_on_a_topic_is_kept_undecryptable(pair: Mesh2) -> None:
    """Only a file reference may be sealed in a topic post: sessions (and receipts) are
    for DMs, so a topic_box holding one is filed with no body and says why (R-IN-8)."""
    sub(pair.bob, "ops")
    dave = Mesh(pair.broker, pair.alice.meshes[0]["mesh_id"], pair.invite).join("dave")
    async with clients((pair.broker.url, dave)) as (d,):
        assert isinstance(d, Client)
        state = await d.request({"type": "topic_keys", "topic": "ops"})
        key = new_topic_key()
        sealed = seal_epoch(dave, "ops", 1, key, state["subscribers"])
        made = await d.request({"type": "topic_epoch", "topic": "ops", "epoch": 1,
                                "membership_version": state["membership_version"],
                                "keys": sealed})
        assert made["type"] == "result", made
        raw = seal_message("MARKERzq9 for a session", to_session="build", from_session=None)
        boxed = secretbox_encrypt(raw, key)
        sent = await d.request(d.envelope("#ops", "", "sealed-1", digest=hashlib.sha256(
            raw).hexdigest(), body={"kind": "topic_box", "epoch": 1, "nonce": boxed.nonce,
                                    "ciphertext": boxed.ciphertext}))
        assert sent["code"] == 201, sent
    [kept] = wait_for(lambda: [m for m in inbox(pair.bob) if m["client_message_id"] == "sealed-1"])
    assert (kept["body"], kept["file"], kept["session"]) == (None, None, None)
    assert "not a file reference" in kept["undecryptable"]
