"""The store contract for presence and brokers' liveness, and for the notifier that
wakes every broker on the store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from claudemesh.errors import MemberAlreadyConnected
from storekit import NOW, Backend, attach, setup_mesh, wait_for

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
