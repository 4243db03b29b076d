"""The broker's shared store: PostgreSQL through asyncpg, for several brokers at once.

Theory of operation.

*Layout.* Every table lives in the PostgreSQL schema ``mesh`` with the columns and
meaning of the SQLite store (``sqlite.py``, daemon-spec §4.3): ids are TEXT ULIDs, times
are BIGINT epoch milliseconds, ``meta``/``body`` are the JSON text exactly as accepted.
Text that is compared or ordered uses the "C" collation (``lower(x COLLATE "C")``,
``ORDER BY x COLLATE "C"``) so names fold and sort byte-wise, as SQLite does, whatever
the database's locale. ``delivery_queue`` adds the claim columns ``claimed_by`` and
``claim_expires_at`` (several brokers may fetch one member's rows).

*Migrations.* ``mesh.schema_migrations`` records the applied versions. Each pending
migration runs in its own transaction under ``pg_advisory_xact_lock``, re-checking its
version once the lock is held, so brokers starting together apply each one exactly once.

*Opening.* ``await PostgresBrokerStore.connect(dsn)`` opens the pool (2-10 connections)
and migrates at once. ``open_store`` is synchronous, so ``PostgresBrokerStore(dsn)`` is
lazy: :meth:`_pool` creates the pool on first use, under an ``asyncio.Lock``.

*Operations.* Every method is one call of :meth:`_run`: take a pooled connection, run
the operation in a transaction (READ COMMITTED), and translate driver errors into
:class:`~claudemesh.errors.StoreError` at this edge; typed errors raised inside roll the
transaction back and pass through. Deadlocks and serialization failures are retried.

*Accept (R-BRK-10).* One call of the SQL function ``mesh.accept_message`` (migration 3):
one round trip and one statement, hence one transaction. Inside it,
``INSERT ... ON CONFLICT DO NOTHING`` into the dedupe table, then
``SELECT ... FOR SHARE`` of the key. Under READ COMMITTED a second transaction inserting
the same key waits on the first one's uncommitted row: if the first commits, the insert
does nothing and the SELECT sees the winner (a duplicate or a conflict, answered with a
rollback); if it rolls back (B2 refused it), the second one's insert goes through. So of
any number of concurrent accepts of one key exactly one is CREATED, and a B2 failure
(raised as SQLSTATE CM403/CM404, translated back into our errors) leaves no dedupe row.
Recipients are resolved as in ``sqlite.py`` (the sender's row is read ``FOR SHARE`` so a
concurrent revocation orders before or after the whole accept), and the deliveries are
one ``INSERT ... SELECT unnest(members)``.

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

*Notifications.* :class:`PgNotifier` is LISTEN/NOTIFY on the channel ``claudemesh`` over
one dedicated connection (not from the pool), re-opened with backoff when it drops.
Every broker, the publisher included, receives each notification. Payloads are JSON
``{"kind", "payload"}`` under PostgreSQL's 8000-byte limit; a long ``deliver`` member list
is split over several notifications. Notifications are wake-ups only (base.py): a lost
one delays a push until the next read, it never loses a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]

from claudemesh.broker.store import redact_location
from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    AcceptOutcome,
    BrokerStore,
    Delivery,
    Handler,
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
    ClaudemeshError,
    DisplayNameTaken,
    InviteRejected,
    MemberAlreadyConnected,
    MemberRevoked,
    MeshExists,
    ShuttingDown,
    StoreCorrupt,
    StoreError,
)

__all__ = ["CHANNEL", "PG_MIGRATIONS", "PgNotifier", "PostgresBrokerStore"]

T = TypeVar("T")
log = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000
CHANNEL: Final = "claudemesh"
NOTIFY_LIMIT: Final = 7_900  # bytes; PostgreSQL refuses payloads of 8000 and more
_MIGRATION_LOCK: Final = 0x636C_6D65_7368_0001  # one bigint key: "clmesh" + 1
_LOCK_CLASS: Final = 0x636D_0001  # int4 pair keys: (class, what)
_MEMBER_LOCK_CLASS: Final = 0x636D_0002  # (class, hashtext(mesh_id/member_id))
_MESH_LOCK_CLASS: Final = 0x636D_0003  # (class, hashtext(mesh_id)): accept commit order
_PRESENCE_EXPIRY_LOCK: Final = 1
_SWEEP_LOCK: Final = 2
_ATTEMPTS: Final = 4  # a transaction that hit a deadlock or serialization failure
_CORRUPT_STATES: Final = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted
_RECONNECT_MAX_S: Final = 5.0
_PING_EVERY_S: Final = 30.0

PG_MIGRATIONS: Final = (
    """
    CREATE TABLE mesh.mesh (
      id                     TEXT PRIMARY KEY,
      name                   TEXT NOT NULL CONSTRAINT mesh_name_unique UNIQUE,
      created_at             BIGINT NOT NULL,
      dedupe_mode            TEXT NOT NULL
                             CHECK (dedupe_mode IN ('retention_scoped','permanent')),
      dedupe_retention_days  INTEGER NOT NULL CHECK (dedupe_retention_days >= 3),
      message_retention_days INTEGER NOT NULL CHECK (message_retention_days >= 1),
      connection_policy      TEXT NOT NULL
                             CHECK (connection_policy IN ('prefer_newest','prefer_oldest')),
      invite_pubkey          TEXT NOT NULL,
      invite_secret_key      TEXT NOT NULL
    );
    CREATE TABLE mesh.member (
      id           TEXT PRIMARY KEY,
      mesh_id      TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      pubkey       TEXT NOT NULL,
      display_name TEXT NOT NULL,
      joined_at    BIGINT NOT NULL,
      revoked_at   BIGINT,
      summary      TEXT,
      status       TEXT NOT NULL DEFAULT 'idle' CHECK (status IN ('idle','working','dnd')),
      visible      BOOLEAN NOT NULL DEFAULT TRUE,
      avatar       TEXT,
      title        TEXT,
      bio          TEXT,
      capabilities TEXT NOT NULL DEFAULT '[]',
      CONSTRAINT member_mesh_pubkey UNIQUE (mesh_id, pubkey)
    );
    CREATE UNIQUE INDEX member_live_name ON mesh.member (mesh_id, lower(display_name COLLATE "C"))
      WHERE revoked_at IS NULL;
    CREATE INDEX member_revoked ON mesh.member (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE mesh.invite (
      id            TEXT PRIMARY KEY,
      mesh_id       TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      secret_sha256 TEXT NOT NULL,
      created_at    BIGINT NOT NULL,
      expires_at    BIGINT NOT NULL,
      max_uses      INTEGER NOT NULL CHECK (max_uses >= 1),
      uses          INTEGER NOT NULL DEFAULT 0,
      revoked_at    BIGINT
    );
    CREATE TABLE mesh.hello_nonce (
      pubkey     TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (pubkey, nonce)
    );
    CREATE INDEX hello_nonce_expires ON mesh.hello_nonce (expires_at);
    CREATE TABLE mesh.topic (
      mesh_id    TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      name       TEXT NOT NULL,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, name)
    );
    CREATE TABLE mesh.topic_subscription (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES mesh.member(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, topic, member_id),
      FOREIGN KEY (mesh_id, topic) REFERENCES mesh.topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE INDEX topic_subscription_member ON mesh.topic_subscription (member_id);
    CREATE TABLE mesh.group_member (
      mesh_id    TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      group_name TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES mesh.member(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, group_name, member_id)
    );
    CREATE INDEX group_member_member ON mesh.group_member (member_id);
    CREATE TABLE mesh.client_message_dedupe (
      mesh_id             TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      client_message_id   TEXT NOT NULL,
      broker_message_id   TEXT NOT NULL,
      request_fingerprint BYTEA NOT NULL CHECK (octet_length(request_fingerprint) = 32),
      destination_kind    TEXT NOT NULL CHECK (destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      first_seen_at       BIGINT NOT NULL,
      expires_at          BIGINT,
      history_available   BOOLEAN NOT NULL DEFAULT TRUE,
      PRIMARY KEY (mesh_id, client_message_id)
    );
    CREATE INDEX client_message_dedupe_expires_idx ON mesh.client_message_dedupe (expires_at)
      WHERE expires_at IS NOT NULL;
    CREATE INDEX client_message_dedupe_message ON mesh.client_message_dedupe (broker_message_id);
    CREATE TABLE mesh.message (
      id                TEXT PRIMARY KEY,
      mesh_id           TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
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
      created_at        BIGINT NOT NULL
    );
    CREATE INDEX message_created ON mesh.message (created_at);
    CREATE TABLE mesh.message_history (
      seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      mesh_id    TEXT NOT NULL,
      message_id TEXT NOT NULL UNIQUE REFERENCES mesh.message(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL
    );
    CREATE TABLE mesh.delivery_queue (
      seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      mesh_id             TEXT NOT NULL,
      message_id          TEXT NOT NULL REFERENCES mesh.message(id) ON DELETE CASCADE,
      recipient_member_id TEXT NOT NULL,
      created_at          BIGINT NOT NULL,
      acked_at            BIGINT,
      claimed_by          TEXT,
      claim_expires_at    BIGINT,
      UNIQUE (message_id, recipient_member_id)
    );
    CREATE INDEX delivery_pending ON mesh.delivery_queue (recipient_member_id, seq)
      WHERE acked_at IS NULL;
    """,
    # 2: presence and broker liveness live in the store (issue 6: several brokers)
    """
    CREATE TABLE mesh.broker (
      id           TEXT PRIMARY KEY,
      started_at   BIGINT NOT NULL,
      last_seen_at BIGINT NOT NULL
    );
    CREATE TABLE mesh.presence (
      mesh_id          TEXT NOT NULL,
      member_id        TEXT NOT NULL,
      session_id       TEXT NOT NULL,
      broker_id        TEXT NOT NULL,
      state            TEXT NOT NULL CHECK (state IN ('online','leased')),
      since            BIGINT NOT NULL,
      lease_expires_at BIGINT,
      PRIMARY KEY (mesh_id, member_id)
    );
    CREATE INDEX presence_lease ON mesh.presence (state, lease_expires_at);
    """,
    # 3: the accept (R-BRK-10, §4.7.2) as one server-side call: one round trip, not ten
    """
    CREATE FUNCTION mesh.accept_message(
      p_mesh_id TEXT, p_cmid TEXT, p_bmid TEXT, p_fp BYTEA, p_kind TEXT, p_ref TEXT,
      p_now BIGINT, p_expires BIGINT, p_sender TEXT, p_sender_pubkey TEXT,
      p_sender_name TEXT, p_priority TEXT, p_reply_to TEXT, p_meta TEXT, p_body TEXT,
      p_body_hash TEXT, p_lock_class INTEGER)
    RETURNS TABLE (o_kind TEXT, o_bmid TEXT, o_history BIGINT, o_fp BYTEA, o_first_seen BIGINT,
                   o_history_available BOOLEAN, o_members TEXT[], o_seqs BIGINT[])
    LANGUAGE plpgsql AS $$
    DECLARE
      claim RECORD;
      hist BIGINT;
      members TEXT[];
      sender_revoked BIGINT;
      target TEXT;
    BEGIN
      LOOP  -- steps 3-4: claim the key, then read whoever holds it
        INSERT INTO mesh.client_message_dedupe (mesh_id, client_message_id,
          broker_message_id, request_fingerprint, destination_kind, destination_ref,
          first_seen_at, expires_at)
        VALUES (p_mesh_id, p_cmid, p_bmid, p_fp, p_kind, p_ref, p_now, p_expires)
        ON CONFLICT (mesh_id, client_message_id) DO NOTHING;
        SELECT d.broker_message_id AS bmid, d.request_fingerprint AS fp,
               d.history_available AS available, d.first_seen_at AS first_seen
          INTO claim FROM mesh.client_message_dedupe d
         WHERE d.mesh_id = p_mesh_id AND d.client_message_id = p_cmid FOR SHARE;
        EXIT WHEN FOUND;  -- else the winner's row was swept in between: claim again
      END LOOP;
      IF claim.bmid <> p_bmid THEN  -- step 5: someone else's row; end without writes
        SELECT h.seq INTO hist FROM mesh.message_history h WHERE h.message_id = claim.bmid;
        RETURN QUERY SELECT CASE WHEN claim.fp = p_fp THEN 'duplicate' ELSE 'conflict' END,
          claim.bmid, hist, claim.fp, claim.first_seen, claim.available,
          NULL::TEXT[], NULL::BIGINT[];
        RETURN;
      END IF;
      -- step 6, B2: raising rolls the claim back with everything else
      SELECT m.revoked_at INTO sender_revoked FROM mesh.member m WHERE m.id = p_sender
         FOR SHARE;
      IF NOT FOUND OR sender_revoked IS NOT NULL THEN
        RAISE EXCEPTION 'sender' USING ERRCODE = 'CM403';
      END IF;
      IF p_kind = 'dm' THEN
        SELECT m.id INTO target FROM mesh.member m
         WHERE m.mesh_id = p_mesh_id AND m.pubkey = p_ref AND m.revoked_at IS NULL;
        IF target IS NULL THEN
          RAISE EXCEPTION 'dm' USING ERRCODE = 'CM404';
        END IF;
        members := ARRAY[target];
      ELSIF p_ref = '*' THEN
        SELECT coalesce(array_agg(m.id ORDER BY m.id COLLATE "C"), '{}') INTO members
          FROM mesh.member m WHERE m.mesh_id = p_mesh_id AND m.revoked_at IS NULL;
        members := array_remove(members, p_sender);
      ELSIF left(p_ref, 1) = '@' THEN
        SELECT coalesce(array_agg(g.member_id ORDER BY g.member_id COLLATE "C"), '{}')
          INTO members FROM mesh.group_member g JOIN mesh.member m ON m.id = g.member_id
         WHERE g.mesh_id = p_mesh_id AND g.group_name = substr(p_ref, 2)
           AND m.revoked_at IS NULL;
        IF cardinality(members) = 0 THEN
          RAISE EXCEPTION 'group' USING ERRCODE = 'CM404';
        END IF;
        members := array_remove(members, p_sender);
      ELSE
        PERFORM 1 FROM mesh.topic t WHERE t.mesh_id = p_mesh_id AND t.name = p_ref;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'topic' USING ERRCODE = 'CM404';
        END IF;
        SELECT coalesce(array_agg(s.member_id ORDER BY s.member_id COLLATE "C"), '{}')
          INTO members FROM mesh.topic_subscription s JOIN mesh.member m
            ON m.id = s.member_id
         WHERE s.mesh_id = p_mesh_id AND s.topic = p_ref AND m.revoked_at IS NULL;
        members := array_remove(members, p_sender);
      END IF;
      -- the mesh's commit order (see Ordering), held to the end of the transaction
      PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_mesh_id));
      -- step 7: the side effects
      INSERT INTO mesh.message (id, mesh_id, client_message_id, sender_member_id,
        sender_pubkey, sender_name, destination_kind, destination_ref, priority, reply_to,
        meta, body, body_hash, created_at)
      VALUES (p_bmid, p_mesh_id, p_cmid, p_sender, p_sender_pubkey, p_sender_name, p_kind,
        p_ref, p_priority, p_reply_to, p_meta, p_body, p_body_hash, p_now);
      INSERT INTO mesh.message_history (mesh_id, message_id, created_at)
      VALUES (p_mesh_id, p_bmid, p_now) RETURNING seq INTO hist;
      RETURN QUERY
        WITH queued AS (
          INSERT INTO mesh.delivery_queue (mesh_id, message_id, recipient_member_id,
                                           created_at)
          SELECT p_mesh_id, p_bmid, r.id, p_now
            FROM unnest(members) WITH ORDINALITY AS r(id, n) ORDER BY r.n
          RETURNING seq, recipient_member_id)
        SELECT 'created', p_bmid, hist, p_fp, p_now, TRUE,
          (SELECT array_agg(q.recipient_member_id ORDER BY q.recipient_member_id COLLATE "C")
             FROM queued q),
          (SELECT array_agg(q.seq ORDER BY q.recipient_member_id COLLATE "C") FROM queued q);
    END
    $$;
    """,
    # 4: the sessions a member publishes (member_sessions), a JSON list
    """
    ALTER TABLE mesh.member ADD COLUMN sessions TEXT NOT NULL DEFAULT '[]';
    """,
)

_MEMBER_COLUMNS: Final = ("m.id, m.mesh_id, m.pubkey, m.display_name, m.joined_at, m.revoked_at,"
                          " m.summary, m.status, m.visible, m.avatar, m.title, m.bio,"
                          " m.capabilities, m.sessions")
_MEMBER_GROUPS: Final = ("ARRAY(SELECT g.group_name FROM mesh.group_member g"
                         " WHERE g.member_id = m.id ORDER BY g.group_name COLLATE \"C\")")
_MEMBER_SELECT: Final = f"SELECT {_MEMBER_COLUMNS}, {_MEMBER_GROUPS} FROM mesh.member m"  # noqa: S608
_MESH_COLUMNS: Final = ("id, name, created_at, dedupe_mode, dedupe_retention_days,"
                        " message_retention_days, connection_policy, invite_pubkey")
_PROFILE_FIELDS: Final = ("summary", "status", "visible", "avatar", "title", "bio",
                          "capabilities", "sessions")


class _Row(Protocol):
    """What we use of an ``asyncpg.Record``."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...


class _Conn(Protocol):
    """What we use of an ``asyncpg.Connection``."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[_Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> _Row | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


@dataclass(slots=True)
class _Gate:
    """One sender's turn: a FIFO lock and how many accepts use it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _Retry(Exception):
    """Raised inside an operation: roll back and run the whole operation again."""


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Translate asyncpg and OS errors into StoreError at the store's edge."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) in _CORRUPT_STATES:
            raise StoreCorrupt(f"{action}: {exc}") from exc
        raise StoreError(f"{action}: {_describe(exc)}") from exc
    except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
        raise StoreError(f"{action}: {_describe(exc)}") from exc
    except OSError as exc:  # includes TimeoutError
        raise StoreError(f"{action}: {exc.strerror or exc or type(exc).__name__}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _count(status: str) -> int:
    """The row count of a command tag: ``UPDATE 3``, ``INSERT 0 1``, ``DELETE 0``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _member(row: _Row) -> Member:
    """A row of ``_MEMBER_COLUMNS``, optionally followed by the groups array."""
    return Member(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]),
                  row[9], row[10], row[11], tuple(json.loads(row[12])),
                  tuple(row[14]) if len(row) > 14 else (), sessions_from_json(row[13]))


def _delivery(r: _Row) -> Delivery:
    return Delivery(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else str(r[5]),
                    r[6], r[7], r[8], r[9], r[10], r[11],
                    None if r[12] is None else json.loads(r[12]), json.loads(r[13]),
                    r[14], r[15])


async def _migrate(conn: _Conn, migrations: Sequence[str] = PG_MIGRATIONS) -> None:
    """Apply the pending migrations, each in its own transaction under the advisory lock.

    ``migrations`` is this build's list; tests pass a prefix to build an older schema.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS mesh;"
            " CREATE TABLE IF NOT EXISTS mesh.schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_at BIGINT NOT NULL"
            " DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)")
    for version, script in enumerate(migrations, start=1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            newest = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM mesh.schema_migrations")
            if int(newest) > len(migrations):
                raise StoreError(f"database schema {newest} is newer than this build knows"
                                 f" ({len(migrations)})")
            if await conn.fetchval("SELECT 1 FROM mesh.schema_migrations WHERE version = $1",
                                   version):
                continue
            await conn.execute(script)
            await conn.execute("INSERT INTO mesh.schema_migrations (version) VALUES ($1)",
                               version)
            log.info("store_migrated", extra={"version": version})


class PostgresBrokerStore(BrokerStore):
    """The broker store on PostgreSQL; several brokers may share one database."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool_handle: Any = None  # asyncpg.Pool, created by _pool()
        self._lock = asyncio.Lock()
        self._closed = False
        self._notifier = PgNotifier(dsn, self)
        self._gates: dict[tuple[str, str], _Gate] = {}

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2,
                      max_size: int = 10) -> PostgresBrokerStore:
        """Open the pool and apply the migrations now (rather than on first use)."""
        store = cls(dsn, min_size=min_size, max_size=max_size)
        try:
            await store._pool()
        except BaseException:
            await store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"PostgresBrokerStore({redact_location(self._dsn)!r})"

    async def _pool(self) -> Any:
        """The connection pool, created and migrated on first use."""
        if self._closed:
            raise ShuttingDown("the broker store is closed")
        if self._pool_handle is not None:
            return self._pool_handle
        async with self._lock:
            if self._closed:
                raise ShuttingDown("the broker store is closed")
            if self._pool_handle is None:
                self._pool_handle = await self._open_pool()
        return self._pool_handle

    async def _open_pool(self) -> Any:
        where = redact_location(self._dsn)
        with _store_errors(f"opening the PostgreSQL store at {where}"):
            try:
                pool = await asyncpg.create_pool(
                    self._dsn, min_size=self._min_size, max_size=self._max_size, timeout=10,
                    server_settings={"application_name": "claudemesh-broker"})
            except ValueError as exc:  # a malformed DSN
                raise StoreError(f"invalid PostgreSQL location {where}: {exc}") from exc
            try:
                async with pool.acquire() as conn:
                    await _migrate(conn)
            except BaseException:
                pool.terminate()
                raise
        return pool

    async def _run(self, action: str, fn: Callable[[_Conn], Awaitable[T]], *,
                   tx: bool = True) -> T:
        """Run ``fn`` on a pooled connection, in a transaction unless ``tx`` is False."""
        pool = await self._pool()
        for attempt in range(_ATTEMPTS):
            try:
                with _store_errors(action):
                    async with pool.acquire() as conn:
                        if not tx:
                            return await fn(conn)
                        async with conn.transaction():
                            return await fn(conn)
            except _Retry:
                pass
            except StoreError as exc:
                if not isinstance(exc.__cause__, asyncpg.exceptions.TransactionRollbackError):
                    raise
                if attempt == _ATTEMPTS - 1:
                    raise
            log.info("store_retry", extra={"action": action, "attempt": attempt + 1})
            await asyncio.sleep(0.005 * (attempt + 1))
        raise StoreError(f"{action}: still conflicting after {_ATTEMPTS} attempts")

    async def close(self) -> None:
        self._closed = True
        await self._notifier.close()
        async with self._lock:
            pool, self._pool_handle = self._pool_handle, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):  # incl. timeout
                pool.terminate()

    def notifier(self) -> Notifier:
        return self._notifier

    # -- meshes, invites, members ------------------------------------------------------

    async def create_mesh(self, mesh: Mesh, invite_secret_key: str) -> Mesh:
        async def op(conn: _Conn) -> Mesh:
            status = await conn.execute(
                f"INSERT INTO mesh.mesh ({_MESH_COLUMNS}, invite_secret_key)"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                mesh.id, mesh.name, mesh.created_at, mesh.dedupe_mode,
                mesh.dedupe_retention_days, mesh.message_retention_days,
                mesh.connection_policy, mesh.invite_pubkey, invite_secret_key)
            if _count(status) == 0:
                raise MeshExists(f"a mesh called {mesh.name!r} already exists")
            return mesh
        return await self._run("creating a mesh", op)

    async def get_mesh(self, mesh_ref: str) -> Mesh | None:
        async def op(conn: _Conn) -> Mesh | None:
            row = await conn.fetchrow(
                f"SELECT {_MESH_COLUMNS} FROM mesh.mesh WHERE id = $1 OR name = $1"  # noqa: S608
                " ORDER BY id = $1 DESC LIMIT 1", mesh_ref)
            return None if row is None else Mesh(*(row[i] for i in range(8)))
        return await self._run("reading a mesh", op, tx=False)

    async def mesh_invite_key(self, mesh_id: str) -> str:
        async def op(conn: _Conn) -> str:
            key = await conn.fetchval("SELECT invite_secret_key FROM mesh.mesh WHERE id = $1",
                                      mesh_id)
            if key is None:
                raise InviteRejected("the invite's mesh does not exist on this broker")
            return str(key)
        return await self._run("reading a mesh's invite key", op, tx=False)

    async def create_invite(self, invite: NewInvite, *, secret_sha256: str, now_ms: int) -> None:
        async def op(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO mesh.invite (id, mesh_id, secret_sha256, created_at, expires_at,"
                " max_uses) VALUES ($1, $2, $3, $4, $5, $6)",
                invite.invite_id, invite.mesh_id, secret_sha256, now_ms, invite.expires_at,
                invite.max_uses)
        await self._run("creating an invite", op, tx=False)

    async def redeem_invite(self, *, invite_id: str, mesh_id: str, secret_sha256: str,
                            member: Member, now_ms: int) -> Member:
        async def op(conn: _Conn) -> Member:
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
                    raise _Retry from exc
                raise
            await conn.execute("UPDATE mesh.invite SET uses = uses + 1 WHERE id = $1", invite_id)
            return member
        return await self._run("redeeming an invite", op)

    async def get_member(self, mesh_id: str, pubkey: str) -> Member | None:
        async def op(conn: _Conn) -> Member | None:
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.mesh_id = $1 AND m.pubkey = $2",
                                      mesh_id, pubkey)
            return None if row is None else _member(row)
        return await self._run("reading a member", op, tx=False)

    async def revoke_member(self, pubkey: str, *, mesh_id: str | None, now_ms: int) -> list[Member]:
        async def op(conn: _Conn) -> list[Member]:
            if mesh_id:
                rows = await conn.fetch(
                    f"UPDATE mesh.member m SET revoked_at = $1 WHERE m.pubkey = $2"  # noqa: S608
                    f" AND m.revoked_at IS NULL AND m.mesh_id = $3 RETURNING {_MEMBER_COLUMNS}",
                    now_ms, pubkey, mesh_id)
            else:
                rows = await conn.fetch(
                    f"UPDATE mesh.member m SET revoked_at = $1 WHERE m.pubkey = $2"  # noqa: S608
                    f" AND m.revoked_at IS NULL RETURNING {_MEMBER_COLUMNS}", now_ms, pubkey)
            return sorted((_member(r) for r in rows), key=lambda m: (m.joined_at, m.id))
        return await self._run("revoking a member", op)

    async def revoked_since(self, since_ms: int) -> list[Member]:
        async def op(conn: _Conn) -> list[Member]:
            rows = await conn.fetch(
                f"SELECT {_MEMBER_COLUMNS} FROM mesh.member m"  # noqa: S608
                " WHERE m.revoked_at IS NOT NULL AND m.revoked_at >= $1"
                " ORDER BY m.revoked_at, m.id COLLATE \"C\"", since_ms)
            return [_member(r) for r in rows]
        return await self._run("reading revocations", op, tx=False)

    async def list_members(self, mesh_id: str) -> list[Member]:
        async def op(conn: _Conn) -> list[Member]:
            rows = await conn.fetch(
                f"SELECT {_MEMBER_COLUMNS}, ARRAY(SELECT g.group_name"  # noqa: S608
                " FROM mesh.group_member g WHERE g.member_id = m.id AND g.mesh_id = m.mesh_id"
                " ORDER BY g.group_name COLLATE \"C\") FROM mesh.member m"
                " WHERE m.mesh_id = $1 AND m.revoked_at IS NULL"
                " ORDER BY m.joined_at, m.id COLLATE \"C\"", mesh_id)
            return [_member(r) for r in rows]
        return await self._run("listing members", op, tx=False)

    async def set_profile(self, member_id: str, fields: dict[str, Any]) -> Member:
        updates: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "capabilities":
                updates[name] = json.dumps(list(value))
            elif name == "sessions":
                updates[name] = sessions_to_json(value)
            elif name == "visible":
                updates[name] = bool(int(value))
            elif name in _PROFILE_FIELDS:
                updates[name] = value

        async def op(conn: _Conn) -> Member:
            if updates:
                assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(updates, 2))
                await conn.execute(f"UPDATE mesh.member SET {assignments} WHERE id = $1",  # noqa: S608
                                   member_id, *updates.values())
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.id = $1", member_id)
            if row is None:
                raise StoreError(f"setting a profile: no member {member_id}")
            return _member(row)
        return await self._run("setting a profile", op)

    async def remember_nonce(self, pubkey: str, nonce: str, *, expires_at_ms: int) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "INSERT INTO mesh.hello_nonce (pubkey, nonce, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING", pubkey, nonce, expires_at_ms)) == 1
        return await self._run("remembering a nonce", op, tx=False)

    # -- topics and groups -------------------------------------------------------------

    async def subscribe(self, mesh_id: str, member_id: str, topic: str, now_ms: int) -> bool:
        async def op(conn: _Conn) -> bool:
            await conn.execute("INSERT INTO mesh.topic (mesh_id, name, created_at)"
                               " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                               mesh_id, topic, now_ms)
            return _count(await conn.execute(
                "INSERT INTO mesh.topic_subscription (mesh_id, topic, member_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                mesh_id, topic, member_id, now_ms)) == 1
        return await self._run("subscribing", op)

    async def unsubscribe(self, mesh_id: str, member_id: str, topic: str) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "DELETE FROM mesh.topic_subscription WHERE mesh_id = $1 AND topic = $2"
                " AND member_id = $3", mesh_id, topic, member_id)) == 1
        return await self._run("unsubscribing", op, tx=False)

    async def list_topics(self, mesh_id: str, member_id: str) -> list[dict[str, Any]]:
        async def op(conn: _Conn) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT t.name, count(s.member_id), coalesce(bool_or(s.member_id = $1), false)"
                " FROM mesh.topic t LEFT JOIN mesh.topic_subscription s"
                " ON s.mesh_id = t.mesh_id AND s.topic = t.name WHERE t.mesh_id = $2"
                " GROUP BY t.name ORDER BY t.name COLLATE \"C\"", member_id, mesh_id)
            return [{"topic": r[0], "subscribers": int(r[1]), "subscribed": bool(r[2])}
                    for r in rows]
        return await self._run("listing topics", op, tx=False)

    async def join_group(self, mesh_id: str, member_id: str, group: str, now_ms: int) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "INSERT INTO mesh.group_member (mesh_id, group_name, member_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                mesh_id, group, member_id, now_ms)) == 1
        return await self._run("joining a group", op, tx=False)

    async def leave_group(self, mesh_id: str, member_id: str, group: str) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "DELETE FROM mesh.group_member WHERE mesh_id = $1 AND group_name = $2"
                " AND member_id = $3", mesh_id, group, member_id)) == 1
        return await self._run("leaving a group", op, tx=False)

    # -- accept (§4.7.2) and delivery --------------------------------------------------

    async def accept(self, request: AcceptInput) -> AcceptOutcome:
        async with self._sender_turn(request.mesh_id, request.sender_member_id):
            return await self._run("accepting a message",
                                   lambda conn: _accept(conn, request), tx=False)

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
        async def read(conn: _Conn) -> list[Delivery]:
            rows = await conn.fetch(
                "SELECT d.seq, d.recipient_member_id, m.mesh_id, m.id, m.client_message_id,"
                " h.seq, m.sender_pubkey, m.sender_name, m.destination_kind, m.destination_ref,"
                " m.priority, m.reply_to, m.meta, m.body, m.body_hash, m.created_at"
                " FROM mesh.delivery_queue d JOIN mesh.message m ON m.id = d.message_id"
                " LEFT JOIN mesh.message_history h ON h.message_id = m.id"
                " WHERE d.recipient_member_id = $1 AND d.acked_at IS NULL AND d.seq > $2"
                " ORDER BY d.seq LIMIT $3", member_id, after, limit)
            return [_delivery(r) for r in rows]

        async def claim(conn: _Conn) -> list[Delivery]:
            rows = await conn.fetch(
                "WITH picked AS ("
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
                ") SELECT c.seq, c.recipient_member_id, m.mesh_id, m.id, m.client_message_id,"
                " h.seq, m.sender_pubkey, m.sender_name, m.destination_kind, m.destination_ref,"
                " m.priority, m.reply_to, m.meta, m.body, m.body_hash, m.created_at"
                " FROM claimed c JOIN mesh.message m ON m.id = c.message_id"
                " LEFT JOIN mesh.message_history h ON h.message_id = m.id ORDER BY c.seq",
                member_id, after, limit, session_id, now_ms, lease_ms)
            return [_delivery(r) for r in rows]

        if not session_id:
            return await self._run("reading deliveries", read, tx=False)
        return await self._run("claiming deliveries", claim)

    async def ack_deliveries(self, member_id: str, delivery_ids: list[int], now_ms: int) -> int:
        async def op(conn: _Conn) -> int:
            return _count(await conn.execute(
                "UPDATE mesh.delivery_queue SET acked_at = $1 WHERE recipient_member_id = $2"
                " AND acked_at IS NULL AND seq = ANY($3::bigint[])",
                now_ms, member_id, list(delivery_ids)))
        return await self._run("acking deliveries", op, tx=False)

    # -- presence and brokers ----------------------------------------------------------

    async def broker_heartbeat(self, broker_id: str, *, now_ms: int) -> None:
        async def op(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO mesh.broker (id, started_at, last_seen_at) VALUES ($1, $2, $2)"
                " ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                broker_id, now_ms)
        await self._run("recording a heartbeat", op, tx=False)

    async def presence_attach(self, mesh_id: str, member_id: str, *, broker_id: str,
                              session_id: str, now_ms: int, prefer_oldest: bool,
                              dead_after_ms: int) -> PresenceChange:
        async def op(conn: _Conn) -> PresenceChange:
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                               _MEMBER_LOCK_CLASS, f"{mesh_id}/{member_id}")
            row = await conn.fetchrow(
                "SELECT p.session_id, p.broker_id, p.state, b.last_seen_at FROM mesh.presence p"
                " LEFT JOIN mesh.broker b ON b.id = p.broker_id"
                " WHERE p.mesh_id = $1 AND p.member_id = $2 FOR UPDATE OF p",
                mesh_id, member_id)
            change = _change(row, now_ms, dead_after_ms)
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
        return await self._run("attaching presence", op)

    async def presence_detach(self, mesh_id: str, member_id: str, *, session_id: str,
                              lease_until_ms: int) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "UPDATE mesh.presence SET state = 'leased', lease_expires_at = $1"
                " WHERE mesh_id = $2 AND member_id = $3 AND session_id = $4"
                " AND state = 'online'", lease_until_ms, mesh_id, member_id, session_id)) == 1
        return await self._run("detaching presence", op, tx=False)

    async def presence_drop(self, mesh_id: str, member_id: str) -> bool:
        async def op(conn: _Conn) -> bool:
            return _count(await conn.execute(
                "DELETE FROM mesh.presence WHERE mesh_id = $1 AND member_id = $2",
                mesh_id, member_id)) == 1
        return await self._run("dropping presence", op, tx=False)

    async def presence_expired(self, now_ms: int, *, dead_after_ms: int,
                               lease_ms: int) -> list[tuple[str, str]]:
        async def op(conn: _Conn) -> list[tuple[str, str]]:
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
        return await self._run("expiring presence", op)

    async def presence_online(self, mesh_id: str) -> set[str]:
        async def op(conn: _Conn) -> set[str]:
            return {str(r[0]) for r in await conn.fetch(
                "SELECT member_id FROM mesh.presence WHERE mesh_id = $1", mesh_id)}
        return await self._run("reading presence", op, tx=False)

    async def get_member_by_id(self, member_id: str) -> Member | None:
        async def op(conn: _Conn) -> Member | None:
            row = await conn.fetchrow(f"{_MEMBER_SELECT} WHERE m.id = $1", member_id)
            return None if row is None else _member(row)
        return await self._run("reading a member", op, tx=False)

    # -- maintenance -------------------------------------------------------------------

    async def orphan_check(self) -> list[dict[str, Any]]:
        async def op(conn: _Conn) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = [
                {"kind": "dedupe_without_message", "mesh_id": r[0], "client_message_id": r[1],
                 "broker_message_id": r[2]} for r in await conn.fetch(
                    "SELECT d.mesh_id, d.client_message_id, d.broker_message_id"
                    " FROM mesh.client_message_dedupe d"
                    " LEFT JOIN mesh.message m ON m.id = d.broker_message_id"
                    " WHERE m.id IS NULL AND d.history_available")]
            found += [{"kind": "delivery_without_message", "delivery_id": r[0],
                       "broker_message_id": r[1]} for r in await conn.fetch(
                "SELECT q.seq, q.message_id FROM mesh.delivery_queue q"
                " LEFT JOIN mesh.message m ON m.id = q.message_id WHERE m.id IS NULL")]
            return found
        return await self._run("checking for orphans", op)

    async def sweep(self, now_ms: int) -> SweepResult:
        async def op(conn: _Conn) -> SweepResult:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _SWEEP_LOCK)
            expired = _count(await conn.execute(
                "DELETE FROM mesh.client_message_dedupe WHERE expires_at IS NOT NULL"
                " AND expires_at <= $1", now_ms))
            nonces = _count(await conn.execute(
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
        return await self._run("sweeping", op)


def _change(row: _Row | None, now_ms: int, dead_after_ms: int) -> PresenceChange:
    """The presence before an attach; an online row of a silent broker counts as leased."""
    if row is None:
        return PresenceChange(None, None, None)
    session, broker, state, last_seen = row[0], row[1], row[2], row[3]
    if state == "online" and (last_seen is None or last_seen < now_ms - dead_after_ms):
        state = "leased"
    return PresenceChange(session, broker, state)


async def _accept(conn: _Conn, req: AcceptInput) -> AcceptOutcome:
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


def _b2_refusal(exc: asyncpg.PostgresError, ref: str) -> Exception | None:
    """The B2 error (R-BRK-5) that ``mesh.accept_message`` raised, or None for others: its
    SQLSTATE is CM403 (sender revoked) or CM404, whose message names the missing kind."""
    state = getattr(exc, "sqlstate", None)
    if state == "CM403":
        return b2_refusal("sender", ref)
    if state == "CM404":
        return b2_refusal(str(getattr(exc, "message", "")), ref)
    return None


# -- notifications -------------------------------------------------------------------------


def _encode(kind: str, payload: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, "payload": payload}, separators=(",", ":"))


def _notifications(kind: str, payload: dict[str, Any]) -> list[str]:
    """The payload as NOTIFY texts under the limit; a long ``deliver`` list is halved."""
    text = _encode(kind, payload)
    if len(text.encode()) <= NOTIFY_LIMIT:
        return [text]
    members = payload.get("member_ids")
    if kind != "deliver" or not isinstance(members, list) or len(members) < 2:
        raise ValueError(f"a {kind!r} notification of {len(text.encode())} bytes does not fit"
                         f" in one NOTIFY ({NOTIFY_LIMIT} bytes)")
    half = len(members) // 2
    return (_notifications(kind, {**payload, "member_ids": members[:half]})
            + _notifications(kind, {**payload, "member_ids": members[half:]}))


def _merged(batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The batch in order, with every ``deliver`` of one mesh folded into its first one."""
    out: list[tuple[str, dict[str, Any]]] = []
    delivers: dict[Any, tuple[list[Any], set[Any]]] = {}
    for kind, payload in batch:
        members = payload.get("member_ids")
        if kind != "deliver" or not isinstance(members, list):
            out.append((kind, payload))
            continue
        mesh_id = payload.get("mesh_id")
        if mesh_id not in delivers:
            merged: list[Any] = []
            delivers[mesh_id] = (merged, set())
            out.append((kind, {**payload, "member_ids": merged}))
        listed, seen = delivers[mesh_id]
        for member in members:
            if member not in seen:
                seen.add(member)
                listed.append(member)
    return out


def _decode(text: str) -> tuple[str, dict[str, Any]] | None:
    """``(kind, payload)`` from a notification's JSON, or None (logged) when malformed."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        log.warning("notify_bad_payload", extra={"error": str(exc)})
        return None
    kind = message.get("kind") if isinstance(message, dict) else None
    payload = message.get("payload") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not isinstance(payload, dict):
        log.warning("notify_bad_payload", extra={"error": "no kind or no payload object"})
        return None
    return kind, payload


class _HasPool(Protocol):
    async def _pool(self) -> Any: ...


class PgNotifier(Notifier):
    """LISTEN/NOTIFY on :data:`CHANNEL`: one listening connection, re-opened when it drops.

    ``publish`` goes through the store's pool (``SELECT pg_notify``); it never raises:
    a notification that cannot be sent is logged and dropped (base.py: best effort).
    """

    def __init__(self, dsn: str, store: _HasPool) -> None:
        self._dsn = dsn
        self._store = store
        self._handler: Handler | None = None
        self._conn: Any = None  # asyncpg.Connection, listening
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._outgoing: list[tuple[str, dict[str, Any]]] = []
        self._flusher: asyncio.Future[None] | None = None
        self.reconnects = 0  # how often the listening connection was re-opened

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self, handler: Handler) -> None:
        """Listen; if the database is unreachable now, keep trying in the background."""
        self._handler = handler
        if self._closed or self._supervisor is not None:
            return
        try:
            await self._listen()
        except (ClaudemeshError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("notify_listen_failed", extra={"error": _describe(exc)})
        self._supervisor = asyncio.create_task(self._supervise(), name="pg-notify-listener")

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, timeout=10,
            server_settings={"application_name": "claudemesh-broker-listen"})
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._lost.clear()

    def _on_terminated(self, conn: Any) -> None:
        if conn is self._conn and not self._closed:
            log.warning("notify_connection_lost")
            self._lost.set()

    async def _supervise(self) -> None:
        """Re-open the listening connection when it drops; ping it now and then."""
        delay = 0.1
        while not self._closed:
            if self._lost.is_set() or not self.listening:
                await self._drop_connection()
                try:
                    await self._listen()
                except Exception as exc:  # never let the listener die
                    log.warning("notify_reconnect_failed", extra={
                        "error": _describe(exc), "retry_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_MAX_S)
                    continue
                self.reconnects += 1
                log.info("notify_reconnected", extra={"reconnects": self.reconnects})
                delay = 0.1
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=_PING_EVERY_S)
            except TimeoutError:
                await self._ping()

    async def _ping(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=10)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            log.warning("notify_ping_failed")
            self._lost.set()
            conn.terminate()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            if not conn.is_closed():
                await conn.remove_listener(CHANNEL, self._on_notification)
                await asyncio.wait_for(conn.close(), timeout=2)
        if not conn.is_closed():
            conn.terminate()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, text: str) -> None:
        handler = self._handler
        if handler is None or self._closed:
            return
        decoded = _decode(text)
        if decoded is None:
            return
        kind, payload = decoded
        try:
            handler(kind, payload)
        except Exception:
            log.exception("notify_handler_failed", extra={"kind": kind})

    async def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue the notification and wait until its batch went out (or failed, logged).

        Publishes that arrive while a batch is on the wire form the next batch, which goes
        out as one statement with the ``deliver`` wake-ups of one mesh merged: under load,
        one round trip carries many accepts' wake-ups.
        """
        self._outgoing.append((kind, payload))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._outgoing:
            batch, self._outgoing = self._outgoing, []
            texts: list[str] = []
            for kind, payload in _merged(batch):
                try:
                    texts += _notifications(kind, payload)
                except ValueError as exc:
                    log.error("notify_too_large", extra={"kind": kind,  # noqa: TRY400
                                                         "error": str(exc)})
            if not texts:
                continue
            try:
                with _store_errors("publishing notifications"):
                    pool = await self._store._pool()
                    await pool.execute("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t",
                                       CHANNEL, texts)
            except ClaudemeshError as exc:
                log.warning("notify_publish_failed", extra={"count": len(texts),
                                                            "error": str(exc)})

    async def close(self) -> None:
        self._closed = True
        self._handler = None
        if self._flusher is not None and not self._flusher.done():  # let the last batch out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flusher), 5.0)
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()

