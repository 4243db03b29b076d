"""FrameCork over a real loopback WebSocket: one turn's frames leave as one batch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from claudemesh.cork import HIGH_WATER, FrameCork
from claudemesh.protocol.features import BatchParams

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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


async def test_a_peer_that_stops_reading_stalls_send_at_the_high_water_mark() -> None:
    """A raw server answers the upgrade and then reads nothing until released, so the
    kernel's buffers fill, the socket pushes back and the cork must stop taking frames."""
    release = asyncio.Event()
    received = 0

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await release.wait()
        while chunk := await reader.read(1 << 20):
            received += len(chunk)

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ws = await connect(f"ws://127.0.0.1:{port}", ping_interval=None, close_timeout=0.1)
        cork = FrameCork(ws, BatchParams(max_frames=4, max_bytes=1 << 20))
        frame = b'"' + b"x" * 65536 + b'"'
        sent = 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                while True:  # the kernel's buffers take some MB before the cork fills
                    await cork.send(frame)
                    sent += 1
        assert HIGH_WATER < cork._queued <= HIGH_WATER + len(frame)
        release.set()
        async with asyncio.timeout(10):
            assert await cork.send(frame)  # room again once the peer reads
            await cork.flush()
        assert cork._queued == 0
        async with asyncio.timeout(10):
            while received < (sent + 1) * len(frame):
                await asyncio.sleep(0.01)
        ws.transport.abort()
    finally:
        server.close()
