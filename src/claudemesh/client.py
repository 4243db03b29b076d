"""A small synchronous client for the daemon's local API (CLI, scripts, tests).

Standard library only (``http.client`` over ``AF_UNIX`` or loopback TCP), so importing it
costs nothing on the CLI's hot path. Error answers become the typed errors of
:mod:`claudemesh.errors` through :func:`~claudemesh.errors.error_from_wire`, the client's
single translation point.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.config import Paths
from claudemesh.errors import DaemonUnreachable, error_from_wire

__all__ = ["DaemonClient", "Response"]

DEFAULT_TIMEOUT_S: Final = 5.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class DaemonClient:
    """Talks to the daemon of ``paths`` over its Unix socket, or TCP with the bearer token."""

    def __init__(self, paths: Paths, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: str = "uds") -> None:
        self._paths = paths
        self._timeout = timeout
        self._transport = transport

    def _connection(self) -> tuple[http.client.HTTPConnection, dict[str, str]]:
        if self._transport == "uds":
            return _UnixConnection(str(self._paths.sock), self._timeout), {}
        try:
            port = int(self._paths.http_port.read_text().strip())
            token = self._paths.token.read_text().strip()
        except (OSError, ValueError) as exc:
            raise DaemonUnreachable(f"no TCP endpoint recorded in {self._paths.daemon_dir}"
                                    " (is the daemon running with TCP?)") from exc
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self._timeout)
        return conn, {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        """One request; any HTTP status comes back as a :class:`Response`.

        Raises:
            DaemonUnreachable: no daemon answered (no socket, refused, or timed out).
        """
        conn, auth = self._connection()
        all_headers = {"Host": "localhost", **auth, **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=all_headers)
            raw = conn.getresponse()
            data = raw.read()
            resp_headers = {k.lower(): v for k, v in raw.getheaders()}
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"no daemon listens on {self._paths.sock}; start one with"
                " `claudemesh daemon up`") from exc
        except TimeoutError as exc:
            raise DaemonUnreachable(
                f"the daemon did not answer within {self._timeout:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(f"talking to the daemon failed: {exc}") from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        return Response(raw.status, parsed, resp_headers)

    def stream_lines(self, path: str, headers: dict[str, str] | None = None,
                     *, idle_timeout_s: float = 60.0) -> Iterator[str]:
        """GET a streaming route and yield its lines (for ``/v1/events``).

        Raises:
            DaemonUnreachable: no daemon, or the stream went silent past ``idle_timeout_s``.
            ClaudemeshError: the daemon refused the stream (e.g. too_many_streams).
        """
        conn, auth = self._connection()
        conn.timeout = idle_timeout_s
        try:
            conn.request("GET", path, headers={"Host": "localhost", **auth, **(headers or {})})
            resp = conn.getresponse()
            if resp.status >= 400:
                body = resp.read()
                raise error_from_wire(resp.status, json.loads(body) if body else None)
            while True:
                raw = resp.readline()
                if not raw:
                    return
                yield raw.decode("utf-8").rstrip("\r\n")
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(f"no daemon listens on {self._paths.sock}") from exc
        except TimeoutError as exc:
            raise DaemonUnreachable("the event stream went silent") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(f"the event stream broke: {exc}") from exc
        finally:
            conn.close()

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """Like :meth:`request`, but an error status raises its typed error."""
        resp = self.request(method, path, body, headers)
        if resp.status >= 400:
            raise error_from_wire(resp.status, resp.body)
        return resp.body
