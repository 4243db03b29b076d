"""Outgoing frames of one WebSocket, coalesced into ``batch`` frames (``frame_batch``).

``put`` only queues; one writer task, started by the first frame of an event-loop turn,
runs after the turn's other callbacks and writes everything queued by then, in order, as
few frames as the negotiated limits allow (``protocol.batch``). While the socket pushes
back, frames keep queueing and the next write carries them all, so batches grow exactly
when the connection is busy. ``send`` waits while more than ``HIGH_WATER`` bytes are
queued, so a peer that stops reading stalls its producers (and, at the broker, the read
loop behind them) instead of growing the queue: the back-pressure a direct write gives.

Once a connection uses a cork, every frame after that goes through it: a frame written
directly could overtake queued ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from claudemesh.protocol.batch import encode_batch, take_chunk
from claudemesh.protocol.features import BatchParams

__all__ = ["HIGH_WATER", "FrameCork"]

log = logging.getLogger(__name__)

HIGH_WATER: Final = 1024 * 1024  # queued bytes beyond which send() waits


class FrameCork:
    def __init__(self, ws: Connection, params: BatchParams) -> None:
        self._ws = ws
        self._params = params
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in _queue
        self._room = asyncio.Event()  # set while _queued <= HIGH_WATER (or closed)
        self._room.set()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.frames_written = 0  # WebSocket frames, for tests and benchmarks

    async def send(self, data: bytes) -> bool:
        """Queue one encoded frame, waiting first while the queue is over its high water
        mark; False once the connection is known to be closed."""
        while self._queued > HIGH_WATER and not self.closed:
            await self._room.wait()
        return self.put(data)

    def put(self, data: bytes) -> bool:
        """Queue one encoded frame without waiting (see ``send``)."""
        if self.closed:
            return False
        self._queue.append(data)
        self._queued += len(data)
        if self._queued > HIGH_WATER:
            self._room.clear()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is written (before a close)."""
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    async def _write(self) -> None:
        try:
            while self._queue:
                chunk = take_chunk(self._queue, self._params)
                await self._ws.send(encode_batch(chunk), text=True)
                self.frames_written += 1
                self._queued -= sum(map(len, chunk))
                if self._queued <= HIGH_WATER:
                    self._room.set()
        except ConnectionClosed:
            self._close()
        except Exception:
            log.exception("frame_write_failed")
            self._close()
        finally:
            self._writer = None

    def _close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued = 0
        self._room.set()
