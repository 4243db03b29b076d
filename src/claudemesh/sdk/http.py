"""Just enough HTTP/1.1 for the daemon's local API, with no I/O (STYLE (b)1, h11's shape).

:func:`build_request` turns a request into bytes; :class:`ResponseParser` takes the
answer's bytes as they arrive (:meth:`~ResponseParser.feed`, :meth:`~ResponseParser.eof`)
and hands back its head, then its body in pieces, framed by ``Content-Length``, by
chunks (the event stream), or by the end of the connection. The sync client drives it
with ``socket.recv`` and the async one with ``StreamReader.read``: one parser, two shells.

We do not use ``http.client``: it pulls in the ``email`` package and costs about 18 ms of
import on every ``claudemesh send`` (DESIGN §3). Every request says
``Connection: close``, so an answer is never followed by another on the same socket.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Final

__all__ = [
    "END",
    "NEED_DATA",
    "Head",
    "ParserEvent",
    "ProtocolError",
    "Response",
    "ResponseParser",
    "build_request",
    "decode_body",
]

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADER_LINES: Final = 100
MAX_CHUNK_LINE: Final = 1024


class ProtocolError(Exception):
    """The answer is not HTTP we understand, or it stopped short (a truncated body)."""


class _Mode(enum.Enum):
    """Where the parser is: HEAD, then one framing (LENGTH, CHUNK_SIZE <-> CHUNK_DATA ->
    TRAILER, or CLOSE), then END."""

    HEAD = 1
    LENGTH = 2
    CHUNK_SIZE = 3
    CHUNK_DATA = 4
    TRAILER = 5
    CLOSE = 6
    END = 7


class _Marker:
    """A sentinel :meth:`ResponseParser.next_event` returns (:data:`NEED_DATA`, :data:`END`)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Marker("NEED_DATA")
"""Feed more bytes (or :meth:`ResponseParser.eof`) before asking again."""
END: Final = _Marker("END")
"""The body is complete."""

class Head:
    """The status and headers (names lower-cased) of an answer."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"Head({self.status}, {self.headers!r})"


ParserEvent = Head | bytes | _Marker


class Response:
    """A whole answer: its status, its body (JSON decoded, else text, else None), headers.

    A plain slotted class rather than a dataclass: this module is on every CLI command's
    import path, and a frozen dataclass costs about 1.5 ms to create.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body!r})"


def build_request(method: str, target: str, *, body: Any = None,
                  headers: dict[str, str] | None = None, keep_alive: bool = False) -> bytes:
    """The request's bytes; ``body`` (if not None) goes out as JSON."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost",
             "Connection: keep-alive" if keep_alive else "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def reusable(head: Head) -> bool:
    """Whether the connection may carry another request after this answer: its body
    ends by its own framing (a length, or chunks) and the server did not ask to close."""
    headers = head.headers
    framed = "content-length" in headers or (
        headers.get("transfer-encoding", "").lower() == "chunked")
    return framed and headers.get("connection", "").lower() != "close"


def decode_body(data: bytes) -> Any:
    """JSON when it parses, the text otherwise (``/v1/metrics``), None when empty."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


class ResponseParser:
    """One HTTP/1.1 answer, parsed incrementally.

    :meth:`next_event` returns, in order: one :class:`Head`, then body pieces
    (``bytes``), then :data:`END`; :data:`NEED_DATA` whenever it needs more input. A
    connection that ends early raises :class:`ProtocolError` from :meth:`next_event`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._mode = _Mode.HEAD
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def eof(self) -> None:
        self._eof = True

    def next_event(self) -> ParserEvent:
        return self._readers[self._mode](self)

    def _read_head(self) -> ParserEvent:
        end = self._buf.find(b"\r\n\r\n")
        cut = 4
        if end < 0:
            end, cut = self._buf.find(b"\n\n"), 2
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise ProtocolError("the answer's head is too large")
            if self._eof:
                raise ProtocolError("the connection closed before an answer"
                                    if not self._buf else "the connection closed inside"
                                    " the answer's head")
            return NEED_DATA
        raw = bytes(self._buf[:end])
        del self._buf[:end + cut]
        head = _parse_head(raw)
        self._mode = _framing(head)
        if self._mode is _Mode.LENGTH:
            self._remaining = _content_length(head.headers["content-length"])
        return head

    def _read_length(self) -> ParserEvent:
        if self._remaining == 0:
            self._mode = _Mode.END
            return END
        if not self._buf:
            return self._short("the connection closed before the whole body")
        return self._take()

    def _read_chunk_size(self) -> ParserEvent:
        line = self._line()
        if line is None:
            return self._short("the connection closed before the last chunk")
        size = _chunk_size(line)
        self._remaining = size
        self._mode = _Mode.TRAILER if size == 0 else _Mode.CHUNK_DATA
        return self.next_event()

    def _read_chunk_data(self) -> ParserEvent:
        if self._remaining > 0:
            if not self._buf:
                return self._short("the connection closed inside a chunk")
            return self._take()
        line = self._line()  # the CRLF after the chunk's data
        if line is None:
            return self._short("the connection closed inside a chunk")
        if line:
            raise ProtocolError("a chunk is longer than its declared size")
        self._mode = _Mode.CHUNK_SIZE
        return self.next_event()

    def _read_trailer(self) -> ParserEvent:
        """Trailer fields after the last chunk, up to an empty line; none are used."""
        while (line := self._line()) is not None:
            if not line:
                self._mode = _Mode.END
                return END
        return self._short("the connection closed inside the trailer")

    def _read_until_close(self) -> ParserEvent:
        if self._buf:
            piece = bytes(self._buf)
            self._buf.clear()
            return piece
        if self._eof:
            self._mode = _Mode.END
            return END
        return NEED_DATA

    def _read_end(self) -> ParserEvent:
        return END

    _readers: Final = {
        _Mode.HEAD: _read_head, _Mode.LENGTH: _read_length,
        _Mode.CHUNK_SIZE: _read_chunk_size, _Mode.CHUNK_DATA: _read_chunk_data,
        _Mode.TRAILER: _read_trailer, _Mode.CLOSE: _read_until_close, _Mode.END: _read_end,
    }

    def _take(self) -> bytes:
        piece = bytes(self._buf[:self._remaining])
        del self._buf[:len(piece)]
        self._remaining -= len(piece)
        return piece

    def _line(self) -> bytes | None:
        """One CRLF (or LF) terminated line without its ending; None if not all here."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_CHUNK_LINE:
                raise ProtocolError("a chunk-size line is too long")
            return None
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[:end + 1]
        return line

    def _short(self, why: str) -> _Marker:
        if self._eof:
            raise ProtocolError(why)
        return NEED_DATA


def _parse_head(raw: bytes) -> Head:
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (
            parts[1].isdigit() and len(parts[1]) == 3):
        raise ProtocolError(f"not an HTTP answer: {lines[0][:60]!r}")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise ProtocolError("too many header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"a malformed header line: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return Head(int(parts[1]), headers)


def _content_length(text: str) -> int:
    if not text.isdigit():
        raise ProtocolError(f"a bad Content-Length {text[:20]!r}")
    return int(text)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not text or text.strip(b"0123456789abcdefABCDEF") or len(text) > 16:
        raise ProtocolError(f"a bad chunk size {text[:20]!r}")
    return int(text, 16)


def _framing(head: Head) -> _Mode:
    """How the body is delimited (RFC 9112 §6.3), for the answers this client can get."""
    if head.status in (204, 304) or 100 <= head.status < 200:
        return _Mode.END
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return _Mode.CHUNK_SIZE
    return _Mode.LENGTH if "content-length" in head.headers else _Mode.CLOSE
