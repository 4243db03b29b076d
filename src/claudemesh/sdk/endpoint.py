"""Where the daemon listens and how to get in, and what a failed connection means.

Both clients connect the same way: the Unix socket ``daemon/daemon.sock`` (its file mode
is the auth), or loopback TCP on the port in ``daemon/http.port`` with the bearer token
from ``daemon/local-token``. Both files are read at every connection, so a restarted
daemon on a new port is found without a new client. :func:`connection_error` is the one
translation of socket and parser failures into the error tree (STYLE (b)7).
"""

from __future__ import annotations

from typing import Final

from claudemesh.config import Paths
from claudemesh.errors import DaemonTimeout, DaemonUnreachable, InvalidRequest
from claudemesh.sdk.http import ProtocolError

__all__ = ["TRANSPORTS", "Endpoint", "connection_error", "resolve"]

TRANSPORTS: Final = ("uds", "tcp")
LOOPBACK: Final = "127.0.0.1"


class Endpoint:
    """A Unix socket path, or a loopback port with its Authorization header."""

    __slots__ = ("headers", "port", "sock")

    def __init__(self, *, sock: str | None = None, port: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.sock = sock
        self.port = port
        self.headers = headers or {}

    @property
    def where(self) -> str:
        return self.sock if self.sock is not None else f"{LOOPBACK}:{self.port}"

    def __repr__(self) -> str:  # never the token (STYLE (c))
        return f"Endpoint({self.where})"


def check_transport(transport: str) -> str:
    if transport not in TRANSPORTS:
        raise InvalidRequest(f"transport must be one of {', '.join(TRANSPORTS)},"
                             f" not {transport!r}")
    return transport


def resolve(paths: Paths, transport: str) -> Endpoint:
    """Raises DaemonUnreachable when TCP was asked for and no port or token is recorded."""
    if transport == "uds":
        return Endpoint(sock=str(paths.sock))
    try:
        port = int(paths.http_port.read_text().strip())
        token = paths.token.read_text().strip()
    except (OSError, ValueError) as exc:
        raise DaemonUnreachable(f"no TCP endpoint recorded in {paths.daemon_dir}"
                                " (is the daemon running with TCP?)") from exc
    return Endpoint(port=port, headers={"Authorization": f"Bearer {token}"})


def connection_error(exc: OSError | ProtocolError, endpoint: Endpoint, timeout: float, *,
                     stream: bool = False) -> DaemonUnreachable:
    """The typed error for a connection that failed, timed out or answered garbage."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return DaemonUnreachable(f"no daemon listens on {endpoint.where}; start one with"
                                 " `claudemesh daemon up`")
    if isinstance(exc, TimeoutError):
        if stream:
            return DaemonTimeout(f"the event stream went silent for {timeout:g}s")
        return DaemonTimeout(f"the daemon did not answer within {timeout:g}s")
    what = "the event stream broke" if stream else "talking to the daemon failed"
    return DaemonUnreachable(f"{what}: {exc}")
