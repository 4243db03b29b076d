"""The broker's embedded store: one SQLite file, one writer thread, group commit.

The tables are :mod:`.schema`'s. Every operation runs on
:class:`~claudemesh.sqlitedb.worker.DbWorker`, so an accept is one savepoint inside a
``BEGIN IMMEDIATE`` group and is answered only after the group's fsynced COMMIT.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Final

from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    AcceptOutcome,
    Blob,
    BrokerStore,
    Delivery,
    GroupMembership,
    LocalNotifier,
    Member,
    Mesh,
    NewInvite,
    Notifier,
    PresenceChange,
    SealedEpochKey,
    SweepResult,
    TopicKeyView,
    b2_refusal,
)
from claudemesh.broker.store.epochs import epoch_conflict, stale_epoch
from claudemesh.broker.store.rows import (
    BLOB_COLUMNS,
    DAY_MS,
    DELIVERY_MESSAGE_COLUMNS,
    MESH_COLUMNS,
    blob_from_row,
    blob_params,
    dedupe_orphan,
    delivery_from_row,
    delivery_orphan,
    member_columns,
    member_from_row,
    presence_change,
    profile_columns,
    topic_entry,
)
from claudemesh.broker.store.sqlite.schema import BROKER_MIGRATIONS
from claudemesh.errors import (
    DisplayNameTaken,
    InviteRejected,
    MemberAlreadyConnected,
    MemberRevoked,
    MeshExists,
    NotSubscribed,
    StoreError,
)
from claudemesh.protocol.topic_epochs import TopicState, epoch_refusal
from claudemesh.sqlitedb.db import immediate, open_database, store_errors
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["SqliteBrokerStore"]

_MEMBER_COLUMNS: Final = member_columns()


def _file_identity(path: Path) -> tuple[int, int]:
    """(device, inode): which file ``path`` names now."""
    st = path.stat()
    return st.st_dev, st.st_ino


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
        self._path = path
        self._file = _file_identity(path)
        self._worker.start()
        self._notifier = LocalNotifier()

    async def close(self) -> None:
        await self._notifier.close()
        self._worker.stop()

    def notifier(self) -> Notifier:
        return self._notifier

    async def _changed_one(self, sql: str, args: tuple[Any, ...], *,
                           durable: bool = True) -> bool:
        """Run one statement; True when it changed (inserted, updated, deleted) one row."""
        return await self._worker.run(lambda conn: conn.execute(sql, args).rowcount == 1,
                                      durable=durable)

    # -- meshes, invites, members ------------------------------------------------------

    async def create_mesh(self, mesh: Mesh, invite_secret_key: str) -> Mesh:
        def op(conn: sqlite3.Connection) -> Mesh:
            with store_errors("creating a mesh"), immediate(conn):
                if conn.execute("SELECT 1 FROM mesh WHERE name = ?", (mesh.name,)).fetchone():
                    raise MeshExists(f"a mesh called {mesh.name!r} already exists")
                conn.execute(
                    f"INSERT INTO mesh ({MESH_COLUMNS}, invite_secret_key)"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (mesh.id, mesh.name, mesh.created_at, mesh.dedupe_mode,
                     mesh.dedupe_retention_days, mesh.message_retention_days,
                     mesh.connection_policy, mesh.invite_pubkey, invite_secret_key))
            return mesh
        return await self._worker.run(op)

    async def get_mesh(self, mesh_ref: str) -> Mesh | None:
        def op(conn: sqlite3.Connection) -> Mesh | None:
            row = conn.execute(f"SELECT {MESH_COLUMNS} FROM mesh WHERE id = ? OR name = ?"  # noqa: S608
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
                    return member_from_row(existing, _groups(conn, existing[0]))
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
            return None if row is None else member_from_row(row, _groups(conn, row[0]))
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
                for r in rows:  # its topics' next epochs must leave it out
                    conn.execute("UPDATE topic SET membership_version = membership_version + 1"
                                 " WHERE (mesh_id, name) IN (SELECT mesh_id, topic FROM"
                                 " topic_subscription WHERE member_id = ?)", (r[0],))
            return [member_from_row((*r[:5], now_ms, *r[6:])) for r in rows]
        return await self._worker.run(op)

    async def revoked_since(self, since_ms: int) -> list[Member]:
        def op(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member"  # noqa: S608
                                " WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
                                (since_ms,)).fetchall()
            return [member_from_row(r) for r in rows]
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
            return [member_from_row(r, tuple(groups.get(r[0], ()))) for r in rows]
        return await self._worker.run(op)

    async def set_profile(self, member_id: str, fields: dict[str, Any]) -> Member:
        updates = profile_columns(fields)

        def op(conn: sqlite3.Connection) -> Member:
            with immediate(conn):
                for name, stored in updates.items():
                    conn.execute(f"UPDATE member SET {name} = ? WHERE id = ?",  # noqa: S608
                                 (stored, member_id))
                row = conn.execute(f"SELECT {_MEMBER_COLUMNS} FROM member WHERE id = ?",  # noqa: S608
                                   (member_id,)).fetchone()
            if row is None:
                raise StoreError(f"setting a profile: no member {member_id}")
            return member_from_row(row, _groups(conn, member_id))
        return await self._worker.run(op)

    async def remember_nonce(self, pubkey: str, nonce: str, *, expires_at_ms: int) -> bool:
        return await self._changed_one("INSERT INTO hello_nonce (pubkey, nonce, expires_at)"
                                       " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                       (pubkey, nonce, expires_at_ms))

    # -- topics and groups -------------------------------------------------------------

    async def subscribe(self, mesh_id: str, member_id: str, topic: str, now_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("INSERT INTO topic (mesh_id, name, created_at) VALUES (?, ?, ?)"
                         " ON CONFLICT DO NOTHING", (mesh_id, topic, now_ms))
            cur = conn.execute("INSERT INTO topic_subscription (mesh_id, topic, member_id,"
                               " created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (mesh_id, topic, member_id, now_ms))
            return _bumped(conn, mesh_id, topic, cur.rowcount == 1)
        return await self._worker.run(op)

    async def unsubscribe(self, mesh_id: str, member_id: str, topic: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM topic_subscription WHERE mesh_id = ?"
                               " AND topic = ? AND member_id = ?", (mesh_id, topic, member_id))
            return _bumped(conn, mesh_id, topic, cur.rowcount == 1)
        return await self._worker.run(op)

    # -- encrypted topics --------------------------------------------------------------

    async def topic_keys(self, mesh_id: str, topic: str, member_id: str) -> TopicKeyView | None:
        def op(conn: sqlite3.Connection) -> TopicKeyView | None:
            state = _topic_state(conn, mesh_id, topic)
            if state is None:
                return None
            rows = conn.execute(
                "SELECT e.epoch, e.membership_version, e.creator_pubkey, k.nonce, k.ciphertext"
                " FROM topic_epoch_key k JOIN topic_epoch e ON e.mesh_id = k.mesh_id"
                " AND e.topic = k.topic AND e.epoch = k.epoch WHERE k.mesh_id = ?"
                " AND k.topic = ? AND k.member_id = ? ORDER BY e.epoch",
                (mesh_id, topic, member_id)).fetchall()
            return TopicKeyView(state, tuple(SealedEpochKey(*r) for r in rows))
        return await self._worker.run(op)

    async def topic_members(self, mesh_id: str, topic: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT s.member_id FROM topic_subscription s JOIN member m ON m.id = s.member_id"
                " WHERE s.mesh_id = ? AND s.topic = ? AND m.revoked_at IS NULL"
                " ORDER BY s.member_id", (mesh_id, topic))]
        return await self._worker.run(op)

    async def create_topic_epoch(self, mesh_id: str, topic: str, *, epoch: int,
                                 membership_version: int, creator: Member,
                                 keys: dict[str, tuple[str, str]], now_ms: int) -> TopicState:
        def op(conn: sqlite3.Connection) -> TopicState:
            with store_errors("starting a topic epoch"), immediate(conn):
                state = _topic_state(conn, mesh_id, topic)
                if state is None:
                    raise b2_refusal("topic", topic)
                reason = epoch_refusal(state, epoch=epoch, membership_version=membership_version,
                                       sealed_to=list(keys))
                if reason is not None:
                    raise epoch_conflict(reason, state)
                ids = dict(conn.execute(
                    "SELECT m.pubkey, m.id FROM topic_subscription s JOIN member m"
                    " ON m.id = s.member_id WHERE s.mesh_id = ? AND s.topic = ?"
                    " AND m.revoked_at IS NULL", (mesh_id, topic)).fetchall())
                conn.execute("INSERT INTO topic_epoch (mesh_id, topic, epoch, membership_version,"
                             " creator_member_id, creator_pubkey, created_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (mesh_id, topic, epoch, membership_version, creator.id,
                              creator.pubkey, now_ms))
                conn.executemany("INSERT INTO topic_epoch_key (mesh_id, topic, epoch, member_id,"
                                 " nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?)",
                                 [(mesh_id, topic, epoch, ids[pubkey], nonce, ct)
                                  for pubkey, (nonce, ct) in keys.items()])
                conn.execute("UPDATE topic SET current_epoch = ? WHERE mesh_id = ? AND name = ?",
                             (epoch, mesh_id, topic))
            return TopicState(state.membership_version, epoch, state.subscribers)
        return await self._worker.run(op)

    async def epoch_keys(self, mesh_id: str, topic: str,
                         epoch: int) -> dict[str, SealedEpochKey] | None:
        def op(conn: sqlite3.Connection) -> dict[str, SealedEpochKey] | None:
            head = conn.execute("SELECT membership_version, creator_pubkey FROM topic_epoch"
                                " WHERE mesh_id = ? AND topic = ? AND epoch = ?",
                                (mesh_id, topic, epoch)).fetchone()
            if head is None:
                return None
            return {r[0]: SealedEpochKey(epoch, head[0], head[1], r[1], r[2]) for r in
                    conn.execute("SELECT member_id, nonce, ciphertext FROM topic_epoch_key"
                                 " WHERE mesh_id = ? AND topic = ? AND epoch = ?",
                                 (mesh_id, topic, epoch))}
        return await self._worker.run(op, durable=False)

    async def topic_epoch(self, mesh_id: str, topic: str) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT current_epoch FROM topic WHERE mesh_id = ? AND name = ?",
                               (mesh_id, topic)).fetchone()
            return None if row is None else int(row[0])
        return await self._worker.run(op, durable=False)

    async def list_topics(self, mesh_id: str, member_id: str) -> list[dict[str, Any]]:
        def op(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT t.name, count(s.member_id), sum(s.member_id = ?) FROM topic t"
                " LEFT JOIN topic_subscription s ON s.mesh_id = t.mesh_id AND s.topic = t.name"
                " WHERE t.mesh_id = ? GROUP BY t.name ORDER BY t.name",
                (member_id, mesh_id)).fetchall()
            return [topic_entry(*r) for r in rows]
        return await self._worker.run(op)

    async def join_group(self, mesh_id: str, member_id: str, group: str, now_ms: int,
                         role: str | None = None) -> bool:
        return await self._changed_one(
            "INSERT INTO group_member (mesh_id, group_name, member_id, created_at, role)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (mesh_id, group_name, member_id) DO UPDATE"
            " SET role = excluded.role WHERE excluded.role IS NOT NULL"
            " AND group_member.role IS NOT excluded.role",
            (mesh_id, group, member_id, now_ms, role))

    async def group_members(self, mesh_id: str) -> list[GroupMembership]:
        def op(conn: sqlite3.Connection) -> list[GroupMembership]:
            return [GroupMembership(*r) for r in conn.execute(
                "SELECT g.group_name, m.id, m.pubkey, m.display_name, g.role"
                " FROM group_member g JOIN member m ON m.id = g.member_id"
                " WHERE g.mesh_id = ? AND m.revoked_at IS NULL"
                " ORDER BY g.group_name, lower(m.display_name), m.id", (mesh_id,))]
        return await self._worker.run(op)

    async def topic_history(self, mesh_id: str, member_id: str, topic: str, *,
                            before: int | None, limit: int) -> list[Delivery]:
        def op(conn: sqlite3.Connection) -> list[Delivery]:
            if conn.execute("SELECT 1 FROM topic_subscription WHERE mesh_id = ? AND topic = ?"
                            " AND member_id = ?", (mesh_id, topic, member_id)).fetchone() is None:
                raise NotSubscribed(f"subscribe to #{topic} to read its history")
            rows = conn.execute(
                f"SELECT 0, ?, {DELIVERY_MESSAGE_COLUMNS}"  # noqa: S608
                " FROM message_history h JOIN message m ON m.id = h.message_id"
                " WHERE h.mesh_id = ? AND h.topic = ? AND h.seq < ?"
                " ORDER BY h.seq DESC LIMIT ?",
                (member_id, mesh_id, topic, 2**63 - 1 if before is None else before,
                 limit)).fetchall()
            return [delivery_from_row(r) for r in rows]
        return await self._worker.run(op)

    async def leave_group(self, mesh_id: str, member_id: str, group: str) -> bool:
        return await self._changed_one("DELETE FROM group_member WHERE mesh_id = ?"
                                       " AND group_name = ? AND member_id = ?",
                                       (mesh_id, group, member_id))

    # -- accept (§4.7.2) ---------------------------------------------------------------

    async def accept(self, request: AcceptInput) -> AcceptOutcome:
        return await self._worker.run(lambda conn: _accept(conn, request))

    async def pending_deliveries(self, member_id: str, *, after: int, limit: int,
                                 session_id: str = "", now_ms: int = 0,
                                 lease_ms: int = 0) -> list[Delivery]:
        def op(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                f"SELECT d.seq, d.recipient_member_id, {DELIVERY_MESSAGE_COLUMNS}"  # noqa: S608
                " FROM delivery_queue d JOIN message m ON m.id = d.message_id"
                " LEFT JOIN message_history h ON h.message_id = m.id"
                " WHERE d.recipient_member_id = ? AND d.acked_at IS NULL AND d.seq > ?"
                " ORDER BY d.seq LIMIT ?", (member_id, after, limit)).fetchall()
            return [delivery_from_row(r) for r in rows]
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
                change = presence_change(row, now_ms, dead_after_ms)
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
        return await self._changed_one(
            "UPDATE presence SET state = 'leased', lease_expires_at = ?"
            " WHERE mesh_id = ? AND member_id = ? AND session_id = ? AND state = 'online'",
            (lease_until_ms, mesh_id, member_id, session_id), durable=False)

    async def presence_drop(self, mesh_id: str, member_id: str) -> bool:
        return await self._changed_one("DELETE FROM presence WHERE mesh_id = ? AND member_id = ?",
                                       (mesh_id, member_id), durable=False)

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
            return None if row is None else member_from_row(row, _groups(conn, row[0]))
        return await self._worker.run(op)

    async def ping(self) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1 FROM mesh LIMIT 1").fetchall()
            # The open connection keeps answering from a file that was since deleted,
            # replaced or made unreadable; a restart would not find it: not ready.
            try:
                now = _file_identity(self._path)
            except OSError as exc:
                raise StoreError(f"the store file {self._path} is gone:"
                                 f" {exc.strerror or exc}") from exc
            if now != self._file:
                raise StoreError(f"the store file {self._path} was replaced after the"
                                 " broker opened it")
            if not os.access(self._path, os.R_OK | os.W_OK):
                raise StoreError(f"the store file {self._path} is no longer readable and"
                                 " writable")
        await self._worker.run(op, durable=False)

    async def pending_by_mesh(self, *, limit: int) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            return {name: n for name, n in conn.execute(
                "SELECT m.name, count(*) FROM delivery_queue q JOIN mesh m ON m.id = q.mesh_id"
                " WHERE q.acked_at IS NULL GROUP BY m.name ORDER BY count(*) DESC, m.name"
                " LIMIT ?", (limit,))}
        return await self._worker.run(op, durable=False)

    async def orphan_check(self) -> list[dict[str, Any]]:
        def op(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            found = [dedupe_orphan(*r) for r in conn.execute(
                "SELECT d.mesh_id, d.client_message_id, d.broker_message_id"
                " FROM client_message_dedupe d LEFT JOIN message m ON m.id = d.broker_message_id"
                " WHERE m.id IS NULL AND d.history_available = 1")]
            found += [delivery_orphan(*r) for r in conn.execute(
                "SELECT q.seq, q.message_id FROM delivery_queue q"
                " LEFT JOIN message m ON m.id = q.message_id WHERE m.id IS NULL")]
            return found
        return await self._worker.run(op)

    # -- blobs (shared files) ----------------------------------------------------------

    async def blob_begin(self, blob: Blob) -> Blob:
        def op(conn: sqlite3.Connection) -> Blob:
            with store_errors("recording an upload"), immediate(conn):
                conn.execute(f"INSERT INTO blob ({BLOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                             " ON CONFLICT (file_id) DO NOTHING", blob_params(blob))
                row = conn.execute(f"SELECT {BLOB_COLUMNS} FROM blob WHERE file_id = ?",  # noqa: S608
                                   (blob.file_id,)).fetchone()
            return blob_from_row(row)
        return await self._worker.run(op)

    async def get_blob(self, file_id: str) -> Blob | None:
        def op(conn: sqlite3.Connection) -> Blob | None:
            row = conn.execute(f"SELECT {BLOB_COLUMNS} FROM blob WHERE file_id = ?",  # noqa: S608
                               (file_id,)).fetchone()
            return None if row is None else blob_from_row(row)
        return await self._worker.run(op, durable=False)

    async def blob_completed(self, file_id: str, now_ms: int) -> None:
        await self._changed_one("UPDATE blob SET completed_at = ? WHERE file_id = ?"
                                " AND completed_at IS NULL", (now_ms, file_id))

    async def list_blobs(self, mesh_id: str, pubkey: str) -> list[Blob]:
        def op(conn: sqlite3.Connection) -> list[Blob]:
            rows = conn.execute(
                f"SELECT {BLOB_COLUMNS} FROM blob WHERE mesh_id = ? AND (uploader_pubkey = ?"  # noqa: S608
                " OR instr(recipients, ?) > 0 OR (topic IS NOT NULL AND EXISTS (SELECT 1"
                " FROM topic_subscription s JOIN member m ON m.id = s.member_id"
                " WHERE s.mesh_id = blob.mesh_id AND s.topic = blob.topic AND m.pubkey = ?"
                " AND m.revoked_at IS NULL))) ORDER BY created_at DESC, file_id DESC"
                " LIMIT 1000", (mesh_id, pubkey, f'"{pubkey}"', pubkey)).fetchall()
            return [blob_from_row(r) for r in rows]
        return await self._worker.run(op, durable=False)

    async def expire_blobs(self, now_ms: int, *, abandoned_after_ms: int) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute(
                "DELETE FROM blob WHERE file_id IN (SELECT b.file_id FROM blob b"
                " JOIN mesh ON mesh.id = b.mesh_id"
                " WHERE b.created_at <= ? - mesh.message_retention_days * ?"
                " OR (b.completed_at IS NULL AND b.created_at <= ?)) RETURNING file_id",
                (now_ms, DAY_MS, now_ms - abandoned_after_ms)).fetchall()]
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


def _bumped(conn: sqlite3.Connection, mesh_id: str, topic: str, changed: bool) -> bool:
    """A subscription changed: the topic's membership moves to its next version."""
    if changed:
        conn.execute("UPDATE topic SET membership_version = membership_version + 1"
                     " WHERE mesh_id = ? AND name = ?", (mesh_id, topic))
    return changed


def _topic_state(conn: sqlite3.Connection, mesh_id: str, topic: str) -> TopicState | None:
    row = conn.execute("SELECT membership_version, current_epoch FROM topic"
                       " WHERE mesh_id = ? AND name = ?", (mesh_id, topic)).fetchone()
    if row is None:
        return None
    subscribers = frozenset(r[0] for r in conn.execute(
        "SELECT m.pubkey FROM topic_subscription s JOIN member m ON m.id = s.member_id"
        " WHERE s.mesh_id = ? AND s.topic = ? AND m.revoked_at IS NULL", (mesh_id, topic)))
    return TopicState(int(row[0]), int(row[1]), subscribers)


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
            "INSERT INTO message_history (mesh_id, message_id, created_at, topic)"
            " VALUES (?, ?, ?, ?)", (req.mesh_id, req.broker_message_id, req.now_ms,
                                     req.destination_ref if req.destination_kind == "topic"
                                     else None)).lastrowid
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
    if req.destination_kind == "queue":
        return [_anycast_pick(conn, req)]
    args: tuple[str, ...]
    if ref == "*":
        sql, args = ("SELECT id FROM member WHERE mesh_id = ? AND revoked_at IS NULL", (mesh,))
    elif ref.startswith("@"):
        sql, args = ("SELECT g.member_id FROM group_member g JOIN member m ON m.id = g.member_id"
                     " WHERE g.mesh_id = ? AND g.group_name = ? AND m.revoked_at IS NULL",
                     (mesh, ref[1:]))
    else:
        topic = conn.execute("SELECT t.membership_version, t.current_epoch, e.membership_version"
                             " FROM topic t LEFT JOIN topic_epoch e ON e.mesh_id = t.mesh_id"
                             " AND e.topic = t.name AND e.epoch = ? WHERE t.mesh_id = ?"
                             " AND t.name = ?", (req.epoch, mesh, ref)).fetchone()
        if topic is None:
            raise b2_refusal("topic", ref)
        if req.epoch is not None and topic[2] is not None and (stale := stale_epoch(
                ref, req.epoch, made_for=topic[2], membership_version=topic[0],
                current_epoch=topic[1])):
            raise stale
        sql, args = ("SELECT s.member_id FROM topic_subscription s JOIN member m"
                     " ON m.id = s.member_id WHERE s.mesh_id = ? AND s.topic = ?"
                     " AND m.revoked_at IS NULL", (mesh, ref))
    members = [r[0] for r in conn.execute(sql, args)]
    if ref.startswith("@") and not members:
        raise b2_refusal("group", ref)
    return sorted(m for m in members if m != req.sender_member_id)


def _anycast_pick(conn: sqlite3.Connection, req: AcceptInput) -> str:
    """The one member of the group an anycast goes to: another live member, online ones
    first, the one whose last anycast is oldest (round-robin); marked as the latest."""
    group = req.destination_ref[1:]
    row = conn.execute(
        "SELECT g.member_id FROM group_member g JOIN member m ON m.id = g.member_id"
        " WHERE g.mesh_id = ? AND g.group_name = ? AND m.revoked_at IS NULL"
        " AND g.member_id <> ? ORDER BY EXISTS (SELECT 1 FROM presence p"
        " WHERE p.mesh_id = g.mesh_id AND p.member_id = g.member_id) DESC,"
        " g.anycast_seq, g.member_id LIMIT 1",
        (req.mesh_id, group, req.sender_member_id)).fetchone()
    if row is None:
        raise b2_refusal("group", req.destination_ref)
    conn.execute(
        "UPDATE group_member SET anycast_seq = 1 + (SELECT max(anycast_seq) FROM group_member"
        " WHERE mesh_id = ? AND group_name = ?) WHERE mesh_id = ? AND group_name = ?"
        " AND member_id = ?", (req.mesh_id, group, req.mesh_id, group, row[0]))
    return str(row[0])
