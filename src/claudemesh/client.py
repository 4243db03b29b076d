"""A small synchronous client for the daemon's local API (CLI, scripts, tests).

It speaks just enough HTTP/1.1 for this one server, over ``AF_UNIX`` or loopback TCP:
one request per connection (``Connection: close``), answers framed by ``Content-Length``
or chunked (the event stream). We do not use ``http.client``: it pulls in the ``email``
package and costs about 18 ms of import on every ``claudemesh send`` (DESIGN §3: the CLI's
hot path must stay light). Error answers become the typed errors of
:mod:`claudemesh.errors` through :func:`~claudemesh.errors.error_from_wire`, the client's
single translation point.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from claudemesh.config import Paths
from claudemesh.errors import DaemonTimeout, DaemonUnreachable, error_from_wire

__all__ = ["DaemonClient", "Response"]

DEFAULT_TIMEOUT_S: Final = 5.0
MAX_HEADER_LINES: Final = 100


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class _Protocol(Exception):
    """The answer is not HTTP we understand."""


class DaemonClient:
    """Talks to the daemon of ``paths`` over its Unix socket, or TCP with the bearer token."""

    def __init__(self, paths: Paths, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: str = "uds") -> None:
        self._paths = paths
        self._timeout = timeout
        self._transport = transport

    def _connect(self, timeout: float) -> tuple[socket.socket, dict[str, str]]:
        if self._transport == "uds":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self._paths.sock))
            except BaseException:
                sock.close()
                raise
            return sock, {}
        try:
            port = int(self._paths.http_port.read_text().strip())
            token = self._paths.token.read_text().strip()
        except (OSError, ValueError) as exc:
            raise DaemonUnreachable(f"no TCP endpoint recorded in {self._paths.daemon_dir}"
                                    " (is the daemon running with TCP?)") from exc
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return sock, {"Authorization": f"Bearer {token}"}

    def _open(self, method: str, path: str, body: Any, headers: dict[str, str] | None,
              timeout: float) -> tuple[socket.socket, BinaryIO, int, dict[str, str]]:
        sock, auth = self._connect(timeout)
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in {**auth, **(headers or {})}.items()]
            if body is not None:
                lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            reader = sock.makefile("rb")
            status, answer_headers = _read_head(reader)
        except BaseException:
            sock.close()
            raise
        return sock, reader, status, answer_headers

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        """One request; any HTTP status comes back as a :class:`Response`.

        Raises:
            DaemonUnreachable: no daemon answered (no socket, refused, broken answer).
            DaemonTimeout: it did not answer within the timeout.
        """
        try:
            sock, reader, status, answer_headers = self._open(method, path, body, headers,
                                                              self._timeout)
            with sock, reader:
                data = b"".join(_body(reader, answer_headers))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"no daemon listens on {self._paths.sock}; start one with"
                " `claudemesh daemon up`") from exc
        except TimeoutError as exc:
            raise DaemonTimeout(
                f"the daemon did not answer within {self._timeout:g}s") from exc
        except (OSError, _Protocol) as exc:
            raise DaemonUnreachable(f"talking to the daemon failed: {exc}") from exc
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        return Response(status, parsed, answer_headers)

    def stream_lines(self, path: str, headers: dict[str, str] | None = None,
                     *, idle_timeout_s: float = 60.0) -> Iterator[str]:
        """GET a streaming route and yield its lines (for ``/v1/events``).

        Raises:
            DaemonUnreachable: no daemon, or the stream went silent past ``idle_timeout_s``.
            ClaudemeshError: the daemon refused the stream (e.g. too_many_streams).
        """
        try:
            sock, reader, status, answer_headers = self._open("GET", path, None, headers,
                                                              idle_timeout_s)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(f"no daemon listens on {self._paths.sock}") from exc
        except (OSError, _Protocol) as exc:
            raise DaemonUnreachable(f"the event stream broke: {exc}") from exc
        with sock, reader:
            try:
                if status >= 400:
                    data = b"".join(_body(reader, answer_headers))
                    raise error_from_wire(status, json.loads(data) if data else None)
                pending = b""
                for chunk in _body(reader, answer_headers):
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        yield line.decode("utf-8").rstrip("\r")
            except TimeoutError as exc:
                raise DaemonUnreachable("the event stream went silent") from exc
            except (OSError, _Protocol) as exc:
                raise DaemonUnreachable(f"the event stream broke: {exc}") from exc

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """Like :meth:`request`, but an error status raises its typed error."""
        resp = self.request(method, path, body, headers)
        if resp.status >= 400:
            raise error_from_wire(resp.status, resp.body)
        return resp.body


def _read_head(reader: BinaryIO) -> tuple[int, dict[str, str]]:
    status_line = reader.readline(65536)
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Protocol(f"not an HTTP answer: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = reader.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            return int(parts[1]), headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise _Protocol("too many header lines")


def _body(reader: BinaryIO, headers: dict[str, str]) -> Iterator[bytes]:
    """The body's bytes as they arrive: chunked, by Content-Length, or until close."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = reader.readline(1024).split(b";")[0].strip()
            if not size_line:
                return
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _Protocol(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                return
            chunk = reader.read(size)
            reader.readline(16)  # the CRLF after the chunk
            if len(chunk) < size:
                raise _Protocol("the connection closed inside a chunk")
            yield chunk
    length = headers.get("content-length")
    if length is not None:
        data = reader.read(int(length))
        if len(data) < int(length):
            raise _Protocol("the connection closed before the whole body")
        yield data
        return
    while chunk := reader.read(65536):
        yield chunk
