"""Signed hello, negotiation, and the connection policies, against a real broker process."""

from __future__ import annotations

import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from brokerkit import BrokerProcess, Client, Identity, Mesh, hello_frame, new_broker
from claudemesh.crypto import MemberKey
from claudemesh.protocol.features import validate_features

EXPECTED_FEATURES = {
    "client_message_id_dedupe": {"params": {
        "version": 1, "mode": "retention_scoped", "dedupe_retention_days": 365,
        "request_fingerprint": True, "tombstone_history_pruned_window_days": 30}},
    "concurrent_connection_policy": {"params": {"version": 1, "default_policy": "prefer_newest"}},
    "member_keypair_rotated_event": {"params": {"version": 1}},
    "key_epoch": {"params": {"version": 2, "max_concurrent_epochs": 0, "encrypted_topics": True}},
    "max_payload": {"params": {"version": 1, "inline_bytes": 65536,
                                "blob_bytes": 50 * 1024 * 1024}},  # --max-file-bytes
    "frame_batch": {"params": {"version": 1, "max_frames": 256, "max_bytes": 131072}},
    "member_sessions": {"params": {"version": 1, "max_sessions": 32}},
}


async def test_hello_ack_carries_the_exact_feature_map(broker: BrokerProcess,
                                                       mesh: Mesh) -> None:
    alice = mesh.join("alice")
    client, ack = await Client.hello(broker.url, alice)
    try:
        assert ack["type"] == "hello_ack"
        assert (ack["mesh_id"], ack["member_id"], ack["display_name"], ack["mesh_name"]) == (
            mesh.mesh_id, alice.member_id, "alice", "demo")
        assert ack["features"] == EXPECTED_FEATURES
        assert ack["heartbeat"] == {"ping_interval_s": 30.0, "idle_timeout_s": 75.0}
        negotiated = validate_features(ack["features"])
        assert not hasattr(negotiated, "kind"), negotiated
        answer = await client.request({"type": "feature_negotiation_request",
                                       "require": ["client_message_id_dedupe", "nope"],
                                       "optional": ["max_payload"]})
        assert answer["type"] == "feature_negotiation_response"
        assert answer["supported"] == EXPECTED_FEATURES
        assert answer["missing_required"] == ["nope"]
    finally:
        await client.close()


async def refused(url: str, frame: dict[str, object]) -> tuple[dict[str, object], int | None]:
    client = await Client.open(url)
    await client.send(frame)
    error = await client.recv()
    code, _ = await client.closed()
    return error, code


@pytest.mark.parametrize("case", ["bad_signature", "wrong_key", "stale_past", "stale_future"])
async def test_bad_hellos_are_refused_and_closed_4001(broker: BrokerProcess, mesh: Mesh,
                                                      case: str) -> None:
    alice = mesh.join("alice")
    now = time.time_ns() // 1_000_000
    frame = {
        "bad_signature": {**hello_frame(alice), "signature": "00" * 64},
        "wrong_key": hello_frame(alice, key=MemberKey.generate()),
        "stale_past": hello_frame(alice, timestamp_ms=now - 61_000),
        "stale_future": hello_frame(alice, timestamp_ms=now + 61_000),
    }[case]
    error, code = await refused(broker.url, frame)
    expected = "stale_timestamp" if case.startswith("stale") else "bad_signature"
    assert (error["type"], error["code"], code) == ("error", expected, 4001)


async def test_a_replayed_hello_is_refused(broker: BrokerProcess, mesh: Mesh) -> None:
    alice = mesh.join("alice")
    frame = hello_frame(alice)
    first = await Client.open(broker.url)
    await first.send(frame)
    assert (await first.recv())["type"] == "hello_ack"
    await first.close()
    error, code = await refused(broker.url, frame)
    assert (error["code"], code) == ("replayed_nonce", 4001)


async def test_non_members_and_wrong_ids_are_unknown(broker: BrokerProcess, mesh: Mesh) -> None:
    alice = mesh.join("alice")
    stranger = Identity(mesh.mesh_id, alice.member_id, MemberKey.generate(), "eve")
    wrong_member = Identity(mesh.mesh_id, "01NOTAMEMBERID", alice.key, "alice")
    wrong_mesh = Identity("01NOTAMESH", alice.member_id, alice.key, "alice")
    for ident in (stranger, wrong_member, wrong_mesh):
        error, code = await refused(broker.url, hello_frame(ident))
        assert (error["code"], code) == ("unknown_member", 4001), ident


async def test_revoked_members_are_closed_4002_and_cannot_come_back(broker: BrokerProcess,
                                                                    mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    client, _ = await Client.hello(broker.url, bob)
    watcher, _ = await Client.hello(broker.url, alice)
    try:
        result = broker.cli("mesh", "revoke", bob.pubkey, "--db", str(broker.db), "--json")
        assert result.returncode == 0, result.stderr
        error = await client.next("error")
        assert error["code"] == "member_revoked"
        assert (await client.closed())[0] == 4002
        left = await watcher.next("event", event="peer_left")
        assert left["peer"]["pubkey"] == bob.pubkey
        again, code = await refused(broker.url, hello_frame(bob))
        assert (again["code"], code) == ("member_revoked", 4002)
    finally:
        await watcher.close()


async def test_frames_before_hello_get_hello_required_and_the_connection_stays(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice = mesh.join("alice")
    client = await Client.open(broker.url)
    try:
        await client.send({"type": "list_peers", "req_id": "x1"})
        error = await client.recv()
        assert (error["code"], error["req_id"]) == ("hello_required", "x1")
        await client.send(hello_frame(alice))
        assert (await client.recv())["type"] == "hello_ack"
        again = await client.request({"type": "list_peers"})
        assert again["type"] == "result"
        await client.send(hello_frame(alice))
        second = await client.next("error")
        assert second["code"] == "already_authenticated"
        with_req_id = await client.request(hello_frame(alice))
        assert (with_req_id["code"], with_req_id["detail"]) == ("invalid_frame",
                                                                "unknown field 'req_id'")
    finally:
        await client.close()


async def test_a_silent_connection_is_closed_4008_after_the_hello_timeout() -> None:
    broker = new_broker("--hello-timeout", "0.5")
    try:
        client = await Client.open(broker.url)
        code, reason = await client.closed(timeout=5)
        assert (code, reason) == (4008, "hello_timeout")
    finally:
        broker.cleanup()


async def test_prefer_newest_closes_the_older_connection_with_4003(broker: BrokerProcess,
                                                                   mesh: Mesh) -> None:
    alice = mesh.join("alice")
    old, _ = await Client.hello(broker.url, alice)
    new, ack = await Client.hello(broker.url, alice)
    try:
        assert ack["type"] == "hello_ack"
        assert await old.closed() == (4003, "replaced_by_newer_connection")
        assert (await new.request({"type": "list_peers"}))["type"] == "result"
    finally:
        await new.close()


async def test_prefer_oldest_refuses_the_newer_connection_with_4004(
        broker: BrokerProcess) -> None:
    strict = broker.create_mesh("strict", "--connection-policy", "prefer_oldest")
    alice = strict.join("alice")
    old, _ = await Client.hello(broker.url, alice)
    try:
        error, code = await refused(broker.url, hello_frame(alice))
        assert (error["code"], code) == ("member_already_connected", 4004)
        assert (await old.request({"type": "list_peers"}))["type"] == "result"
    finally:
        await old.close()


async def test_only_the_ws_path_upgrades(broker: BrokerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(broker.url.replace("/ws", "/other"))
    assert info.value.response.status_code == 404


async def test_a_broker_can_omit_a_feature_for_tests() -> None:
    broker = new_broker("--omit-feature", "client_message_id_dedupe")
    try:
        alice = broker.create_mesh().join("alice")
        client, ack = await Client.hello(broker.url, alice)
        await client.close()
        assert "client_message_id_dedupe" not in ack["features"]
        failure = validate_features(ack["features"])
        assert getattr(failure, "feature", None) == "client_message_id_dedupe"
    finally:
        broker.cleanup()
