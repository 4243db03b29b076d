"""The one SSE parser (sdk.sse), against the event-stream rules, fed literal bytes."""

from __future__ import annotations

import pytest

from claudemesh.sdk.http import ProtocolError
from claudemesh.sdk.sse import MAX_LINE_BYTES, SseEvent, SseParser, parse_lines


def feed_all(data: bytes, step: int | None = None) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    for i in range(0, len(data), step or len(data) or 1):
        events += parser.feed(data[i:i + (step or len(data))])
    return events + parser.eof()


STREAM = (b": connected\n\n"
          b"id: 7\nevent: message\ndata: {\"seq\": 7}\n\n"
          b": keepalive\n\n"
          b"event: peer_join\ndata: {\"pubkey\": \"p\"}\n\n")
EXPECTED = [SseEvent("message", "7", '{"seq": 7}'), SseEvent("peer_join", None, '{"pubkey": "p"}')]


@pytest.mark.parametrize("step", [None, 1, 2, 5])
def test_the_daemon_stream_whole_or_one_byte_at_a_time(step: int | None) -> None:
    assert feed_all(STREAM, step) == EXPECTED


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("step", [None, 1])
def test_every_line_ending_the_format_allows(eol: bytes, step: int | None) -> None:
    data = STREAM.replace(b"\n", eol)
    assert feed_all(data, step) == EXPECTED


def test_a_cr_at_the_end_of_a_piece_waits_for_a_possible_lf() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SseEvent("message", None, "a")]


def test_several_data_lines_join_with_newlines_and_one_leading_space_is_dropped() -> None:
    events = feed_all(b"data: first\ndata:second\ndata:  indented\ndata\n\n")
    assert events == [SseEvent("message", None, "first\nsecond\n indented\n")]


def test_comments_and_unknown_fields_are_skipped() -> None:
    events = feed_all(b":comment\nfoo: bar\ndata: x\n: inside\n\n")
    assert events == [SseEvent("message", None, "x")]


def test_a_block_without_data_is_no_event_but_its_id_is_remembered() -> None:
    parser = SseParser()
    assert parser.feed(b"id: 3\nevent: ping\n\n") == []
    assert parser.last_event_id == "3"
    [event] = parser.feed(b"data: after\n\n")
    assert (event.event, event.id) == ("message", None)  # the block's own id, not sticky
    assert parser.last_event_id == "3"


def test_an_id_with_nul_is_ignored_and_an_empty_data_line_is_an_event() -> None:
    parser = SseParser()
    assert parser.feed(b"id: a\x00b\ndata:\n\n") == [SseEvent("message", None, "")]
    assert parser.last_event_id is None


def test_retry_is_read_only_when_it_is_digits() -> None:
    parser = SseParser()
    parser.feed(b"retry: 1500\n\nretry: soon\n\n")
    assert parser.retry_ms == 1500


def test_a_leading_bom_is_dropped_even_split_across_pieces() -> None:
    parser = SseParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [SseEvent("message", None, "x")]


def test_a_lone_cr_ends_the_last_line_only_when_the_stream_ends() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\r\r") == []
    assert parser.eof() == [SseEvent("message", None, "x")]


def test_an_event_cut_off_by_the_end_of_the_stream_is_never_dispatched() -> None:
    assert feed_all(b"id: 9\ndata: half") == []
    assert feed_all(b"id: 9\ndata: whole\n") == []  # no blank line yet


def test_utf8_split_across_pieces_decodes_whole() -> None:
    data = "data: é✓\n\n".encode()
    assert feed_all(data, 1) == [SseEvent("message", None, "é✓")]


def test_a_line_longer_than_the_limit_is_refused() -> None:
    parser = SseParser()
    with pytest.raises(ProtocolError, match="longer than"):
        parser.feed(b"data: " + b"a" * (MAX_LINE_BYTES + 1))


def test_parse_lines_reads_split_lines() -> None:
    assert parse_lines(["event: x", "data: 1", "", "data: 2", ""]) == [
        SseEvent("x", None, "1"), SseEvent("message", None, "2")]
