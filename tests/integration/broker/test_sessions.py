"""``member_sessions``: a member's published sessions in set_profile, list_peers and
profile_updated, against a real broker process (both stores)."""

from __future__ import annotations

from typing import Any

import pytest

from brokerkit import BrokerProcess, Client, Mesh, clients, new_broker
from claudemesh.protocol.features import Negotiated, validate_features

BUILD = {"name": "build", "summary": "fixing CI", "status": "working", "harness": "claude-code"}
REVIEW = {"name": "review"}
REVIEW_SHOWN = {"name": "review", "summary": None, "status": None, "harness": None}


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert result["type"] == "result", result
    return {p["display_name"]: p for p in result["peers"]}


async def test_sessions_are_set_listed_announced_replaced_and_cleared(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        hello_peers = by_name(await a.request({"type": "list_peers"}))
        assert [hello_peers[n]["sessions"] for n in ("alice", "bob", "carol")] == [[], [], []]
        answer = await b.request({"type": "set_profile", "sessions": [BUILD, REVIEW]})
        assert answer["type"] == "result", answer
        assert answer["applied"] == ["sessions"]
        assert answer["peer"]["sessions"] == [BUILD, REVIEW_SHOWN]
        event = await a.next("event", event="profile_updated")
        assert (event["mesh_id"], event["peer"]["pubkey"]) == (mesh.mesh_id, bob.pubkey)
        assert event["peer"]["sessions"] == [BUILD, REVIEW_SHOWN]
        peers = by_name(await a.request({"type": "list_peers"}))
        assert peers["bob"]["sessions"] == [BUILD, REVIEW_SHOWN]
        assert (peers["alice"]["sessions"], peers["carol"]["sessions"]) == ([], [])
        assert peers["carol"]["pubkey"] == carol.pubkey
        # Other profile fields leave the list alone; a new list replaces it whole.
        await b.request({"type": "set_profile", "summary": "two windows"})
        kept = await a.next("event", event="profile_updated")
        assert (kept["peer"]["summary"], kept["peer"]["sessions"]) == (
            "two windows", [BUILD, REVIEW_SHOWN])
        other = {"name": "other.2", "summary": "", "status": "dnd", "harness": None}
        answer = await b.request({"type": "set_profile", "status": "dnd", "sessions": [other]})
        assert answer["applied"] == ["sessions", "status"]
        replaced = await a.next("event", event="profile_updated")
        assert replaced["peer"]["sessions"] == [other]
        assert by_name(await a.request({"type": "list_peers"}))["bob"]["sessions"] == [other]
        cleared = await b.request({"type": "set_profile", "sessions": []})
        assert (cleared["applied"], cleared["peer"]["sessions"]) == (["sessions"], [])
        assert (await a.next("event", event="profile_updated"))["peer"]["sessions"] == []
        assert by_name(await a.request({"type": "list_peers"}))["bob"]["sessions"] == []
        # The sender sees its own list too, and is not sent its own event.
        await b.request({"type": "set_profile", "sessions": [BUILD]})
        assert by_name(await b.request({"type": "list_peers"}))["bob"]["sessions"] == [BUILD]
        await a.next("event", event="profile_updated")
        await b.nothing("event", 0.3, event="profile_updated")


async def test_the_list_is_kept_in_the_store_across_reconnects_and_restarts() -> None:
    broker = new_broker()
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, bob)) as (b,):
            await b.request({"type": "set_profile", "sessions": [BUILD, REVIEW]})
        broker.stop()
        broker.start()
        async with clients((broker.url, alice)) as (a,):
            peers = by_name(await a.request({"type": "list_peers"}))
            assert peers["bob"]["sessions"] == [BUILD, REVIEW_SHOWN]
    finally:
        broker.cleanup()


def many(n: int) -> list[dict[str, Any]]:
    return [{"name": f"s{i}", "status": "idle"} for i in range(n)]


@pytest.mark.parametrize(("sessions", "detail"), [
    (many(33), "field 'sessions'"),
    ([BUILD, REVIEW, {"name": "build"}], "session name 'build' appears more than once"),
    ([{"name": "-build"}], "field 'sessions.0.name'"),
    ([REVIEW, {"name": "bob/build"}], "field 'sessions.1.name'"),
    ([{"name": "x" * 65}], "field 'sessions.0.name'"),
    ([{**BUILD, "status": "asleep"}], "field 'sessions.0.status'"),
    ([{**BUILD, "summary": "s" * 513}], "field 'sessions.0.summary'"),
    ([{**BUILD, "harness": "h" * 65}], "field 'sessions.0.harness'"),
    ([{**BUILD, "pid": 42}], "unknown field 'sessions.0.pid'"),
    ("build", "field 'sessions'"),
])
async def test_bad_session_lists_are_invalid_frames_that_change_nothing(
        broker: BrokerProcess, mesh: Mesh, sessions: Any, detail: str) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await b.request({"type": "set_profile", "summary": "before", "sessions": [REVIEW]})
        await a.next("event", event="profile_updated")
        refused = await b.request({"type": "set_profile", "summary": "after",
                                   "sessions": sessions})
        assert (refused["type"], refused["code"]) == ("error", "invalid_frame"), refused
        assert detail in refused["detail"], refused["detail"]
        await a.nothing("event", 0.5, event="profile_updated")
        peers = by_name(await a.request({"type": "list_peers"}))  # the connections stay
        assert (peers["bob"]["summary"], peers["bob"]["sessions"]) == ("before", [REVIEW_SHOWN])
        fits = await b.request({"type": "set_profile", "sessions": many(32)})
        assert len(fits["peer"]["sessions"]) == 32


async def test_a_broker_without_member_sessions_refuses_the_field() -> None:
    broker = new_broker("--omit-feature", "member_sessions")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        b, ack = await Client.hello(broker.url, bob)
        assert "member_sessions" not in ack["features"]
        assert "frame_batch" in ack["features"]
        negotiated = validate_features(ack["features"])
        assert isinstance(negotiated, Negotiated)
        assert (negotiated.max_sessions, negotiated.warnings) == (None, ())
        async with clients((broker.url, alice)) as (a,):
            for sessions in ([BUILD], []):
                refused = await b.request({"type": "set_profile", "summary": "x",
                                           "sessions": sessions})
                assert (refused["type"], refused["code"], refused["detail"]) == (
                    "error", "invalid_frame", "unknown field 'sessions'")
            # Inside a batch it is the same frame, refused the same way.
            await b.send({"type": "batch", "frames": [
                {"type": "set_profile", "req_id": "in-batch", "sessions": [BUILD]}]})
            assert (await b.next("error", req_id="in-batch"))["detail"] == (
                "unknown field 'sessions'")
            await a.nothing("event", 0.5, event="profile_updated")
            fine = await b.request({"type": "set_profile", "summary": "still works"})
            assert (fine["applied"], fine["peer"]["sessions"]) == (["summary"], [])
            peers = by_name(await a.request({"type": "list_peers"}))
            assert (peers["bob"]["summary"], peers["bob"]["sessions"]) == ("still works", [])
        await b.close()
    finally:
        broker.cleanup()


async def test_another_broker_on_the_store_announces_the_list(
        broker: BrokerProcess, mesh: Mesh, store_kind: str) -> None:
    """With PostgreSQL, a profile_updated crosses brokers: the other reads the list back."""
    if store_kind != "postgres":
        pytest.skip("one SQLite file serves one broker")
    second = new_broker(dsn=broker.dsn)
    try:
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((second.url, alice), (broker.url, bob)) as (a, b):
            await b.request({"type": "set_profile", "sessions": [BUILD]})
            event = await a.next("event", event="profile_updated")
            assert (event["peer"]["pubkey"], event["peer"]["sessions"]) == (bob.pubkey, [BUILD])
            assert by_name(await a.request({"type": "list_peers"}))["bob"]["sessions"] == [BUILD]
    finally:
        second.cleanup()
