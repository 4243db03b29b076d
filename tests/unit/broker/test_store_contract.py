"""The BrokerStore contract, run against every store: SQLite on a file, PostgreSQL on a
fresh database of a throwaway cluster (tests/pgkit.py).

Every test in the first part is parametrized over both stores and makes the same
assertions; where the contract lets a store choose (delivery claims, which a
single-process store may ignore), the assertion branches on ``backend.claims``. The
tests after that exercise what only PostgreSQL has: real row locks between connections,
LISTEN/NOTIFY between store instances, reconnects, concurrent migrations.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from claudemesh.broker.admin import MeshOptions, create_mesh
from claudemesh.broker.store import open_store
from claudemesh.broker.store.base import (
    AcceptInput,
    AcceptKind,
    BrokerStore,
    Delivery,
    Member,
    Mesh,
    NewInvite,
    SessionProfile,
)
from claudemesh.broker.store.sqlite import BROKER_MIGRATIONS, SqliteBrokerStore
from claudemesh.errors import (
    DestinationNotFound,
    DisplayNameTaken,
    InviteRejected,
    MemberAlreadyConnected,
    MemberRevoked,
    MeshExists,
    ShuttingDown,
    StoreError,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.sqlitedb.db import open_database
from pgkit import needs_pg, shared_cluster, skip_without_pg

NOW = 1_800_000_000_000
DAY = 86_400_000
FP = b"\x01" * 32
OTHER_FP = b"\x02" * 32
SECRET = "invite-secret"
SECRET_SHA = hashlib.sha256(SECRET.encode()).hexdigest()

PG = needs_pg


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=PG)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: Backend = (SqliteBackend(tmp_path / "broker.db") if request.param == "sqlite"
                     else PostgresBackend(fresh_pg_dsn()))
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def pg() -> AsyncIterator[PostgresBackend]:
    skip_without_pg()
    made = PostgresBackend(fresh_pg_dsn())
    try:
        yield made
    finally:
        await made.close()


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


# -- meshes, invites, members --------------------------------------------------------------


async def test_meshes_are_found_by_id_or_name_and_names_are_unique(backend: Backend) -> None:
    store = backend.store
    mesh, _ = await setup_mesh(store, ())
    assert await store.get_mesh(mesh.id) == mesh
    assert await store.get_mesh(mesh.name) == mesh
    assert await store.get_mesh("nope") is None
    with pytest.raises(MeshExists):
        await create_mesh(store, mesh.name, MeshOptions(), now_ms=NOW)
    assert len(await store.mesh_invite_key(mesh.id)) == 128
    with pytest.raises(InviteRejected):
        await store.mesh_invite_key("no-such-mesh")


async def test_invite_redeem_rules(backend: Backend) -> None:
    store = backend.store
    mesh, _ = await setup_mesh(store, ())
    once = await new_invite(store, mesh, max_uses=1)
    with pytest.raises(InviteRejected):
        await join(store, mesh, once, "alice", secret_sha="0" * 64)  # wrong secret
    with pytest.raises(InviteRejected):
        await join(store, mesh, "no-such-invite", "alice")
    alice = await join(store, mesh, once, "alice")
    assert (alice.display_name, alice.revoked_at, alice.groups) == ("alice", None, ())
    # The same key joining again gets its membership back, even on a used-up invite.
    again = await join(store, mesh, once, "other-name", pubkey=alice.pubkey)
    assert (again.id, again.display_name) == (alice.id, "alice")
    with pytest.raises(InviteRejected, match="used up"):
        await join(store, mesh, once, "bob")
    expired = await new_invite(store, mesh, expires=NOW)
    with pytest.raises(InviteRejected, match="expired"):
        await join(store, mesh, expired, "bob", now=NOW)
    # A re-join does not use the invite up: two uses, one re-join, two new members fit.
    twice = await new_invite(store, mesh, max_uses=2)
    await join(store, mesh, twice, "x", pubkey=alice.pubkey)
    bob = await join(store, mesh, twice, "bob")
    with pytest.raises(DisplayNameTaken):  # names are unique case-insensitively (ASCII)
        await join(store, mesh, twice, "ALICE")
    await join(store, mesh, twice, "Émile")
    many = await new_invite(store, mesh, max_uses=10)
    await join(store, mesh, many, "émile")  # folding is ASCII-only, as in SQLite
    # A revoked key cannot come back; its name is free again.
    [revoked] = await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 5)
    assert (revoked.id, revoked.revoked_at) == (bob.id, NOW + 5)
    with pytest.raises(MemberRevoked):
        await join(store, mesh, many, "bob2", pubkey=bob.pubkey)
    new_bob = await join(store, mesh, many, "bob")
    assert new_bob.id != bob.id
    assert [m.id for m in await store.revoked_since(NOW + 5)] == [bob.id]
    assert await store.revoked_since(NOW + 6) == []
    assert bob.id not in {m.id for m in await store.list_members(mesh.id)}
    assert await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 6) == []


async def test_concurrent_joins(backend: Backend) -> None:
    """One use left means one joiner; one name means one holder; one key, one member."""
    store, other = backend.store, backend.another()
    mesh, _ = await setup_mesh(store, ())
    once = await new_invite(store, mesh, max_uses=1)
    results = await asyncio.gather(*(join(s, mesh, once, f"n{i}")
                                     for i, s in enumerate([store, other] * 4)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Member) for r in results) == 1
    assert all(isinstance(r, InviteRejected) for r in results if not isinstance(r, Member))
    many = await new_invite(store, mesh, max_uses=100)
    results = await asyncio.gather(*(join(s, mesh, many, "same") for s in [store, other] * 4),
                                   return_exceptions=True)
    assert sum(isinstance(r, Member) for r in results) == 1
    assert all(isinstance(r, DisplayNameTaken) for r in results if not isinstance(r, Member))
    key = secrets.token_hex(32)
    joined = await asyncio.gather(*(join(s, mesh, many, f"k{i}", pubkey=key)
                                    for i, s in enumerate([store, other] * 4)))
    assert len({m.id for m in joined}) == 1
    assert len({m.display_name for m in joined}) == 1


async def test_revoking_everywhere(backend: Backend) -> None:
    store = backend.store
    one, _ = await setup_mesh(store, ())
    two, _ = await setup_mesh(store, ())
    key = secrets.token_hex(32)
    for mesh in (one, two):
        await join(store, mesh, await new_invite(store, mesh), "dual", pubkey=key)
    revoked = await store.revoke_member(key, mesh_id=None, now_ms=NOW + 1)
    assert sorted(m.mesh_id for m in revoked) == sorted([one.id, two.id])
    assert all(m.revoked_at == NOW + 1 for m in revoked)
    still = await store.get_member(one.id, key)
    assert still is not None and still.revoked_at == NOW + 1


async def test_profiles_groups_and_topics(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _carol] = await setup_mesh(store)
    updated = await store.set_profile(alice.id, {
        "summary": "on it", "status": "working", "visible": False, "avatar": "🦊",
        "title": "t", "bio": "b", "capabilities": ["x", "y"], "not_a_field": 1})
    assert (updated.summary, updated.status, updated.visible, updated.avatar, updated.title,
            updated.bio, updated.capabilities) == ("on it", "working", False, "🦊", "t", "b",
                                                   ("x", "y"))
    assert await store.get_member_by_id(alice.id) == updated
    assert await store.get_member(mesh.id, alice.pubkey) == updated
    assert await store.get_member_by_id("nobody") is None
    assert await store.get_member(mesh.id, "ff" * 32) is None
    with pytest.raises(StoreError):
        await store.set_profile(alice.id, {"status": "asleep"})  # a CHECK constraint
    assert (await store.set_profile(alice.id, {"visible": 1})).visible is True
    with pytest.raises(StoreError, match="no member nobody"):
        await store.set_profile("nobody", {"status": "working"})
    assert await store.join_group(mesh.id, alice.id, "zeta", NOW)
    assert await store.join_group(mesh.id, alice.id, "Zeta", NOW)
    assert await store.join_group(mesh.id, alice.id, "alpha", NOW)
    assert not await store.join_group(mesh.id, alice.id, "alpha", NOW)
    members = await store.list_members(mesh.id)
    assert [m.display_name for m in members] == ["alice", "bob", "carol"]  # join order
    assert members[0].groups == ("Zeta", "alpha", "zeta")  # byte order, as in SQLite
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and fetched.groups == ("Zeta", "alpha", "zeta")
    assert await store.leave_group(mesh.id, alice.id, "zeta")
    assert not await store.leave_group(mesh.id, alice.id, "zeta")
    assert await store.subscribe(mesh.id, alice.id, "news", NOW)
    assert not await store.subscribe(mesh.id, alice.id, "news", NOW)
    assert await store.subscribe(mesh.id, bob.id, "news", NOW)
    assert await store.subscribe(mesh.id, bob.id, "Alpha", NOW)
    assert await store.list_topics(mesh.id, alice.id) == [
        {"topic": "Alpha", "subscribers": 1, "subscribed": False},
        {"topic": "news", "subscribers": 2, "subscribed": True}]
    assert await store.unsubscribe(mesh.id, bob.id, "Alpha")
    assert not await store.unsubscribe(mesh.id, bob.id, "Alpha")
    assert await store.list_topics(mesh.id, bob.id) == [
        {"topic": "Alpha", "subscribers": 0, "subscribed": False},
        {"topic": "news", "subscribers": 2, "subscribed": True}]


BUILD = SessionProfile("build", "fixing CI 🛠", "working", "claude-code")
REVIEW = SessionProfile("review")


async def test_profile_sessions_are_set_replaced_and_cleared(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _carol] = await setup_mesh(store)
    assert (alice.sessions, bob.sessions) == ((), ())
    assert [m.sessions for m in await store.list_members(mesh.id)] == [(), (), ()]
    updated = await store.set_profile(alice.id, {"summary": "two windows",
                                                 "sessions": (BUILD, REVIEW)})
    assert updated.sessions == (BUILD, REVIEW)
    assert (updated.summary, updated.status) == ("two windows", "idle")
    for seen in (await store.get_member_by_id(alice.id),
                 await store.get_member(mesh.id, alice.pubkey),
                 (await store.list_members(mesh.id))[0]):
        assert seen is not None and seen.sessions == (BUILD, REVIEW)
    # Other fields leave the list alone; a new list replaces it whole, in its order.
    assert (await store.set_profile(alice.id, {"status": "dnd"})).sessions == (BUILD, REVIEW)
    other = SessionProfile("other", None, "dnd", None)
    assert (await store.set_profile(alice.id, {"sessions": [other, BUILD]})).sessions == (
        other, BUILD)
    many = tuple(SessionProfile(f"s{i:02}", "x" * 512, "idle", "h" * 64) for i in range(32))
    assert (await store.set_profile(alice.id, {"sessions": list(many)})).sessions == many
    assert (await store.set_profile(alice.id, {"sessions": []})).sessions == ()
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and (fetched.sessions, fetched.status) == ((), "dnd")
    # One member's list is its own.
    await store.set_profile(bob.id, {"sessions": [REVIEW]})
    await store.set_profile(alice.id, {"sessions": [BUILD]})
    assert [m.sessions for m in await store.list_members(mesh.id)] == [(BUILD,), (REVIEW,), ()]
    # A revocation keeps the stored list on the record it returns.
    [revoked] = await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 1)
    assert (revoked.sessions, revoked.revoked_at) == ((REVIEW,), NOW + 1)
    assert [m.sessions for m in await store.revoked_since(NOW + 1)] == [(REVIEW,)]


async def test_sessions_that_are_not_records_are_refused_before_any_write(
        backend: Backend) -> None:
    store = backend.store
    _, [alice, *_] = await setup_mesh(store)
    await store.set_profile(alice.id, {"summary": "before", "sessions": [BUILD]})
    with pytest.raises(StoreError, match="SessionProfile"):
        await store.set_profile(alice.id, {"summary": "half", "sessions": [{"name": "x"}]})
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and (fetched.summary, fetched.sessions) == ("before", (BUILD,))


async def test_nonces_are_single_use_until_they_expire(backend: Backend) -> None:
    store = backend.store
    assert await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert not await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert await store.remember_nonce("other", "n1", expires_at_ms=NOW)
    assert await store.remember_nonce("pk", "n2", expires_at_ms=NOW + 1)
    assert (await store.sweep(NOW)).nonces_expired == 2
    assert await store.remember_nonce("pk", "n1", expires_at_ms=NOW + 5)
    assert not await store.remember_nonce("pk", "n2", expires_at_ms=NOW + 5)


# -- accept ---------------------------------------------------------------------------------


async def test_accept_created_duplicate_conflict(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    first = send(mesh, alice, "c1", to=bob.pubkey, expires=NOW + 3 * DAY)
    created = await store.accept(first)
    assert (created.kind, created.broker_message_id, created.stored_fingerprint,
            created.first_seen_at, created.history_available) == (
        AcceptKind.CREATED, first.broker_message_id, FP, NOW, True)
    assert created.history_id is not None
    [(member_id, delivery_id)] = created.recipients
    assert member_id == bob.id
    dup = await store.accept(send(mesh, alice, "c1", to=bob.pubkey, now=NOW + 10))
    assert (dup.kind, dup.broker_message_id, dup.history_id, dup.first_seen_at,
            dup.history_available, dup.recipients) == (
        AcceptKind.DUPLICATE, created.broker_message_id, created.history_id, NOW, True, ())
    conflict = await store.accept(send(mesh, alice, "c1", to=bob.pubkey, fp=OTHER_FP))
    assert (conflict.kind, conflict.broker_message_id, conflict.stored_fingerprint) == (
        AcceptKind.CONFLICT, created.broker_message_id, FP)
    assert await backend.dedupe_rows(mesh.id) == 1
    [delivery] = await store.pending_deliveries(bob.id, after=0, limit=10)
    assert delivery == Delivery(
        delivery_id, bob.id, mesh.id, first.broker_message_id, "c1", created.history_id,
        alice.pubkey, "alice", "dm", bob.pubkey, "next", None, {"k": "v"},
        {"kind": "crypto_box", "nonce": "x", "ciphertext": "y"}, "00" * 32, NOW)
    second = await store.accept(send(mesh, alice, "c2", to=bob.pubkey))
    assert second.history_id is not None
    assert int(second.history_id) > int(created.history_id)
    assert second.recipients[0][1] > delivery_id


async def test_b2_failures_leave_no_dedupe_row(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    refused = [("dm", "ee" * 32), ("topic", "nosuchtopic"), ("topic", "@nosuchgroup")]
    for kind, ref in refused:
        with pytest.raises(DestinationNotFound):
            await store.accept(send(mesh, alice, "k", to=ref, kind=kind))
    await store.revoke_member(carol.pubkey, mesh_id=mesh.id, now_ms=NOW)
    with pytest.raises(DestinationNotFound):  # a revoked member is no destination
        await store.accept(send(mesh, alice, "k", to=carol.pubkey))
    await store.join_group(mesh.id, carol.id, "only-carol", NOW)
    with pytest.raises(DestinationNotFound):  # a group of revoked members does not exist
        await store.accept(send(mesh, alice, "k", to="@only-carol", kind="topic"))
    with pytest.raises(MemberRevoked):  # the sender itself was revoked
        await store.accept(send(mesh, carol, "k", to=alice.pubkey))
    assert await backend.dedupe_rows(mesh.id) == 0
    assert await store.pending_deliveries(bob.id, after=0, limit=10) == []
    # The id was never consumed: the same key is accepted fresh afterwards (R-BRK-6).
    assert (await store.accept(send(mesh, alice, "k", to=bob.pubkey))).kind is AcceptKind.CREATED
    assert await backend.dedupe_rows(mesh.id) == 1


async def test_recipients_of_dm_topic_group_and_everyone(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol, dave] = await setup_mesh(store, ("alice", "bob", "carol", "dave"))
    for member in (alice, bob, carol):
        await store.subscribe(mesh.id, member.id, "news", NOW)
    await store.subscribe(mesh.id, dave.id, "other", NOW)
    for member in (alice, carol):
        await store.join_group(mesh.id, member.id, "ops", NOW)
    await store.subscribe(mesh.id, alice.id, "quiet", NOW)

    async def recipients(cmid: str, to: str, kind: str = "topic") -> list[str]:
        outcome = await store.accept(send(mesh, alice, cmid, to=to, kind=kind))
        assert outcome.kind is AcceptKind.CREATED
        assert list(outcome.recipients) == sorted(outcome.recipients)
        return [member_id for member_id, _ in outcome.recipients]

    assert await recipients("dm", bob.pubkey, "dm") == [bob.id]
    assert await recipients("self", alice.pubkey, "dm") == [alice.id]  # a note to self
    assert await recipients("topic", "news") == sorted([bob.id, carol.id])
    assert await recipients("quiet", "quiet") == []  # only the sender subscribes
    assert await recipients("group", "@ops") == [carol.id]
    assert await recipients("all", "*") == sorted([bob.id, carol.id, dave.id])
    await store.revoke_member(carol.pubkey, mesh_id=mesh.id, now_ms=NOW)
    assert await recipients("all2", "*") == sorted([bob.id, dave.id])
    assert await recipients("topic2", "news") == [bob.id]


async def test_twenty_concurrent_accepts_of_one_key(backend: Backend) -> None:
    """Four store instances (four brokers), five accepts each, of one key."""
    store = backend.store
    stores = [store, backend.another(), backend.another(), backend.another()]
    mesh, [alice, bob, _] = await setup_mesh(store)
    outcomes = await asyncio.gather(*(
        stores[i % 4].accept(send(mesh, alice, "race", to=bob.pubkey)) for i in range(20)))
    kinds = [o.kind for o in outcomes]
    assert kinds.count(AcceptKind.CREATED) == 1
    assert kinds.count(AcceptKind.DUPLICATE) == 19
    winner = next(o for o in outcomes if o.kind is AcceptKind.CREATED)
    assert {o.broker_message_id for o in outcomes} == {winner.broker_message_id}
    assert {o.history_id for o in outcomes} == {winner.history_id}
    assert len(await store.pending_deliveries(bob.id, after=0, limit=100)) == 1
    assert await backend.dedupe_rows(mesh.id) == 1


async def test_concurrent_accepts_with_other_fingerprints_and_b2_failures(
        backend: Backend) -> None:
    """Losers see the winner; a B2 failure that won the insert hands the key on."""
    store = backend.store
    stores = [store, backend.another(), backend.another()]
    mesh, [alice, bob, _] = await setup_mesh(store)
    requests = [send(mesh, alice, "mixed", to="ee" * 32)  # B2 fails: unknown pubkey
                for _ in range(3)]
    requests += [send(mesh, alice, "mixed", to=bob.pubkey, fp=FP if i % 2 else OTHER_FP)
                 for i in range(12)]
    results = await asyncio.gather(*(stores[i % 3].accept(r) for i, r in enumerate(requests)),
                                   return_exceptions=True)
    outcomes = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, DestinationNotFound) for r in results if isinstance(
        r, BaseException))
    [winner] = [o for o in outcomes if o.kind is AcceptKind.CREATED]
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, BaseException) or result is winner:
            continue
        assert result.broker_message_id == winner.broker_message_id
        assert result.kind is (AcceptKind.DUPLICATE if request.fingerprint ==
                               winner.stored_fingerprint else AcceptKind.CONFLICT)
    assert await backend.dedupe_rows(mesh.id) == 1
    assert len(await store.pending_deliveries(bob.id, after=0, limit=100)) == 1


# -- delivery ---------------------------------------------------------------------------------


async def test_pending_and_ack(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    delivered = [(await store.accept(send(mesh, alice, f"p{i}", to=bob.pubkey))).recipients[0][1]
                 for i in range(5)]
    await store.accept(send(mesh, alice, "to-carol", to=carol.pubkey))
    assert ids(await store.pending_deliveries(bob.id, after=0, limit=10)) == delivered
    assert ids(await store.pending_deliveries(bob.id, after=delivered[1], limit=2)) == (
        delivered[2:4])
    assert await store.ack_deliveries(carol.id, delivered, NOW) == 0  # not carol's rows
    assert await store.ack_deliveries(bob.id, [], NOW) == 0
    assert await store.ack_deliveries(bob.id, [delivered[0], delivered[2]], NOW) == 2
    assert await store.ack_deliveries(bob.id, [delivered[0]], NOW) == 0  # already acked
    assert ids(await store.pending_deliveries(bob.id, after=0, limit=10)) == [
        delivered[1], delivered[3], delivered[4]]
    assert len(await store.pending_deliveries(carol.id, after=0, limit=10)) == 1


async def test_delivery_claims(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    for i in range(12):
        await store.accept(send(mesh, alice, f"q{i}", to=bob.pubkey))
    everything = ids(await store.pending_deliveries(bob.id, after=0, limit=100))
    assert len(everything) == 12

    async def fetch(session: str, *, now: int = NOW, limit: int = 5) -> list[int]:
        got = ids(await store.pending_deliveries(bob.id, after=0, limit=limit,
                                                 session_id=session, now_ms=now, lease_ms=1000))
        assert got == sorted(got) and len(got) <= limit
        return got

    one, two = await asyncio.gather(fetch("s1"), fetch("s2"))
    if not backend.claims:  # the contract lets a single-process store ignore claims
        assert one == two == everything[:5]
        return
    assert len(one) == len(two) == 5
    assert not set(one) & set(two)
    assert sorted(one + two) == everything[:10]
    # The same session sees its own claims again; nobody else does until they expire.
    assert await fetch("s1", limit=100) == sorted(one + everything[10:])
    assert await fetch("s3", limit=100) == []
    assert ids(await store.pending_deliveries(bob.id, after=0, limit=100)) == everything
    assert await fetch("s3", now=NOW + 999, limit=100) == []
    assert await fetch("s3", now=NOW + 1000, limit=100) == everything  # all expired
    # An acked row is never handed out again, claimed or not.
    assert await store.ack_deliveries(bob.id, everything[:6], NOW) == 6
    assert await fetch("s4", now=NOW + 5000, limit=100) == everything[6:]
    # A claim lasts only while its session is the member's live one: a session that
    # detached, or was replaced by a reconnect, no longer hides its rows.
    await attach(store, mesh, bob, "s4", now=NOW + 5000)
    assert await fetch("s5", now=NOW + 5000, limit=100) == []  # s4 is live
    await store.presence_detach(mesh.id, bob.id, session_id="s4", lease_until_ms=NOW + 9000)
    assert await fetch("s5", now=NOW + 5000, limit=3) == everything[6:9]
    await attach(store, mesh, bob, "s6", now=NOW + 5000)  # bob reconnects
    assert await fetch("s6", now=NOW + 5000, limit=100) == everything[6:]
    assert await fetch("s5", now=NOW + 5000, limit=100) == []


async def test_pipelined_accepts_of_one_sender_keep_their_order(backend: Backend) -> None:
    """Accepts started in order commit, and number their deliveries, in that order."""
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    await store.subscribe(mesh.id, bob.id, "news", NOW)
    await store.subscribe(mesh.id, carol.id, "news", NOW)
    other = backend.another()  # another broker, another sender, interleaving
    noise = asyncio.gather(*(other.accept(send(mesh, carol, f"n{i}", to=bob.pubkey))
                             for i in range(10)))
    outcomes = await asyncio.gather(*(store.accept(send(
        mesh, alice, f"o{i}", to="news" if i % 3 else bob.pubkey, kind="topic" if i % 3
        else "dm")) for i in range(40)))
    await noise
    history = [int(o.history_id or 0) for o in outcomes]
    assert history == sorted(history)
    pushed = [d.client_message_id for d in await store.pending_deliveries(
        bob.id, after=0, limit=100) if d.sender_name == "alice"]
    assert pushed == [f"o{i}" for i in range(40)]


# -- presence -----------------------------------------------------------------------------------


async def test_presence_attach_detach_and_expire(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    await store.broker_heartbeat("b1", now_ms=NOW)
    assert await attach(store, mesh, alice, "s1") == (None, None, None)
    assert await store.presence_online(mesh.id) == {alice.id}
    assert await attach(store, mesh, alice, "s2") == ("s1", "b1", "online")
    assert not await store.presence_detach(mesh.id, alice.id, session_id="s1",
                                           lease_until_ms=NOW + 100)  # replaced already
    assert await store.presence_detach(mesh.id, alice.id, session_id="s2",
                                       lease_until_ms=NOW + 100)
    assert not await store.presence_detach(mesh.id, alice.id, session_id="s2",
                                           lease_until_ms=NOW + 100)  # already leased
    assert await store.presence_online(mesh.id) == {alice.id}  # inside the lease
    assert await store.presence_expired(NOW + 99, dead_after_ms=30_000, lease_ms=100) == []
    # Reattaching inside the lease is no join: the previous state says leased.
    assert await attach(store, mesh, alice, "s3") == ("s2", "b1", "leased")
    await store.presence_detach(mesh.id, alice.id, session_id="s3", lease_until_ms=NOW + 100)
    await attach(store, mesh, bob, "t1")
    assert await store.presence_expired(NOW + 100, dead_after_ms=30_000, lease_ms=100) == [
        (mesh.id, alice.id)]
    assert await store.presence_expired(NOW + 100, dead_after_ms=30_000, lease_ms=100) == []
    assert await store.presence_online(mesh.id) == {bob.id}
    assert await store.presence_drop(mesh.id, bob.id)
    assert not await store.presence_drop(mesh.id, bob.id)
    assert await store.presence_online(mesh.id) == set()


async def test_presence_of_a_dead_broker_becomes_a_lease(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store, policy="prefer_oldest")
    await store.broker_heartbeat("old", now_ms=NOW)
    await store.broker_heartbeat("new", now_ms=NOW)
    await attach(store, mesh, alice, "a1", broker="old", prefer_oldest=True)
    await attach(store, mesh, bob, "b1", broker="new", prefer_oldest=True)
    with pytest.raises(MemberAlreadyConnected):  # prefer_oldest and a live session
        await attach(store, mesh, alice, "a2", broker="new", prefer_oldest=True)
    # "old" stops heartbeating; "new" goes on.
    later = NOW + 30_001
    await store.broker_heartbeat("new", now_ms=later)
    assert await store.presence_expired(later, dead_after_ms=30_000, lease_ms=60_000) == []
    assert await store.presence_online(mesh.id) == {alice.id, bob.id}  # leased from NOW
    assert not await store.presence_detach(mesh.id, alice.id, session_id="a1",
                                           lease_until_ms=later)  # no longer online
    assert await store.presence_expired(NOW + 60_000, dead_after_ms=30_000,
                                        lease_ms=60_000) == [(mesh.id, alice.id)]
    assert await store.presence_online(mesh.id) == {bob.id}


async def test_a_session_on_a_silent_broker_does_not_block_prefer_oldest(
        backend: Backend) -> None:
    store = backend.store
    mesh, [alice, *_] = await setup_mesh(store, policy="prefer_oldest")
    await store.broker_heartbeat("old", now_ms=NOW)
    await attach(store, mesh, alice, "a1", broker="old", prefer_oldest=True)
    assert await attach(store, mesh, alice, "a2", broker="new", now=NOW + 30_001,
                        prefer_oldest=True) == ("a1", "old", "leased")
    # A broker that never heartbeated is as dead as a silent one.
    assert await attach(store, mesh, alice, "a3", broker="b", now=NOW + 30_002,
                        prefer_oldest=True) == ("a2", "new", "leased")


async def test_concurrent_attaches_with_prefer_oldest_admit_one(backend: Backend) -> None:
    store, other = backend.store, backend.another()
    mesh, [alice, *_] = await setup_mesh(store, policy="prefer_oldest")
    await store.broker_heartbeat("b1", now_ms=NOW)
    results = await asyncio.gather(*(attach(s, mesh, alice, f"s{i}", prefer_oldest=True)
                                     for i, s in enumerate([store, other] * 5)),
                                   return_exceptions=True)
    assert results.count((None, None, None)) == 1
    assert sum(isinstance(r, MemberAlreadyConnected) for r in results) == 9


async def test_concurrent_expiry_reports_each_member_once(backend: Backend) -> None:
    store = backend.store
    mesh, members = await setup_mesh(store, tuple(f"m{i}" for i in range(8)))
    for member in members:
        await store.presence_attach(mesh.id, member.id, broker_id="b", session_id=member.id,
                                    now_ms=NOW, prefer_oldest=False, dead_after_ms=10)
        await store.presence_detach(mesh.id, member.id, session_id=member.id,
                                    lease_until_ms=NOW + 1)
    other = backend.another()  # a second broker on the same store
    reports = await asyncio.gather(*(
        s.presence_expired(NOW + 1, dead_after_ms=10, lease_ms=1)
        for s in (store, other, store, other)))
    flat = [pair for report in reports for pair in report]
    assert sorted(flat) == sorted((mesh.id, m.id) for m in members)


# -- maintenance ------------------------------------------------------------------------------


async def test_retention_sweep_prunes_messages_and_flips_history_available(
        backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store, dedupe_days=30, retention_days=7)
    created = await store.accept(send(mesh, alice, "h1", to=bob.pubkey, expires=NOW + 30 * DAY))
    keep = await store.accept(send(mesh, alice, "h2", to=bob.pubkey, now=NOW + DAY,
                                   expires=NOW + 31 * DAY))
    assert (await store.sweep(NOW + 7 * DAY - 1)).messages_pruned == 0
    result = await store.sweep(NOW + 7 * DAY)
    assert (result.messages_pruned, result.dedupe_rows_expired) == (1, 0)
    dup = await store.accept(send(mesh, alice, "h1", to=bob.pubkey, now=NOW + 8 * DAY))
    assert (dup.kind, dup.broker_message_id, dup.history_available, dup.history_id) == (
        AcceptKind.DUPLICATE, created.broker_message_id, False, None)
    assert ids(await store.pending_deliveries(bob.id, after=0, limit=10)) == [
        keep.recipients[0][1]]  # the pruned message's delivery went with it
    assert await store.orphan_check() == []  # history_available=false is no orphan
    result = await store.sweep(NOW + 30 * DAY)
    assert (result.messages_pruned, result.dedupe_rows_expired) == (1, 1)
    assert (await store.accept(send(mesh, alice, "h1", to=bob.pubkey,
                                    now=NOW + 30 * DAY))).kind is AcceptKind.CREATED


async def test_permanent_dedupe_rows_never_expire(backend: Backend) -> None:
    store = backend.store
    scoped, [a1, b1, _] = await setup_mesh(store, dedupe_days=3)
    forever, [a2, b2, _] = await setup_mesh(store, mode="permanent", dedupe_days=3)
    await store.accept(send(scoped, a1, "s1", to=b1.pubkey, expires=NOW + 3 * DAY))
    await store.accept(send(forever, a2, "p1", to=b2.pubkey, expires=None))
    assert (await store.sweep(NOW + 3 * DAY - 1)).dedupe_rows_expired == 0
    assert (await store.sweep(NOW + 3 * DAY)).dedupe_rows_expired == 1
    assert (await store.accept(send(scoped, a1, "s1", to=b1.pubkey,
                                    now=NOW + 3 * DAY))).kind is AcceptKind.CREATED
    assert (await store.accept(send(forever, a2, "p1", to=b2.pubkey))).kind is (
        AcceptKind.DUPLICATE)


async def test_orphan_check_finds_a_planted_orphan(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    created = await store.accept(send(mesh, alice, "o1", to=bob.pubkey))
    await store.accept(send(mesh, alice, "o2", to=bob.pubkey))
    assert await store.orphan_check() == []
    await backend.drop_message_bypassing_fks(created.broker_message_id)
    findings = await store.orphan_check()
    assert sorted(findings, key=lambda f: str(f["kind"])) == [
        {"kind": "dedupe_without_message", "mesh_id": mesh.id, "client_message_id": "o1",
         "broker_message_id": created.broker_message_id},
        {"kind": "delivery_without_message", "delivery_id": created.recipients[0][1],
         "broker_message_id": created.broker_message_id}]


async def test_migrations_are_idempotent(backend: Backend) -> None:
    mesh, [alice, bob, _] = await setup_mesh(backend.store)
    await backend.store.accept(send(mesh, alice, "m1", to=bob.pubkey))
    await backend.store.close()
    backend.store = backend.open()  # the same location again: nothing left to migrate
    assert await backend.store.get_mesh(mesh.id) == mesh
    assert (await backend.store.accept(send(mesh, alice, "m1", to=bob.pubkey))).kind is (
        AcceptKind.DUPLICATE)
    again = backend.another()
    assert await again.get_member_by_id(bob.id) == bob


async def test_sqlite_a_database_of_the_previous_schema_gains_sessions(
        tmp_path: Path) -> None:
    """A broker file written before member_sessions (schema 2) migrates in place."""
    path = tmp_path / "old.db"
    old = open_database(path, BROKER_MIGRATIONS[:2])  # before sessions
    try:
        assert "sessions" not in {r[1] for r in old.execute("PRAGMA table_info(member)")}
        old.execute("INSERT INTO mesh (id, name, created_at, dedupe_mode, dedupe_retention_days,"
                    " message_retention_days, connection_policy, invite_pubkey,"
                    " invite_secret_key) VALUES ('M1', 'old', 1, 'retention_scoped', 3, 7,"
                    " 'prefer_newest', 'pk', 'sk')")
        old.execute("INSERT INTO member (id, mesh_id, pubkey, display_name, joined_at, summary,"
                    " capabilities) VALUES ('U1', 'M1', ?, 'alice', 1, 'still here', '[\"x\"]')",
                    ("ab" * 32,))
    finally:
        old.close()
    store = SqliteBrokerStore(path)
    try:
        member = await store.get_member_by_id("U1")
        assert member is not None
        assert (member.summary, member.capabilities, member.sessions) == (
            "still here", ("x",), ())
        assert (await store.set_profile("U1", {"sessions": [BUILD]})).sessions == (BUILD,)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(BROKER_MIGRATIONS),)
        column = next(r for r in conn.execute("PRAGMA table_info(member)") if r[1] == "sessions")
        assert (column[2], column[3], column[4]) == ("TEXT", 1, "'[]'")  # type, NOT NULL, default
    finally:
        conn.close()
    reopened = SqliteBrokerStore(path)  # nothing left to migrate; the list is still there
    try:
        member = await reopened.get_member_by_id("U1")
        assert member is not None and member.sessions == (BUILD,)
    finally:
        await reopened.close()


async def test_closed_store_refuses_work(backend: Backend) -> None:
    store = backend.open()
    await store.get_mesh("x")
    await store.close()
    with pytest.raises(ShuttingDown):
        await store.get_mesh("x")


# -- notifications ------------------------------------------------------------------------------


async def test_notifier_delivers_to_every_broker_on_the_store(backend: Backend) -> None:
    publisher, listener = backend.store, backend.another()
    assert publisher.notifier() is publisher.notifier()
    got: list[tuple[str, dict[str, Any]]] = []
    await listener.notifier().start(lambda kind, payload: got.append((kind, payload)))
    sender = publisher if backend.claims else listener  # LocalNotifier: one process
    payload = {"mesh_id": "m", "member_ids": ["a", "b"]}
    await sender.notifier().publish("deliver", payload)
    await wait_for(lambda: bool(got))
    assert got == [("deliver", payload)]
    await listener.notifier().close()
    await sender.notifier().publish("presence", {"event": "peer_left"})
    await asyncio.sleep(0.1)
    assert got == [("deliver", payload)]


# -- PostgreSQL only -------------------------------------------------------------------------


async def test_pg_an_insert_waits_for_the_uncommitted_claim_of_its_key(
        pg: PostgresBackend) -> None:
    """R-BRK-10 under READ COMMITTED: the second INSERT ... ON CONFLICT blocks on the
    first transaction's row and then sees its outcome (rollback: we win; commit: dup)."""
    import asyncpg  # noqa: PLC0415

    store = pg.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    conn = await asyncpg.connect(pg.dsn)
    try:
        for outcome_of_other in ("rollback", "commit"):
            cmid = f"held-{outcome_of_other}"
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "INSERT INTO mesh.client_message_dedupe (mesh_id, client_message_id,"
                " broker_message_id, request_fingerprint, destination_kind, destination_ref,"
                " first_seen_at) VALUES ($1, $2, 'OTHER', $3, 'dm', $4, $5)",
                mesh.id, cmid, FP, bob.pubkey, NOW)
            task = asyncio.create_task(store.accept(send(mesh, alice, cmid, to=bob.pubkey)))
            await asyncio.sleep(0.3)
            assert not task.done(), "the accept should wait on the uncommitted row"
            await (tx.rollback() if outcome_of_other == "rollback" else tx.commit())
            result = await asyncio.wait_for(task, 5)
            if outcome_of_other == "rollback":
                assert result.kind is AcceptKind.CREATED
            else:
                assert (result.kind, result.broker_message_id, result.history_id) == (
                    AcceptKind.DUPLICATE, "OTHER", None)
    finally:
        await conn.close()


async def test_pg_open_store_is_lazy_and_migrations_race_safely(pg: PostgresBackend) -> None:
    from claudemesh.broker.store.postgres import PostgresBrokerStore  # noqa: PLC0415

    dsn = fresh_pg_dsn()
    lazy = open_store(dsn)
    assert isinstance(lazy, PostgresBrokerStore)
    assert "postgres@" in repr(lazy)
    racers = await asyncio.gather(*(PostgresBrokerStore.connect(dsn) for _ in range(4)))
    try:
        mesh, _ = await setup_mesh(lazy, ())
        assert await racers[0].get_mesh(mesh.name) == mesh
    finally:
        for store in (lazy, *racers):
            await store.close()
    other = PostgresBackend(dsn)
    try:
        assert await other.fetchval(
            "SELECT array_agg(version ORDER BY version) FROM mesh.schema_migrations") == [
            1, 2, 3, 4]
    finally:
        await other.close()


async def test_pg_a_database_of_the_previous_schema_gains_sessions(
        pg: PostgresBackend) -> None:
    """A database written before member_sessions (schema 3) migrates in place."""
    import asyncpg  # noqa: PLC0415

    from claudemesh.broker.store import postgres  # noqa: PLC0415

    dsn = fresh_pg_dsn()
    conn = await asyncpg.connect(dsn)
    try:
        await postgres._migrate(conn, postgres.PG_MIGRATIONS[:3])  # before sessions
        assert await conn.fetchval("SELECT count(*) FROM information_schema.columns"
                                   " WHERE table_schema = 'mesh' AND table_name = 'member'"
                                   " AND column_name = 'sessions'") == 0
        await conn.execute(
            "INSERT INTO mesh.mesh (id, name, created_at, dedupe_mode, dedupe_retention_days,"
            " message_retention_days, connection_policy, invite_pubkey, invite_secret_key)"
            " VALUES ('M1', 'old', 1, 'retention_scoped', 3, 7, 'prefer_newest', 'pk', 'sk')")
        await conn.execute(
            "INSERT INTO mesh.member (id, mesh_id, pubkey, display_name, joined_at, summary,"
            " capabilities) VALUES ('U1', 'M1', $1, 'alice', 1, 'still here', '[\"x\"]')",
            "ab" * 32)
    finally:
        await conn.close()
    racers = await asyncio.gather(*(postgres.PostgresBrokerStore.connect(dsn)
                                    for _ in range(3)))
    try:
        member = await racers[0].get_member_by_id("U1")
        assert member is not None
        assert (member.summary, member.capabilities, member.sessions) == (
            "still here", ("x",), ())
        assert (await racers[1].set_profile("U1", {"sessions": [BUILD]})).sessions == (BUILD,)
        again = await racers[2].get_member_by_id("U1")
        assert again is not None and again.sessions == (BUILD,)
    finally:
        for store in racers:
            await store.close()
    other = PostgresBackend(dsn)
    try:
        assert await other.fetchval(
            "SELECT array_agg(version ORDER BY version) FROM mesh.schema_migrations") == (
            list(range(1, len(postgres.PG_MIGRATIONS) + 1)))
        assert await other.fetchval(
            "SELECT format('%s %s %s', data_type, is_nullable, column_default)"
            " FROM information_schema.columns WHERE table_schema = 'mesh'"
            " AND table_name = 'member' AND column_name = 'sessions'") == (
            "text NO '[]'::text")
    finally:
        await other.close()


async def test_pg_driver_errors_become_store_errors(pg: PostgresBackend) -> None:
    from claudemesh.broker.store.postgres import PostgresBrokerStore  # noqa: PLC0415

    unreachable = PostgresBrokerStore("postgresql://postgres:s3cret@127.0.0.1:1/nope")
    try:
        with pytest.raises(StoreError) as caught:
            await unreachable.get_mesh("x")
        assert "s3cret" not in str(caught.value)
    finally:
        await unreachable.close()
    with pytest.raises(StoreError):
        await PostgresBrokerStore.connect("postgresql://postgres@127.0.0.1:notaport/x")
    _, [alice, *_] = await setup_mesh(pg.store)
    with pytest.raises(StoreError):  # a foreign key
        await pg.store.subscribe("no-such-mesh", alice.id, "t", NOW)


async def test_pg_long_deliver_notifications_are_split(pg: PostgresBackend) -> None:
    listener = pg.another()
    got: list[dict[str, Any]] = []
    await listener.notifier().start(lambda kind, payload: got.append(payload))
    members = [new_ulid() for _ in range(1500)]  # about 45 kB of JSON
    await pg.store.notifier().publish("deliver", {"mesh_id": "m", "member_ids": members})
    await wait_for(lambda: sum(len(p["member_ids"]) for p in got) >= len(members))
    assert len(got) > 5
    assert all(p["mesh_id"] == "m" for p in got)
    assert [m for p in got for m in p["member_ids"]] == members
    # A payload that cannot be split is dropped (logged), not raised.
    await pg.store.notifier().publish("profile", {"blob": "x" * 9000})


async def test_pg_the_listener_reconnects_after_its_connection_drops(
        pg: PostgresBackend) -> None:
    from claudemesh.broker.store.postgres import PgNotifier  # noqa: PLC0415

    listener = pg.another()
    notifier = listener.notifier()
    assert isinstance(notifier, PgNotifier)
    got: list[str] = []
    await notifier.start(lambda kind, payload: got.append(str(payload["n"])))
    killed = await pg.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'claudemesh-broker-listen'"
        " AND datname = current_database()")
    assert killed == 1
    await wait_for(lambda: notifier.reconnects == 1 and notifier.listening)
    await pg.store.notifier().publish("profile", {"n": 1})
    await wait_for(lambda: got == ["1"])


async def test_pg_concurrent_publishes_share_a_batch_and_deliver_merges(
        pg: PostgresBackend) -> None:
    listener = pg.another()
    got: list[tuple[str, dict[str, Any]]] = []
    await listener.notifier().start(lambda kind, payload: got.append((kind, payload)))
    notifier = pg.store.notifier()
    await asyncio.gather(
        *(notifier.publish("deliver", {"mesh_id": "m", "member_ids": [f"a{i % 5}"]})
          for i in range(50)),
        notifier.publish("deliver", {"mesh_id": "n", "member_ids": ["b"]}),
        notifier.publish("presence", {"event": "peer_left", "mesh_id": "m", "member_id": "x"}))
    await wait_for(lambda: {p["mesh_id"] for _, p in got} == {"m", "n"}
                   and any(k == "presence" for k, _ in got))
    woken = {m for k, p in got if k == "deliver" and p["mesh_id"] == "m"
             for m in p["member_ids"]}
    assert woken == {f"a{i}" for i in range(5)}
    # the first publish goes alone; the other 51 arrive while it is on the wire and go
    # out together, each mesh's wake-ups merged into one notification
    assert len(got) <= 4, got
