"""A minimal HTTP/1.1 client over a daemon's Unix socket.

Raw bytes on ``asyncio.open_unix_connection`` and no HTTP library, because on a 2-core
machine the client competes with the daemon it measures for CPU. It reads exactly what
the daemon sends (a status line, ``Content-Length``, keep-alive) and no more.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class ProtocolError(Exception):
    """The daemon answered something this client does not read."""


class Connection:
    """One keep-alive connection; requests on it are strictly sequential."""

    def __init__(self, sock: str) -> None:
        self._sock = sock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(self._sock)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, method: bytes, path: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read the whole response: ``(status, body)``."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        head = b"%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._writer.write(head + b"\r\n" + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        try:
            status = int(raw[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line: {raw[:40]!r}") from None
        lower = raw.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ProtocolError("response without Content-Length")
        length = int(lower[at + 17:lower.index(b"\r\n", at + 2)])
        data = await self._reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, data


async def get_json(sock: str, path: str) -> dict[str, Any]:
    """One ``GET`` on a fresh connection; the JSON body of a 200, else ProtocolError."""
    conn = Connection(sock)
    try:
        status, body = await conn.request(b"GET", path.encode())
    finally:
        conn.close()
    if status != 200:
        raise ProtocolError(f"GET {path}: HTTP {status} {body[:200]!r}")
    data: dict[str, Any] = json.loads(body)
    return data
