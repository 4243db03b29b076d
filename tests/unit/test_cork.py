"""FrameCork over a real loopback WebSocket: one turn's frames leave as one batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from claudemesh.cork import FrameCork
from claudemesh.protocol.features import BatchParams


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ClientConnection, list[str]]]:
    received: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, str)
            received.append(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            yield ws, received


async def until(received: list[str], count: int) -> None:
    async with asyncio.timeout(5):
        while len(received) < count:
            await asyncio.sleep(0.01)


async def test_frames_put_in_one_turn_leave_as_one_batch(
        pair: tuple[ClientConnection, list[str]]) -> None:
    ws, received = pair
    cork = FrameCork(ws, BatchParams(max_frames=4, max_bytes=1 << 16))
    assert all(cork.put(json.dumps({"n": i}).encode()) for i in range(10))
    await cork.flush()
    await until(received, 3)
    docs = [json.loads(m) for m in received]
    assert [len(d["frames"]) for d in docs] == [4, 4, 2]
    assert [f["n"] for d in docs for f in d["frames"]] == list(range(10))
    assert cork.frames_written == 3


async def test_a_lone_frame_is_not_wrapped(pair: tuple[ClientConnection, list[str]]) -> None:
    ws, received = pair
    cork = FrameCork(ws, BatchParams(max_frames=4, max_bytes=1 << 16))
    cork.put(b'{"n":1}')
    await cork.flush()
    cork.put(b'{"n":2}')
    await cork.flush()
    await until(received, 2)
    assert received == ['{"n":1}', '{"n":2}']


async def test_after_the_connection_closes_put_says_so(
        pair: tuple[ClientConnection, list[str]]) -> None:
    ws, _ = pair
    cork = FrameCork(ws, BatchParams(max_frames=4, max_bytes=1 << 16))
    await ws.close()
    assert cork.put(b"{}") is True  # not known yet: the write finds out
    await cork.flush()
    assert cork.closed and cork.put(b"{}") is False
