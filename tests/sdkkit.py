"""Test kit for the SDK: one test body drives both clients against real daemons.

:class:`Blocking` runs each :class:`AsyncClient` coroutine to completion on its own event
loop, so a test written against the sync API exercises the asyncio shell's sockets,
parser and retry loops too. :class:`Collector` reads ``events()`` in a thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from claudemesh.config import Paths
from claudemesh.sdk import AsyncClient, Client, Event

KINDS = ("sync", "async")


class Blocking:
    """An AsyncClient behind the sync API (the same names, the same answers)."""

    def __init__(self, client: AsyncClient) -> None:
        self.inner = client
        self.paths = client.paths
        self.transport = client.transport

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def run(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(attr(*args, **kwargs))

        return run

    def events(self, **kwargs: Any) -> Iterator[Event]:
        loop = asyncio.new_event_loop()
        stream = self.inner.events(**kwargs)
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()


def make(kind: str, paths: Paths, **kwargs: Any) -> Any:
    """A ``Client`` (kind ``sync``) or a :class:`Blocking` ``AsyncClient`` (``async``)."""
    if kind == "sync":
        return Client(paths, **kwargs)
    return Blocking(AsyncClient(paths, **kwargs))


def connect(kind: str, paths: Paths, **kwargs: Any) -> Any:
    if kind == "sync":
        return Client.connect(paths, **kwargs)
    return Blocking(asyncio.run(AsyncClient.connect(paths, **kwargs)))


class Collector:
    """Iterates ``client.events(**kwargs)`` in a thread; events land in a queue."""

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.reconnects: list[Any] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, kwargs), daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def _reconnecting(self, failure: Any) -> None:
        self.reconnects.append(failure)
        if self._stop.is_set():
            raise _Stopped

    def _run(self, client: Any, kwargs: dict[str, Any]) -> None:
        try:
            for event in client.events(on_reconnect=self._reconnecting, **kwargs):
                self.events.put(event)
                if self._stop.is_set():
                    return
        except _Stopped:
            return
        except BaseException as exc:  # reported to the test
            self.error = exc

    def messages(self, count: int, timeout: float = 30.0,
                 until: Callable[[], None] | None = None) -> list[Event]:
        """The next ``count`` message events (others are dropped)."""
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(got)} of {count} messages within {timeout}s;"
                                     f" error {self.error!r}")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if event.kind == "message":
                got.append(event)
        return got

    def quiet(self, seconds: float) -> list[Event]:
        """Message events arriving within ``seconds`` (expected: none)."""
        deadline = time.monotonic() + seconds
        extra: list[Event] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if event.kind == "message":
                extra.append(event)
        return extra

    def stop(self) -> None:
        """Ends the loop at its next event or reconnect (stop the daemon to force one)."""
        self._stop.set()

    def join(self, timeout: float = 15.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the events() loop did not end"


class _Stopped(Exception):
    pass
