"""MCP over stdin/stdout on the event loop's own pipe transports.

The SDK's ``mcp.server.stdio.stdio_server`` reads and writes through anyio file objects,
that is through worker threads: every message in and out pays thread hand-offs, and on
this project's benchmark (bench/agents.py) that was a large share of a tool call's time.
This transport gives the SDK the same pair of streams, fed by ``connect_read_pipe`` and
``connect_write_pipe`` instead. Like the SDK's, it keeps the wire to itself while it
serves: fd 0 points at ``/dev/null`` and fd 1 at stderr, so nothing else in the process
(a child, a stray print) can read the client's input or write onto the JSON-RPC wire;
both are restored on exit.

When stdin or stdout is not a pipe, socket or character device (a regular file), the
event loop cannot watch it and :func:`serve_stdio` falls back to the SDK's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Final

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared._context_streams import create_context_streams
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

__all__ = ["serve_stdio"]

LINE_LIMIT: Final = 64 * 1024 * 1024  # one JSON-RPC message per line; a tool result can be big

Streams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]


@contextlib.asynccontextmanager
async def serve_stdio() -> AsyncIterator[Streams]:
    """The SDK's (read stream, write stream) pair over this process's stdin and stdout."""
    private = _claim_std_fds()
    try:
        pipes = await _open_pipes(*private)
    except (OSError, ValueError):  # not a pipe: the SDK's threads can read anything
        _restore(private)
        async with stdio_server() as streams:
            yield streams
        return
    reader, writer = pipes
    incoming_writer, incoming = create_context_streams[SessionMessage | Exception](0)
    outgoing, outgoing_reader = create_context_streams[SessionMessage](0)

    async def read_lines() -> None:
        async with incoming_writer:
            while line := await reader.readline():
                try:
                    message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                except Exception as exc:
                    await incoming_writer.send(exc)
                    continue
                await incoming_writer.send(SessionMessage(message))

    async def write_lines() -> None:
        async with outgoing_reader:
            async for session_message in outgoing_reader:
                data = session_message.message.model_dump_json(by_alias=True,
                                                               exclude_unset=True)
                writer.write(data.encode() + b"\n")
                await writer.drain()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_lines)
            tg.start_soon(write_lines)
            yield incoming, outgoing
            tg.cancel_scope.cancel()
    finally:
        writer.close()
        _restore(private)


def _claim_std_fds() -> tuple[int, int]:
    """Private copies of fds 0 and 1 for the wire; 0 -> /dev/null and 1 -> stderr."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
        os.dup2(2, 1)
    finally:
        os.close(devnull)
    return wire_in, wire_out


def _restore(private: tuple[int, int]) -> None:
    for fd, wire in zip((0, 1), private, strict=True):
        with contextlib.suppress(OSError):
            os.dup2(wire, fd)
        with contextlib.suppress(OSError):
            os.close(wire)


async def _open_pipes(wire_in: int, wire_out: int) -> tuple[asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    # closefd=False: the descriptors are closed by _restore, after the transports
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(wire_in, "rb", buffering=0, closefd=False))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin,
        os.fdopen(wire_out, "wb", buffering=0, closefd=False))
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)
