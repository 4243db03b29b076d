"""The TCP half of a link's liveness bound, set by both ends of a broker connection.

The WebSocket keepalive (a ping every ``ping_interval``, cut after ``ping_timeout`` more
without a pong) cannot see a dead peer once the send buffer is full: websockets writes its
ping behind the frames already buffered and starts the pong timer only when the ping has
been written, so the connection stayed open until TCP itself gave up (about 15 minutes of
retransmissions; never, for a peer that holds a zero window). TCP_USER_TIMEOUT bounds
exactly that case: bytes sent but unacknowledged, or held back by a zero window, for
longer than the bound cut the connection (ETIMEDOUT). Idle connections are the
keepalive's job; this covers the busy ones. Found with tests/faultproxy.py's half-open
toxic (tests/integration/e2e/test_faults.py, ``half_open_full_buffers``).
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["bound_stalls"]


def bound_stalls(transport: asyncio.BaseTransport, seconds: float) -> bool:
    """Cut the connection under ``transport`` once what it sent has waited ``seconds``
    for an acknowledgement (or for the peer's window to open).

    Returns False where that cannot be set: a platform without TCP_USER_TIMEOUT (it is
    Linux's), or a transport without a TCP socket.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))
    except OSError:
        return False
    return True
