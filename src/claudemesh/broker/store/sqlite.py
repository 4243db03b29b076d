"""The broker's embedded store: one SQLite file, one writer thread, group commit.

The schema follows daemon-spec §4.3 with SQLite types: UUID/TIMESTAMPTZ become TEXT ids
and epoch milliseconds; ``topic_message``/``message_queue`` are one ``message`` table
(the split served the original's two delivery paths; we have one). ``message_history``
gives each message a mesh-wide sequence that is its ``history_id``. Every operation runs
on :class:`~claudemesh.sqlitedb.worker.DbWorker`, so an accept is one savepoint inside a
``BEGIN IMMEDIATE`` group and is answered only after the group's fsynced COMMIT.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Final

from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    AcceptOutcome,
    BrokerStore,
    Delivery,
    LocalNotifier,
    Member,
    Mesh,
    NewInvite,
    Notifier,
    PresenceChange,
    SweepResult,
    b2_refusal,
    sessions_from_json,
    sessions_to_json,
)
from claudemesh.errors import (
    DisplayNameTaken,
    InviteRejected,
    MemberAlreadyConnected,
    MemberRevoked,
    MeshExists,
    StoreError,
)
from claudemesh.sqlitedb.db import immediate, open_database, store_errors
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["BROKER_MIGRATIONS", "SqliteBrokerStore"]

DAY_MS: Final = 86_400_000

BROKER_MIGRATIONS: Final = (
    """
    CREATE TABLE mesh (
      id                     TEXT PRIMARY KEY,
      name                   TEXT NOT NULL UNIQUE,
      created_at             INTEGER NOT NULL,
      dedupe_mode            TEXT NOT NULL CHECK(dedupe_mode IN ('retention_scoped','permanent')),
      dedupe_retention_days  INTEGER NOT NULL CHECK(dedupe_retention_days >= 3),
      message_retention_days INTEGER NOT NULL CHECK(message_retention_days >= 1),
      connection_policy      TEXT NOT NULL
                             CHECK(connection_policy IN ('prefer_newest','prefer_oldest')),
      invite_pubkey          TEXT NOT NULL,
      invite_secret_key      TEXT NOT NULL
    );
    CREATE TABLE member (
      id           TEXT PRIMARY KEY,
      mesh_id      TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      pubkey       TEXT NOT NULL,
      display_name TEXT NOT NULL,
      joined_at    INTEGER NOT NULL,
      revoked_at   INTEGER,
      summary      TEXT,
      status       TEXT NOT NULL DEFAULT 'idle' CHECK(status IN ('idle','working','dnd')),
      visible      INTEGER NOT NULL DEFAULT 1,
      avatar       TEXT,
      title        TEXT,
      bio          TEXT,
      capabilities TEXT NOT NULL DEFAULT '[]',
      UNIQUE (mesh_id, pubkey)
    );
    CREATE UNIQUE INDEX member_live_name ON member(mesh_id, lower(display_name))
      WHERE revoked_at IS NULL;
    CREATE INDEX member_revoked ON member(revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE invite (
      id            TEXT PRIMARY KEY,
      mesh_id       TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      secret_sha256 TEXT NOT NULL,
      created_at    INTEGER NOT NULL,
      expires_at    INTEGER NOT NULL,
      max_uses      INTEGER NOT NULL CHECK(max_uses >= 1),
      uses          INTEGER NOT NULL DEFAULT 0,
      revoked_at    INTEGER
    );
    CREATE TABLE hello_nonce (
      pubkey     TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      expires_at INTEGER NOT NULL,
      PRIMARY KEY (pubkey, nonce)
    ) WITHOUT ROWID;
    CREATE TABLE topic (
      mesh_id    TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      name       TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, name)
    );
    CREATE TABLE topic_subscription (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES member(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, topic, member_id),
      FOREIGN KEY (mesh_id, topic) REFERENCES topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE TABLE group_member (
      mesh_id    TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      group_name TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES member(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, group_name, member_id)
    );
    CREATE TABLE client_message_dedupe (
      mesh_id             TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      client_message_id   TEXT NOT NULL,
      broker_message_id   TEXT NOT NULL,
      request_fingerprint BLOB NOT NULL CHECK(length(request_fingerprint) = 32),
      destination_kind    TEXT NOT NULL CHECK(destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      first_seen_at       INTEGER NOT NULL,
      expires_at          INTEGER,
      history_available   INTEGER NOT NULL DEFAULT 1,
      PRIMARY KEY (mesh_id, client_message_id)
    );
    CREATE INDEX client_message_dedupe_expires_idx ON client_message_dedupe(expires_at)
      WHERE expires_at IS NOT NULL;
    CREATE TABLE message (
      id                TEXT PRIMARY KEY,
      mesh_id           TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      client_message_id TEXT NOT NULL,
      sender_member_id  TEXT NOT NULL,
      sender_pubkey     TEXT NOT NULL,
      sender_name       TEXT NOT NULL,
      destination_kind  TEXT NOT NULL,
      destination_ref   TEXT NOT NULL,
      priority          TEXT NOT NULL,
      reply_to          TEXT,
      meta              TEXT,
      body              TEXT NOT NULL,
      body_hash         TEXT NOT NULL,
      created_at        INTEGER NOT NULL
    );
    CREATE INDEX message_created ON message(created_at);
    CREATE TABLE message_history (
      seq        INTEGER PRIMARY KEY AUTOINCREMENT,
      mesh_id    TEXT NOT NULL,
      message_id TEXT NOT NULL UNIQUE REFERENCES message(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL
    );
    CREATE TABLE delivery_queue (
      seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
      mesh_id             TEXT NOT NULL,
      message_id          TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
      recipient_member_id TEXT NOT NULL,
      created_at          INTEGER NOT NULL,
      acked_at            INTEGER,
      UNIQUE (message_id, recipient_member_id)
    );
    CREATE INDEX delivery_pending ON delivery_queue(recipient_member_id, seq)
      WHERE acked_at IS NULL;
    """,
    # 2: presence and broker liveness live in the store (issue 6: several brokers)
    """
    CREATE TABLE broker (
      id           TEXT PRIMARY KEY,
      started_at   INTEGER NOT NULL,
      last_seen_at INTEGER NOT NULL
    );
    CREATE TABLE presence (
      mesh_id          TEXT NOT NULL,
      member_id        TEXT NOT NULL,
      session_id       TEXT NOT NULL,
      broker_id        TEXT NOT NULL,
      state            TEXT NOT NULL CHECK(state IN ('online','leased')),
      since            INTEGER NOT NULL,
      lease_expires_at INTEGER,
      PRIMARY KEY (mesh_id, member_id)
    );
    CREATE INDEX presence_lease ON presence(state, lease_expires_at);
    """,
    # 3: the sessions a member publishes (member_sessions), a JSON list
    """
    ALTER TABLE member ADD COLUMN sessions TEXT NOT NULL DEFAULT '[]';
    """,
)

_MEMBER_COLUMNS: Final = ("id, mesh_id, pubkey, display_name, joined_at, revoked_at, summary,"
                          " status, visible, avatar, title, bio, capabilities, sessions")
_MESH_COLUMNS: Final = ("id, name, created_at, dedupe_mode, dedupe_retention_days,"
                        " message_retention_days, connection_policy, invite_pubkey")


def _member(row: tuple[Any, ...], groups: tuple[str, ...] = ()) -> Member:
    (id_, mesh_id, pubkey, name, joined, revoked, summary, status, visible, avatar, title, bio,
     caps, sessions) = row
    return Member(id_, mesh_id, pubkey, name, joined, revoked, summary, status, bool(visible),
                  avatar, title, bio, tuple(json.loads(caps)), groups,
                  sessions_from_json(sessions))


_PROFILE_FIELDS: Final = ("summary", "status", "visible", "avatar", "title", "bio",
                          "capabilities", "sessions")


def _profile_columns(fields: dict[str, Any]) -> dict[str, Any]:
    """set_profile's fields as the values their columns hold (unknown names dropped)."""
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "capabilities":
            columns[name] = json.dumps(list(value))
        elif name == "sessions":
            columns[name] = sessions_to_json(value)
        elif name == "visible":
            columns[name] = int(value)
        elif name in _PROFILE_FIELDS:
            columns[name] = value
    return columns


def _groups(conn: sqlite3.Connection, member_id: str) -> tuple[str, ...]:
    return tuple(r[0] for r in conn.execute(
        "SELECT group_name FROM group_member WHERE member_id = ? ORDER BY group_name",
        (member_id,)))


class SqliteBrokerStore(BrokerStore):
    """One process owns the file: notifications stay in-process, and delivery claims are
    not needed (one live session per member), so ``pending_deliveries`` ignores them.

    Writes a restart repairs are not fsynced (``durable=False``): acks (a lost ack is one
    redelivery, deduplicated by the receiver), heartbeats, presence and sweeps. Accepts,
    joins, revocations and subscriptions are."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._worker = DbWorker(open_database(path, BROKER_MIGRATIONS), name="broker")
        self._worker.start()
        self._notifier = LocalNotifier()

    async def close(self) -> None:
        await self._notifier.close()
        self._worker.stop()

    def notifier(self) -> Notifier:
        return self._notifier

    # -- meshes, invites, members ------------------------------------------------------

    async def create_mesh(self, mesh: Mesh, invite_secret_key: str) -> Mesh:
        def op(conn: sqlite3.Connection) -> Mesh:
            with store_errors("creating a mesh"), immediate(conn):
                if conn.execute("SELECT 1 FROM mesh WHERE name = ?", (mesh.name,)).fetchone():
                    raise MeshExists(f"a mesh called {mesh.name!r} already exists")
                conn.execute(
                    f"INSERT INTO mesh ({_MESH_COLUMNS}, invite_secret_key)"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (mesh.id, mesh.name, mesh.created_at, mesh.dedupe_mode,
                     mesh.dedupe_retention_days, mesh.message_retention_days,
                     mesh.connection_policy, mesh.invite_pubkey, invite_secret_key))
            return mesh
        return await self._worker.run(op)

    async def get_mesh(self, mesh_ref: str) -> Mesh | None:
        def op(conn: sqlite3.Connection) -> Mesh | None:
            row = conn.execute(f"SELECT {_MESH_COLUMNS} FROM mesh WHERE id = ? OR name = ?"  # noqa: S608
                               " ORDER BY id = ? DESC LIMIT 1",
                               (mesh_ref, mesh_ref, mesh_ref)).fetchone()
            return None if row is None else Mesh(*row)
        return await self._worker.run(op)

    async def mesh_invite_key(self, mesh_id: str) -> str:
        def op(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT invite_secret_key FROM mesh WHERE id = ?",
                               (mesh_id,)).fetchone()
            if row is None:
                raise InviteRejected("the invite's mesh does not exist on this broker")
            return str(row[0])
        return await self._worker.run(op)

    async def create_invite(self, invite: NewInvite, *, secret_sha256: str, now_ms: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO invite (id, mesh_id, secret_sha256, created_at, expires_at, max_uses)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (invite.invite_id, invite.mesh_id, secret_sha256, now_ms, invite.expires_at,
                 invite.max_uses))
        await self._worker.run(op)

    async def redeem_invite(self, *, invite_id: str, mesh_id: str, secret_sha256: str,
                            member: Member, now_ms: int) -> Member:
        def op(conn: sqlite3.Connection) -> Member:
            with store_errors("redeeming an invite"), immediate(conn):
                row = conn.execute(
                    "SELECT secret_sha256, expires_at, max_uses, uses, revoked_at FROM invite"
                    " WHERE id = ? AND mesh_id = ?", (invite_id, mesh_id)).fetchone()
                if row is None or row[0] != secret_sha256:
                    raise InviteRejected("this broker does not know that invite")
                if row[4] is not None:
                    raise InviteRejected("the invite was revoked")
                existing = conn.execute(
                    f"SELECT {_MEMBER_COLUMNS} FROM member WHERE mesh_id = ? AND pubkey = ?",  # noqa: S608
                    (mesh_id, member.pubkey)).fetchone()
                if existing is not None:
                    if existing[5] is not None:
                        raise MemberRevoked("this key was revoked from the mesh")
                    return _member(existing, _groups(conn, existing[0]))
                if row[1] <= now_ms:
                    raise InviteRejected("the invite has expired; ask for a new one")
                if row[3] >= row[2]:
                    raise InviteRejected("the invite has been used up; ask for a new one")
                taken = conn.execute(
                    "SELECT 1 FROM member WHERE mesh_id = ? AND lower(display_name) = lower(?)"
                    " AND revoked_at IS NULL", (mesh_id, member.display_name)).fetchone()
                if taken:
                    raise DisplayNameTaken(
                        f"{member.display_name!r} is taken in this mesh; join with --name")
                conn.execute(
                    "INSERT INTO member (id, mesh_id, pubkey, display_name, joined_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (member.id, mesh_id, member.pubkey, member.display_name, now_ms))
                conn.execute("UPDATE invite SET uses = uses + 1 WHERE id = ?", (invite_id,))
            return member
        return await self._worker.run(op)

    async def get_member(self, mesh_id: str, pubkey: str) -> Member | None:
        def op(conn: sqlite3.Connection) -> Member | None:
            row = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member"  # noqa: S608
                               " WHERE mesh_id = ? AND pubkey = ?", (mesh_id, pubkey)).fetchone()
            return None if row is None else _member(row, _groups(conn, row[0]))
        return await self._worker.run(op)

    async def revoke_member(self, pubkey: str, *, mesh_id: str | None, now_ms: int) -> list[Member]:
        def op(conn: sqlite3.Connection) -> list[Member]:
            where = "pubkey = ? AND revoked_at IS NULL" + (" AND mesh_id = ?" if mesh_id else "")
            args = (pubkey, mesh_id) if mesh_id else (pubkey,)
            with immediate(conn):
                rows = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member WHERE {where}",  # noqa: S608
                                    args).fetchall()
                conn.execute(f"UPDATE member SET revoked_at = ? WHERE {where}",  # noqa: S608
                             (now_ms, *args))
            return [_member((*r[:5], now_ms, *r[6:])) for r in rows]
        return await self._worker.run(op)

    async def revoked_since(self, since_ms: int) -> list[Member]:
        def op(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member"  # noqa: S608
                                " WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
                                (since_ms,)).fetchall()
            return [_member(r) for r in rows]
        return await self._worker.run(op)

    async def list_members(self, mesh_id: str) -> list[Member]:
        def op(conn: sqlite3.Connection) -> list[Member]:
            groups: dict[str, list[str]] = {}
            for member_id, group in conn.execute(
                    "SELECT member_id, group_name FROM group_member WHERE mesh_id = ?"
                    " ORDER BY group_name", (mesh_id,)):
                groups.setdefault(member_id, []).append(group)
            rows = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member"  # noqa: S608
                                " WHERE mesh_id = ? AND revoked_at IS NULL ORDER BY joined_at, id",
                                (mesh_id,)).fetchall()
            return [_member(r, tuple(groups.get(r[0], ()))) for r in rows]
        return await self._worker.run(op)

    async def set_profile(self, member_id: str, fields: dict[str, Any]) -> Member:
        updates = _profile_columns(fields)

        def op(conn: sqlite3.Connection) -> Member:
            with immediate(conn):
                for name, stored in updates.items():
                    conn.execute(f"UPDATE member SET {name} = ? WHERE id = ?",  # noqa: S608
                                 (stored, member_id))
                row = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member WHERE id = ?",  # noqa: S608
                                   (member_id,)).fetchone()
            if row is None:
                raise StoreError(f"setting a profile: no member {member_id}")
            return _member(row, _groups(conn, member_id))
        return await self._worker.run(op)

    async def remember_nonce(self, pubkey: str, nonce: str, *, expires_at_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT INTO hello_nonce (pubkey, nonce, expires_at)"
                               " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                               (pubkey, nonce, expires_at_ms))
            return cur.rowcount == 1
        return await self._worker.run(op)

    # -- topics and groups -------------------------------------------------------------

    async def subscribe(self, mesh_id: str, member_id: str, topic: str, now_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("INSERT INTO topic (mesh_id, name, created_at) VALUES (?, ?, ?)"
                         " ON CONFLICT DO NOTHING", (mesh_id, topic, now_ms))
            cur = conn.execute("INSERT INTO topic_subscription (mesh_id, topic, member_id,"
                               " created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (mesh_id, topic, member_id, now_ms))
            return cur.rowcount == 1
        return await self._worker.run(op)

    async def unsubscribe(self, mesh_id: str, member_id: str, topic: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM topic_subscription WHERE mesh_id = ? AND topic = ?"
                               " AND member_id = ?", (mesh_id, topic, member_id))
            return cur.rowcount == 1
        return await self._worker.run(op)

    async def list_topics(self, mesh_id: str, member_id: str) -> list[dict[str, Any]]:
        def op(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT t.name, count(s.member_id), sum(s.member_id = ?) FROM topic t"
                " LEFT JOIN topic_subscription s ON s.mesh_id = t.mesh_id AND s.topic = t.name"
                " WHERE t.mesh_id = ? GROUP BY t.name ORDER BY t.name",
                (member_id, mesh_id)).fetchall()
            return [{"topic": name, "subscribers": count, "subscribed": bool(mine)}
                    for name, count, mine in rows]
        return await self._worker.run(op)

    async def join_group(self, mesh_id: str, member_id: str, group: str, now_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT INTO group_member (mesh_id, group_name, member_id,"
                               " created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (mesh_id, group, member_id, now_ms))
            return cur.rowcount == 1
        return await self._worker.run(op)

    async def leave_group(self, mesh_id: str, member_id: str, group: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM group_member WHERE mesh_id = ? AND group_name = ?"
                               " AND member_id = ?", (mesh_id, group, member_id))
            return cur.rowcount == 1
        return await self._worker.run(op)

    # -- accept (§4.7.2) ---------------------------------------------------------------

    async def accept(self, request: AcceptInput) -> AcceptOutcome:
        return await self._worker.run(lambda conn: _accept(conn, request))

    async def pending_deliveries(self, member_id: str, *, after: int, limit: int,
                                 session_id: str = "", now_ms: int = 0,
                                 lease_ms: int = 0) -> list[Delivery]:
        def op(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                "SELECT d.seq, d.recipient_member_id, m.mesh_id, m.id, m.client_message_id,"
                " h.seq, m.sender_pubkey, m.sender_name, m.destination_kind, m.destination_ref,"
                " m.priority, m.reply_to, m.meta, m.body, m.body_hash, m.created_at"
                " FROM delivery_queue d JOIN message m ON m.id = d.message_id"
                " LEFT JOIN message_history h ON h.message_id = m.id"
                " WHERE d.recipient_member_id = ? AND d.acked_at IS NULL AND d.seq > ?"
                " ORDER BY d.seq LIMIT ?", (member_id, after, limit)).fetchall()
            return [Delivery(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else str(r[5]),
                             r[6], r[7], r[8], r[9], r[10], r[11],
                             None if r[12] is None else json.loads(r[12]), json.loads(r[13]),
                             r[14], r[15]) for r in rows]
        return await self._worker.run(op)

    async def ack_deliveries(self, member_id: str, delivery_ids: list[int], now_ms: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(delivery_ids))
            cur = conn.execute(
                f"UPDATE delivery_queue SET acked_at = ? WHERE recipient_member_id = ?"  # noqa: S608
                f" AND acked_at IS NULL AND seq IN ({marks})", (now_ms, member_id, *delivery_ids))
            return cur.rowcount
        return await self._worker.run(op, durable=False)

    # -- presence and brokers ----------------------------------------------------------

    async def broker_heartbeat(self, broker_id: str, *, now_ms: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO broker (id, started_at, last_seen_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                         (broker_id, now_ms, now_ms))
        await self._worker.run(op, durable=False)

    async def presence_attach(self, mesh_id: str, member_id: str, *, broker_id: str,
                              session_id: str, now_ms: int, prefer_oldest: bool,
                              dead_after_ms: int) -> PresenceChange:
        def op(conn: sqlite3.Connection) -> PresenceChange:
            with immediate(conn):
                row = conn.execute(
                    "SELECT p.session_id, p.broker_id, p.state, b.last_seen_at FROM presence p"
                    " LEFT JOIN broker b ON b.id = p.broker_id"
                    " WHERE p.mesh_id = ? AND p.member_id = ?", (mesh_id, member_id)).fetchone()
                change = _change(row, now_ms, dead_after_ms)
                if prefer_oldest and change.previous_state == "online":
                    raise MemberAlreadyConnected()
                conn.execute(
                    "INSERT INTO presence (mesh_id, member_id, session_id, broker_id, state,"
                    " since, lease_expires_at) VALUES (?, ?, ?, ?, 'online', ?, NULL)"
                    " ON CONFLICT (mesh_id, member_id) DO UPDATE SET"
                    " session_id = excluded.session_id, broker_id = excluded.broker_id,"
                    " state = 'online', since = excluded.since, lease_expires_at = NULL",
                    (mesh_id, member_id, session_id, broker_id, now_ms))
            return change
        return await self._worker.run(op, durable=False)

    async def presence_detach(self, mesh_id: str, member_id: str, *, session_id: str,
                              lease_until_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE presence SET state = 'leased', lease_expires_at = ?"
                " WHERE mesh_id = ? AND member_id = ? AND session_id = ? AND state = 'online'",
                (lease_until_ms, mesh_id, member_id, session_id)).rowcount == 1
        return await self._worker.run(op, durable=False)

    async def presence_drop(self, mesh_id: str, member_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM presence WHERE mesh_id = ? AND member_id = ?",
                                (mesh_id, member_id)).rowcount == 1
        return await self._worker.run(op, durable=False)

    async def presence_expired(self, now_ms: int, *, dead_after_ms: int,
                               lease_ms: int) -> list[tuple[str, str]]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            with immediate(conn):
                conn.execute(
                    "UPDATE presence SET state = 'leased', lease_expires_at = coalesce("
                    " (SELECT b.last_seen_at FROM broker b WHERE b.id = presence.broker_id),"
                    " presence.since) + ? WHERE state = 'online' AND NOT EXISTS (SELECT 1 FROM"
                    " broker b WHERE b.id = presence.broker_id AND b.last_seen_at >= ?)",
                    (lease_ms, now_ms - dead_after_ms))
                return [(r[0], r[1]) for r in conn.execute(
                    "DELETE FROM presence WHERE state = 'leased' AND lease_expires_at <= ?"
                    " RETURNING mesh_id, member_id", (now_ms,))]
        return await self._worker.run(op, durable=False)

    async def presence_online(self, mesh_id: str) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            return {r[0] for r in conn.execute(
                "SELECT member_id FROM presence WHERE mesh_id = ?", (mesh_id,))}
        return await self._worker.run(op)

    async def get_member_by_id(self, member_id: str) -> Member | None:
        def op(conn: sqlite3.Connection) -> Member | None:
            row = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member WHERE id = ?",  # noqa: S608
                               (member_id,)).fetchone()
            return None if row is None else _member(row, _groups(conn, row[0]))
        return await self._worker.run(op)

    async def orphan_check(self) -> list[dict[str, Any]]:
        def op(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            found = [{"kind": "dedupe_without_message", "mesh_id": m, "client_message_id": c,
                      "broker_message_id": b} for m, c, b in conn.execute(
                "SELECT d.mesh_id, d.client_message_id, d.broker_message_id"
                " FROM client_message_dedupe d LEFT JOIN message m ON m.id = d.broker_message_id"
                " WHERE m.id IS NULL AND d.history_available = 1")]
            found += [{"kind": "delivery_without_message", "delivery_id": seq,
                       "broker_message_id": msg} for seq, msg in conn.execute(
                "SELECT q.seq, q.message_id FROM delivery_queue q"
                " LEFT JOIN message m ON m.id = q.message_id WHERE m.id IS NULL")]
            return found
        return await self._worker.run(op)

    async def sweep(self, now_ms: int) -> SweepResult:
        def op(conn: sqlite3.Connection) -> SweepResult:
            expired = conn.execute("DELETE FROM client_message_dedupe WHERE expires_at IS NOT NULL"
                                   " AND expires_at <= ?", (now_ms,)).rowcount
            nonces = conn.execute("DELETE FROM hello_nonce WHERE expires_at <= ?",
                                  (now_ms,)).rowcount
            old = [r[0] for r in conn.execute(
                "SELECT m.id FROM message m JOIN mesh ON mesh.id = m.mesh_id"
                " WHERE m.created_at <= ? - mesh.message_retention_days * ?", (now_ms, DAY_MS))]
            for start in range(0, len(old), 500):
                chunk = old[start:start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute("UPDATE client_message_dedupe SET history_available = 0"  # noqa: S608
                             f" WHERE broker_message_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM message WHERE id IN ({marks})", chunk)  # noqa: S608
            return SweepResult(expired, len(old), nonces)
        return await self._worker.run(op, durable=False)


def _change(row: tuple[Any, ...] | None, now_ms: int, dead_after_ms: int) -> PresenceChange:
    """The presence before an attach; an online row of a silent broker counts as leased."""
    if row is None:
        return PresenceChange(None, None, None)
    session, broker, state, last_seen = row
    if state == "online" and (last_seen is None or last_seen < now_ms - dead_after_ms):
        state = "leased"
    return PresenceChange(session, broker, state)


def _accept(conn: sqlite3.Connection, req: AcceptInput) -> AcceptOutcome:
    """R-BRK-10 steps 2-8, inside the worker's transaction (a savepoint here)."""
    with store_errors("accepting a message"), immediate(conn):
        # RETURNING yields a row only when ours went in; a conflict yields none, and only
        # then is the row that was there first read (step 5).
        ours = conn.execute(
            "INSERT INTO client_message_dedupe (mesh_id, client_message_id, broker_message_id,"
            " request_fingerprint, destination_kind, destination_ref, first_seen_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mesh_id, client_message_id) DO NOTHING"
            " RETURNING 1",
            (req.mesh_id, req.client_message_id, req.broker_message_id, req.fingerprint,
             req.destination_kind, req.destination_ref, req.now_ms, req.dedupe_expires_at),
        ).fetchone()
        if ours is None:  # step 5: someone else's row
            claim = conn.execute(
                "SELECT broker_message_id, request_fingerprint, history_available, first_seen_at"
                " FROM client_message_dedupe WHERE mesh_id = ? AND client_message_id = ?",
                (req.mesh_id, req.client_message_id)).fetchone()
            stored = bytes(claim[1])
            history = conn.execute("SELECT seq FROM message_history WHERE message_id = ?",
                                   (claim[0],)).fetchone()
            kind = AcceptKind.DUPLICATE if stored == req.fingerprint else AcceptKind.CONFLICT
            return AcceptOutcome(kind, claim[0], None if history is None else str(history[0]),
                                 stored, claim[3], bool(claim[2]))
        recipients = _recipients(conn, req)  # step 6: B2, raises to roll the claim back
        conn.execute(
            "INSERT INTO message (id, mesh_id, client_message_id, sender_member_id, sender_pubkey,"
            " sender_name, destination_kind, destination_ref, priority, reply_to, meta, body,"
            " body_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (req.broker_message_id, req.mesh_id, req.client_message_id, req.sender_member_id,
             req.sender_pubkey, req.sender_name, req.destination_kind, req.destination_ref,
             req.priority, req.reply_to, req.meta_json, req.body_json, req.body_hash, req.now_ms))
        history_id = conn.execute(
            "INSERT INTO message_history (mesh_id, message_id, created_at) VALUES (?, ?, ?)",
            (req.mesh_id, req.broker_message_id, req.now_ms)).lastrowid
        deliveries: list[tuple[str, int]] = []
        for start in range(0, len(recipients), 200):
            chunk = recipients[start:start + 200]
            rows = ",".join("(?, ?, ?, ?)" for _ in chunk)
            args = [v for r in chunk for v in (req.mesh_id, req.broker_message_id, r, req.now_ms)]
            deliveries += [(r, s) for s, r in conn.execute(
                "INSERT INTO delivery_queue (mesh_id, message_id, recipient_member_id,"  # noqa: S608
                f" created_at) VALUES {rows} RETURNING seq, recipient_member_id", args)]
    return AcceptOutcome(AcceptKind.CREATED, req.broker_message_id, str(history_id),
                         req.fingerprint, req.now_ms, True, tuple(sorted(deliveries)))


def _recipients(conn: sqlite3.Connection, req: AcceptInput) -> list[str]:
    """B2 (R-BRK-5): the destination must exist; returns the recipients' member ids."""
    sender = conn.execute("SELECT revoked_at FROM member WHERE id = ?",
                          (req.sender_member_id,)).fetchone()
    if sender is None or sender[0] is not None:
        raise b2_refusal("sender", req.destination_ref)
    ref, mesh = req.destination_ref, req.mesh_id
    if req.destination_kind == "dm":
        row = conn.execute("SELECT id FROM member WHERE mesh_id = ? AND pubkey = ?"
                           " AND revoked_at IS NULL", (mesh, ref)).fetchone()
        if row is None:
            raise b2_refusal("dm", ref)
        return [row[0]]
    args: tuple[str, ...]
    if ref == "*":
        sql, args = ("SELECT id FROM member WHERE mesh_id = ? AND revoked_at IS NULL", (mesh,))
    elif ref.startswith("@"):
        sql, args = ("SELECT g.member_id FROM group_member g JOIN member m ON m.id = g.member_id"
                     " WHERE g.mesh_id = ? AND g.group_name = ? AND m.revoked_at IS NULL",
                     (mesh, ref[1:]))
    else:
        if conn.execute("SELECT 1 FROM topic WHERE mesh_id = ? AND name = ?",
                        (mesh, ref)).fetchone() is None:
            raise b2_refusal("topic", ref)
        sql, args = ("SELECT s.member_id FROM topic_subscription s JOIN member m"
                     " ON m.id = s.member_id WHERE s.mesh_id = ? AND s.topic = ?"
                     " AND m.revoked_at IS NULL", (mesh, ref))
    members = [r[0] for r in conn.execute(sql, args)]
    if ref.startswith("@") and not members:
        raise b2_refusal("group", ref)
    return sorted(m for m in members if m != req.sender_member_id)
