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

from claudemesh.daemon.store.files import FileStore
from claudemesh.protocol.destination import HEX64_RE
from claudemesh.protocol.sealed import FileRef
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["ALIASED", "INBOX_MIGRATIONS", "UNREAD_SEQS", "InboxFilter", "InboxItem", "InboxStore",
           "NewInboxItem", "filter_sql"]

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
    # 2 (issue 12): sessions, per-session read state, and the receipts still to send.
    # ``session`` is the session name a message was filed for (NULL: every session);
    # read state is kept per session *name*, so it outlives one registration.
    """
    ALTER TABLE inbox ADD COLUMN session TEXT;
    ALTER TABLE inbox ADD COLUMN from_session TEXT;
    CREATE INDEX inbox_session ON inbox(session, seq);
    CREATE TABLE session (
      id               TEXT PRIMARY KEY,
      name             TEXT NOT NULL UNIQUE,
      harness          TEXT,
      pid              INTEGER,
      pid_start        TEXT,
      cwd              TEXT,
      is_default       INTEGER NOT NULL DEFAULT 0,
      summary          TEXT,
      status           TEXT,
      lease_s          INTEGER,
      lease_expires_at INTEGER,
      created_at       INTEGER NOT NULL,
      last_seen_at     INTEGER NOT NULL
    );
    CREATE TABLE session_name (
      name          TEXT PRIMARY KEY,
      since_seq     INTEGER NOT NULL,
      filed_seq     INTEGER NOT NULL DEFAULT 0,
      registered_at INTEGER NOT NULL
    );
    CREATE TABLE inbox_seen (
      seq     INTEGER NOT NULL REFERENCES inbox(seq) ON DELETE CASCADE,
      session TEXT NOT NULL,
      seen_at INTEGER NOT NULL,
      path    TEXT NOT NULL,
      PRIMARY KEY (seq, session)
    ) WITHOUT ROWID;
    CREATE TABLE receipt_queue (
      seq       INTEGER NOT NULL REFERENCES inbox(seq) ON DELETE CASCADE,
      state     TEXT NOT NULL CHECK(state IN ('stored', 'surfaced')),
      session   TEXT,
      path      TEXT,
      at        INTEGER NOT NULL,
      queued_at INTEGER NOT NULL,
      sent_at   INTEGER,
      PRIMARY KEY (seq, state)
    ) WITHOUT ROWID;
    CREATE INDEX receipt_queue_unsent ON receipt_queue(sent_at) WHERE sent_at IS NULL;
    """,
    # 3 (issue 15): shared files. ``inbox.file`` is what the API shows of a file a DM
    # carried (JSON, no key); ``file_ref`` keeps the keys of files shared with this member
    # (``in``) and by it (``out``), for downloads (daemon/store/files.py).
    """
    ALTER TABLE inbox ADD COLUMN file TEXT;
    CREATE TABLE file_ref (
      file_id           TEXT NOT NULL,
      direction         TEXT NOT NULL CHECK(direction IN ('in', 'out')),
      mesh              TEXT NOT NULL,
      peer_pubkey       TEXT NOT NULL,
      peer_name         TEXT,
      name              TEXT NOT NULL,
      size              INTEGER NOT NULL,
      sha256            TEXT NOT NULL,
      chunk_bytes       INTEGER NOT NULL,
      key               TEXT NOT NULL,
      nonce_prefix      TEXT NOT NULL,
      message           TEXT,
      client_message_id TEXT,
      created_at        INTEGER NOT NULL,
      PRIMARY KEY (file_id, direction)
    );
    CREATE INDEX file_ref_created ON file_ref(created_at);
    CREATE INDEX file_ref_cmid ON file_ref(mesh, client_message_id);
    """,
    # 4 (issue 15): threads and full-text search. ``inbox_fts`` indexes the decrypted
    # ``body`` of every row that has one (never an undecryptable row), external-content
    # over ``inbox`` keyed by ``seq``; the triggers keep it in the row's own transaction,
    # whatever writes or deletes the row (retention included). Existing rows are indexed
    # here. Never a CREATE INDEX on the FTS table (R-INB-2).
    """
    CREATE INDEX inbox_reply_to ON inbox(reply_to_id) WHERE reply_to_id IS NOT NULL;
    CREATE INDEX inbox_broker_message_id ON inbox(broker_message_id);
    CREATE INDEX inbox_client_message_id ON inbox(client_message_id);
    CREATE VIRTUAL TABLE inbox_fts USING fts5(body, content='inbox', content_rowid='seq',
      tokenize='unicode61 remove_diacritics 2', prefix='2 3');
    INSERT INTO inbox_fts (rowid, body)
      SELECT seq, body FROM inbox WHERE body IS NOT NULL AND undecryptable IS NULL;
    CREATE TRIGGER inbox_fts_insert AFTER INSERT ON inbox
      WHEN new.body IS NOT NULL AND new.undecryptable IS NULL BEGIN
      INSERT INTO inbox_fts (rowid, body) VALUES (new.seq, new.body);
    END;
    CREATE TRIGGER inbox_fts_delete AFTER DELETE ON inbox
      WHEN old.body IS NOT NULL AND old.undecryptable IS NULL BEGIN
      INSERT INTO inbox_fts (inbox_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    END;
    CREATE TRIGGER inbox_fts_update AFTER UPDATE OF body, undecryptable ON inbox BEGIN
      INSERT INTO inbox_fts (inbox_fts, rowid, body) SELECT 'delete', old.seq, old.body
        WHERE old.body IS NOT NULL AND old.undecryptable IS NULL;
      INSERT INTO inbox_fts (rowid, body) SELECT new.seq, new.body
        WHERE new.body IS NOT NULL AND new.undecryptable IS NULL;
    END;
    """,
    # 5 (issue 15): files shared to a topic: the topic they came in (or went out) on;
    # NULL for a DM's file. A share to a topic keeps ``#topic`` as its ``peer_pubkey``.
    """
    ALTER TABLE file_ref ADD COLUMN topic TEXT;
    """,
)

_COLUMNS: Final = ("seq, id, client_message_id, broker_message_id, mesh, recipient_pubkey,"
                   " topic, sender_pubkey, sender_name, body, undecryptable, meta, priority,"
                   " reply_to_id, history_id, created_at, received_at, session, from_session,"
                   " file")
ALIASED: Final = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))

# The rows a session name may still have to read, as two ranges of index
# ``inbox_session`` (so the cost follows the unread rows, not the inbox's size): those
# filed for it above ``filed_seq``, and those filed for every session above ``since_seq``
# (both in ``session_name``). Every such row at or below its horizon is read, or, for the
# second kind, came before the name was first registered. Its three parameters: the name.
UNREAD_SEQS: Final = (
    "SELECT seq FROM inbox WHERE session = ? AND seq > coalesce("
    "(SELECT n.filed_seq FROM session_name n WHERE n.name = ?), 0)"
    " UNION ALL SELECT seq FROM inbox WHERE session IS NULL AND seq > coalesce("
    "(SELECT n.since_seq FROM session_name n WHERE n.name = ?), 1e18)")


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
    session: str | None = None  # the session it is for (sealed ``to_session``)
    from_session: str | None = None
    file: FileRef | None = None  # a shared file the DM carries (issue 15)


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
    session: str | None = None
    from_session: str | None = None
    file: dict[str, Any] | None = None  # a shared file: FileRef.public(), without its key
    seen_at: int | None = None  # when the session of the query marked it seen

    @property
    def wants_receipts(self) -> bool:
        """Receipts go back for DMs from another member, never for topics or to oneself
        (readstate.mark_seen says the same in SQL)."""
        return self.topic is None and self.sender_pubkey != self.recipient_pubkey

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> InboxItem:
        values = list(row)
        values[11] = None if values[11] is None else json.loads(values[11])
        values[19] = None if values[19] is None else json.loads(values[19])
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
    session: str | None = None  # a session name: only messages for it
    unread: bool = False  # with ``session``: only those it has not seen


class InboxStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def insert_new(self, items: list[NewInboxItem], now_ms: int) -> list[InboxItem]:
        """Insert each item unless its (mesh, client_message_id) is there; return the new.

        A DM for no session is filed for the default session if one is live. For each new
        DM from another member a ``stored`` receipt is queued in the same transaction, so
        it is sent once the commit is on disk, and after any crash.
        """
        created: list[InboxItem] = []
        with store_errors("storing inbound messages"), immediate(self._conn):
            default = self._conn.execute(
                "SELECT name FROM session WHERE is_default = 1").fetchone()
            for item in items:
                session = item.session
                if session is None and item.topic is None and default is not None:
                    session = default[0]
                row = self._conn.execute(
                    "INSERT INTO inbox (id, client_message_id, broker_message_id, mesh,"  # noqa: S608
                    " recipient_pubkey, topic, sender_pubkey, sender_name, body, undecryptable,"
                    " meta, priority, reply_to_id, history_id, created_at, received_at,"
                    " session, from_session, file)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (mesh, client_message_id) DO NOTHING"
                    f" RETURNING {_COLUMNS}",
                    (item.id, item.client_message_id, item.broker_message_id, item.mesh,
                     item.recipient_pubkey, item.topic, item.sender_pubkey, item.sender_name,
                     item.body, item.undecryptable,
                     None if item.meta is None else json.dumps(item.meta, ensure_ascii=False),
                     item.priority, item.reply_to_id, item.history_id, item.created_at, now_ms,
                     session, item.from_session,
                     None if item.file is None else json.dumps(item.file.public())),
                ).fetchone()
                if row is None:
                    continue
                if item.file is not None:
                    FileStore(self._conn).remember(item.file, direction="in", mesh=item.mesh,
                                                   peer_pubkey=item.sender_pubkey,
                                                   peer_name=item.sender_name,
                                                   message=item.body, client_message_id=(
                                                       item.client_message_id), now_ms=now_ms,
                                                   topic=item.topic)
                stored = InboxItem.from_sql(row)
                created.append(stored)
                if stored.wants_receipts:
                    self._conn.execute(
                        "INSERT INTO receipt_queue (seq, state, at, queued_at)"
                        " VALUES (?, 'stored', ?, ?) ON CONFLICT DO NOTHING",
                        (stored.seq, now_ms, now_ms))
        return created

    def query(self, f: InboxFilter) -> list[InboxItem]:
        where, args, seen, seen_args = filter_sql(f)
        order = "ASC" if f.ascending else "DESC"
        with store_errors("reading the inbox"):
            rows = self._conn.execute(
                f"SELECT {ALIASED}, {seen} FROM inbox i {where}"  # noqa: S608
                f" ORDER BY i.seq {order} LIMIT ?",
                (*seen_args, *args, f.limit)).fetchall()
        return [InboxItem.from_sql(r) for r in rows]

    def by_client_ids(self, mesh: str, ids: list[str]) -> dict[str, InboxItem]:
        """The rows of ``mesh`` with these ``client_message_id``s, by id (absent: none)."""
        found: dict[str, InboxItem] = {}
        with store_errors("reading the inbox"):
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._conn.execute(
                        f"SELECT {_COLUMNS} FROM inbox WHERE mesh = ?"  # noqa: S608
                        f" AND client_message_id IN ({marks})", (mesh, *chunk)):
                    item = InboxItem.from_sql(row)
                    found[item.client_message_id] = item
        return found

    def prune(self, received_before_ms: int, *, batch: int = 500) -> int:
        """Delete up to ``batch`` rows received before ``received_before_ms`` (retention,
        R-IN-3), oldest first; returns how many. Their FTS entries (trigger), read marks
        and queued receipts (ON DELETE CASCADE) go in the same transaction. Callers loop,
        one worker call per batch, so the writer is never held for long."""
        with store_errors("pruning the inbox"), immediate(self._conn):
            cur = self._conn.execute(
                "DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox"
                " WHERE received_at < ? ORDER BY received_at LIMIT ?)",
                (received_before_ms, batch))
        return int(cur.rowcount)

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


def filter_sql(f: InboxFilter) -> tuple[str, list[Any], str, list[Any]]:
    """``InboxFilter`` as SQL over ``inbox i``: the WHERE clause and its arguments, and
    the ``seen_at`` column expression and its arguments (which come first)."""
    clauses: list[str] = []
    args: list[Any] = []
    if f.mesh is not None:
        clauses.append("i.mesh = ?")
        args.append(f.mesh)
    if f.sender is not None:
        is_key = HEX64_RE.fullmatch(f.sender) is not None
        clauses.append("i.sender_pubkey = ?" if is_key else "i.sender_name = ?")
        args.append(f.sender)
    if f.topic is not None:
        clauses.append("i.topic = ?")
        args.append(f.topic)
    if f.since_ms is not None:
        clauses.append("i.received_at >= ?")
        args.append(f.since_ms)
    if f.cursor is not None:
        clauses.append("i.seq > ?" if f.ascending else "i.seq < ?")
        args.append(f.cursor)
    seen = "NULL"
    seen_args: list[Any] = []
    if f.session is not None:
        seen = "(SELECT s.seen_at FROM inbox_seen s WHERE s.seq = i.seq AND s.session = ?)"
        seen_args.append(f.session)
        if f.unread:
            clauses.append(f"i.seq IN ({UNREAD_SEQS}) AND NOT EXISTS (SELECT 1 FROM"  # noqa: S608
                           " inbox_seen s WHERE s.seq = i.seq AND s.session = ?)")
            args += [f.session] * 4
        else:
            clauses.append("(i.session = ? OR i.session IS NULL)")
            args.append(f.session)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, args, seen, seen_args
