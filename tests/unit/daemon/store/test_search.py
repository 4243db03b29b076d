"""FTS5 search and thread lookups on real SQLite files: the index follows its rows in
their own transaction, migrations index what was there, bad queries are clear errors."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from claudemesh.daemon.store.fts_query import FtsQueryError, fts_query
from claudemesh.daemon.store.inbox import INBOX_MIGRATIONS, InboxFilter, InboxStore, NewInboxItem
from claudemesh.daemon.store.outbox import NewSend, OutboxStore
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.daemon.store.search import search_inbox, search_outbox
from claudemesh.daemon.store.threads import find_received, received_replies, sent_replies
from claudemesh.protocol.ids import new_ulid
from claudemesh.sqlitedb.db import immediate, open_database

ME = "cd" * 32
PEER = "ab" * 32


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_database(tmp_path / "inbox.db", INBOX_MIGRATIONS)
    with contextlib.closing(conn):
        yield conn


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_database(tmp_path / "outbox.db", OUTBOX_MIGRATIONS)
    with contextlib.closing(conn):
        yield conn


def item(cmid: str, body: str | None, *, undecryptable: str | None = None,
         topic: str | None = None, reply_to: str | None = None,
         sender: str = PEER) -> NewInboxItem:
    return NewInboxItem(f"id-{cmid}", cmid, f"b-{cmid}", "m", ME, topic, sender, "bob", body,
                        undecryptable, None, "next", reply_to, None, "2026-01-01T00:00:00Z")


def hits(conn: sqlite3.Connection, text: str, **kw: object) -> list[str]:
    f = InboxFilter(**kw)  # type: ignore[arg-type]
    return [i.client_message_id for i, _ in search_inbox(conn, f, text)]


def fts_rows(conn: sqlite3.Connection, table: str) -> int:
    """Rows in the index itself (a count of ``*_fts`` would read the content table)."""
    return int(conn.execute(f"SELECT count(*) FROM {table}_fts_docsize").fetchone()[0])


def test_a_word_finds_its_row_with_a_highlight(inbox: sqlite3.Connection) -> None:
    InboxStore(inbox).insert_new([item("1", "the deploy of build 42 is green"),
                                  item("2", "lunch at noon")], 1)
    [(found, highlight)] = search_inbox(inbox, InboxFilter(), "deploy")
    assert found.client_message_id == "1"
    assert highlight == "the [deploy] of build 42 is green"
    assert hits(inbox, "nothing-like-it") == []


def test_diacritics_prefixes_phrases_and_punctuated_words(inbox: sqlite3.Connection) -> None:
    InboxStore(inbox).insert_new([item("1", "Café déploiement e2e-test passed"),
                                  item("2", "test e2e reversed")], 1)
    assert hits(inbox, "cafe") == ["1"]
    assert hits(inbox, "deploi*") == ["1"]
    assert hits(inbox, "e2e-test") == ["1"]  # a phrase of its parts, in that order
    assert sorted(hits(inbox, "e2e AND test")) == ["1", "2"]
    assert hits(inbox, '"test e2e"') == ["2"]


def test_undecryptable_rows_are_not_indexed(inbox: sqlite3.Connection) -> None:
    InboxStore(inbox).insert_new([item("1", None, undecryptable="bad_box"),
                                  item("2", "secret plans", undecryptable="hash_mismatch")], 1)
    assert fts_rows(inbox, "inbox") == 0
    assert hits(inbox, "secret") == []
    inbox.execute("DELETE FROM inbox")  # and deleting them touches no index entry
    assert inbox.execute("INSERT INTO inbox_fts (inbox_fts) VALUES ('integrity-check')")


def test_the_index_follows_insert_and_delete_in_the_same_transaction(
        inbox: sqlite3.Connection) -> None:
    store = InboxStore(inbox)
    with pytest.raises(RuntimeError), immediate(inbox):
        store.insert_new([item("1", "rolled back words")], 1)
        assert hits(inbox, "rolled") == ["1"]  # visible inside the transaction
        raise RuntimeError
    assert fts_rows(inbox, "inbox") == 0
    assert hits(inbox, "rolled") == []
    store.insert_new([item("2", "kept words")], 1)
    with pytest.raises(RuntimeError), immediate(inbox):
        inbox.execute("DELETE FROM inbox")
        assert hits(inbox, "kept") == []
        raise RuntimeError
    assert hits(inbox, "kept") == ["2"]
    inbox.execute("UPDATE inbox SET body = 'changed text' WHERE client_message_id = '2'")
    assert (hits(inbox, "kept"), hits(inbox, "changed")) == ([], ["2"])
    inbox.execute("INSERT INTO inbox_fts (inbox_fts) VALUES ('integrity-check')")


def test_prune_deletes_old_rows_with_index_read_marks_and_receipts(
        inbox: sqlite3.Connection) -> None:
    store = InboxStore(inbox)
    store.insert_new([item(f"old{i}", f"ancient word{i}") for i in range(7)], 1000)
    store.insert_new([item("new", "fresh ancient")], 5000)
    inbox.execute("INSERT INTO inbox_seen (seq, session, seen_at, path)"
                  " SELECT seq, 's', 1, 'poll' FROM inbox")
    assert inbox.execute("SELECT count(*) FROM receipt_queue").fetchone() == (8,)
    assert store.prune(2000, batch=3) == 3
    assert store.prune(2000, batch=3) == 3
    assert store.prune(2000, batch=3) == 1
    assert store.prune(2000, batch=3) == 0
    assert hits(inbox, "ancient") == ["new"]
    assert fts_rows(inbox, "inbox") == 1
    assert inbox.execute("SELECT count(*) FROM inbox_seen").fetchone() == (1,)
    assert inbox.execute("SELECT count(*) FROM receipt_queue").fetchone() == (1,)
    inbox.execute("INSERT INTO inbox_fts (inbox_fts) VALUES ('integrity-check')")


def test_filters_combine_with_the_search(inbox: sqlite3.Connection) -> None:
    InboxStore(inbox).insert_new([item("dm", "release notes"),
                                  item("t", "release party", topic="news"),
                                  item("other", "release", sender="ee" * 32)], 1)
    assert hits(inbox, "release", topic="news") == ["t"]
    assert sorted(hits(inbox, "release", sender="bob")) == ["dm", "other", "t"]
    assert hits(inbox, "release", sender="ee" * 32) == ["other"]
    assert hits(inbox, "release", mesh="elsewhere") == []
    assert len(hits(inbox, "release", limit=2)) == 2


def test_results_come_best_match_first_and_page_by_offset(inbox: sqlite3.Connection) -> None:
    InboxStore(inbox).insert_new([
        item("weak", "alpha " + " ".join(f"filler{i}" for i in range(40))),
        item("strong", "alpha alpha alpha")], 1)
    assert hits(inbox, "alpha") == ["strong", "weak"]
    [(second, _)] = search_inbox(inbox, InboxFilter(limit=1), "alpha", offset=1)
    assert second.client_message_id == "weak"


@pytest.mark.parametrize("text", ['"open', "(a OR b", "a)", "AND", "x AND", "a , b", "*",
                                  "", "   ", "a\x00b", "x" * 600, "NOT"])
def test_a_malformed_query_is_a_clear_error(inbox: sqlite3.Connection, text: str) -> None:
    InboxStore(inbox).insert_new([item("1", "some words")], 1)
    with pytest.raises(FtsQueryError) as exc:
        search_inbox(inbox, InboxFilter(), text)
    assert str(exc.value)


def test_the_query_builder_quotes_what_fts5_would_misread() -> None:
    assert fts_query("e2e-test body:x ^start") == '"e2e-test" "body:x" "^start"'
    assert fts_query('"a ""quoted"" phrase"* pre* NEAR(a b, 5)') == (
        '"a ""quoted"" phrase"* pre* NEAR ( a b , 5 )')
    assert fts_query("x-y*") == '"x-y"*'


def test_the_migration_indexes_rows_that_were_there(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    with contextlib.closing(open_database(path, INBOX_MIGRATIONS[:3])) as c:  # before search (4)
        InboxStore(c).insert_new([item("1", "before the upgrade"),
                                  item("2", None, undecryptable="bad_box")], 1)
    with contextlib.closing(open_database(path, INBOX_MIGRATIONS)) as c:
        assert hits(c, "upgrade") == ["1"]
        assert fts_rows(c, "inbox") == 1
        InboxStore(c).insert_new([item("3", "after the upgrade")], 2)
        assert sorted(hits(c, "upgrade")) == ["1", "3"]
        c.execute("INSERT INTO inbox_fts (inbox_fts) VALUES ('integrity-check')")


# -- the outbox ---------------------------------------------------------------------------


def send(cmid: str, text: str | None, *, reply_to: str | None = None,
         kind: str = "dm") -> NewSend:
    body = ({"kind": "crypto_box", "nonce": "n", "ciphertext": "c"} if kind == "dm"
            else {"kind": "plain", "text": text})
    payload = json.dumps({"mesh": "m", "reply_to": reply_to, "body": body}).encode()
    return NewSend(client_message_id=cmid, fingerprint=bytes(32), payload=payload, mesh="m",
                   destination_kind=kind, destination_ref=PEER if kind == "dm" else "news",
                   priority="next", reply_to_id=reply_to, text=text)


def sent_hits(conn: sqlite3.Connection, text: str) -> list[str]:
    return [h.row.client_message_id for h in search_outbox(
        conn, text, status=None, purpose="message", client_message_id=None, limit=10)]


def test_sent_plaintext_is_indexed_at_accept_and_rolls_back_with_it(
        outbox: sqlite3.Connection) -> None:
    store = OutboxStore(outbox)
    store.accept(send("k1", "ship the parcel"), 1)
    [hit] = search_outbox(outbox, "parcel", status=None, purpose="message",
                          client_message_id=None, limit=10)
    assert (hit.body, hit.highlight) == ("ship the parcel", "ship the [parcel]")
    with pytest.raises(RuntimeError), immediate(outbox):
        store.accept(send("k2", "phantom parcel"), 1)
        raise RuntimeError
    assert sent_hits(outbox, "phantom") == []
    assert fts_rows(outbox, "outbox") == 1
    store.accept(send("k1", "ship the parcel"), 2)  # a repeat inserts nothing
    assert fts_rows(outbox, "outbox") == 1


def test_a_requeued_row_keeps_its_text_and_reply_to(outbox: sqlite3.Connection) -> None:
    store = OutboxStore(outbox)
    parent = new_ulid()
    row_id = store.accept(send("k1", "retry me", reply_to=parent), 1).row_id
    outcome = store.requeue(row_id, new_client_message_id="k2", now_ms=2)
    assert sorted(sent_hits(outbox, "retry")) == ["k1", "k2"]
    assert [s.row.id for s in sent_replies(outbox, {parent})] == [row_id, outcome.new_row_id]


def test_the_outbox_migration_reads_reply_to_and_plain_bodies(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    parent = new_ulid()
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS[:3])) as c:
        for cmid, kind in (("topic", "topic"), ("dm", "dm")):
            s = send(cmid, "old words", reply_to=parent, kind=kind)
            c.execute("INSERT INTO outbox (id, client_message_id, request_fingerprint,"
                      " payload, enqueued_at, next_attempt_at, status, mesh,"
                      " destination_kind, destination_ref, priority) VALUES"
                      " (?, ?, ?, ?, 1, 1, 'pending', 'm', ?, ?, 'next')",
                      (f"r-{cmid}", cmid, s.fingerprint, s.payload, s.destination_kind,
                       s.destination_ref))
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        assert sent_hits(c, "old") == ["topic"]  # a DM's payload holds only ciphertext
        assert sorted(s.row.client_message_id for s in sent_replies(c, {parent})) == [
            "dm", "topic"]


def test_thread_lookups_find_any_id_and_the_replies(inbox: sqlite3.Connection) -> None:
    root, reply = new_ulid(), new_ulid()
    InboxStore(inbox).insert_new([
        replace(item("r", "root"), broker_message_id=root),
        replace(item("c", "child", reply_to=root), broker_message_id=reply),
        item("x", "unrelated")], 1)
    for ident in (root, "id-r", "r"):
        assert [i.broker_message_id for i in find_received(inbox, ident)] == [root]
    assert [i.client_message_id for i in received_replies(inbox, {root})] == ["c"]
    assert received_replies(inbox, {reply}) == []
