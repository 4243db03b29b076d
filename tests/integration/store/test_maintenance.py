"""The store contract for maintenance: the retention sweep, permanent dedupe rows,
the orphan check, and a closed store."""

from __future__ import annotations

import pytest

from claudemesh.broker.store.base import AcceptKind
from claudemesh.errors import ShuttingDown
from storekit import DAY, NOW, Backend, ids, send, setup_mesh


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


async def test_closed_store_refuses_work(backend: Backend) -> None:
    store = backend.open()
    await store.get_mesh("x")
    await store.close()
    with pytest.raises(ShuttingDown):
        await store.get_mesh("x")
