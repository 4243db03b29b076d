"""Sessions, session addresses, read state and receipts through real daemons and a real
broker (issue 12, items 1 and 2)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from brokerkit import Client, Identity
from claudemesh.crypto import MemberKey, box_encrypt
from claudemesh.protocol.sealed import ReceiptItem, Receipts, ReceiptState, seal_receipts
from claudemesh.sdk import Client as Api
from helpers import DaemonHandle, cli
from meshkit import Mesh2, SseReader, wait_for


@pytest.fixture
def owners() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that own sessions: alive until the test kills them."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def owner(procs: list[subprocess.Popen[bytes]]) -> int:
    proc = subprocess.Popen(["sleep", "600"])
    procs.append(proc)
    return proc.pid


def register(daemon: DaemonHandle, name: str, pid: int | None = None,
             **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "harness": "test", **extra}
    if pid is not None:
        body["pid"] = pid
    resp = daemon.uds().request("POST", "/v1/sessions", body)
    assert resp.status in (200, 201), resp.body
    return dict(resp.body)


def unread(daemon: DaemonHandle, session: str) -> list[dict[str, Any]]:
    page = daemon.uds().call("GET", f"/v1/inbox?session={session}&unread=1&order=asc")
    return list(page["items"])


def send(daemon: DaemonHandle, to: str, message: str, **extra: Any) -> dict[str, Any]:
    resp = daemon.send({"to": to, "message": message, **extra})
    assert resp.status == 202, resp.body
    return dict(resp.body)


def status(daemon: DaemonHandle, cmid: str) -> dict[str, Any]:
    return dict(daemon.uds().call("GET", f"/v1/messages/{cmid}"))


def test_session_addresses_reach_only_that_session_and_replies_come_back(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    review = register(pair.alice, "review", owner(owners))
    register(pair.alice, "docs", owner(owners))
    build = register(pair.bob, "build", owner(owners))
    chat = register(pair.bob, "chat", owner(owners), default=True)
    assert review["address"] == "alice/review"
    assert build["addresses"][0]["pubkey_address"] == f"{pair.bob_key}/build"

    sent = send(pair.alice, "bob/build", "please build #42", session=review["session_id"])
    got = wait_for(lambda: unread(pair.bob, build["session_id"]))
    assert [(m["body"], m["session"], m["from_session"], m["reply_to_address"])
            for m in got] == [("please build #42", "build", "review", "alice/review")]
    assert unread(pair.bob, "chat") == []

    send(pair.alice, "bob", "hello whoever is default")
    bare = wait_for(lambda: unread(pair.bob, chat["session_id"]))
    assert [(m["body"], m["session"]) for m in bare] == [("hello whoever is default", "chat")]
    assert [m["body"] for m in unread(pair.bob, "build")] == ["please build #42"]

    # bob's build session replies to the item; it lands in alice's review session only
    item = got[0]
    send(pair.bob, item["reply_to_address"], "built, green", session=build["session_id"],
         reply_to=item["broker_message_id"])
    answer = wait_for(lambda: unread(pair.alice, review["session_id"]))
    assert [(m["body"], m["from_session"], m["reply_to"]) for m in answer] == [
        ("built, green", "build", item["broker_message_id"])]
    assert unread(pair.alice, "docs") == []
    # the sealed envelope hides the sessions from the broker: it saw ciphertext only
    assert all("please build" not in str(row) and "review" not in str(row)
               for row in pair.broker.query("SELECT body FROM message"))
    assert status(pair.alice, sent["client_message_id"])["destination"] == pair.bob_key


def test_without_a_default_session_a_bare_dm_is_for_every_session(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    one = register(pair.bob, "one", owner(owners))
    two = register(pair.bob, "two", owner(owners))
    send(pair.alice, "bob", "for all of you")
    for session in (one, two):
        items = wait_for(lambda s=session: unread(pair.bob, s["session_id"]))
        assert [(m["body"], m["session"]) for m in items] == [("for all of you", None)]
    marked = pair.bob.uds().call("POST", "/v1/inbox/seen",
                                 {"session": one["session_id"], "up_to_seq": 10**9})
    assert len(marked["marked"]) == 1
    assert unread(pair.bob, "one") == []
    assert [m["body"] for m in unread(pair.bob, "two")] == ["for all of you"]


def test_same_id_from_another_session_is_a_conflict_not_a_duplicate(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    a = register(pair.alice, "a", owner(owners))
    b = register(pair.alice, "b", owner(owners))
    body = {"to": "bob/x", "message": "same text", "client_message_id": "sess-cmid-1"}
    assert pair.alice.send({**body, "session": a["session_id"]}).status == 202
    again = pair.alice.send({**body, "session": a["session_id"]})
    assert again.status in (200, 202)
    other = pair.alice.send({**body, "session": b["session_id"]})
    assert other.status == 409 and other.body["error"] == "idempotency_key_reused"
    to_other = pair.alice.send({**body, "to": "bob/y", "session": a["session_id"]})
    assert to_other.status == 409


def test_stored_and_surfaced_receipts_reach_the_sender_with_the_path(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    build = register(pair.bob, "build", owner(owners))
    events = SseReader(pair.alice).start()
    try:
        sent = send(pair.alice, "bob/build", "read me")
        _, stored = events.next("receipt", timeout=20)
        assert (stored["client_message_id"], stored["state"], stored["recipient_pubkey"]) == (
            sent["client_message_id"], "stored", pair.bob_key)
        item = wait_for(lambda: unread(pair.bob, build["session_id"]))[0]
        pair.bob.uds().call("POST", "/v1/inbox/seen", {
            "session": build["session_id"], "ids": [item["id"]], "path": "hook"})
        _, surfaced = events.next("receipt", timeout=20)
    finally:
        events.close()
    assert (surfaced["state"], surfaced["path"], surfaced["session"]) == (
        "surfaced", "hook", "build")
    final = status(pair.alice, sent["client_message_id"])
    assert final["state"] == "surfaced"
    assert (final["surfaced_path"], final["surfaced_session"]) == ("hook", "build")
    assert final["stored_at"] and final["accepted_at"]
    assert [r["state"] for r in final["receipts"]] == ["stored", "surfaced"]
    listed = pair.alice.outbox()
    assert [r["surfaced_path"] for r in listed] == ["hook"]  # receipts are not listed
    assert len(pair.bob.uds().call("GET", "/v1/outbox?purpose=receipt")["items"]) == 2
    # a second mark changes nothing and sends nothing
    again = pair.bob.uds().call("POST", "/v1/inbox/seen", {
        "session": "build", "ids": [item["id"]], "path": "poll"})
    assert again["marked"] == []
    # receipts never land in the sender's inbox
    assert pair.alice.uds().call("GET", "/v1/inbox")["items"] == []


def test_no_receipts_for_topics(pair: Mesh2) -> None:
    for daemon in (pair.alice, pair.bob):
        runtime_topic = daemon.uds().call("GET", "/v1/health")  # link up
        assert runtime_topic["meshes"][0]["link"] == "open"
    send(pair.alice, "*", "to everyone")
    wait_for(lambda: pair.bob.uds().call("GET", "/v1/inbox")["items"])
    assert pair.bob.uds().call("GET", "/v1/outbox?purpose=receipt")["items"] == []


def test_receipt_survives_a_kill9_between_store_and_receipt(pair: Mesh2) -> None:
    pair.bob.stop()
    pair.bob.start("--receipt-delay", "60")
    sent = send(pair.alice, "bob", "crash after storing me")
    wait_for(lambda: pair.bob.uds().call("GET", "/v1/inbox")["items"])
    assert status(pair.alice, sent["client_message_id"])["stored_at"] is None
    pair.bob.kill9()
    pair.bob.start()
    wait_for(lambda: status(pair.alice, sent["client_message_id"])["stored_at"], timeout=30)
    receipts = pair.bob.uds().call("GET", "/v1/outbox?purpose=receipt")["items"]
    assert len(receipts) == 1 and receipts[0]["status"] == "done"
    assert len(status(pair.alice, sent["client_message_id"])["receipts"]) == 1
    # a second restart re-sends nothing
    pair.bob.stop()
    pair.bob.start()
    assert len(pair.bob.uds().call("GET", "/v1/outbox?purpose=receipt")["items"]) == 1


def test_a_session_whose_pid_died_is_reaped_and_a_live_one_survives_a_restart(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    pair.bob.stop()
    pair.bob.start("--session-check", "0.5")
    live = register(pair.bob, "live", owner(owners))
    doomed = register(pair.bob, "doomed", owner(owners))
    lease = register(pair.bob, "leased", lease_s=10)
    owners[1].kill()
    owners[1].wait()
    wait_for(lambda: doomed["session_id"] not in {
        s["session_id"] for s in pair.bob.uds().call("GET", "/v1/sessions")["sessions"]},
        timeout=5)
    gone = pair.bob.uds().request("GET", f"/v1/sessions/{doomed['session_id']}")
    assert gone.status == 404 and gone.body["error"] == "session_not_found"
    pair.bob.stop()
    pair.bob.start()
    ids = {s["session_id"] for s in pair.bob.uds().call("GET", "/v1/sessions")["sessions"]}
    assert live["session_id"] in ids and lease["session_id"] in ids
    # the name is free again and a new owner takes it
    again = register(pair.bob, "doomed", owner(owners))
    assert again["session_id"] != doomed["session_id"]


def test_registration_rules(pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    pid = owner(owners)
    api = pair.bob.uds()
    first = api.request("POST", "/v1/sessions", {"name": "work", "pid": pid})
    assert first.status == 201
    same = api.request("POST", "/v1/sessions", {"name": "work", "pid": pid, "cwd": "/tmp"})
    assert same.status == 200 and same.body["session_id"] == first.body["session_id"]
    assert same.body["cwd"] == "/tmp"
    taken = api.request("POST", "/v1/sessions", {"name": "work", "pid": owner(owners)})
    assert taken.status == 409 and taken.body["error"] == "session_name_taken"
    assert taken.body["holder"]["session_id"] == first.body["session_id"]
    for body, code in (
            ({"name": "x", "pid": 2**31 - 2}, "process_not_found"),
            ({"name": "-x"}, "invalid_request"),
            ({"name": "x", "pid": pid, "lease_s": 30}, "invalid_request"),
            ({"name": "x", "lease_s": 5}, "invalid_request"),
            ({"name": "x", "cwd": "relative"}, "invalid_request"),
            ({"name": "x", "extra": 1}, "invalid_request")):
        resp = api.request("POST", "/v1/sessions", body)
        assert resp.status in (400, 422) and resp.body["error"] == code, (body, resp.body)
    bad_send = pair.bob.send({"to": "alice", "message": "x", "session": "01" + "Z" * 24})
    assert bad_send.status == 422 and bad_send.body["error"] == "unknown_session"
    for to in ("#topic/x", "*/x", "alice/-x"):
        assert pair.bob.send({"to": to, "message": "x"}).status == 400
    assert pair.bob.send({"to": "alice", "message": "\x00sealed?"}).status == 400
    assert api.request("GET", "/v1/inbox?unread=1").status == 400
    assert api.request("DELETE", f"/v1/sessions/{first.body['session_id']}").status == 200
    assert api.request("DELETE", f"/v1/sessions/{first.body['session_id']}").status == 404


async def test_a_receipt_signed_by_the_wrong_key_is_ignored(pair: Mesh2) -> None:
    """bob's daemon is stopped and a raw client speaks as bob, sending receipts for a
    message alice sent him: the forged ones are ignored, the genuine one counts."""
    pair.bob.stop()
    sent = send(pair.alice, "bob", "did you get it?")
    cmid = sent["client_message_id"]
    wait_for(lambda: status(pair.alice, cmid)["state"] == "accepted")
    cfg = pair.bob.meshes[0]
    bob = Identity(cfg["mesh_id"], cfg["member_id"], MemberKey.from_secret(cfg["secret_key"]),
                   "bob")
    mallory = MemberKey.generate()

    def receipt(recipient: str) -> Receipts:
        return Receipts(cfg["mesh_id"], recipient=recipient, sender=pair.alice_key, items=(
            ReceiptItem(ReceiptState.STORED, cmid, status(pair.alice, cmid)["broker_message_id"],
                        session=None, path=None, at=1764170000000),))

    def signed(r: Receipts, key: MemberKey) -> Receipts:
        return dataclasses.replace(r, signature=key.sign(r.statement()))

    attempts = [signed(receipt(bob.pubkey), mallory),  # bob's receipt, mallory's signature
                signed(receipt(mallory.pubkey), mallory),  # names mallory, sent by bob
                signed(receipt(bob.pubkey), bob.key)]  # the genuine one
    client, ack = await Client.hello(pair.broker.url, bob)
    assert ack["type"] == "hello_ack", ack
    try:
        for i, r in enumerate(attempts):
            sealed = seal_receipts(r)
            boxed = box_encrypt(sealed, sender_secret_hex=bob.key.secret_key,
                                recipient_pubkey_hex=pair.alice_key)
            answer = await client.request(client.envelope(
                pair.alice_key, "", f"forged-{i}", digest=hashlib.sha256(sealed).hexdigest(),
                body={"kind": "crypto_box", "nonce": boxed.nonce,
                      "ciphertext": boxed.ciphertext}))
            assert answer["code"] == 201, answer
    finally:
        await client.close()
    # pushes are handled in order: once the genuine receipt counts, the forged ones were seen
    final = wait_for(lambda: status(pair.alice, cmid)["stored_at"] and status(pair.alice, cmid))
    assert final["state"] == "stored"
    assert [r["recipient_pubkey"] for r in final["receipts"]] == [bob.pubkey]
    assert stored_receipts(pair.alice) == 1
    metrics = pair.alice.uds().call("GET", "/v1/metrics")
    assert 'cm_daemon_receipts_invalid_total{mesh="' in metrics
    assert next(line for line in metrics.splitlines()
                if line.startswith("cm_daemon_receipts_invalid_total")).endswith(" 2.0")
    assert pair.alice.uds().call("GET", "/v1/inbox")["items"] == []


def stored_receipts(daemon: DaemonHandle) -> int:
    with contextlib.closing(sqlite3.connect(
            f"file:{daemon.paths.outbox_db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM receipt").fetchone()[0])


def test_cli_status_and_sessions(pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    build = register(pair.bob, "build", owner(owners))
    sent = send(pair.alice, "bob/build", "via the cli")
    waited = cli(pair.alice.env, "status", sent["client_message_id"], "--wait", "stored",
                 "--json")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["state"] == "stored"
    item = wait_for(lambda: unread(pair.bob, "build"))[0]
    pair.bob.uds().call("POST", "/v1/inbox/seen", {"session": build["session_id"],
                                                    "ids": [item["id"]], "path": "poll"})
    text = cli(pair.alice.env, "status", sent["client_message_id"], "--wait", "surfaced")
    assert text.returncode == 0, text.stderr
    assert "surfaced" in text.stdout and "via poll, session build" in text.stdout
    never = cli(pair.alice.env, "status", "no-such-id", "--json")
    assert never.returncode == 1 and json.loads(never.stdout)["error"] == "message_not_found"
    # nobody surfaces this one: --wait gives up with exit 1
    other = send(pair.alice, "bob/elsewhere", "unread")
    late = cli(pair.alice.env, "status", other["client_message_id"], "--wait", "surfaced",
               "--timeout", "1", "--json")
    assert late.returncode == 1
    listed = cli(pair.bob.env, "sessions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(s["name"], s["unread"]) for s in json.loads(listed.stdout)["sessions"]] == [
        ("build", 0)]
    ended = cli(pair.bob.env, "sessions", "end", build["session_id"], "--json")
    assert ended.returncode == 0 and json.loads(ended.stdout)["deleted"] is True
    assert "no sessions" in cli(pair.bob.env, "sessions").stdout


def test_peers_list_each_members_sessions_with_their_line(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    build = register(pair.bob, "build", owner(owners))
    register(pair.bob, "chat", owner(owners))
    line = pair.bob.uds().call("POST", "/v1/profile", {
        "session": build["session_id"], "summary": "running the suite", "status": "working"})
    assert line["published"] is True and line["session"] == "build"

    def bobs_sessions() -> list[dict[str, Any]]:
        peers = pair.alice.uds().call("GET", "/v1/peers")["peers"]
        return next(p["sessions"] for p in peers if p["display_name"] == "bob")

    listed = wait_for(lambda: len(bobs_sessions()) == 2 and bobs_sessions())
    assert {s["name"]: (s["address"], s["status"], s["summary"]) for s in listed} == {
        "build": ("bob/build", "working", "running the suite"),
        "chat": ("bob/chat", None, None)}
    refused = pair.bob.uds().request("POST", "/v1/profile", {
        "session": build["session_id"], "bio": "not a session field"})
    assert refused.status == 400
    owners[0].kill()
    owners[0].wait()
    wait_for(lambda: [s["name"] for s in bobs_sessions()] == ["chat"], timeout=10)


def test_an_event_stream_of_one_session_carries_only_its_messages(
        pair: Mesh2, owners: list[subprocess.Popen[bytes]]) -> None:
    x = register(pair.bob, "x", owner(owners))
    register(pair.bob, "y", owner(owners))
    for to, text in (("bob/y", "for y"), ("bob/x", "for x"), ("bob", "for both")):
        send(pair.alice, to, text)
    wait_for(lambda: len(pair.bob.uds().call("GET", "/v1/inbox")["items"]) == 3)
    client = Api(pair.bob.paths)
    replayed = []
    for event in client.events(last_event_id=0, session=x["session_id"], reconnect=False,
                               idle_timeout_s=2):
        if event.kind == "message":
            replayed.append(event.data["body"])
        if len(replayed) == 2:
            break
    assert replayed == ["for x", "for both"]
    gone = client.request("GET", "/v1/events?session=01" + "Z" * 24)
    assert gone.status == 404 and gone.body["error"] == "session_not_found"
    assert client.request("GET", "/v1/events?session=%20bad").status == 400
