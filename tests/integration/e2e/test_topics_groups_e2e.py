"""Topics and groups through real daemons and a real broker (issue 15 items 1-2, anycast):
subscriptions that survive restarts of both sides, history filed exactly once, group
fan-out and anycast counts, roles, and the routes' refusals."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from claudemesh.errors import NotSubscribed
from helpers import DaemonHandle, cleanup_all, cli
from meshkit import (
    Mesh2,
    SseReader,
    heard_membership,
    inbox,
    joined_daemon,
    link_state,
    wait_for,
)


def call(daemon: DaemonHandle, method: str, path: str, body: Any = None) -> Any:
    return daemon.uds().call(method, path, body)


def status(daemon: DaemonHandle, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = daemon.uds().request(method, path, body)
    return resp.status, resp.body


def bodies(daemon: DaemonHandle) -> list[str]:
    return [i["body"] for i in inbox(daemon)]


def test_subscriptions_survive_daemon_and_broker_restarts(pair: Mesh2) -> None:
    alice, bob, broker = pair.alice, pair.bob, pair.broker
    assert call(bob, "POST", "/v1/topic/subscribe", {"topic": "#news"}) == {
        "mesh": "demo", "topic": "news", "subscribed": True, "changed": True}
    assert call(bob, "POST", "/v1/topic/subscribe", {"topic": "news"})["changed"] is False
    record = bob.paths.daemon_dir / "topic_subscriptions.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert json.loads(record.read_text())["meshes"]["demo"]["topics"] == ["news"]
    posted = alice.uds().request("POST", "/v1/topic/post", {"topic": "news", "message": "m1"})
    assert posted.status == 202, posted.body
    wait_for(lambda: bodies(bob) == ["m1"])
    assert call(bob, "GET", "/v1/topic/list")["topics"] == [
        {"topic": "news", "subscribers": 1, "subscribed": True}]
    bob.stop()
    bob.start()
    wait_for(lambda: link_state(bob) == "open")
    assert call(alice, "POST", "/v1/topic/post", {"topic": "news", "message": "m2"})
    wait_for(lambda: bodies(bob) == ["m1", "m2"])
    # The broker restarts having lost the subscription: bob's daemon asserts it again.
    broker.stop()
    assert broker.query("SELECT count(*) FROM topic_subscription") == [(1,)]
    import sqlite3  # noqa: PLC0415
    with sqlite3.connect(broker.db) as conn:
        conn.execute("DELETE FROM topic_subscription")
    broker.start()
    wait_for(lambda: broker.query("SELECT count(*) FROM topic_subscription") == [(1,)])
    wait_for(lambda: link_state(alice) == "open")
    assert call(alice, "POST", "/v1/topic/post", {"topic": "news", "message": "m3"})
    wait_for(lambda: bodies(bob) == ["m1", "m2", "m3"])
    page = call(bob, "GET", "/v1/topic/history?topic=news")
    assert [i["body"] for i in page["items"]] == ["m3", "m2", "m1"]
    assert page["next_before"] is None
    assert len(inbox(bob)) == 3  # all three were filed already: nothing twice


def test_a_late_subscribers_backfill_files_each_message_once(pair: Mesh2) -> None:
    """History before bob joined is under epochs never sealed to him: filed once each, as
    undecryptable (issue 15: a later member reads only the epochs it was given); what is
    posted after he joined he reads, in history as in his inbox."""
    alice, bob = pair.alice, pair.bob
    call(alice, "POST", "/v1/topic/subscribe", {"topic": "build"})
    for n in range(5):
        call(alice, "POST", "/v1/topic/post", {"topic": "#build", "message": f"b{n}",
                                               "client_message_id": f"build-{n}"})
    wait_for(lambda: {r["status"] for r in alice.outbox()} == {"done"})
    status_code, refused = status(bob, "GET", "/v1/topic/history?topic=build")
    assert (status_code, refused["error"]) == (403, NotSubscribed.code)
    events = SseReader(bob).start()
    try:
        sub = call(bob, "POST", "/v1/topic/subscribe", {"topic": "build", "backfill": 3})
        items = sub["backfill"]["items"]
        assert [i["client_message_id"] for i in items] == ["build-4", "build-3", "build-2"]
        assert {(i["body"], bool(i["undecryptable"])) for i in items} == {(None, True)}
        assert sub["backfill"]["next_before"] == items[-1]["history_id"]
        assert sorted(d["client_message_id"] for _, d in events.messages(3)) == [
            "build-2", "build-3", "build-4"]
        older = call(bob, "GET", "/v1/topic/history?topic=build&before="
                     f"{sub['backfill']['next_before']}&limit=10")
        assert [i["client_message_id"] for i in older["items"]] == ["build-1", "build-0"]
        assert sorted(d["client_message_id"] for _, d in events.messages(2)) == [
            "build-0", "build-1"]
        wait_for(lambda: heard_membership(alice, pair.broker, "build"))
        call(alice, "POST", "/v1/topic/post", {"topic": "build", "message": "after",
                                               "client_message_id": "build-5"})
        _, fresh = events.next("message")
        assert (fresh["client_message_id"], fresh["body"]) == ("build-5", "after")
        again = call(bob, "GET", "/v1/topic/history?topic=build&limit=500")
        assert [i["client_message_id"] for i in again["items"]] == [
            f"build-{n}" for n in range(5, -1, -1)]
        assert again["items"][0]["body"] == "after"
        assert all(i["seq"] is not None for i in again["items"])
        # No event for the repeats: the next message event is this DM.
        call(alice, "POST", "/v1/send", {"to": "bob", "message": "sentinel"})
        _, nxt = events.next("message")
        assert nxt["body"] == "sentinel"
    finally:
        events.close()
    rows = inbox(bob)
    assert sorted(i["client_message_id"] for i in rows if i["topic"] == "build") == [
        f"build-{n}" for n in range(6)]
    # alice's own posts come back in her history, readable (her keys), shown, not filed.
    own = call(alice, "GET", "/v1/topic/history?topic=build")["items"]
    assert [(i["body"], i["seq"]) for i in own] == [
        ("after", None), *((f"b{n}", None) for n in range(4, -1, -1))]
    assert [i for i in inbox(alice) if i["topic"] == "build"] == []
    assert call(bob, "POST", "/v1/topic/unsubscribe", {"topic": "build"})["changed"] is True
    assert status(bob, "GET", "/v1/topic/history?topic=build")[0] == 403


@pytest.fixture
def team(pair: Mesh2) -> Iterator[tuple[Mesh2, list[DaemonHandle]]]:
    others = [joined_daemon(pair.invite, name) for name in ("carol", "dave")]
    try:
        yield pair, [pair.bob, *others]
    finally:
        cleanup_all(*others)


def test_group_fanout_reaches_each_member_once_and_anycast_one(
        team: tuple[Mesh2, list[DaemonHandle]]) -> None:
    pair, members = team
    alice = pair.alice
    for daemon, role in zip(members, ("lead", None, "reviewer"), strict=True):
        body: dict[str, Any] = {"group": "@ops"} | ({"role": role} if role else {})
        assert call(daemon, "POST", "/v1/group/join", body)["role"] == role
    listed = call(pair.bob, "GET", "/v1/group/list")["groups"]
    [ops] = listed
    assert (ops["group"], ops["members"], ops["member"], ops["role"]) == ("ops", 3, True, "lead")
    assert sorted((r["display_name"], r["role"], r["online"]) for r in ops["roster"]) == [
        ("bob", "lead", True), ("carol", None, True), ("dave", "reviewer", True)]
    assert call(alice, "GET", "/v1/group/list")["groups"][0]["member"] is False
    call(alice, "POST", "/v1/send", {"to": "@ops", "message": "all hands"})
    for daemon in members:
        wait_for(lambda d=daemon: bodies(d) == ["all hands"])
    for n in range(6):
        sent = alice.send({"to": "@ops", "message": f"one-{n}", "anycast": True})
        assert sent.status == 202, sent.body
    wait_for(lambda: sum(len(inbox(d)) for d in members) == 3 + 6)
    got = {d.meshes[0]["display_name"]: [b for b in bodies(d) if b.startswith("one-")]
           for d in members}
    assert sorted(b for bs in got.values() for b in bs) == [f"one-{n}" for n in range(6)]
    assert {len(bs) for bs in got.values()} == {2}, got  # round-robin over the online three
    item = next(i for i in inbox(pair.bob) if i["body"].startswith("one-"))
    assert item["destination"] == "@ops"
    assert call(pair.bob, "POST", "/v1/group/leave", {"group": "ops"})["changed"] is True
    record = json.loads((pair.bob.paths.daemon_dir / "topic_subscriptions.json").read_text())
    assert record["meshes"]["demo"]["groups"] == {}
    assert json.loads((members[2].paths.daemon_dir / "topic_subscriptions.json")
                      .read_text())["meshes"]["demo"]["groups"] == {"ops": "reviewer"}
    # Anycast is for groups only.
    assert status(alice, "POST", "/v1/send",
                  {"to": pair.bob_key, "message": "x", "anycast": True})[0] == 400


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/topic/subscribe", {"topic": "bad topic"}),
    ("POST", "/v1/topic/subscribe", {"topic": "#"}),
    ("POST", "/v1/topic/subscribe", {"topic": "news", "extra": 1}),
    ("POST", "/v1/topic/subscribe", {"topic": "news", "backfill": 1001}),
    ("POST", "/v1/topic/subscribe", {"topic": "news", "backfill": "3"}),
    ("POST", "/v1/topic/unsubscribe", {}),
    ("POST", "/v1/topic/post", {"topic": "news"}),
    ("POST", "/v1/topic/post", {"topic": "news", "message": "m", "to": "#news"}),
    ("POST", "/v1/topic/post", {"topic": "news", "message": "m", "anycast": True}),
    ("POST", "/v1/topic/post", {"message": "m"}),
    ("GET", "/v1/topic/history", None),
    ("GET", "/v1/topic/history?topic=news&limit=0", None),
    ("GET", "/v1/topic/history?topic=news&limit=501", None),
    ("GET", "/v1/topic/history?topic=news&limit=%C2%B2", None),
    ("GET", "/v1/topic/history?topic=news&before=abc", None),
    ("GET", "/v1/topic/history?topic=news&topic=x", None),
    ("GET", "/v1/topic/list?bogus=1", None),
    ("POST", "/v1/group/join", {"group": "ops", "role": "x" * 33}),
    ("POST", "/v1/group/join", {"group": "ops", "role": "has space"}),
    ("POST", "/v1/group/join", {"group": "@"}),
    ("POST", "/v1/group/leave", {"group": "ops", "role": "lead"}),
    ("GET", "/v1/group/list?mesh=demo&x=1", None),
    ("POST", "/v1/send", {"to": "#news", "message": "m", "anycast": True}),
    ("POST", "/v1/send", {"to": "*", "message": "m", "anycast": True}),
    ("POST", "/v1/send", {"to": "@ops", "message": "m", "anycast": "yes"}),
])
def test_bad_input_is_400(shared_daemon: DaemonHandle, method: str, path: str,
                          body: Any) -> None:
    code, answer = status(shared_daemon, method, path, body)
    assert (code, answer["error"]) == (400, "invalid_request"), answer


def test_unknown_mesh_is_422_and_a_down_link_503(shared_daemon: DaemonHandle) -> None:
    assert status(shared_daemon, "POST", "/v1/topic/subscribe",
                  {"topic": "news", "mesh": "nope"})[0] == 422
    assert status(shared_daemon, "GET", "/v1/group/list?mesh=nope")[0] == 422
    for method, path, body in [
            ("POST", "/v1/topic/subscribe", {"topic": "news"}),
            ("POST", "/v1/topic/unsubscribe", {"topic": "news"}),
            ("GET", "/v1/topic/list", None),
            ("GET", "/v1/topic/history?topic=news", None),
            ("POST", "/v1/group/join", {"group": "ops"}),
            ("POST", "/v1/group/leave", {"group": "ops"}),
            ("GET", "/v1/group/list", None)]:
        code, answer = status(shared_daemon, method, path, body)
        assert (code, answer["error"]) == (503, "broker_unavailable"), (path, answer)
    # A post is an accept: queued in the outbox while the broker is away.
    code, answer = status(shared_daemon, "POST", "/v1/topic/post",
                          {"topic": "news", "message": "later", "client_message_id": "tp-1"})
    assert (code, answer["status"]) == (202, "queued")
    again = shared_daemon.uds().request("POST", "/v1/topic/post",
                                        {"topic": "#news", "message": "later"},
                                        {"Idempotency-Key": "tp-1"})
    assert again.status == 202 and again.body["outbox_id"] == answer["outbox_id"]
    clash = shared_daemon.uds().request("POST", "/v1/topic/post",
                                        {"topic": "other", "message": "later"},
                                        {"Idempotency-Key": "tp-1"})
    assert clash.status == 409


def run_cli(daemon: DaemonHandle, *args: str, ok: bool = True) -> Any:
    result = cli(daemon.env, *args)
    assert (result.returncode == 0) is ok, (result.stdout, result.stderr)
    return json.loads(result.stdout) if "--json" in args and ok else result


def test_the_cli_commands(pair: Mesh2) -> None:
    alice, bob = pair.alice, pair.bob
    sub = run_cli(bob, "topic", "sub", "#cli-news", "--json")
    assert (sub["topic"], sub["subscribed"], sub["changed"]) == ("cli-news", True, True)
    assert run_cli(bob, "topic", "list", "--json")["topics"] == [
        {"topic": "cli-news", "subscribers": 1, "subscribed": True}]
    for n in range(3):
        posted = run_cli(alice, "topic", "post", "cli-news", f"line {n}", "--json")
        assert posted["status"] == "queued"
    wait_for(lambda: len(inbox(bob)) == 3)
    page = run_cli(bob, "topic", "history", "cli-news", "--limit", "2", "--json")
    assert [i["body"] for i in page["items"]] == ["line 2", "line 1"]
    human = run_cli(bob, "topic", "history", "cli-news").stdout
    assert human.index("line 0") < human.index("line 1") < human.index("line 2")  # oldest first
    again = run_cli(bob, "topic", "sub", "cli-news", "--backfill", "10", "--json")
    assert (again["changed"], len(again["backfill"]["items"])) == (False, 3)
    assert len(inbox(bob)) == 3
    assert run_cli(bob, "topic", "unsub", "cli-news", "--json")["subscribed"] is False
    refused = run_cli(bob, "topic", "history", "cli-news", "--json", ok=False)
    assert json.loads(refused.stdout)["error"] == "not_subscribed"
    joined = run_cli(bob, "group", "join", "@cli-ops", "--role", "lead", "--json")
    assert (joined["group"], joined["role"], joined["changed"]) == ("cli-ops", "lead", True)
    [ops] = run_cli(alice, "group", "list", "--json")["groups"]
    assert [(m["display_name"], m["role"]) for m in ops["roster"]] == [("bob", "lead")]
    assert "lead" in run_cli(alice, "group", "list").stdout
    sent = run_cli(alice, "send", "@cli-ops", "one of you", "--anycast", "--json")
    assert sent["status"] in ("queued", "delivered")
    wait_for(lambda: [i["body"] for i in inbox(bob)][-1:] == ["one of you"])
    assert run_cli(bob, "group", "leave", "cli-ops", "--json")["member"] is False
    bad = run_cli(alice, "send", "bob", "x", "--anycast", "--json", ok=False)
    assert json.loads(bad.stdout)["error"] == "invalid_request"
