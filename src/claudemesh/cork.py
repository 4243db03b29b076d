"""Outgoing frames of one WebSocket, coalesced into ``batch`` frames (``frame_batch``).

``put`` only queues; one writer task, started by the first frame of an event-loop turn,
runs after the turn's other callbacks and writes everything queued by then, in order, as
few frames as the negotiated limits allow (``protocol.batch``). While the socket pushes
back, frames keep queueing and the next write carries them all, so batches grow exactly
when the connection is busy. The queue is bounded by its producers' own windows (the
drain's and the delivery pump's in-flight limits), so ``put`` never waits.

Once a connection uses a cork, every frame after that goes through it: a frame written
directly could overtake queued ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from claudemesh.protocol.batch import encode_batch, take_chunk
from claudemesh.protocol.features import BatchParams

__all__ = ["FrameCork"]

log = logging.getLogger(__name__)


class FrameCork:
    def __init__(self, ws: Connection, params: BatchParams) -> None:
        self._ws = ws
        self._params = params
        self._queue: deque[bytes] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.frames_written = 0  # WebSocket frames, for tests and benchmarks

    def put(self, data: bytes) -> bool:
        """Queue one encoded frame; False once the connection is known to be closed."""
        if self.closed:
            return False
        self._queue.append(data)
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
