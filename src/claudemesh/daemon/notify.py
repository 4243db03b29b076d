"""Tell systemd how the daemon is doing: a stdlib ``sd_notify``, one datagram, no libsystemd.

Theory of operation. Under ``Type=notify`` (see :mod:`claudemesh.daemon.service`) systemd
sets ``$NOTIFY_SOCKET`` and counts the start as done only when ``READY=1`` arrives, so
``systemctl --user enable --now`` returns once the daemon's API answers, not merely once
the process exists. The daemon calls :func:`notify_ready` right after it reports ready
and :func:`notify_stopping` when shutdown begins. The message is newline-separated
``KEY=value`` lines sent as one ``AF_UNIX``/``SOCK_DGRAM`` datagram; a socket path that
starts with ``@`` lives in Linux's abstract namespace, where the ``@`` stands for a NUL
byte. ``MAINPID`` names this process, which matters only if a wrapper forked it.

Outside systemd (or under launchd) the variable is unset and both calls do nothing.
Notifying is best effort: a failure is logged as a warning and never raised, because the
daemon serves fine without it; systemd then times the start out and says so itself.
Building the message and the address is pure; :func:`send_notification` is the only I/O.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

__all__ = [
    "notification",
    "notify_ready",
    "notify_stopping",
    "send_notification",
    "socket_address",
]

log = logging.getLogger(__name__)

SEND_TIMEOUT_S: Final = 2.0  # systemd reads at once; never let a full queue hang startup


def socket_address(value: str) -> str | None:
    """``$NOTIFY_SOCKET`` as an ``AF_UNIX`` address; None when it is not one we can use.

    systemd also knows ``vsock:`` addresses (for VMs); those, relative paths and empty
    values are not usable here.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notification(**fields: str) -> bytes:
    """``KEY=value`` lines in order; a newline inside a value would forge another field,
    so it becomes a space."""
    lines = [f"{key}={' '.join(value.splitlines())}" for key, value in fields.items()]
    return "\n".join(lines).encode("utf-8")


def send_notification(env: Mapping[str, str], message: bytes) -> bool:
    """Send ``message`` to ``$NOTIFY_SOCKET``; True when sent, False otherwise. Never raises."""
    raw = env.get("NOTIFY_SOCKET")
    if not raw:
        return False
    address = socket_address(raw)
    if address is None:
        log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; not notifying", raw)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("cannot notify systemd through %r: %s", raw, exc)
        return False
    return True


def notify_ready(env: Mapping[str, str], *, status: str = "ready: the local API answers",
                 pid: int | None = None) -> bool:
    """``READY=1``: the API is up. True when sent, False when not under systemd."""
    message = notification(READY="1", STATUS=status,
                           MAINPID=str(os.getpid() if pid is None else pid))
    return send_notification(env, message)


def notify_stopping(env: Mapping[str, str], *, status: str = "stopping") -> bool:
    """``STOPPING=1``: shutdown began; systemd shows the service as deactivating."""
    return send_notification(env, notification(STOPPING="1", STATUS=status))
