"""``inbox.db``: received messages, deduplicated, plus the persisted peer directory.

Schema: daemon-spec §4.10 with a ``seq`` (the SSE event id and the paging cursor), the
recipient, the destination, and an ``undecryptable`` reason for a DM that would not open
(R-IN-8: stored, deduplicated, shown, never handed on as text). The dedupe key is
(``mesh``, ``client_message_id``): the broker makes an id unique per mesh, and one daemon
serves several meshes (DESIGN §5.1). An insert that hits the key writes nothing and
returns nothing, so only new rows raise events (R-INB-1, R-IN-1).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.protocol.destination import HEX64_RE
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["INBOX_MIGRATIONS", "InboxFilter", "InboxItem", "InboxStore", "NewInboxItem"]

INBOX_MIGRATIONS: Final = (
    """
    CREATE TABLE inbox (
      seq               INTEGER PRIMARY KEY AUTOINCREMENT,
      id                TEXT NOT NULL UNIQUE,
      client_message_id TEXT NOT NULL,
      broker_message_id TEXT,
      mesh              TEXT NOT NULL,
      recipient_pubkey  TEXT NOT NULL,
      topic             TEXT,
      sender_pubkey     TEXT NOT NULL,
      sender_name       TEXT NOT NULL,
      body              TEXT,
      undecryptable     TEXT,
      meta              TEXT,
      priority          TEXT NOT NULL,
      reply_to_id       TEXT,
      history_id        TEXT,
      created_at        TEXT,
      received_at       INTEGER NOT NULL,
      UNIQUE (mesh, client_message_id)
    );
    CREATE INDEX inbox_received_at ON inbox(received_at);
    CREATE INDEX inbox_topic ON inbox(topic);
    CREATE INDEX inbox_sender ON inbox(sender_pubkey);
    CREATE TABLE peer (
      mesh         TEXT NOT NULL,
      pubkey       TEXT NOT NULL,
      member_id    TEXT,
      display_name TEXT NOT NULL,
      online       INTEGER NOT NULL DEFAULT 0,
      profile      TEXT NOT NULL DEFAULT '{}',
      updated_at   INTEGER NOT NULL,
      PRIMARY KEY (mesh, pubkey)
    );
    """,
)

_COLUMNS: Final = ("seq, id, client_message_id, broker_message_id, mesh, recipient_pubkey,"
                   " topic, sender_pubkey, sender_name, body, undecryptable, meta, priority,"
                   " reply_to_id, history_id, created_at, received_at")


@dataclass(frozen=True, slots=True)
class NewInboxItem:
    id: str
    client_message_id: str
    broker_message_id: str
    mesh: str
    recipient_pubkey: str
    topic: str | None  # None for a DM; else the topic name, "@group" or "*"
    sender_pubkey: str
    sender_name: str
    body: str | None
    undecryptable: str | None
    meta: dict[str, Any] | None
    priority: str
    reply_to_id: str | None
    history_id: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class InboxItem:
    seq: int
    id: str
    client_message_id: str
    broker_message_id: str | None
    mesh: str
    recipient_pubkey: str
    topic: str | None
    sender_pubkey: str
    sender_name: str
    body: str | None
    undecryptable: str | None
    meta: dict[str, Any] | None
    priority: str
    reply_to_id: str | None
    history_id: str | None
    created_at: str | None
    received_at: int

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> InboxItem:
        values = list(row)
        values[11] = None if values[11] is None else json.loads(values[11])
        return cls(*values)


@dataclass(frozen=True, slots=True)
class InboxFilter:
    mesh: str | None = None
    sender: str | None = None  # a pubkey, or a display name
    topic: str | None = None
    since_ms: int | None = None
    limit: int = 100
    cursor: int | None = None
    ascending: bool = False


class InboxStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def insert_new(self, items: list[NewInboxItem], now_ms: int) -> list[InboxItem]:
        """Insert each item unless its (mesh, client_message_id) is there; return the new."""
        created: list[InboxItem] = []
        with store_errors("storing inbound messages"), immediate(self._conn):
            for item in items:
                row = self._conn.execute(
                    "INSERT INTO inbox (id, client_message_id, broker_message_id, mesh,"  # noqa: S608
                    " recipient_pubkey, topic, sender_pubkey, sender_name, body, undecryptable,"
                    " meta, priority, reply_to_id, history_id, created_at, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (mesh, client_message_id) DO NOTHING"
                    f" RETURNING {_COLUMNS}",
                    (item.id, item.client_message_id, item.broker_message_id, item.mesh,
                     item.recipient_pubkey, item.topic, item.sender_pubkey, item.sender_name,
                     item.body, item.undecryptable,
                     None if item.meta is None else json.dumps(item.meta, ensure_ascii=False),
                     item.priority, item.reply_to_id, item.history_id, item.created_at, now_ms),
                ).fetchone()
                if row is not None:
                    created.append(InboxItem.from_sql(row))
        return created

    def query(self, f: InboxFilter) -> list[InboxItem]:
        clauses: list[str] = []
        args: list[Any] = []
        if f.mesh is not None:
            clauses.append("mesh = ?")
            args.append(f.mesh)
        if f.sender is not None:
            is_key = HEX64_RE.fullmatch(f.sender) is not None
            clauses.append("sender_pubkey = ?" if is_key else "sender_name = ?")
            args.append(f.sender)
        if f.topic is not None:
            clauses.append("topic = ?")
            args.append(f.topic)
        if f.since_ms is not None:
            clauses.append("received_at >= ?")
            args.append(f.since_ms)
        if f.cursor is not None:
            clauses.append("seq > ?" if f.ascending else "seq < ?")
            args.append(f.cursor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if f.ascending else "DESC"
        with store_errors("reading the inbox"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM inbox {where} ORDER BY seq {order} LIMIT ?",  # noqa: S608
                (*args, f.limit)).fetchall()
        return [InboxItem.from_sql(r) for r in rows]

    def after(self, seq: int, *, limit: int) -> list[InboxItem]:
        """Rows with ``seq`` greater than ``seq``, oldest first (SSE replay)."""
        return self.query(InboxFilter(cursor=seq, limit=limit, ascending=True))

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT max(seq) FROM inbox").fetchone()
        return int(row[0] or 0)

    # -- the persisted peer directory --------------------------------------------------

    def replace_peers(self, mesh: str, peers: list[dict[str, Any]], now_ms: int) -> None:
        with store_errors("saving peers"), immediate(self._conn):
            self._conn.execute("DELETE FROM peer WHERE mesh = ?", (mesh,))
            for peer in peers:
                self._upsert(mesh, peer, now_ms)

    def upsert_peer(self, mesh: str, peer: dict[str, Any], now_ms: int) -> None:
        with store_errors("saving a peer"), immediate(self._conn):
            self._upsert(mesh, peer, now_ms)

    def _upsert(self, mesh: str, peer: dict[str, Any], now_ms: int) -> None:
        profile = {k: v for k, v in peer.items()
                   if k not in ("pubkey", "member_id", "display_name", "online")}
        self._conn.execute(
            "INSERT INTO peer (mesh, pubkey, member_id, display_name, online, profile,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mesh, pubkey) DO UPDATE"
            " SET member_id = excluded.member_id, display_name = excluded.display_name,"
            " online = excluded.online, profile = excluded.profile,"
            " updated_at = excluded.updated_at",
            (mesh, peer["pubkey"], peer.get("member_id"), peer["display_name"],
             int(bool(peer.get("online"))), json.dumps(profile, ensure_ascii=False), now_ms))

    def peers(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT mesh, pubkey, member_id, display_name, online, profile FROM peer"
            " ORDER BY mesh, display_name").fetchall()
        return [{"mesh": mesh, "pubkey": pubkey, "member_id": member_id,
                 "display_name": name, "online": bool(online), **json.loads(profile)}
                for mesh, pubkey, member_id, name, online, profile in rows]
