"""What only the PostgreSQL store has: row locks between connections, driver errors at
the edge, LISTEN/NOTIFY between store instances (splitting, batching, reconnects)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from claudemesh.broker.store.base import AcceptKind
from claudemesh.errors import StoreError
from claudemesh.protocol.ids import new_ulid
from storekit import FP, NOW, PostgresBackend, send, setup_mesh, wait_for


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
