"""Hostile input gets structured errors, and the broker keeps serving everyone else."""

from __future__ import annotations

import pytest

from brokerkit import BrokerProcess, Client, Mesh, clients

GARBAGE = [
    ("not json", "malformed_frame"),
    ("[1, 2]", "malformed_frame"),
    ('{"type": 5}', "malformed_frame"),
    ('{"no_type": true}', "malformed_frame"),
    ('{"type": "bogus"}', "unknown_type"),
    ('{"type": "subscribe", "req_id": "r", "topic": 7}', "invalid_frame"),
    ('{"type": "client_ack", "delivery_ids": []}', "invalid_frame"),
    ('{"type": "client_ack", "delivery_ids": ["x"]}', "invalid_frame"),
    ('{"type": "list_peers", "req_id": "r", "req_id": "s"}', "malformed_frame"),
    ('{"type": "list_peers", "req_id": NaN}', "malformed_frame"),
    ("[" * 50_000 + "]" * 50_000, "malformed_frame"),
    ('{"type": "list_peers", "req_id": "r", "extra": 1}', "invalid_frame"),
]


@pytest.mark.parametrize(("raw", "code"), GARBAGE)
async def test_garbage_gets_a_structured_error_and_the_connection_lives(
        broker: BrokerProcess, mesh: Mesh, raw: str, code: str) -> None:
    alice = mesh.join("alice")
    async with clients((broker.url, alice)) as (a,):
        await a.ws.send(raw)
        error = await a.next("error")
        assert error["code"] == code, error
        assert (await a.request({"type": "list_peers"}))["type"] == "result"


async def test_binary_and_oversize_frames(broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await a.ws.send(b"\x00\x01")
        assert (await a.next("error"))["code"] == "binary_frame_unsupported"
        await a.ws.send("x" * (300 * 1024))  # over the 256 KiB soft limit
        too_big = await a.next("error")
        assert (too_big["code"], too_big["limit"]) == ("frame_too_large", 256 * 1024)
        assert (await a.request({"type": "list_peers"}))["type"] == "result"
        await a.ws.send("x" * (1024 * 1024 + 1))  # over the hard limit: close 1009
        assert (await a.closed())[0] == 1009
        assert (await b.request({"type": "list_peers"}))["type"] == "result"


async def test_many_bad_clients_do_not_disturb_a_good_one(broker: BrokerProcess,
                                                          mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await b.request({"type": "subscribe", "topic": "t"})
        bad = [await Client.open(broker.url) for _ in range(20)]
        for client in bad:
            for raw, _ in GARBAGE[:6]:
                await client.ws.send(raw)
        assert (await a.post("#t", "still here", "ok-1"))["code"] == 201
        assert (await b.next("push"))["client_message_id"] == "ok-1"
        for client in bad:
            assert (await client.next("error"))["code"] in ("hello_required", "malformed_frame",
                                                            "unknown_type")
            await client.close()
