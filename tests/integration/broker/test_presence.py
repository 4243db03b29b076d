"""Presence leases, the directory, profiles, heartbeats (DESIGN §5.8), on a real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

from brokerkit import BrokerProcess, Client, Mesh, clients, hello_frame, new_broker


async def test_reconnect_within_the_lease_is_silent_and_a_longer_absence_is_one_leave() -> None:
    broker = new_broker("--presence-lease", "1.0")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice)) as (a,):
            b, _ = await Client.hello(broker.url, bob)
            joined = await a.next("event", event="peer_joined")
            assert joined["peer"]["pubkey"] == bob.pubkey and joined["peer"]["online"] is True
            await b.close()
            await asyncio.sleep(0.4)
            b, _ = await Client.hello(broker.url, bob)  # back within the lease
            await a.nothing("event", 1.2)
            await b.close()
            start = time.monotonic()
            left = await a.next("event", timeout=5, event="peer_left")
            assert 0.8 <= time.monotonic() - start <= 3.0
            assert left["peer"]["pubkey"] == bob.pubkey and left["peer"]["online"] is False
            await a.nothing("event", 1.5)
    finally:
        broker.cleanup()


async def test_peer_left_waits_for_the_default_90_second_lease(broker: BrokerProcess,
                                                               mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice)) as (a,):
        b, _ = await Client.hello(broker.url, bob)
        await a.next("event", event="peer_joined")
        await b.close()
        await a.nothing("event", 2.0)
        peers = {p["display_name"]: p for p in (await a.request({"type": "list_peers"}))["peers"]}
        assert peers["bob"]["online"] is True  # still leased


async def test_list_peers_and_profiles(broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await b.request({"type": "join_group", "group": "ops"})
        answer = await b.request({"type": "set_profile", "summary": "fixing CI",
                                  "status": "working", "title": "SRE",
                                  "capabilities": ["deploy", "page"]})
        assert answer["applied"] == ["capabilities", "status", "summary", "title"]
        updated = await a.next("event", event="profile_updated")
        assert updated["peer"]["summary"] == "fixing CI"
        peers = {p["display_name"]: p for p in (await a.request({"type": "list_peers"}))["peers"]}
        assert set(peers) == {"alice", "bob", "carol"}
        assert (peers["bob"]["online"], peers["carol"]["online"]) == (True, False)
        assert (peers["bob"]["status"], peers["bob"]["title"], peers["bob"]["groups"]) == (
            "working", "SRE", ["ops"])
        assert peers["bob"]["capabilities"] == ["deploy", "page"]
        assert peers["carol"]["pubkey"] == carol.pubkey
        bad = await b.request({"type": "set_profile", "status": "asleep"})
        assert (bad["type"], bad["code"]) == ("error", "invalid_frame")
        await b.request({"type": "set_profile", "visible": False})
        visible = {p["display_name"] for p in (await a.request({"type": "list_peers"}))["peers"]}
        assert visible == {"alice", "carol"}
        own = {p["display_name"] for p in (await b.request({"type": "list_peers"}))["peers"]}
        assert "bob" in own


async def test_a_silent_connection_is_cut_after_ping_plus_timeout() -> None:
    """A client that completes the handshake and hello, then never answers a ping."""
    broker = new_broker("--ping-interval", "0.5", "--ping-timeout", "0.5",
                        "--presence-lease", "0.3")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice)) as (a,):
            raw = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            raw.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                        .encode())
            assert raw.recv(4096).startswith(b"HTTP/1.1 101")
            payload = json.dumps(hello_frame(bob)).encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
            raw.sendall(header + masked)
            await a.next("event", event="peer_joined")
            started = time.monotonic()
            left = await a.next("event", timeout=10, event="peer_left")  # never ponged
            assert left["peer"]["pubkey"] == bob.pubkey
            assert time.monotonic() - started < 5
            raw.close()
    finally:
        broker.cleanup()
