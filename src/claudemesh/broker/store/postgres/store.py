"""The PostgreSQL broker store: the operations of base.py as SQL on a shared database.

*Accept (R-BRK-10).* One call of the SQL function ``mesh.accept_message`` (migration 3,
schema.py): one round trip and one statement, hence one transaction. Inside it,
``INSERT ... ON CONFLICT DO NOTHING`` into the dedupe table, then
``SELECT ... FOR SHARE`` of the key. Under READ COMMITTED a second transaction inserting
the same key waits on the first one's uncommitted row: if the first commits, the insert
does nothing and the SELECT sees the winner (a duplicate or a conflict, answered with a
rollback); if it rolls back (B2 refused it), the second one's insert goes through. So of
any number of concurrent accepts of one key exactly one is CREATED, and a B2 failure
(raised as SQLSTATE CM403/CM404, translated back into our errors) leaves no dedupe row.
Recipients are resolved as in ``sqlite/store.py`` (the sender's row is read ``FOR SHARE``
so a concurrent revocation orders before or after the whole accept), and the deliveries
are one ``INSERT ... SELECT unnest(members)``.

*Claims.* ``pending_deliveries`` with a ``session_id`` claims the rows it returns
(``FOR UPDATE SKIP LOCKED``, then ``claimed_by``/``claim_expires_at``) and skips rows a
different session claimed, until that claim runs out or its session is superseded: the
member's presence row names another session, or that session detached. So a member who
reconnects (to any broker) gets its unacked rows pushed again at once instead of after
the delivery lease, and a replaced session still pumping cannot hide rows from the new
one. With no session it only reads, as the SQLite store always does.

*Ordering.* Sequence numbers (``history_id``, ``delivery_id``) are drawn at INSERT but
become visible at COMMIT; a per-mesh advisory lock, taken after B2 and held to COMMIT,
makes a mesh's accepts draw and commit in the same order, so a reader paging with
``seq > after`` never misses a row that commits late with a smaller seq. Within one
store instance, the accepts of one sender also run one at a time in call order (an
in-process FIFO turn per sender), so a client that pipelines sends sees them accepted,
and pushed, in the order it sent them, as with SQLite's single writer.

*Presence.* Rows, as in SQLite. ``presence_attach`` serializes per member with a
transaction-scoped advisory lock (the row may not exist yet, so a row lock is not
enough) and reads the row ``FOR UPDATE``. ``presence_expired`` and ``sweep`` each hold a
cluster-wide advisory lock, so two brokers running them together neither deadlock nor
double-report; the ``DELETE ... RETURNING`` makes each expiry reported exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]

from claudemesh.broker.store import redact_location
from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    AcceptOutcome,
    Blob,
    BrokerStore,
    Delivery,
    GroupMembership,
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
from claudemesh.broker.store.postgres.connection import Conn, PgPool, Retry, count
from claudemesh.broker.store.postgres.notify import PgNotifier
from claudemesh.broker.store.postgres.schema import migrate
from claudemesh.broker.store.rows import (
    BLOB_COLUMNS,
    DAY_MS,
    DELIVERY_MESSAGE_COLUMNS,
    MESH_COLUMNS,
    Row,
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

__all__ = ["PostgresBrokerStore"]

_LOCK_CLASS: Final = 0x636D_0001  # int4 pair keys: (class, what)
_MEMBER_LOCK_CLASS: Final = 0x636D_0002  # (class, hashtext(mesh_id/member_id))
_MESH_LOCK_CLASS: Final = 0x636D_0003  # (class, hashtext(mesh_id)): accept commit order
_PRESENCE_EXPIRY_LOCK: Final = 1
_SWEEP_LOCK: Final = 2

_MEMBER_COLUMNS: Final = member_columns("m.")
_MEMBER_GROUPS: Final = ("ARRAY(SELECT g.group_name FROM mesh.group_member g"
                         " WHERE g.member_id = m.id ORDER BY g.group_name COLLATE \"C\")")
_MEMBER_SELECT: Final = f"SELECT {_MEMBER_COLUMNS}, {_MEMBER_GROUPS} FROM mesh.member m"  # noqa: S608


def _member(row: Row) -> Member:
    """A row of ``_MEMBER_COLUMNS``, optionally followed by the groups array."""
    return member_from_row(row, tuple(row[14]) if len(row) > 14 else ())


def _visible(value: Any) -> bool:
    """The ``visible`` profile field as the BOOLEAN column holds it."""
    return bool(int(value))


@dataclass(slots=True)
class _Gate:
    """One sender's turn: a FIFO lock and how many accepts use it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class PostgresBrokerStore(BrokerStore):
    """The broker store on PostgreSQL; several brokers may share one database."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self._db = PgPool(dsn, prepare=migrate, min_size=min_size, max_size=max_size)
        self._notifier = PgNotifier(self._db)
        self._gates: dict[tuple[str, str], _Gate] = {}

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2,
                      max_size: int = 10) -> PostgresBrokerStore:
        """Open the pool and apply the migrations now (rather than on first use)."""
        store = cls(dsn, min_size=min_size, max_size=max_size)
        try:
            await store._db.get()
        except BaseException:
            await store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"PostgresBrokerStore({redact_location(self._dsn)!r})"

    async def close(self) -> None:
        self._db.shut()  # new work is refused while the notifier sends its last batch
        await self._notifier.close()
        await self._db.close()

    def notifier(self) -> Notifier:
        return self._notifier

    async def _changed_one(self, action: str, sql: str, *args: Any) -> bool:
        """Run one statement on its own (no transaction); True when it changed one row."""
        async def op(conn: Conn) -> bool:
            return count(await conn.execute(sql, *args)) == 1
        return await self._db.run(action, op, tx=False)

    # -- meshes, invites, members ------------------------------------------------------

    async def create_mesh(self, mesh: Mesh, invite_secret_key: str) -> Mesh:
        async def op(conn: Conn) -> Mesh:
            status = await conn.execute(
                f"INSERT INTO mesh.mesh ({MESH_COLUMNS}, invite_secret_key)"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                mesh.id, mesh.name, mesh.created_at, mesh.dedupe_mode,
                mesh.dedupe_retention_days, mesh.message_retention_days,
                mesh.connection_policy, mesh.invite_pubkey, invite_secret_key)
            if count(status) == 0:
                raise MeshExists(f"a mesh called {mesh.name!r} already exists")
            return mesh
        return await self._db.run("creating a mesh", op)

    async def get_mesh(self, mesh_ref: str) -> Mesh | None:
        async def op(conn: Conn) -> Mesh | None:
            row = await conn.fetchrow(
                f"SELECT {MESH_COLUMNS} FROM mesh.mesh WHERE id = $1 OR name = $1"  # noqa: S608
                " ORDER BY id = $1 DESC LIMIT 1", mesh_ref)
            return None if row is None else Mesh(*(row[i] for i in range(8)))
        return await self._db.run("reading a mesh", op, tx=False)

    async def mesh_invite_key(self, mesh_id: str) -> str:
        async def op(conn: Conn) -> str:
            key = await conn.fetchval("SELECT invite_secret_key FROM mesh.mesh WHERE id = $1",
                                      mesh_id)
            if key is None:
                raise InviteRejected("the invite's mesh does not exist on this broker")
            return str(key)
        return await self._db.run("reading a mesh's invite key", op, tx=False)

    async def create_invite(self, invite: NewInvite, *, secret_sha256: str, now_ms: int) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO mesh.invite (id, mesh_id, secret_sha256, created_at, expires_at,"
                " max_uses) VALUES ($1, $2, $3, $4, $5, $6)",
                invite.invite_id, invite.mesh_id, secret_sha256, now_ms, invite.expires_at,
                invite.max_uses)
        await self._db.run("creating an invite", op, tx=False)

    async def redeem_invite(self, *, invite_id: str, mesh_id: str, secret_sha256: str,
                            member: Member, now_ms: int) -> Member:
        async def op(conn: Conn) -> Member:
            row = await conn.fetchrow(
                "SELECT secret_sha256, expires_at, max_uses, uses, revoked_at FROM mesh.invite"
                " WHERE id = $1 AND mesh_id = $2 FOR UPDATE", invite_id, mesh_id)
            if row is None or not hmac.compare_digest(str(row[0]).encode(),
                                                   secret_sha256.encode()):
                raise InviteRejected("this broker does not know that invite")
            if row[4] is not None:
                raise InviteRejected("the invite was revoked")
            existing = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.mesh_id = $1"
                                           " AND m.pubkey = $2", mesh_id, member.pubkey)
            if existing is not None:
                if existing[5] is not None:
                    raise MemberRevoked("this key was revoked from the mesh")
                return _member(existing)
            if row[1] <= now_ms:
                raise InviteRejected("the invite has expired; ask for a new one")
            if row[3] >= row[2]:
                raise InviteRejected("the invite has been used up; ask for a new one")
            taken = await conn.fetchval(
                "SELECT 1 FROM mesh.member WHERE mesh_id = $1 AND lower(display_name COLLATE"
                " \"C\") = lower($2 COLLATE \"C\") AND revoked_at IS NULL",
                mesh_id, member.display_name)
            name_taken = DisplayNameTaken(
                f"{member.display_name!r} is taken in this mesh; join with --name")
            if taken:
                raise name_taken
            try:
                await conn.execute(
                    "INSERT INTO mesh.member (id, mesh_id, pubkey, display_name, joined_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    member.id, mesh_id, member.pubkey, member.display_name, now_ms)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "member_live_name":  # a concurrent join took it
                    raise name_taken from exc
                if exc.constraint_name == "member_mesh_pubkey":  # the same key joined meanwhile
                    raise Retry from exc
                raise
            await conn.execute("UPDATE mesh.invite SET uses = uses + 1 WHERE id = $1", invite_id)
            return member
        return await self._db.run("redeeming an invite", op)

    async def get_member(self, mesh_id: str, pubkey: str) -> Member | None:
        async def op(conn: Conn) -> Member | None:
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.mesh_id = $1 AND m.pubkey = $2",
                                      mesh_id, pubkey)
            return None if row is None else _member(row)
        return await self._db.run("reading a member", op, tx=False)

    async def revoke_member(self, pubkey: str, *, mesh_id: str | None, now_ms: int) -> list[Member]:
        async def op(conn: Conn) -> list[Member]:
            if mesh_id:
                rows = await conn.fetch(
                    f"UPDATE mesh.member m SET revoked_at = $1 WHERE m.pubkey = $2"  # noqa: S608
                    f" AND m.revoked_at IS NULL AND m.mesh_id = $3 RETURNING {_MEMBER_COLUMNS}",
                    now_ms, pubkey, mesh_id)
            else:
                rows = await conn.fetch(
                    f"UPDATE mesh.member m SET revoked_at = $1 WHERE m.pubkey = $2"  # noqa: S608
                    f" AND m.revoked_at IS NULL RETURNING {_MEMBER_COLUMNS}", now_ms, pubkey)
            await conn.execute(  # its topics' next epochs must leave it out
                "UPDATE mesh.topic t SET membership_version = t.membership_version + 1"
                " WHERE EXISTS (SELECT 1 FROM mesh.topic_subscription s WHERE s.mesh_id ="
                " t.mesh_id AND s.topic = t.name AND s.member_id = ANY($1::text[]))",
                [r[0] for r in rows])
            return sorted((_member(r) for r in rows), key=lambda m: (m.joined_at, m.id))
        return await self._db.run("revoking a member", op)

    async def revoked_since(self, since_ms: int) -> list[Member]:
        async def op(conn: Conn) -> list[Member]:
            rows = await conn.fetch(
                f"SELECT {_MEMBER_COLUMNS} FROM mesh.member m"  # noqa: S608
                " WHERE m.revoked_at IS NOT NULL AND m.revoked_at >= $1"
                " ORDER BY m.revoked_at, m.id COLLATE \"C\"", since_ms)
            return [_member(r) for r in rows]
        return await self._db.run("reading revocations", op, tx=False)

    async def list_members(self, mesh_id: str) -> list[Member]:
        async def op(conn: Conn) -> list[Member]:
            rows = await conn.fetch(
                f"SELECT {_MEMBER_COLUMNS}, ARRAY(SELECT g.group_name"  # noqa: S608
                " FROM mesh.group_member g WHERE g.member_id = m.id AND g.mesh_id = m.mesh_id"
                " ORDER BY g.group_name COLLATE \"C\") FROM mesh.member m"
                " WHERE m.mesh_id = $1 AND m.revoked_at IS NULL"
                " ORDER BY m.joined_at, m.id COLLATE \"C\"", mesh_id)
            return [_member(r) for r in rows]
        return await self._db.run("listing members", op, tx=False)

    async def set_profile(self, member_id: str, fields: dict[str, Any]) -> Member:
        updates = profile_columns(fields, visible=_visible)

        async def op(conn: Conn) -> Member:
            if updates:
                assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(updates, 2))
                await conn.execute(f"UPDATE mesh.member SET {assignments} WHERE id = $1",  # noqa: S608
                                   member_id, *updates.values())
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.id = $1", member_id)
            if row is None:
                raise StoreError(f"setting a profile: no member {member_id}")
            return _member(row)
        return await self._db.run("setting a profile", op)

    async def remember_nonce(self, pubkey: str, nonce: str, *, expires_at_ms: int) -> bool:
        return await self._changed_one(
            "remembering a nonce",
            "INSERT INTO mesh.hello_nonce (pubkey, nonce, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING", pubkey, nonce, expires_at_ms)

    # -- topics and groups -------------------------------------------------------------

    async def subscribe(self, mesh_id: str, member_id: str, topic: str, now_ms: int) -> bool:
        async def op(conn: Conn) -> bool:
            await conn.execute("INSERT INTO mesh.topic (mesh_id, name, created_at)"
                               " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                               mesh_id, topic, now_ms)
            return await _bumped(conn, mesh_id, topic, count(await conn.execute(
                "INSERT INTO mesh.topic_subscription (mesh_id, topic, member_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                mesh_id, topic, member_id, now_ms)) == 1)
        return await self._db.run("subscribing", op)

    async def unsubscribe(self, mesh_id: str, member_id: str, topic: str) -> bool:
        async def op(conn: Conn) -> bool:
            return await _bumped(conn, mesh_id, topic, count(await conn.execute(
                "DELETE FROM mesh.topic_subscription WHERE mesh_id = $1 AND topic = $2"
                " AND member_id = $3", mesh_id, topic, member_id)) == 1)
        return await self._db.run("unsubscribing", op)

    # -- encrypted topics --------------------------------------------------------------

    async def topic_keys(self, mesh_id: str, topic: str, member_id: str) -> TopicKeyView | None:
        async def op(conn: Conn) -> TopicKeyView | None:
            state = await _topic_state(conn, mesh_id, topic)
            if state is None:
                return None
            rows = await conn.fetch(
                "SELECT e.epoch, e.membership_version, e.creator_pubkey, k.nonce, k.ciphertext"
                " FROM mesh.topic_epoch_key k JOIN mesh.topic_epoch e ON e.mesh_id = k.mesh_id"
                " AND e.topic = k.topic AND e.epoch = k.epoch WHERE k.mesh_id = $1"
                " AND k.topic = $2 AND k.member_id = $3 ORDER BY e.epoch",
                mesh_id, topic, member_id)
            return TopicKeyView(state, tuple(
                SealedEpochKey(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows))
        return await self._db.run("reading topic keys", op)

    async def topic_members(self, mesh_id: str, topic: str) -> list[str]:
        async def op(conn: Conn) -> list[str]:
            return [str(r[0]) for r in await conn.fetch(
                "SELECT s.member_id FROM mesh.topic_subscription s JOIN mesh.member m"
                " ON m.id = s.member_id WHERE s.mesh_id = $1 AND s.topic = $2"
                " AND m.revoked_at IS NULL ORDER BY s.member_id COLLATE \"C\"", mesh_id, topic)]
        return await self._db.run("reading subscribers", op, tx=False)

    async def create_topic_epoch(self, mesh_id: str, topic: str, *, epoch: int,
                                 membership_version: int, creator: Member,
                                 keys: dict[str, tuple[str, str]], now_ms: int) -> TopicState:
        async def op(conn: Conn) -> TopicState:
            state = await _topic_state(conn, mesh_id, topic, lock=True)
            if state is None:
                raise b2_refusal("topic", topic)
            reason = epoch_refusal(state, epoch=epoch, membership_version=membership_version,
                                   sealed_to=list(keys))
            if reason is not None:
                raise epoch_conflict(reason, state)
            ids = {r[0]: r[1] for r in await conn.fetch(
                "SELECT m.pubkey, m.id FROM mesh.topic_subscription s JOIN mesh.member m"
                " ON m.id = s.member_id WHERE s.mesh_id = $1 AND s.topic = $2"
                " AND m.revoked_at IS NULL", mesh_id, topic)}
            await conn.execute(
                "INSERT INTO mesh.topic_epoch (mesh_id, topic, epoch, membership_version,"
                " creator_member_id, creator_pubkey, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)", mesh_id, topic, epoch,
                membership_version, creator.id, creator.pubkey, now_ms)
            sealed = list(keys.items())
            await conn.execute(
                "INSERT INTO mesh.topic_epoch_key (mesh_id, topic, epoch, member_id, nonce,"
                " ciphertext) SELECT $1, $2, $3, u.m, u.n, u.c FROM"
                " unnest($4::text[], $5::text[], $6::text[]) AS u(m, n, c)",
                mesh_id, topic, epoch, [ids[p] for p, _ in sealed],
                [n for _, (n, _c) in sealed], [c for _, (_n, c) in sealed])
            await conn.execute("UPDATE mesh.topic SET current_epoch = $1 WHERE mesh_id = $2"
                               " AND name = $3", epoch, mesh_id, topic)
            return TopicState(state.membership_version, epoch, state.subscribers)
        return await self._db.run("starting a topic epoch", op)

    async def epoch_keys(self, mesh_id: str, topic: str,
                         epoch: int) -> dict[str, SealedEpochKey] | None:
        async def op(conn: Conn) -> dict[str, SealedEpochKey] | None:
            head = await conn.fetchrow(
                "SELECT membership_version, creator_pubkey FROM mesh.topic_epoch"
                " WHERE mesh_id = $1 AND topic = $2 AND epoch = $3", mesh_id, topic, epoch)
            if head is None:
                return None
            rows = await conn.fetch("SELECT member_id, nonce, ciphertext FROM"
                                    " mesh.topic_epoch_key WHERE mesh_id = $1 AND topic = $2"
                                    " AND epoch = $3", mesh_id, topic, epoch)
            return {str(r[0]): SealedEpochKey(epoch, int(head[0]), head[1], r[1], r[2])
                    for r in rows}
        return await self._db.run("reading epoch keys", op)

    async def topic_epoch(self, mesh_id: str, topic: str) -> int | None:
        async def op(conn: Conn) -> int | None:
            value = await conn.fetchval("SELECT current_epoch FROM mesh.topic WHERE mesh_id = $1"
                                        " AND name = $2", mesh_id, topic)
            return None if value is None else int(value)
        return await self._db.run("reading a topic's epoch", op, tx=False)

    async def list_topics(self, mesh_id: str, member_id: str) -> list[dict[str, Any]]:
        async def op(conn: Conn) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT t.name, count(s.member_id), coalesce(bool_or(s.member_id = $1), false)"
                " FROM mesh.topic t LEFT JOIN mesh.topic_subscription s"
                " ON s.mesh_id = t.mesh_id AND s.topic = t.name WHERE t.mesh_id = $2"
                " GROUP BY t.name ORDER BY t.name COLLATE \"C\"", member_id, mesh_id)
            return [topic_entry(r[0], r[1], r[2]) for r in rows]
        return await self._db.run("listing topics", op, tx=False)

    async def join_group(self, mesh_id: str, member_id: str, group: str, now_ms: int,
                         role: str | None = None) -> bool:
        return await self._changed_one(
            "joining a group",
            "INSERT INTO mesh.group_member (mesh_id, group_name, member_id, created_at, role)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mesh_id, group_name, member_id)"
            " DO UPDATE SET role = excluded.role WHERE excluded.role IS NOT NULL"
            " AND mesh.group_member.role IS DISTINCT FROM excluded.role",
            mesh_id, group, member_id, now_ms, role)

    async def group_members(self, mesh_id: str) -> list[GroupMembership]:
        async def op(conn: Conn) -> list[GroupMembership]:
            rows = await conn.fetch(
                "SELECT g.group_name, m.id, m.pubkey, m.display_name, g.role"
                " FROM mesh.group_member g JOIN mesh.member m ON m.id = g.member_id"
                " WHERE g.mesh_id = $1 AND m.revoked_at IS NULL ORDER BY"
                " g.group_name COLLATE \"C\", lower(m.display_name COLLATE \"C\"),"
                " m.id COLLATE \"C\"", mesh_id)
            return [GroupMembership(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        return await self._db.run("listing groups", op, tx=False)

    async def topic_history(self, mesh_id: str, member_id: str, topic: str, *,
                            before: int | None, limit: int) -> list[Delivery]:
        async def op(conn: Conn) -> list[Delivery]:
            if await conn.fetchval(
                    "SELECT 1 FROM mesh.topic_subscription WHERE mesh_id = $1 AND topic = $2"
                    " AND member_id = $3", mesh_id, topic, member_id) is None:
                raise NotSubscribed(f"subscribe to #{topic} to read its history")
            rows = await conn.fetch(
                f"SELECT 0::bigint, $1::text, {DELIVERY_MESSAGE_COLUMNS}"  # noqa: S608
                " FROM mesh.message_history h JOIN mesh.message m ON m.id = h.message_id"
                " WHERE h.mesh_id = $2 AND h.topic = $3 AND h.seq < $4"
                " ORDER BY h.seq DESC LIMIT $5",
                member_id, mesh_id, topic, 2**63 - 1 if before is None else before, limit)
            return [delivery_from_row(r) for r in rows]
        return await self._db.run("reading topic history", op, tx=False)

    async def leave_group(self, mesh_id: str, member_id: str, group: str) -> bool:
        return await self._changed_one(
            "leaving a group",
            "DELETE FROM mesh.group_member WHERE mesh_id = $1 AND group_name = $2"
            " AND member_id = $3", mesh_id, group, member_id)

    # -- accept (§4.7.2) and delivery --------------------------------------------------

    async def accept(self, request: AcceptInput) -> AcceptOutcome:
        async with self._sender_turn(request.mesh_id, request.sender_member_id):
            if request.epoch is None:  # one statement: its own transaction
                return await self._db.run("accepting a message",
                                       lambda conn: _accept(conn, request), tx=False)
            return await self._db.run("accepting a topic post",
                                      lambda conn: _accept_sealed(conn, request))

    @contextlib.asynccontextmanager
    async def _sender_turn(self, mesh_id: str, sender_id: str) -> AsyncIterator[None]:
        """Accepts of one sender run one at a time, in call order (see *Ordering*).

        A waiter holds no database resource, so waiting here cannot close a deadlock cycle
        with PostgreSQL's locks.
        """
        key = (mesh_id, sender_id)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate()
        gate.users += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]

    async def pending_deliveries(self, member_id: str, *, after: int, limit: int,
                                 session_id: str = "", now_ms: int = 0,
                                 lease_ms: int = 0) -> list[Delivery]:
        async def read(conn: Conn) -> list[Delivery]:
            rows = await conn.fetch(
                f"SELECT d.seq, d.recipient_member_id, {DELIVERY_MESSAGE_COLUMNS}"  # noqa: S608
                " FROM mesh.delivery_queue d JOIN mesh.message m ON m.id = d.message_id"
                " LEFT JOIN mesh.message_history h ON h.message_id = m.id"
                " WHERE d.recipient_member_id = $1 AND d.acked_at IS NULL AND d.seq > $2"
                " ORDER BY d.seq LIMIT $3", member_id, after, limit)
            return [delivery_from_row(r) for r in rows]

        async def claim(conn: Conn) -> list[Delivery]:
            rows = await conn.fetch(
                "WITH picked AS ("  # noqa: S608
                "  SELECT d.seq FROM mesh.delivery_queue d"
                "  WHERE d.recipient_member_id = $1 AND d.acked_at IS NULL AND d.seq > $2"
                "  AND (d.claimed_by IS NULL OR d.claimed_by = $4 OR d.claim_expires_at <= $5"
                "  OR EXISTS (SELECT 1 FROM mesh.presence p WHERE p.mesh_id = d.mesh_id"
                "  AND p.member_id = d.recipient_member_id"
                "  AND (p.session_id <> d.claimed_by OR p.state <> 'online')))"
                "  ORDER BY d.seq LIMIT $3 FOR UPDATE SKIP LOCKED"
                "), claimed AS ("
                "  UPDATE mesh.delivery_queue q SET claimed_by = $4,"
                "  claim_expires_at = $5::bigint + $6::bigint"
                "  FROM picked WHERE q.seq = picked.seq RETURNING q.seq, q.recipient_member_id,"
                "  q.message_id"
                f") SELECT c.seq, c.recipient_member_id, {DELIVERY_MESSAGE_COLUMNS}"
                " FROM claimed c JOIN mesh.message m ON m.id = c.message_id"
                " LEFT JOIN mesh.message_history h ON h.message_id = m.id ORDER BY c.seq",
                member_id, after, limit, session_id, now_ms, lease_ms)
            return [delivery_from_row(r) for r in rows]

        if not session_id:
            return await self._db.run("reading deliveries", read, tx=False)
        return await self._db.run("claiming deliveries", claim)

    async def ack_deliveries(self, member_id: str, delivery_ids: list[int], now_ms: int) -> int:
        async def op(conn: Conn) -> int:
            return count(await conn.execute(
                "UPDATE mesh.delivery_queue SET acked_at = $1 WHERE recipient_member_id = $2"
                " AND acked_at IS NULL AND seq = ANY($3::bigint[])",
                now_ms, member_id, list(delivery_ids)))
        return await self._db.run("acking deliveries", op, tx=False)

    # -- presence and brokers ----------------------------------------------------------

    async def broker_heartbeat(self, broker_id: str, *, now_ms: int) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO mesh.broker (id, started_at, last_seen_at) VALUES ($1, $2, $2)"
                " ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                broker_id, now_ms)
        await self._db.run("recording a heartbeat", op, tx=False)

    async def presence_attach(self, mesh_id: str, member_id: str, *, broker_id: str,
                              session_id: str, now_ms: int, prefer_oldest: bool,
                              dead_after_ms: int) -> PresenceChange:
        async def op(conn: Conn) -> PresenceChange:
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                               _MEMBER_LOCK_CLASS, f"{mesh_id}/{member_id}")
            row = await conn.fetchrow(
                "SELECT p.session_id, p.broker_id, p.state, b.last_seen_at FROM mesh.presence p"
                " LEFT JOIN mesh.broker b ON b.id = p.broker_id"
                " WHERE p.mesh_id = $1 AND p.member_id = $2 FOR UPDATE OF p",
                mesh_id, member_id)
            change = presence_change(row, now_ms, dead_after_ms)
            if prefer_oldest and change.previous_state == "online":
                raise MemberAlreadyConnected()
            await conn.execute(
                "INSERT INTO mesh.presence (mesh_id, member_id, session_id, broker_id, state,"
                " since, lease_expires_at) VALUES ($1, $2, $3, $4, 'online', $5, NULL)"
                " ON CONFLICT (mesh_id, member_id) DO UPDATE SET"
                " session_id = excluded.session_id, broker_id = excluded.broker_id,"
                " state = 'online', since = excluded.since, lease_expires_at = NULL",
                mesh_id, member_id, session_id, broker_id, now_ms)
            return change
        return await self._db.run("attaching presence", op)

    async def presence_detach(self, mesh_id: str, member_id: str, *, session_id: str,
                              lease_until_ms: int) -> bool:
        return await self._changed_one(
            "detaching presence",
            "UPDATE mesh.presence SET state = 'leased', lease_expires_at = $1"
            " WHERE mesh_id = $2 AND member_id = $3 AND session_id = $4"
            " AND state = 'online'", lease_until_ms, mesh_id, member_id, session_id)

    async def presence_drop(self, mesh_id: str, member_id: str) -> bool:
        return await self._changed_one(
            "dropping presence",
            "DELETE FROM mesh.presence WHERE mesh_id = $1 AND member_id = $2", mesh_id, member_id)

    async def presence_expired(self, now_ms: int, *, dead_after_ms: int,
                               lease_ms: int) -> list[tuple[str, str]]:
        async def op(conn: Conn) -> list[tuple[str, str]]:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)",
                               _LOCK_CLASS, _PRESENCE_EXPIRY_LOCK)
            await conn.execute(
                "UPDATE mesh.presence p SET state = 'leased', lease_expires_at = coalesce("
                " (SELECT b.last_seen_at FROM mesh.broker b WHERE b.id = p.broker_id),"
                " p.since) + $1::bigint WHERE p.state = 'online' AND NOT EXISTS (SELECT 1"
                " FROM mesh.broker b WHERE b.id = p.broker_id AND b.last_seen_at >= $2::bigint)",
                lease_ms, now_ms - dead_after_ms)
            rows = await conn.fetch(
                "DELETE FROM mesh.presence WHERE state = 'leased' AND lease_expires_at <= $1"
                " RETURNING mesh_id, member_id", now_ms)
            return [(str(r[0]), str(r[1])) for r in rows]
        return await self._db.run("expiring presence", op)

    async def presence_online(self, mesh_id: str) -> set[str]:
        async def op(conn: Conn) -> set[str]:
            return {str(r[0]) for r in await conn.fetch(
                "SELECT member_id FROM mesh.presence WHERE mesh_id = $1", mesh_id)}
        return await self._db.run("reading presence", op, tx=False)

    async def get_member_by_id(self, member_id: str) -> Member | None:
        async def op(conn: Conn) -> Member | None:
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.id = $1", member_id)
            return None if row is None else _member(row)
        return await self._db.run("reading a member", op, tx=False)

    # -- operations --------------------------------------------------------------------

    async def ping(self) -> None:
        async def op(conn: Conn) -> None:
            await conn.fetchval("SELECT 1 FROM mesh.mesh LIMIT 1")
        await self._db.run("checking the store", op, tx=False)

    async def pending_by_mesh(self, *, limit: int) -> dict[str, int]:
        async def op(conn: Conn) -> dict[str, int]:
            return {str(r[0]): int(r[1]) for r in await conn.fetch(
                "SELECT m.name, count(*) FROM mesh.delivery_queue q JOIN mesh.mesh m"
                " ON m.id = q.mesh_id WHERE q.acked_at IS NULL GROUP BY m.name"
                " ORDER BY count(*) DESC, m.name LIMIT $1", limit)}
        return await self._db.run("counting pending deliveries", op, tx=False)

    # -- maintenance -------------------------------------------------------------------

    async def orphan_check(self) -> list[dict[str, Any]]:
        async def op(conn: Conn) -> list[dict[str, Any]]:
            found = [dedupe_orphan(r[0], r[1], r[2]) for r in await conn.fetch(
                "SELECT d.mesh_id, d.client_message_id, d.broker_message_id"
                " FROM mesh.client_message_dedupe d"
                " LEFT JOIN mesh.message m ON m.id = d.broker_message_id"
                " WHERE m.id IS NULL AND d.history_available")]
            found += [delivery_orphan(r[0], r[1]) for r in await conn.fetch(
                "SELECT q.seq, q.message_id FROM mesh.delivery_queue q"
                " LEFT JOIN mesh.message m ON m.id = q.message_id WHERE m.id IS NULL")]
            return found
        return await self._db.run("checking for orphans", op)

    # -- blobs (shared files) ----------------------------------------------------------

    async def blob_begin(self, blob: Blob) -> Blob:
        async def op(conn: Conn) -> Blob:
            await conn.execute(f"INSERT INTO mesh.blob ({BLOB_COLUMNS})"  # noqa: S608
                               " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                               " ON CONFLICT (file_id) DO NOTHING", *blob_params(blob))
            return blob_from_row(await conn.fetchrow(
                f"SELECT {BLOB_COLUMNS} FROM mesh.blob WHERE file_id = $1", blob.file_id))  # noqa: S608
        return await self._db.run("recording an upload", op)

    async def get_blob(self, file_id: str) -> Blob | None:
        async def op(conn: Conn) -> Blob | None:
            row = await conn.fetchrow(
                f"SELECT {BLOB_COLUMNS} FROM mesh.blob WHERE file_id = $1", file_id)  # noqa: S608
            return None if row is None else blob_from_row(row)
        return await self._db.run("reading a blob", op, tx=False)

    async def blob_completed(self, file_id: str, now_ms: int) -> None:
        await self._changed_one("completing a blob",
                                "UPDATE mesh.blob SET completed_at = $1 WHERE file_id = $2"
                                " AND completed_at IS NULL", now_ms, file_id)

    async def list_blobs(self, mesh_id: str, pubkey: str) -> list[Blob]:
        async def op(conn: Conn) -> list[Blob]:
            rows = await conn.fetch(
                f"SELECT {BLOB_COLUMNS} FROM mesh.blob WHERE mesh_id = $1"  # noqa: S608
                " AND (uploader_pubkey = $2 OR strpos(recipients, $3) > 0"
                " OR (topic IS NOT NULL AND EXISTS (SELECT 1 FROM mesh.topic_subscription s"
                " JOIN mesh.member m ON m.id = s.member_id WHERE s.mesh_id = blob.mesh_id"
                " AND s.topic = blob.topic AND m.pubkey = $2 AND m.revoked_at IS NULL)))"
                " ORDER BY created_at DESC, file_id DESC LIMIT 1000",
                mesh_id, pubkey, f'"{pubkey}"')
            return [blob_from_row(r) for r in rows]
        return await self._db.run("listing blobs", op, tx=False)

    async def expire_blobs(self, now_ms: int, *, abandoned_after_ms: int) -> list[str]:
        async def op(conn: Conn) -> list[str]:
            rows = await conn.fetch(
                "DELETE FROM mesh.blob b USING mesh.mesh x WHERE x.id = b.mesh_id"
                " AND (b.created_at <= $1::bigint - x.message_retention_days::bigint * $2::bigint"
                " OR (b.completed_at IS NULL AND b.created_at <= $3::bigint))"
                " RETURNING b.file_id", now_ms, DAY_MS, now_ms - abandoned_after_ms)
            return [str(r[0]) for r in rows]
        return await self._db.run("expiring blobs", op)

    async def sweep(self, now_ms: int) -> SweepResult:
        async def op(conn: Conn) -> SweepResult:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _SWEEP_LOCK)
            expired = count(await conn.execute(
                "DELETE FROM mesh.client_message_dedupe WHERE expires_at IS NOT NULL"
                " AND expires_at <= $1", now_ms))
            nonces = count(await conn.execute(
                "DELETE FROM mesh.hello_nonce WHERE expires_at <= $1", now_ms))
            pruned = await conn.fetchval(
                "WITH old AS ("
                "  DELETE FROM mesh.message m USING mesh.mesh x WHERE x.id = m.mesh_id"
                "  AND m.created_at <= $1::bigint - x.message_retention_days::bigint * $2::bigint"
                "  RETURNING m.id"
                "), flipped AS ("
                "  UPDATE mesh.client_message_dedupe d SET history_available = FALSE"
                "  FROM old WHERE d.broker_message_id = old.id RETURNING 1"
                ") SELECT count(*) FROM old", now_ms, DAY_MS)
            return SweepResult(expired, int(pruned), nonces)
        return await self._db.run("sweeping", op)


async def _bumped(conn: Conn, mesh_id: str, topic: str, changed: bool) -> bool:
    """A subscription changed: the topic's membership moves to its next version."""
    if changed:
        await conn.execute("UPDATE mesh.topic SET membership_version = membership_version + 1"
                           " WHERE mesh_id = $1 AND name = $2", mesh_id, topic)
    return changed


async def _topic_state(conn: Conn, mesh_id: str, topic: str, *,
                       lock: bool = False) -> TopicState | None:
    """The topic's state; ``lock`` holds its row (FOR UPDATE) to the end of the
    transaction, so a subscribe or another epoch orders before or after the caller."""
    sql = ("SELECT membership_version, current_epoch FROM mesh.topic"
           " WHERE mesh_id = $1 AND name = $2")
    row = await conn.fetchrow(sql + " FOR UPDATE" if lock else sql, mesh_id, topic)
    if row is None:
        return None
    subscribers = frozenset(str(r[0]) for r in await conn.fetch(
        "SELECT m.pubkey FROM mesh.topic_subscription s JOIN mesh.member m ON m.id = s.member_id"
        " WHERE s.mesh_id = $1 AND s.topic = $2 AND m.revoked_at IS NULL", mesh_id, topic))
    return TopicState(int(row[0]), int(row[1]), subscribers)


async def _accept(conn: Conn, req: AcceptInput) -> AcceptOutcome:
    """R-BRK-10 steps 3-7 in one call of ``mesh.accept_message`` (migration 3), which is
    one statement and so one transaction; B2 refusals come back as SQLSTATE CM403/CM404."""
    try:
        row = await conn.fetchrow(
            "SELECT * FROM mesh.accept_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
            " $12, $13, $14, $15, $16, $17)",
            req.mesh_id, req.client_message_id, req.broker_message_id, req.fingerprint,
            req.destination_kind, req.destination_ref, req.now_ms, req.dedupe_expires_at,
            req.sender_member_id, req.sender_pubkey, req.sender_name, req.priority,
            req.reply_to, req.meta_json, req.body_json, req.body_hash, _MESH_LOCK_CLASS)
    except asyncpg.PostgresError as exc:
        refused = _b2_refusal(exc, req.destination_ref)
        if refused is None:
            raise
        raise refused from None
    assert row is not None, "accept_message returns one row"
    kind = AcceptKind(row[0])
    history = None if row[2] is None else str(row[2])
    recipients = tuple(zip((str(m) for m in row[6] or ()), (int(s) for s in row[7] or ()),
                           strict=True))
    return AcceptOutcome(kind, str(row[1]), history, bytes(row[3]), int(row[4]), bool(row[5]),
                         recipients)


async def _accept_sealed(conn: Conn, req: AcceptInput) -> AcceptOutcome:
    """A topic_box post, in a transaction: the epoch must still match the topic's
    membership (the topic row is held FOR SHARE, so a subscribe or unsubscribe waits for
    this accept to commit). A client_message_id the broker already has skips the check:
    ``accept_message`` answers it as a duplicate (or a conflict), as for any send."""
    row = await conn.fetchrow(
        "SELECT t.membership_version, t.current_epoch, e.membership_version,"
        " EXISTS (SELECT 1 FROM mesh.client_message_dedupe d WHERE d.mesh_id = t.mesh_id"
        " AND d.client_message_id = $4) FROM mesh.topic t LEFT JOIN mesh.topic_epoch e"
        " ON e.mesh_id = t.mesh_id AND e.topic = t.name AND e.epoch = $3"
        " WHERE t.mesh_id = $1 AND t.name = $2 FOR SHARE OF t",
        req.mesh_id, req.destination_ref, req.epoch, req.client_message_id)
    if row is not None and row[2] is not None and not row[3] and req.epoch is not None and (
            stale := stale_epoch(req.destination_ref, req.epoch, made_for=int(row[2]),
                                 membership_version=int(row[0]), current_epoch=int(row[1]))):
        raise stale
    return await _accept(conn, req)


def _b2_refusal(exc: asyncpg.PostgresError, ref: str) -> Exception | None:
    """The B2 error (R-BRK-5) that ``mesh.accept_message`` raised, or None for others: its
    SQLSTATE is CM403 (sender revoked) or CM404, whose message names the missing kind."""
    state = getattr(exc, "sqlstate", None)
    if state == "CM403":
        return b2_refusal("sender", ref)
    if state == "CM404":
        return b2_refusal(str(getattr(exc, "message", "")), ref)
    return None

