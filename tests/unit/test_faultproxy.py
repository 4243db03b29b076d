"""The fault proxy (tests/faultproxy.py) against a real echo server on loopback.

Timing is only ever bounded from below (a delay cannot come early); outcomes are polled
with generous deadlines.
"""

from __future__ import annotations

import os
import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from faultproxy import (
    Bandwidth,
    Blackhole,
    Direction,
    FaultProxy,
    Fragment,
    HalfOpen,
    Latency,
    ResetMidFrame,
    split,
)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    server.chunks.append(data)
                self.request.sendall(data)
        except OSError:
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every chunk back and records what it received, chunk by chunk."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.chunks: list[bytes] = []
        self.connections = 0

    @property
    def received(self) -> bytes:
        with self.lock:
            return b"".join(self.chunks)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.server_address[:2]) as running:  # type: ignore[arg-type]
        yield running


def connect(proxy: FaultProxy, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


def silent_for(sock: socket.socket, seconds: float) -> bool:
    """True if nothing arrives (and the socket is not closed) for ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)  # data, or b"" for EOF: not silent
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10.0)
    return False


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


def test_split_keeps_every_byte_in_order_in_pieces_no_larger_than_asked() -> None:
    data = os.urandom(5000)
    pieces = split(data, 7, random.Random(1))
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) <= 7 and min(map(len, pieces)) >= 1


def test_without_toxics_bytes_pass_both_ways_unchanged_and_eof_travels(
        proxy: FaultProxy, echo: EchoServer) -> None:
    data = os.urandom(300_000)
    with connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        assert read_exactly(sock, len(data)) == data
        sender.join()
        sock.shutdown(socket.SHUT_WR)  # the echo server sees EOF and closes: so do we
        assert sock.recv(1) == b""
    assert echo.received == data
    wait_for(lambda: proxy.open_links == 0)


def test_latency_switched_on_an_open_connection_delays_it_and_keeps_order(
        proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"warm")
        assert read_exactly(sock, 4) == b"warm"
        with proxy.toxic(Latency(0.1, jitter_s=0.05)):
            started = time.monotonic()
            sock.sendall(b"x")
            assert read_exactly(sock, 1) == b"x"
            assert time.monotonic() - started >= 0.1  # two ways, each >= 0.05
            expected = b"".join(b"%d," % i for i in range(50))
            for i in range(50):
                sock.sendall(b"%d," % i)
                time.sleep(0.002)
            assert read_exactly(sock, len(expected)) == expected
        sock.sendall(b"y")
        assert read_exactly(sock, 1) == b"y"


def test_bandwidth_paces_the_bytes(proxy: FaultProxy) -> None:
    data = os.urandom(60_000)
    with proxy.toxic(Bandwidth(100_000, Direction.UP)), connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(data)
        assert read_exactly(sock, len(data)) == data
        assert time.monotonic() - started >= 0.4  # 60 kB at 100 kB/s is 0.6 s


def test_reset_mid_frame_forwards_the_first_bytes_then_resets_the_client(
        proxy: FaultProxy) -> None:
    with proxy.toxic(ResetMidFrame(5, Direction.DOWN)), connect(proxy) as sock:
        sock.sendall(b"hello world")
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(100):
                got += chunk
        assert got == b"hello"
    assert proxy.stats.resets == 1
    with connect(proxy) as sock:  # switched off: connections work again
        sock.sendall(b"again")
        assert read_exactly(sock, 5) == b"again"


def test_reset_mid_frame_upwards_cuts_what_the_upstream_gets(
        proxy: FaultProxy, echo: EchoServer) -> None:
    with proxy.toxic(ResetMidFrame(3, Direction.UP)), connect(proxy) as sock:
        sock.sendall(b"abcdef")
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
    wait_for(lambda: echo.received == b"abc")
    time.sleep(0.1)
    assert echo.received == b"abc"


def test_half_open_freezes_open_connections_without_closing_them(proxy: FaultProxy) -> None:
    with connect(proxy) as before:
        before.sendall(b"1")
        assert read_exactly(before, 1) == b"1"
        with proxy.toxic(HalfOpen()):
            before.sendall(b"ping")
            assert silent_for(before, 0.5)  # no answer, and no EOF or reset either
            with connect(proxy) as fresh:  # a new connection is not frozen
                fresh.sendall(b"new")
                assert read_exactly(fresh, 3) == b"new"
            assert silent_for(before, 0.2)
        assert read_exactly(before, 4) == b"ping"  # healed: the held bytes go on


def test_blackhole_holds_new_connections_and_lets_them_on_when_cleared(
        proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as before:
        before.sendall(b"1")
        assert read_exactly(before, 1) == b"1"
        proxy.set(Blackhole())
        held = connect(proxy)  # the connect itself succeeds
        try:
            held.sendall(b"anyone?")
            assert silent_for(held, 0.5)
            assert echo.connections == 1  # no upstream was opened for it
            before.sendall(b"2")  # an open connection flows
            assert read_exactly(before, 1) == b"2"
            assert proxy.stats.held == 1
            proxy.clear()
            assert read_exactly(held, 7) == b"anyone?"
        finally:
            held.close()


def test_fragmentation_splits_every_chunk_into_small_pieces(
        proxy: FaultProxy, echo: EchoServer) -> None:
    data = os.urandom(1000)
    with proxy.toxic(Fragment(max_bytes=8, pause_s=0.001, direction=Direction.UP)), \
            connect(proxy) as sock:
        sock.sendall(data)
        assert read_exactly(sock, len(data)) == data
    with echo.lock:
        sizes = [len(c) for c in echo.chunks]
    assert sum(sizes) == len(data)
    assert len(sizes) >= 10  # one chunk sent, hundreds of pieces: many separate reads


def test_cut_resets_every_open_connection(proxy: FaultProxy) -> None:
    socks = [connect(proxy) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"x")
            assert read_exactly(sock, 1) == b"x"
        proxy.cut()
        for sock in socks:
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
        assert proxy.stats.resets == 3
    finally:
        for sock in socks:
            sock.close()


def test_a_refused_upstream_resets_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    # The RST can beat connect() back to user space on a loaded machine; Linux then
    # reports it from connect() itself. Either way the client was reset, not closed.
    with FaultProxy(("127.0.0.1", port)) as proxy, \
            pytest.raises(ConnectionResetError), connect(proxy) as sock:
        sock.recv(1)
