"""Server-Sent Events, parsed without I/O (the WHATWG "event stream interpretation").

The one SSE parser of the project: the sync and async clients feed it the event stream's
bytes as they arrive, and get back whole events. Lines end in CRLF, LF or CR (a CR at the
end of a piece waits for the next one, in case an LF follows); a leading BOM is dropped;
``:`` lines are comments (the daemon's ``: connected`` and ``: keepalive``); several
``data:`` lines join with ``\\n``; a block without data is not an event.

One departure from a browser's ``EventSource``: :attr:`SseEvent.id` is the ``id:`` of
the event's own block, or None, not the last id ever seen. The daemon puts ids only on
``message`` events, and a peer event must not look like a message. The sticky value is
still kept, in :attr:`SseParser.last_event_id`.
"""

from __future__ import annotations

import re
from typing import Final

from claudemesh.sdk.http import ProtocolError

__all__ = ["MAX_LINE_BYTES", "SseEvent", "SseParser", "parse_lines"]

MAX_LINE_BYTES: Final = 16 * 1024 * 1024  # a 1 MiB message, JSON-escaped, fits many times
_EOL: Final = re.compile(rb"\r\n|\r|\n")
_BOM: Final = b"\xef\xbb\xbf"


class SseEvent:
    """One dispatched event: its type (``message`` by default), its block's id, its data."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, id: str | None, data: str) -> None:
        self.event = event
        self.id = id
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SseEvent) and (self.event, self.id, self.data) == (
            other.event, other.id, other.data)

    def __hash__(self) -> int:
        return hash((self.event, self.id, self.data))

    def __repr__(self) -> str:
        return f"SseEvent({self.event!r}, {self.id!r}, {self.data!r})"


class SseParser:
    """Feed bytes, get :class:`SseEvent`\\ s; :meth:`feed_line` takes one decoded line."""

    def __init__(self) -> None:
        self._buf = b""
        self._started = False
        self._event = ""
        self._id: str | None = None
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        buf = self._buf + data
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            buf = buf.removeprefix(_BOM)
        events: list[SseEvent] = []
        pos = 0
        for end in _EOL.finditer(buf):
            if end.group() == b"\r" and end.end() == len(buf):
                break  # maybe the first half of a CRLF
            event = self.feed_line(buf[pos:end.start()].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            pos = end.end()
        self._buf = buf[pos:]
        if len(self._buf) > MAX_LINE_BYTES:
            raise ProtocolError(f"an event-stream line is longer than {MAX_LINE_BYTES} bytes")
        return events

    def eof(self) -> list[SseEvent]:
        """The stream ended: a final lone CR still ends its line; a partial line is dropped."""
        events: list[SseEvent] = []
        if self._buf.endswith(b"\r"):
            event = self.feed_line(self._buf[:-1].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        self._buf = b""
        return events

    def feed_line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        event = None
        if self._data:
            event = SseEvent(self._event or "message", self._id, "\n".join(self._data))
        self._event, self._id, self._data = "", None, []
        return event


def parse_lines(lines: list[str]) -> list[SseEvent]:
    """The events in already-split lines (tests, and text read some other way)."""
    parser = SseParser()
    return [e for e in map(parser.feed_line, lines) if e is not None]
