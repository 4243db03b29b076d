"""The store contract for encrypted topics, on SQLite and PostgreSQL: membership
versions move with subscribe, unsubscribe and revocation; ``create_topic_epoch`` is a
compare-and-set; sealed keys are per member, so a later subscriber has none of the
epochs before it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from claudemesh.broker.store.base import AcceptInput, AcceptKind
from claudemesh.errors import DestinationNotFound, EpochConflict, StaleEpoch
from storekit import NOW, Backend, send, setup_mesh


def sealed(*pubkeys: str, tag: str = "k") -> dict[str, tuple[str, str]]:
    return {p: ("n" * 32, f"{tag}-{p[:8]}") for p in pubkeys}


async def test_membership_version_moves_with_every_change(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    assert await store.topic_keys(mesh.id, "news", alice.id) is None
    assert await store.topic_epoch(mesh.id, "news") is None
    await store.subscribe(mesh.id, alice.id, "news", NOW)
    await store.subscribe(mesh.id, alice.id, "news", NOW)  # no change, no bump
    await store.subscribe(mesh.id, bob.id, "news", NOW)
    view = await store.topic_keys(mesh.id, "news", alice.id)
    assert view is not None
    assert (view.state.membership_version, view.state.current_epoch, view.keys) == (2, 0, ())
    assert view.state.subscribers == {alice.pubkey, bob.pubkey}
    assert await store.topic_epoch(mesh.id, "news") == 0
    await store.subscribe(mesh.id, carol.id, "news", NOW)
    await store.unsubscribe(mesh.id, bob.id, "news")
    await store.unsubscribe(mesh.id, bob.id, "news")  # no change
    await store.revoke_member(carol.pubkey, mesh_id=mesh.id, now_ms=NOW)
    view = await store.topic_keys(mesh.id, "news", alice.id)
    assert view is not None
    assert view.state.membership_version == 5
    assert view.state.subscribers == {alice.pubkey}
    assert await store.topic_members(mesh.id, "news") == [alice.id]


async def test_epoch_compare_and_set(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    with pytest.raises(DestinationNotFound):
        await store.create_topic_epoch(mesh.id, "none", epoch=1, membership_version=0,
                                       creator=alice, keys={}, now_ms=NOW)
    for member in (alice, bob):
        await store.subscribe(mesh.id, member.id, "news", NOW)
    refused = [
        (2, 2, sealed(alice.pubkey, bob.pubkey)),  # not the next epoch
        (1, 1, sealed(alice.pubkey, bob.pubkey)),  # an old membership version
        (1, 2, sealed(alice.pubkey)),  # bob left out
        (1, 2, sealed(alice.pubkey, bob.pubkey, carol.pubkey)),  # carol is no subscriber
    ]
    for epoch, version, keys in refused:
        with pytest.raises(EpochConflict) as info:
            await store.create_topic_epoch(mesh.id, "news", epoch=epoch,
                                           membership_version=version, creator=alice,
                                           keys=keys, now_ms=NOW)
        assert info.value.fields["current_epoch"] == 0
        assert info.value.fields["membership_version"] == 2
    assert await store.epoch_keys(mesh.id, "news", 1) is None
    state = await store.create_topic_epoch(mesh.id, "news", epoch=1, membership_version=2,
                                           creator=alice, keys=sealed(alice.pubkey, bob.pubkey),
                                           now_ms=NOW)
    assert (state.current_epoch, state.membership_version) == (1, 2)
    assert await store.topic_epoch(mesh.id, "news") == 1
    keys = await store.epoch_keys(mesh.id, "news", 1)
    assert keys is not None
    assert set(keys) == {alice.id, bob.id}
    assert (keys[bob.id].sealer_pubkey, keys[bob.id].ciphertext, keys[bob.id].epoch,
            keys[bob.id].membership_version) == (alice.pubkey, f"k-{bob.pubkey[:8]}", 1, 2)
    with pytest.raises(EpochConflict):  # the same epoch again: the race's loser
        await store.create_topic_epoch(mesh.id, "news", epoch=1, membership_version=2,
                                       creator=bob, keys=sealed(alice.pubkey, bob.pubkey),
                                       now_ms=NOW)


async def test_a_later_subscriber_gets_only_later_epochs(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    for member in (alice, bob):
        await store.subscribe(mesh.id, member.id, "news", NOW)
    await store.create_topic_epoch(mesh.id, "news", epoch=1, membership_version=2,
                                   creator=alice, keys=sealed(alice.pubkey, bob.pubkey),
                                   now_ms=NOW)
    await store.subscribe(mesh.id, carol.id, "news", NOW)
    await store.unsubscribe(mesh.id, bob.id, "news")
    await store.create_topic_epoch(mesh.id, "news", epoch=2, membership_version=4,
                                   creator=alice, keys=sealed(alice.pubkey, carol.pubkey),
                                   now_ms=NOW)
    for member, epochs in ((alice, [1, 2]), (bob, [1]), (carol, [2])):
        view = await store.topic_keys(mesh.id, "news", member.id)
        assert view is not None
        assert [k.epoch for k in view.keys] == epochs, member.display_name
        assert all(k.sealer_pubkey == alice.pubkey for k in view.keys)


async def test_concurrent_epochs_one_wins(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _] = await setup_mesh(store)
    for member in (alice, bob):
        await store.subscribe(mesh.id, member.id, "news", NOW)
    results = await asyncio.gather(*(
        store.create_topic_epoch(mesh.id, "news", epoch=1, membership_version=2, creator=who,
                                 keys=sealed(alice.pubkey, bob.pubkey, tag=who.display_name),
                                 now_ms=NOW)
        for who in (alice, bob, alice, bob)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, EpochConflict) for r in results if isinstance(r, BaseException))
    keys = await store.epoch_keys(mesh.id, "news", 1)
    assert keys is not None
    assert len({k.ciphertext.split("-")[0] for k in keys.values()}) == 1  # one winner's set


async def test_a_post_under_an_epoch_of_an_older_membership_is_refused(
        backend: Backend) -> None:
    """An epoch belongs to one membership version: after an unsubscribe (or a subscribe)
    a topic_box under it is refused for a new client_message_id and nothing is stored;
    a client_message_id taken before the change is still answered as a duplicate."""
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    for member in (alice, bob, carol):
        await store.subscribe(mesh.id, member.id, "news", NOW)
    await store.create_topic_epoch(mesh.id, "news", epoch=1, membership_version=3,
                                   creator=alice, now_ms=NOW,
                                   keys=sealed(alice.pubkey, bob.pubkey, carol.pubkey))

    def post(cmid: str) -> AcceptInput:
        return dataclasses.replace(send(mesh, alice, cmid, to="news", kind="topic"), epoch=1)

    assert (await store.accept(post("before"))).kind is AcceptKind.CREATED
    await store.unsubscribe(mesh.id, carol.id, "news")
    with pytest.raises(StaleEpoch) as info:
        await store.accept(post("after"))
    assert info.value.fields == {"epoch": 1, "current_epoch": 1, "membership_version": 4}
    assert (await store.accept(post("before"))).kind is AcceptKind.DUPLICATE
    history = await store.topic_history(mesh.id, bob.id, "news", before=None, limit=10)
    assert [d.client_message_id for d in history] == ["before"]
    # the next epoch, for the current membership, is taken again
    await store.create_topic_epoch(mesh.id, "news", epoch=2, membership_version=4,
                                   creator=alice, now_ms=NOW,
                                   keys=sealed(alice.pubkey, bob.pubkey))
    again = dataclasses.replace(post("after"), epoch=2)
    assert (await store.accept(again)).kind is AcceptKind.CREATED
    await store.subscribe(mesh.id, carol.id, "news", NOW)  # a join moves it on too
    with pytest.raises(StaleEpoch):
        await store.accept(dataclasses.replace(post("later"), epoch=2))
