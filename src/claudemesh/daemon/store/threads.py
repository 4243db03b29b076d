"""The SQL side of threads: find a message by any of its ids, and the replies to a set of
``broker_message_id``s, in the inbox (received) and the outbox (sent).

``reply_to_id`` names the ``broker_message_id`` replied to (validated at accept), indexed
on both sides (inbox.db migration 3, outbox.db migration 4). The walk itself, which goes
back and forth between the two databases, is :mod:`claudemesh.daemon.ipc.thread`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

from claudemesh.daemon.store.inbox import ALIASED, InboxItem
from claudemesh.daemon.store.outbox import OUTBOX_COLUMNS, OutboxRow
from claudemesh.sqlitedb.db import store_errors

__all__ = ["SentMessage", "find_received", "find_sent", "received_replies",
           "received_with_ids", "sent_replies", "sent_with_ids"]

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class SentMessage:
    row: OutboxRow
    body: str | None  # the plaintext given at accept (None: sent before search existed)
    rowid: int


def _received(conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> list[InboxItem]:
    with store_errors("reading a thread"):
        rows = conn.execute(f"SELECT {ALIASED}, NULL FROM inbox i WHERE {where}"  # noqa: S608
                            " ORDER BY i.seq", args).fetchall()
    return [InboxItem.from_sql(r) for r in rows]


def _sent(conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> list[SentMessage]:
    with store_errors("reading a thread"):
        rows = conn.execute(
            f"SELECT {OUTBOX_COLUMNS}, t.body, o.rowid FROM outbox o"  # noqa: S608
            f" LEFT JOIN outbox_text t ON t.row_id = o.id WHERE o.purpose = 'message'"
            f" AND {where} ORDER BY o.rowid", args).fetchall()
    return [SentMessage(OutboxRow.from_sql(r[:-2]), r[-2], int(r[-1])) for r in rows]


def _chunked(ids: Collection[str]) -> list[tuple[str, ...]]:
    items = sorted(ids)
    return [tuple(items[i:i + _CHUNK]) for i in range(0, len(items), _CHUNK)]


def find_received(conn: sqlite3.Connection, ident: str) -> list[InboxItem]:
    """Rows whose ``broker_message_id``, ``id`` or ``client_message_id`` is ``ident``."""
    return _received(conn, "i.broker_message_id = ? OR i.id = ? OR i.client_message_id = ?",
                     (ident, ident, ident))


def find_sent(conn: sqlite3.Connection, ident: str) -> list[SentMessage]:
    return _sent(conn, "(o.broker_message_id = ? OR o.id = ? OR o.client_message_id = ?)",
                 (ident, ident, ident))


def received_with_ids(conn: sqlite3.Connection, ids: Collection[str]) -> list[InboxItem]:
    return [item for chunk in _chunked(ids) for item in _received(
        conn, f"i.broker_message_id IN ({','.join('?' * len(chunk))})", chunk)]


def sent_with_ids(conn: sqlite3.Connection, ids: Collection[str]) -> list[SentMessage]:
    return [item for chunk in _chunked(ids) for item in _sent(
        conn, f"o.broker_message_id IN ({','.join('?' * len(chunk))})", chunk)]


def received_replies(conn: sqlite3.Connection, ids: Collection[str]) -> list[InboxItem]:
    """Rows that reply to one of ``ids`` (broker_message_ids)."""
    return [item for chunk in _chunked(ids) for item in _received(
        conn, f"i.reply_to_id IN ({','.join('?' * len(chunk))})", chunk)]


def sent_replies(conn: sqlite3.Connection, ids: Collection[str]) -> list[SentMessage]:
    return [item for chunk in _chunked(ids) for item in _sent(
        conn, f"o.reply_to_id IN ({','.join('?' * len(chunk))})", chunk)]
