"""A reader of a daemon's ``GET /v1/events`` stream that stamps every ``message`` event.

Raw HTTP/1.1 over the Unix socket with chunked decoding, no HTTP library. Each
``message`` event is stamped with ``time.perf_counter()`` when its bytes are read, keyed
by ``client_message_id``; a second event for an id counts as a duplicate. If the daemon
ends the stream (a subscriber too far behind is cut off) the reader reconnects with
``Last-Event-ID``, and the daemon replays what was missed from ``inbox.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import Final

from .uds import ProtocolError

MAX_ERRORS: Final = 5  # stream errors kept as samples


class Watch:
    """Waits until every id of a set has arrived on the stream."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.pending = set(ids)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.pending:
            self.done.set_result(None)

    def arrived(self, cmid: str) -> None:
        self.pending.discard(cmid)
        if not self.pending and not self.done.done():
            self.done.set_result(None)


class SseReader:
    """Holds ``GET /v1/events`` on one socket for a whole run; stamps every ``message``."""

    def __init__(self, sock: str) -> None:
        self._sock = sock
        self.arrivals: dict[str, float] = {}
        self.duplicates: Counter[str] = Counter()
        self.events = 0
        self.reconnects = 0
        self.last_id: int | None = None
        self.last_event_at = 0.0
        self.errors: list[str] = []
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._watches: list[Watch] = []
        self._connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 30)

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wait_for(self, cmid: str) -> asyncio.Future[float]:
        """A future for the arrival time of ``cmid`` (already resolved if it came)."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if cmid in self.arrivals:
            fut.set_result(self.arrivals[cmid])
        else:
            self._waiters[cmid] = fut
        return fut

    def watch(self, ids: Iterable[str]) -> Watch:
        w = Watch(i for i in ids if i not in self.arrivals)
        self._watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        with contextlib.suppress(ValueError):
            self._watches.remove(w)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._stream()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ProtocolError, ValueError) as exc:
                if self._closing:
                    return
                if len(self.errors) < MAX_ERRORS:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            if self._closing:
                return
            self._connected.clear()
            self.reconnects += 1
            await asyncio.sleep(0.05)

    async def _stream(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self._sock, limit=1 << 20)
        self._writer = writer
        try:
            resume = b"" if self.last_id is None else b"Last-Event-ID: %d\r\n" % self.last_id
            writer.write(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n"
                         b"Accept: text/event-stream\r\n%s\r\n" % resume)
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                raise ProtocolError(f"GET /v1/events: {head[:60]!r}")
            chunked = b"transfer-encoding: chunked" in head.lower()
            buf = bytearray()
            while True:
                if chunked:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    if size == 0:
                        return  # the daemon ended the stream (shutdown or overflow)
                    data = await reader.readexactly(size + 2)
                    buf += data[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                now = time.perf_counter()
                while (end := buf.find(b"\n\n")) >= 0:
                    block = bytes(buf[:end])
                    del buf[:end + 2]
                    self._block(block, now)
        finally:
            writer.close()
            self._writer = None

    def _block(self, block: bytes, now: float) -> None:
        kind = event_id = data = None
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                if line.startswith(b": connected"):
                    self._connected.set()
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"event":
                kind = value
            elif name == b"id":
                event_id = value
            elif name == b"data":
                data = value
        if kind != b"message" or data is None:
            return
        item = json.loads(data)
        cmid = str(item.get("client_message_id"))
        if event_id is not None:
            self.last_id = int(event_id)
        self.events += 1
        self.last_event_at = now
        if cmid in self.arrivals:
            self.duplicates[cmid] += 1
            return
        self.arrivals[cmid] = now
        waiter = self._waiters.pop(cmid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)
        for w in self._watches:
            w.arrived(cmid)


async def wait_watch(reader: SseReader, w: Watch, *, since: float, stall_s: float) -> bool:
    """Wait until ``w`` is complete, or no event came for ``stall_s``; True if complete."""
    try:
        while not w.done.done():
            await asyncio.wait({w.done}, timeout=1.0)
            quiet_since = max(since, reader.last_event_at)
            if not w.done.done() and time.perf_counter() - quiet_since > stall_s:
                return False
        return True
    finally:
        reader.unwatch(w)
