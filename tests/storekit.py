"""The broker stores behind one test surface: SQLite on a file, PostgreSQL on a fresh
database of a throwaway cluster (tests/pgkit.py), and the helpers the store suite
(tests/integration/store) builds its meshes and sends with.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claudemesh.broker.admin import MeshOptions, create_mesh
from claudemesh.broker.store.base import (
    AcceptInput,
    BrokerStore,
    Delivery,
    Member,
    Mesh,
    NewInvite,
    SessionProfile,
)
from claudemesh.broker.store.sqlite import SqliteBrokerStore
from claudemesh.protocol.ids import new_ulid
from pgkit import shared_cluster

NOW = 1_800_000_000_000
DAY = 86_400_000
FP = b"\x01" * 32
OTHER_FP = b"\x02" * 32
SECRET = "invite-secret"
SECRET_SHA = hashlib.sha256(SECRET.encode()).hexdigest()

BUILD = SessionProfile("build", "fixing CI 🛠", "working", "claude-code")
REVIEW = SessionProfile("review")


# -- the two stores behind one test surface ---------------------------------------------


class Backend(abc.ABC):
    """A store under test, plus the few raw-SQL hooks a contract test needs."""

    kind: str
    claims: bool  # does pending_deliveries honour session claims?

    def __init__(self) -> None:
        self.store: BrokerStore = self.open()
        self._extra: list[BrokerStore] = []

    @abc.abstractmethod
    def open(self) -> BrokerStore:
        """A new, independent store instance on the same location."""

    def another(self) -> BrokerStore:
        store = self.open()
        self._extra.append(store)
        return store

    async def close(self) -> None:
        for store in (*self._extra, self.store):
            await store.close()

    @abc.abstractmethod
    async def dedupe_rows(self, mesh_id: str) -> int: ...

    @abc.abstractmethod
    async def drop_message_bypassing_fks(self, message_id: str) -> None:
        """Delete a message row without cascading: plants dedupe and delivery orphans."""


class SqliteBackend(Backend):
    kind = "sqlite"
    claims = False

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    def open(self) -> BrokerStore:
        return SqliteBrokerStore(self.path)

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, timeout=5)  # foreign_keys is off by default
        try:
            rows = conn.execute(sql, args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    async def dedupe_rows(self, mesh_id: str) -> int:
        rows = self._query("SELECT count(*) FROM client_message_dedupe WHERE mesh_id = ?",
                           mesh_id)
        return int(rows[0][0])

    async def drop_message_bypassing_fks(self, message_id: str) -> None:
        self._query("DELETE FROM message WHERE id = ?", message_id)


class PostgresBackend(Backend):
    kind = "postgres"
    claims = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        super().__init__()

    def open(self) -> BrokerStore:
        from claudemesh.broker.store.postgres import PostgresBrokerStore  # noqa: PLC0415

        return PostgresBrokerStore(self.dsn)  # lazy: the pool opens on first use

    async def fetchval(self, sql: str, *args: Any) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def dedupe_rows(self, mesh_id: str) -> int:
        return int(await self.fetchval(
            "SELECT count(*) FROM mesh.client_message_dedupe WHERE mesh_id = $1", mesh_id))

    async def drop_message_bypassing_fks(self, message_id: str) -> None:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("DELETE FROM mesh.message WHERE id = $1", message_id)
        finally:
            await conn.close()


def fresh_pg_dsn() -> str:
    from pgkit import fresh_dsn  # noqa: PLC0415

    return fresh_dsn(shared_cluster())


# -- helpers ------------------------------------------------------------------------------


async def setup_mesh(store: BrokerStore, names: tuple[str, ...] = ("alice", "bob", "carol"),
                     *, mode: str = "retention_scoped", dedupe_days: int = 3,
                     retention_days: int = 7, policy: str = "prefer_newest",
                     ) -> tuple[Mesh, list[Member]]:
    """A new mesh whose members joined through a real invite, in ``names`` order."""
    mesh = await create_mesh(store, f"m{new_ulid()[-10:].lower()}",
                             MeshOptions(mode, dedupe_days, retention_days, policy), now_ms=NOW)
    invite = await new_invite(store, mesh, max_uses=100)
    members = [await join(store, mesh, invite, name, now=NOW + i)
               for i, name in enumerate(names)]
    return mesh, members


async def new_invite(store: BrokerStore, mesh: Mesh, *, max_uses: int = 1,
                     expires: int = NOW + DAY) -> str:
    invite_id = new_ulid(NOW)
    await store.create_invite(NewInvite(invite_id, mesh.id, SECRET, expires, max_uses),
                              secret_sha256=SECRET_SHA, now_ms=NOW)
    return invite_id


async def join(store: BrokerStore, mesh: Mesh, invite_id: str, name: str, *, now: int = NOW,
               pubkey: str | None = None, secret_sha: str = SECRET_SHA) -> Member:
    member = Member(new_ulid(now), mesh.id, pubkey or secrets.token_hex(32), name, now, None)
    return await store.redeem_invite(invite_id=invite_id, mesh_id=mesh.id,
                                     secret_sha256=secret_sha, member=member, now_ms=now)


def send(mesh: Mesh, sender: Member, cmid: str, *, to: str, kind: str = "dm", now: int = NOW,
         fp: bytes = FP, expires: int | None = None) -> AcceptInput:
    return AcceptInput(mesh.id, sender.id, sender.pubkey, sender.display_name, new_ulid(now),
                       cmid, fp, kind, to, "next", None, '{"k":"v"}',
                       '{"kind":"crypto_box","nonce":"x","ciphertext":"y"}', "00" * 32, now,
                       expires)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def attach(store: BrokerStore, mesh: Mesh, member: Member, session: str, *,
                 broker: str = "b1", now: int = NOW, prefer_oldest: bool = False,
                 dead_after: int = 30_000) -> tuple[str | None, str | None, str | None]:
    change = await store.presence_attach(mesh.id, member.id, broker_id=broker,
                                         session_id=session, now_ms=now,
                                         prefer_oldest=prefer_oldest, dead_after_ms=dead_after)
    return (change.previous_session_id, change.previous_broker_id, change.previous_state)


def ids(deliveries: list[Delivery]) -> list[int]:
    return [d.delivery_id for d in deliveries]

