"""Both stores' schemas migrate idempotently and in place, from the schema before
member_sessions; PostgreSQL's migrations race safely between brokers starting together."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from claudemesh.broker.store import open_store
from claudemesh.broker.store.base import AcceptKind
from claudemesh.broker.store.postgres.schema import PG_MIGRATIONS
from claudemesh.broker.store.sqlite import BROKER_MIGRATIONS, SqliteBrokerStore
from claudemesh.sqlitedb.db import open_database
from storekit import (
    BUILD,
    Backend,
    PostgresBackend,
    SqliteBackend,
    fresh_pg_dsn,
    send,
    setup_mesh,
)


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
            "SELECT array_agg(version ORDER BY version) FROM mesh.schema_migrations") == (
            list(range(1, len(PG_MIGRATIONS) + 1)))
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
        await postgres.migrate(conn, postgres.PG_MIGRATIONS[:3])  # before sessions
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


async def test_topic_history_of_rows_written_before_the_history_index(
        backend: Backend) -> None:
    """The newest migration (message_history.topic) fills the column for the rows already
    there: the store's data is put back to the schema before it, then reopened."""
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    for member in (alice, bob):
        await store.subscribe(mesh.id, member.id, "news", 1)
    for n in range(3):
        await store.accept(send(mesh, alice, f"t{n}", to="news", kind="topic"))
    await store.accept(send(mesh, alice, "dm", to=bob.pubkey))
    await store.close()
    if isinstance(backend, SqliteBackend):
        backend._query("DROP INDEX message_history_topic")
        backend._query("ALTER TABLE message_history DROP COLUMN topic")
        backend._query(f"PRAGMA user_version = {len(BROKER_MIGRATIONS) - 1}")
    else:
        assert isinstance(backend, PostgresBackend)
        await backend.fetchval("ALTER TABLE mesh.message_history DROP COLUMN topic")
        await backend.fetchval("DELETE FROM mesh.schema_migrations WHERE version = $1",
                               len(PG_MIGRATIONS))
    backend.store = store = backend.open()
    page = await store.topic_history(mesh.id, bob.id, "news", before=None, limit=10)
    assert [d.client_message_id for d in page] == ["t2", "t1", "t0"]
    await store.accept(send(mesh, alice, "t3", to="news", kind="topic"))  # the new accept
    page = await store.topic_history(mesh.id, bob.id, "news", before=None, limit=2)
    assert [d.client_message_id for d in page] == ["t3", "t2"]
    older = await store.topic_history(mesh.id, bob.id, "news", before=int(
        str(page[-1].history_id)), limit=10)
    assert [d.client_message_id for d in older] == ["t1", "t0"]
