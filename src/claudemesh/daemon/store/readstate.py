"""Per-session read state and the queue of receipts to send, in ``inbox.db``.

Marking a message seen and queueing its ``surfaced`` receipt are one transaction, as are
storing a DM and queueing its ``stored`` receipt (:meth:`InboxStore.insert_new`): the
receipt pump (:mod:`claudemesh.daemon.receipts`) then moves queued receipts into the
outbox under ids derived from the message, so a crash between any two steps sends each
receipt later, and never twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from claudemesh.daemon.store.inbox import UNREAD_SEQS
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["QueuedReceipt", "ReadState"]

MAX_MARK: Final = 1000
# A message is for session name ``?`` when filed for it or for every session.
_FOR_SESSION: Final = "(i.session = ? OR i.session IS NULL)"


@dataclass(frozen=True, slots=True)
class QueuedReceipt:
    seq: int
    state: str
    session: str | None
    path: str | None
    at: int
    mesh: str
    client_message_id: str
    broker_message_id: str | None
    sender_pubkey: str
    recipient_pubkey: str


class ReadState:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def mark_seen(self, session: str, *, ids: list[str] | None, up_to_seq: int | None,
                  path: str, now_ms: int) -> list[int]:
        """Mark messages for ``session`` seen; returns the seqs newly marked. The first
        mark of a DM from another member, by any session, queues its ``surfaced`` receipt.
        """
        args: list[object]
        if ids is not None:
            pick, args = f"i.id IN ({','.join('?' * len(ids))})", list(ids)
        else:
            pick, args = "i.seq <= ?", [up_to_seq]
        with store_errors("marking messages seen"), immediate(self._conn):
            rows = self._conn.execute(
                "SELECT i.seq, i.topic IS NULL AND i.sender_pubkey != i.recipient_pubkey"  # noqa: S608
                " AND NOT EXISTS (SELECT 1 FROM inbox_seen a WHERE a.seq = i.seq)"
                f" FROM inbox i WHERE {pick} AND {_FOR_SESSION} AND NOT EXISTS"
                " (SELECT 1 FROM inbox_seen s WHERE s.seq = i.seq AND s.session = ?)"
                " ORDER BY i.seq", (*args, session, session)).fetchall()
            self._conn.executemany(
                "INSERT INTO inbox_seen (seq, session, seen_at, path) VALUES (?, ?, ?, ?)",
                [(seq, session, now_ms, path) for seq, _ in rows])
            self._conn.executemany(
                "INSERT INTO receipt_queue (seq, state, session, path, at, queued_at)"
                " VALUES (?, 'surfaced', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(seq, session, path, now_ms, now_ms) for seq, first in rows if first])
            if rows:
                self._advance(session)
        return [seq for seq, _ in rows]

    def _advance(self, session: str) -> None:
        """Move the name's two horizons (inbox.UNREAD_SEQS) up to just below its oldest
        unread row of each kind, or to the newest row when none is unread."""
        unseen = ("NOT EXISTS (SELECT 1 FROM inbox_seen s WHERE s.seq = i.seq"
                  " AND s.session = n.name)")
        self._conn.execute(
            "UPDATE session_name AS n SET"  # noqa: S608
            " filed_seq = coalesce((SELECT min(i.seq) - 1 FROM inbox i WHERE i.session ="
            f" n.name AND i.seq > n.filed_seq AND {unseen}), (SELECT max(seq) FROM inbox)),"
            " since_seq = coalesce((SELECT min(i.seq) - 1 FROM inbox i WHERE i.session IS"
            f" NULL AND i.seq > n.since_seq AND {unseen}), (SELECT max(seq) FROM inbox))"
            " WHERE n.name = ?", (session,))

    def unread_count(self, session: str) -> int:
        """Messages for ``session`` it has not seen (the rule of InboxStore.query)."""
        with store_errors("counting unread messages"):
            (count,) = self._conn.execute(
                f"SELECT count(*) FROM inbox i WHERE i.seq IN ({UNREAD_SEQS})"  # noqa: S608
                " AND NOT EXISTS (SELECT 1 FROM inbox_seen s WHERE s.seq = i.seq"
                " AND s.session = ?)", (session,) * 4).fetchone()
        return int(count)

    def unread_counts(self) -> dict[str, int]:
        """:meth:`unread_count` of every registered session."""
        with store_errors("counting unread messages"):
            names = [n for (n,) in self._conn.execute("SELECT name FROM session")]
        return {name: self.unread_count(name) for name in names}

    # -- the receipt queue ---------------------------------------------------------------

    def queued_receipts(self, *, limit: int) -> list[QueuedReceipt]:
        with store_errors("reading the receipt queue"):
            rows = self._conn.execute(
                "SELECT q.seq, q.state, q.session, q.path, q.at, i.mesh, i.client_message_id,"
                " i.broker_message_id, i.sender_pubkey, i.recipient_pubkey"
                " FROM receipt_queue q JOIN inbox i ON i.seq = q.seq"
                " WHERE q.sent_at IS NULL ORDER BY q.queued_at, q.seq LIMIT ?",
                (limit,)).fetchall()
        return [QueuedReceipt(*r) for r in rows]

    def mark_receipts_sent(self, keys: list[tuple[int, str]], now_ms: int) -> None:
        with store_errors("updating the receipt queue"), immediate(self._conn):
            self._conn.executemany(
                "UPDATE receipt_queue SET sent_at = ? WHERE seq = ? AND state = ?",
                [(now_ms, seq, state) for seq, state in keys])
