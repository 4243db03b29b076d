"""Threads, search and inbox retention through a real broker and real daemons (issue 15,
items 4 and 5): the words are found in the daemons' own decrypted copies only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from helpers import DaemonHandle, cli
from meshkit import Mesh2, wait_for


def send(daemon: DaemonHandle, to: str, message: str, **extra: Any) -> dict[str, Any]:
    resp = daemon.send({"to": to, "message": message, **extra})
    assert resp.status == 202, resp.body
    return dict(resp.body)


def delivered(daemon: DaemonHandle, cmid: str) -> str:
    """The broker_message_id of a sent message, once the broker has it."""
    def done() -> str | None:
        [row] = daemon.uds().call("GET", f"/v1/outbox?client_message_id={cmid}")["items"]
        return row["broker_message_id"] if row["status"] == "done" else None
    return str(wait_for(done))


def received(daemon: DaemonHandle, cmid: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        items = daemon.uds().call("GET", "/v1/inbox?limit=1000")["items"]
        return next((i for i in items if i["client_message_id"] == cmid), None)
    return dict(wait_for(find))


def search(daemon: DaemonHandle, query: str, path: str = "/v1/inbox") -> list[dict[str, Any]]:
    return list(daemon.uds().call("GET", f"{path}?q={quote(query)}")["items"])


def broker_files_hold(root: Path, word: bytes) -> bool:
    return any(word in p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_a_dm_is_found_by_a_word_and_gone_after_retention(pair: Mesh2) -> None:
    sent = send(pair.bob, "alice", "the zebra codeword is Ultramarine tonight")
    received(pair.alice, sent["client_message_id"])
    [hit] = search(pair.alice, "ultramarine")
    assert hit["client_message_id"] == sent["client_message_id"]
    assert hit["highlight"] == "the zebra codeword is [Ultramarine] tonight"
    assert hit["topic"] is None and hit["sender_name"] == "bob"
    assert search(pair.alice, "zebra NOT ultramarine") == []
    # the sender finds its own words in its outbox, though the row holds only ciphertext
    [mine] = search(pair.bob, "codeword", "/v1/outbox")
    assert (mine["body"], mine["highlight"]) == (
        "the zebra codeword is Ultramarine tonight",
        "the zebra [codeword] is Ultramarine tonight")
    assert not broker_files_hold(pair.broker.root, b"Ultramarine")  # crypto_box end to end
    # retention: a restart with a 1 s retention prunes the row, its index entry with it
    pair.alice.stop()
    pair.alice.start("--inbox-retention", "1")
    wait_for(lambda: pair.alice.uds().call("GET", "/v1/inbox")["items"] == [])
    assert search(pair.alice, "ultramarine") == []
    with sqlite3.connect(f"file:{pair.alice.paths.inbox_db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM inbox_fts_docsize").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM receipt_queue").fetchone() == (0,)


def test_a_thread_across_a_broadcast_and_dms_in_order_with_own_replies(pair: Mesh2) -> None:
    root = send(pair.alice, "*", "plan: release on friday")
    root_id = delivered(pair.alice, root["client_message_id"])
    one = send(pair.bob, "alice", "friday works for me", reply_to=root_id)
    one_id = received(pair.alice, one["client_message_id"])["broker_message_id"]
    two = send(pair.alice, "bob", "then I tag it thursday", reply_to=one_id)
    two_id = delivered(pair.alice, two["client_message_id"])
    three = send(pair.bob, "*", "all: tag thursday, release friday", reply_to=two_id)
    received(pair.alice, three["client_message_id"])
    side = send(pair.bob, "alice", "a second answer to the plan", reply_to=root_id)
    received(pair.alice, side["client_message_id"])
    send(pair.bob, "alice", "unrelated chatter")
    expected = [("sent", root["client_message_id"]), ("received", one["client_message_id"]),
                ("sent", two["client_message_id"]), ("received", three["client_message_id"]),
                ("received", side["client_message_id"])]
    for ident in (root_id, two["client_message_id"], three["client_message_id"]):
        answer = pair.alice.uds().call("GET", f"/v1/inbox?thread={ident}")
        got = [(i["direction"], i["client_message_id"]) for i in answer["items"]]
        assert got == expected, ident
        assert answer["thread"] == root_id and answer["truncated"] is False
    items = pair.alice.uds().call("GET", f"/v1/inbox?thread={root_id}")["items"]
    assert [i["body"] for i in items][:3] == [
        "plan: release on friday", "friday works for me", "then I tag it thursday"]
    assert [i["topic"] for i in items] == ["*", None, None, "*", None]
    assert [i["reply_to"] for i in items] == [None, root_id, one_id, two_id, root_id]
    capped = pair.alice.uds().call("GET", f"/v1/inbox?thread={root_id}&limit=2")
    assert len(capped["items"]) == 2 and capped["truncated"] is True
    # bob sees the same thread from his side: his replies are the sent ones
    bobs = pair.bob.uds().call("GET", f"/v1/inbox?thread={one_id}")["items"]
    assert [i["client_message_id"] for i in bobs] == [c for _, c in expected]
    assert [i["direction"] for i in bobs] == [
        "received", "sent", "received", "sent", "sent"]


def test_bad_reply_to_thread_and_search_queries_are_400_or_404(pair: Mesh2) -> None:
    for bad in ("msg-123", "01jd3y2m8q6v1t0zk5b7x9c4rw", "8" + "0" * 25, "0" * 27):
        resp = pair.alice.send({"to": "bob", "message": "x", "reply_to": bad})
        assert resp.status == 400, bad
        assert "reply_to" in resp.body["detail"] and "broker_message_id" in resp.body["detail"]
    assert pair.alice.outbox() == []  # a refused request wrote nothing
    api = pair.alice.uds()
    for query in ('"open', "AND", "(a", ""):
        resp = api.request("GET", f"/v1/inbox?q={quote(query)}")
        assert resp.status == 400, query
        assert resp.body["error"] == "invalid_request" and resp.body["detail"].startswith("q:")
        assert api.request("GET", f"/v1/outbox?q={quote(query)}").status == 400
    assert api.request("GET", "/v1/inbox?q=x&order=asc").status == 400
    assert api.request("GET", "/v1/inbox?thread=x&topic=y").status == 400
    assert api.request("GET", "/v1/outbox?cursor=5").status == 400
    assert api.request("GET", "/v1/outbox?q=x&mesh=nope").status == 422
    missing = api.request("GET", "/v1/inbox?thread=01JD3Y2M8Q6V1T0ZK5B7X9C4RW")
    assert (missing.status, missing.body["error"]) == (404, "message_not_found")


def test_cli_search_json_lists_received_and_sent(pair: Mesh2) -> None:
    sent = send(pair.bob, "alice", "quarterly kumquat report")
    received(pair.alice, sent["client_message_id"])
    send(pair.alice, "bob", "thanks for the kumquat numbers")
    result = cli(pair.alice.env, "search", "kumquat", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [i["client_message_id"] for i in doc["received"]] == [sent["client_message_id"]]
    assert [i["body"] for i in doc["sent"]] == ["thanks for the kumquat numbers"]
    assert "[kumquat]" in doc["received"][0]["highlight"]
    only = json.loads(cli(pair.alice.env, "search", "kumquat", "--sent", "--json").stdout)
    assert set(only) == {"sent"}
    by_bob = json.loads(cli(pair.alice.env, "search", "kumquat", "--from", "bob",
                            "--json").stdout)
    assert set(by_bob) == {"received"} and len(by_bob["received"]) == 1
    bad = cli(pair.alice.env, "search", '"unbalanced', "--json")
    assert bad.returncode == 2, bad  # a usage error
    error = json.loads(bad.stdout or bad.stderr)
    assert error["error"] == "invalid_request" and error["detail"].startswith("q:")
    text = cli(pair.alice.env, "search", "kumquat")
    assert text.returncode == 0 and "[kumquat]" in text.stdout
