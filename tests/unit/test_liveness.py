"""claudemesh.liveness on real loopback sockets: a stalled peer is cut within the bound."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from claudemesh.liveness import bound_stalls
from claudemesh.tls import self_signed, server_context

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"),
                                reason="TCP_USER_TIMEOUT is Linux's")


@contextlib.asynccontextmanager
async def deaf_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Accepts connections and never reads from them (its window closes)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.transport.pause_reading()
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.transport.abort()
        server.close()


async def test_it_sets_the_bound_in_milliseconds_on_a_tcp_connection() -> None:
    async with deaf_server() as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert bound_stalls(writer.transport, 1.5)
            sock = writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1500
        finally:
            writer.transport.abort()


async def test_it_reaches_the_tcp_socket_under_tls(tmp_path: Path) -> None:
    """The broker links run over wss: the socket is found under the TLS transport."""
    cert_pem, key_pem = self_signed(["127.0.0.1"])
    (tmp_path / "b.crt").write_bytes(cert_pem)
    (tmp_path / "b.key").write_bytes(key_pem)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    async with deaf_server(server_context(tmp_path / "b.crt", tmp_path / "b.key")) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        try:
            assert writer.get_extra_info("ssl_object") is not None
            assert bound_stalls(writer.transport, 2.0)
            sock = writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2000
        finally:
            writer.transport.abort()


async def test_a_peer_that_stops_reading_is_cut_within_the_bound() -> None:
    async with deaf_server() as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert bound_stalls(writer.transport, 0.5)
        chunk = b"x" * 65536
        try:
            async with asyncio.timeout(30):  # without the bound: never
                with pytest.raises(OSError) as caught:
                    while True:
                        writer.write(chunk)
                        await writer.drain()
        finally:
            writer.transport.abort()
        assert caught.value.errno == errno.ETIMEDOUT, caught.value


async def test_a_unix_socket_has_nothing_to_bound() -> None:
    left, right = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=left)
    try:
        assert not bound_stalls(writer.transport, 1.0)
    finally:
        writer.transport.abort()
        right.close()
