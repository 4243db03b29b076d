"""The SDK's sans-I/O HTTP/1.1 answer parser, fed literal bytes (STYLE (b)3)."""

from __future__ import annotations

import json

import pytest

from claudemesh.sdk.http import (
    END,
    NEED_DATA,
    Head,
    ProtocolError,
    ResponseParser,
    build_request,
    decode_body,
)


def parse(data: bytes, *, step: int | None = None, eof: bool = True) -> tuple[Head, bytes]:
    """Feed ``data`` whole or ``step`` bytes at a time; return the head and the body."""
    parser = ResponseParser()
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    head: Head | None = None
    body = b""
    fed = 0
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            if fed < len(pieces):
                parser.feed(pieces[fed])
                fed += 1
            elif eof:
                parser.eof()
            else:
                raise AssertionError("the parser wants more than the answer holds")
            continue
        if event is END:
            assert head is not None
            return head, body
        if isinstance(event, Head):
            head = event
        else:
            assert isinstance(event, bytes)
            body += event


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream"
           b"\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
LENGTH = b'HTTP/1.1 202 Accepted\r\nContent-Length: 11\r\nX-Dup: a\r\n\r\n{"a": true}'


@pytest.mark.parametrize("step", [None, 1, 2, 7])
def test_a_content_length_body_whole_or_one_byte_at_a_time(step: int | None) -> None:
    head, body = parse(LENGTH, step=step)
    assert head.status == 202
    assert head.headers == {"content-length": "11", "x-dup": "a"}
    assert json.loads(body) == {"a": True}


@pytest.mark.parametrize("step", [None, 1, 3])
def test_a_chunked_body_with_extensions_and_trailers(step: int | None) -> None:
    head, body = parse(CHUNKED, step=step)
    assert head.headers["content-type"] == "text/event-stream"
    assert body == b"hello, world"


def test_chunks_come_out_as_they_arrive_before_the_stream_ends() -> None:
    parser = ResponseParser()
    parser.feed(CHUNKED[:CHUNKED.index(b"7;ext")])
    assert isinstance(parser.next_event(), Head)
    assert parser.next_event() == b"hello"
    assert parser.next_event() is NEED_DATA


def test_bytes_after_the_body_are_not_part_of_it() -> None:
    _, body = parse(LENGTH + b"HTTP/1.1 200 OK\r\n\r\n")
    assert body == b'{"a": true}'
    _, chunked = parse(CHUNKED + b"garbage")
    assert chunked == b"hello, world"


def test_a_body_without_framing_runs_until_the_connection_closes() -> None:
    head, body = parse(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", step=4)
    assert (head.status, body) == (200, b"all of it")


def test_lf_only_line_endings_are_understood() -> None:
    head, body = parse(b"HTTP/1.1 404 Not Found\nContent-Length: 2\n\n{}")
    assert (head.status, body) == (404, b"{}")


def test_no_body_for_204() -> None:
    head, body = parse(b"HTTP/1.1 204 No Content\r\n\r\n", eof=False)
    assert (head.status, body) == (204, b"")


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "closed before an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the answer's head"),
    (LENGTH[:-3], "before the whole body"),
    (CHUNKED[:CHUNKED.index(b"llo")], "inside a chunk"),
    (CHUNKED[:CHUNKED.index(b"hello") + 5], "inside a chunk"),
    (CHUNKED[:CHUNKED.index(b"0\r\n")], "before the last chunk"),
    (CHUNKED[:CHUNKED.index(b"X-Trailer")], "inside the trailer"),
])
def test_a_truncated_answer_is_a_protocol_error_never_a_short_body(data: bytes,
                                                                    reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse(data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 abc OK\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "longer than"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "too many header lines"),
])
def test_malformed_answers_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse(data)


def test_a_head_that_never_ends_is_refused_once_it_is_too_large() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70_000)
    with pytest.raises(ProtocolError, match="too large"):
        parser.next_event()


def test_build_request_sends_host_close_and_a_json_body() -> None:
    raw = build_request("POST", "/v1/send", body={"to": "bob"}, headers={"X-A": "1"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/send HTTP/1.1"
    assert {"Host: localhost", "Connection: close", "X-A: 1",
            "Content-Type: application/json", f"Content-Length: {len(body)}"} <= set(lines)
    assert json.loads(body) == {"to": "bob"}
    assert build_request("GET", "/v1/version").endswith(b"Connection: close\r\n\r\n")


def test_decode_body_is_json_else_text_else_none() -> None:
    assert decode_body(b'{"a": 1}') == {"a": 1}
    assert decode_body(b"# HELP x\n") == "# HELP x\n"
    assert decode_body(b"") is None
