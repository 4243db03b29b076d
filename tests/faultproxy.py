"""A fault-injection TCP proxy for tests: loopback in, one upstream out, toxics switched live.

The proxy runs its own asyncio loop in a thread, so a synchronous test drives it while
daemons and brokers (other processes) talk through it. Each accepted connection opens one
to the upstream and pumps both directions; each direction reads chunks into a short queue
and writes them out through the toxics in force *at that moment*, so switching a toxic on
or off acts on connections that are already open.

Toxics are frozen values; ``proxy.set(*toxics)`` replaces the set in force,
``proxy.clear()`` empties it, ``with proxy.toxic(...):`` does both:

- ``Latency(delay_s, jitter_s)``: each chunk leaves ``delay +- jitter`` after it arrived,
  never before the chunk ahead of it (order is kept; throughput is not capped).
- ``Bandwidth(bytes_per_s)``: each direction's writes are paced to that rate.
- ``ResetMidFrame(after_bytes)``: the next chunk goes out cut to ``after_bytes``, then the
  client's side is reset (RST, SO_LINGER 0) and the upstream side is closed.
- ``HalfOpen()``: the connections open when it is switched on stop forwarding in both
  directions and stop reading (once the proxy's small buffers are full, the senders'
  kernel buffers fill); nothing is closed, and new connections flow. Switching it off
  lets the frozen ones go on with whatever their ends did meanwhile.
- ``Blackhole()``: new connections are accepted and held (no upstream, nothing
  forwarded); switching it off lets them connect on. Open connections flow.
- ``Fragment(max_bytes, pause_s)``: each chunk is written in pieces of 1..max_bytes with a
  short pause after each (asyncio sets TCP_NODELAY, so each piece is its own segment).

Per-chunk toxics take a ``direction``: UP is client -> upstream, DOWN upstream -> client.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

__all__ = [
    "Bandwidth",
    "Blackhole",
    "Direction",
    "FaultProxy",
    "Fragment",
    "HalfOpen",
    "Latency",
    "ProxyStats",
    "ResetMidFrame",
    "Toxic",
]

CHUNK_BYTES: Final = 65536
QUEUE_CHUNKS: Final = 16  # per direction: backpressure reaches the sender past this
CONTROL_TIMEOUT_S: Final = 10.0

T = TypeVar("T")


class Direction(enum.Flag):
    UP = enum.auto()  # client -> upstream
    DOWN = enum.auto()  # upstream -> client
    BOTH = UP | DOWN


@dataclass(frozen=True, slots=True)
class Latency:
    delay_s: float
    jitter_s: float = 0.0
    direction: Direction = Direction.BOTH


@dataclass(frozen=True, slots=True)
class Bandwidth:
    bytes_per_s: int
    direction: Direction = Direction.BOTH


@dataclass(frozen=True, slots=True)
class ResetMidFrame:
    after_bytes: int = 7
    direction: Direction = Direction.BOTH


@dataclass(frozen=True, slots=True)
class HalfOpen:
    pass


@dataclass(frozen=True, slots=True)
class Blackhole:
    pass


@dataclass(frozen=True, slots=True)
class Fragment:
    max_bytes: int = 16
    pause_s: float = 0.0005
    direction: Direction = Direction.BOTH


Toxic = Latency | Bandwidth | ResetMidFrame | HalfOpen | Blackhole | Fragment
_Directed = Latency | Bandwidth | ResetMidFrame | Fragment


@dataclass
class ProxyStats:
    accepted: int = 0  # connections accepted
    held: int = 0  # of which the blackhole held
    resets: int = 0  # connections ResetMidFrame (or cut()) reset


class _Reset(Exception):
    """A toxic cut the connection: reset the client's side."""


def split(data: bytes, max_bytes: int, rng: random.Random) -> list[bytes]:
    """``data`` in pieces of 1..max_bytes (random sizes), in order."""
    pieces, at = [], 0
    while at < len(data):
        size = rng.randint(1, max(1, max_bytes))
        pieces.append(data[at:at + size])
        at += size
    return pieces


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's streams, then the upstream's."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    frozen: bool = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def reset_client(self) -> None:
        """RST to the client (SO_LINGER 0, then close), a plain close upstream."""
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    def abort(self) -> None:
        for writer in self.writers():
            writer.transport.abort()


@dataclass(eq=False)
class _Pace:
    """One direction's clocks: when the last chunk left (latency), when the wire is free
    again (bandwidth)."""

    released: float = 0.0
    free_at: float = 0.0


@dataclass(eq=False)
class FaultProxy:
    """``127.0.0.1:<port>`` forwarding to ``upstream``, with switchable toxics."""

    upstream: tuple[str, int]
    seed: int = 14
    port: int = 0
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # jitter and piece sizes, reproducible
        self._toxics: tuple[Toxic, ...] = ()
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None

    # -- control, from the test's thread -----------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def set(self, *toxics: Toxic) -> None:
        """Replace the toxics in force (they act at once, on open connections too)."""
        self._call(self._apply(toxics))

    def clear(self) -> None:
        self.set()

    @contextlib.contextmanager
    def toxic(self, *toxics: Toxic) -> Iterator[FaultProxy]:
        self.set(*toxics)
        try:
            yield self
        finally:
            self.clear()

    @property
    def open_links(self) -> int:
        return self._call(self._count())

    def cut(self) -> None:
        """Reset every open connection now (RST to each client)."""
        self._call(self._cut())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONTROL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    # -- the loop's side ---------------------------------------------------------------

    async def _listen(self) -> asyncio.Server:
        self._changed = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _apply(self, toxics: tuple[Toxic, ...]) -> None:
        half_open = any(isinstance(t, HalfOpen) for t in toxics)
        was_half_open = any(isinstance(t, HalfOpen) for t in self._toxics)
        if half_open != was_half_open:
            for link in self._links:
                link.frozen = half_open
        self._toxics = toxics
        self._notify()

    async def _count(self) -> int:
        return len(self._links)

    async def _cut(self) -> None:
        for link in list(self._links):
            self.stats.resets += 1
            link.reset_client()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._toxics = ()
        self._notify()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _notify(self) -> None:
        """Wake every pump waiting for a change (a gate opening, a hold ending)."""
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            assert self._changed is not None
            await self._changed.wait()

    def _active(self, direction: Direction) -> list[_Directed]:
        return [t for t in self._toxics
                if isinstance(t, _Directed) and direction & t.direction]

    def _holding(self) -> bool:
        return any(isinstance(t, Blackhole) for t in self._toxics)

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        link = _Link(client_w)
        self._links.add(link)
        self.stats.accepted += 1
        try:
            if self._holding():
                self.stats.held += 1
                await self._until(lambda: not self._holding())
            try:
                up_r, link.upstream = await asyncio.open_connection(*self.upstream)
            except OSError:
                link.reset_client()
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(link, Direction.UP, client_r, link.upstream))
                group.create_task(self._pump(link, Direction.DOWN, up_r, client_w))
        except* _Reset:
            self.stats.resets += 1
            link.reset_client()
        except* (OSError, asyncio.IncompleteReadError):
            link.reset_client()  # one end reset: so does the other
        finally:
            self._links.discard(link)
            for writer in link.writers():
                writer.close()

    async def _pump(self, link: _Link, direction: Direction, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """One direction: read chunks into a short queue; write them through the toxics."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            while True:
                await self._until(lambda: not link.frozen)
                data = await reader.read(CHUNK_BYTES)
                await queue.put((loop.time(), data))
                if not data:
                    return

        async def write() -> None:
            pace = _Pace()
            while True:
                arrived, data = await queue.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                await self._forward(link, direction, writer, pace, arrived, data)

        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            group.create_task(write())

    async def _forward(self, link: _Link, direction: Direction, writer: asyncio.StreamWriter,
                       pace: _Pace, arrived: float, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        await self._until(lambda: not link.frozen)
        toxics = self._active(direction)
        for toxic in toxics:
            if isinstance(toxic, Latency):
                jitter = self._rng.uniform(-toxic.jitter_s, toxic.jitter_s)
                pace.released = max(pace.released, arrived + max(0.0, toxic.delay_s + jitter))
                await asyncio.sleep(max(0.0, pace.released - loop.time()))
                await self._until(lambda: not link.frozen)
        for toxic in toxics:
            if isinstance(toxic, ResetMidFrame):
                writer.write(data[:toxic.after_bytes])
                writer.transport.set_write_buffer_limits(0)  # drain() waits for all of it
                await writer.drain()
                raise _Reset
        fragment = next((t for t in toxics if isinstance(t, Fragment)), None)
        rate = next((t.bytes_per_s for t in toxics if isinstance(t, Bandwidth)), None)
        # Under a bandwidth cap, pieces of at most 1/20 s on the wire.
        pieces = [data] if rate is None else _even(data, max(1, rate // 20))
        if fragment is not None:
            pieces = [p for piece in pieces for p in split(piece, fragment.max_bytes, self._rng)]
        for piece in pieces:
            if rate is not None:
                start = max(loop.time(), pace.free_at)
                await asyncio.sleep(start - loop.time())
                pace.free_at = start + len(piece) / rate
            writer.write(piece)
            await writer.drain()
            if fragment is not None:
                await asyncio.sleep(fragment.pause_s)


def _even(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]
