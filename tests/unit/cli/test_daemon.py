"""What ``claudemesh daemon up | status | outbox list | logs`` print (pure formatters, and
the log tail over real files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from claudemesh.cli.daemon import _ready_text, format_outbox, format_status, tail_lines
from claudemesh.cli.output import format_table
from claudemesh.config import Paths
from claudemesh.sdk.messages import OutboxItem

BOB = "ab" * 32
OUTBOX_HEADERS = ["ID", "CLIENT_MESSAGE_ID", "STATUS", "TRIES", "MESH", "TO", "ENQUEUED",
                  "LAST_ERROR"]


def test_ready_text_names_the_socket_tcp_port_recovered_rows_and_links() -> None:
    assert _ready_text({"pid": 42, "sock": "/run/d.sock", "tcp_port": 8123,
                        "recovered_inflight": 2, "links": {"demo": "open", "work": "backoff"}}
                       ).splitlines() == [
        "daemon running (pid 42): /run/d.sock, tcp 127.0.0.1:8123",
        "2 inflight row(s) returned to pending", "mesh demo: open", "mesh work: backoff"]


def test_ready_text_without_tcp_or_recovery_is_one_line() -> None:
    assert _ready_text({"pid": 42, "sock": "/run/d.sock", "tcp_port": None,
                        "recovered_inflight": 0, "links": {}}) == (
        "daemon running (pid 42): /run/d.sock, no tcp")


def health(*meshes: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "daemon_version": "0.1.0", "schema_version": 3, "pid": 42,
            "uptime_s": 3725.5, "queue_depth": 4, "inflight": 1, "dead": 2,
            "requests_in_flight": 0, "event_streams": 0, "meshes": list(meshes)}


def test_status_shows_the_daemon_and_one_line_per_mesh(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "config", tmp_path / "daemon")
    mesh = {"slug": "demo", "link": "open", "broker_url": "ws://b:1/ws", "queue_depth": 3,
            "dead": 0}
    assert format_status(health(mesh, {**mesh, "slug": "work", "link": "backoff"}),
                         paths).splitlines() == [
        "daemon: running (pid 42, up 1h 2m 5s, v0.1.0)",
        f"socket: {tmp_path / 'daemon' / 'daemon.sock'}",
        "outbox: 4 queued (1 inflight), 2 dead",
        "mesh demo: open  ws://b:1/ws  queue 3, dead 0",
        "mesh work: backoff  ws://b:1/ws  queue 3, dead 0"]


def test_status_of_a_daemon_that_joined_nothing(tmp_path: Path) -> None:
    text = format_status(health(), Paths(tmp_path, tmp_path))
    assert text.splitlines()[-1] == "meshes: none joined"


def row(row_id: str, **fields: Any) -> OutboxItem:
    doc: dict[str, Any] = {
        "id": row_id, "client_message_id": f"c-{row_id}", "status": "pending", "attempts": 0,
        "enqueued_at": "2026-11-26T15:00:00.000Z", "next_attempt_at": None,
        "delivered_at": None, "broker_message_id": None, "history_id": None,
        "last_error": None, "aborted_at": None, "aborted_by": None, "superseded_by": None,
        "mesh": "demo", "destination": "#news", "priority": "next",
        "fingerprint_prefix": None, "payload_bytes": 10}
    return OutboxItem.from_wire({**doc, **fields})


def test_an_empty_outbox_says_so() -> None:
    assert format_outbox([]) == "outbox is empty"


def test_outbox_rows_shorten_a_pubkey_destination_only() -> None:
    rows = [row("r1"), row("r2", status="dead", attempts=5, destination=BOB,
                           last_error="destination_not_found")]
    assert format_outbox(rows) == format_table(OUTBOX_HEADERS, [
        ("r1", "c-r1", "pending", 0, "demo", "#news", "2026-11-26T15:00:00.000Z", None),
        ("r2", "c-r2", "dead", 5, "demo", BOB[:12] + "…", "2026-11-26T15:00:00.000Z",
         "destination_not_found")])


@pytest.mark.parametrize(("count", "expected"), [
    (0, []), (2, ["b\n", "c\n"]), (10, ["a\n", "b\n", "c\n"])])
def test_tail_lines_of_a_small_file(tmp_path: Path, count: int, expected: list[str]) -> None:
    log = tmp_path / "daemon.log"
    log.write_bytes(b"a\nb\nc\n")
    assert tail_lines(log, count) == expected


def test_tail_lines_adds_the_missing_last_newline_and_replaces_bad_utf8(
        tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_bytes(b"one\ntw\xffo")
    assert tail_lines(log, 5) == ["one\n", "tw\ufffdo\n"]


def test_tail_lines_reads_back_across_chunks_of_a_large_file(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    lines = [f"line {i:06d} " + "x" * 90 + "\n" for i in range(5000)]  # ~0.5 MB
    log.write_text("".join(lines), encoding="utf-8")
    assert tail_lines(log, 1500) == lines[-1500:]
    assert tail_lines(log, 1) == lines[-1:]
