"""The store contract for the accept (§4.7.2, R-BRK-10) and delivery: dedupe answers,
B2 refusals, recipients, concurrent accepts, pending rows, acks and claims."""

from __future__ import annotations

import asyncio

import pytest

from claudemesh.broker.store.base import AcceptKind, Delivery
from claudemesh.errors import DestinationNotFound, MemberRevoked
from storekit import DAY, FP, NOW, OTHER_FP, Backend, attach, ids, send, setup_mesh

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
