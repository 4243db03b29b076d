from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from claudemesh.daemon.store.inbox import INBOX_MIGRATIONS, InboxFilter, InboxStore, NewInboxItem
from claudemesh.sqlitedb.db import open_database


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InboxStore]:
    conn = open_database(tmp_path / "inbox.db", INBOX_MIGRATIONS)
    with contextlib.closing(conn):
        yield InboxStore(conn)


def item(cmid: str, mesh: str = "a", sender: str = "ab" * 32, topic: str | None = None,
         name: str = "alice") -> NewInboxItem:
    return NewInboxItem(f"id-{mesh}-{cmid}", cmid, f"b-{cmid}", mesh, "cd" * 32, topic, sender,
                        name, "hi", None, None, "next", None, None, "2026-01-01T00:00:00Z")


def test_dedupe_is_per_mesh_and_returns_only_new_rows(store: InboxStore) -> None:
    first = store.insert_new([item("x"), item("y")], 1)
    assert [i.client_message_id for i in first] == ["x", "y"]
    again = store.insert_new([item("x"), item("x", mesh="b"), item("z")], 2)
    assert [(i.mesh, i.client_message_id) for i in again] == [("b", "x"), ("a", "z")]
    rows = store.query(InboxFilter(limit=10, ascending=True))
    assert [(i.mesh, i.client_message_id) for i in rows] == [
        ("a", "x"), ("a", "y"), ("b", "x"), ("a", "z")]
    assert store.last_seq() == rows[-1].seq  # seq may have gaps; it only ever grows


def test_cursor_paging_never_skips_or_repeats_even_while_rows_arrive(
        store: InboxStore) -> None:
    store.insert_new([item(f"m{i}") for i in range(10)], 1)
    seen: list[str] = []
    cursor = None
    while True:
        page = store.query(InboxFilter(limit=3, cursor=cursor))
        if len(seen) == 3:
            store.insert_new([item("late")], 2)  # newer than the walk: not in it
        seen += [i.client_message_id for i in page]
        if len(page) < 3:
            break
        cursor = page[-1].seq
    assert seen == [f"m{i}" for i in reversed(range(10))]
    ascending = store.query(InboxFilter(limit=100, ascending=True))
    assert [i.client_message_id for i in ascending][-1] == "late"


def test_filters(store: InboxStore) -> None:
    store.insert_new([item("1", sender="aa" * 32, name="ann"),
                      item("2", topic="news"), item("3", mesh="b")], 1000)
    store.insert_new([item("4")], 5000)
    assert [i.client_message_id for i in store.query(InboxFilter(sender="aa" * 32))] == ["1"]
    assert [i.client_message_id for i in store.query(InboxFilter(sender="ann"))] == ["1"]
    assert [i.client_message_id for i in store.query(InboxFilter(topic="news"))] == ["2"]
    assert [i.client_message_id for i in store.query(InboxFilter(mesh="b"))] == ["3"]
    assert [i.client_message_id for i in store.query(InboxFilter(since_ms=5000))] == ["4"]


def test_peers_are_saved_and_replaced(store: InboxStore) -> None:
    store.replace_peers("a", [{"pubkey": "p1", "display_name": "bob", "online": True,
                               "status": "idle"}], 1)
    store.upsert_peer("a", {"pubkey": "p2", "display_name": "cy"}, 2)
    assert [(p["display_name"], p["online"]) for p in store.peers()] == [
        ("bob", True), ("cy", False)]
    store.replace_peers("a", [], 3)
    assert store.peers() == []


def test_schema_has_the_spec_columns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    for script in INBOX_MIGRATIONS:
        conn.executescript(script)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(inbox)")}
    assert {"id", "client_message_id", "broker_message_id", "mesh", "topic", "sender_pubkey",
            "sender_name", "body", "meta", "received_at", "reply_to_id"} <= columns
