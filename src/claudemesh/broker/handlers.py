"""What each frame does once a connection is OPEN, and the table from frame type to handler.

A handler gets the connection and its validated frame and answers through the
connection. A refusal it raises (a :class:`~claudemesh.errors.ClaudemeshError`) becomes
an ``error`` frame in the session; ``send`` is the exception: every send gets exactly one
``send_result``, refusals included (§4.5b over WS, A-30), and a revoked sender is closed
with 4002. The table covers every frame a client may send after hello
(tests/unit/broker/test_handlers.py fails when a frame type is missing).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from claudemesh.broker.accept import (
    accept_input,
    check_send,
    deliveries_for,
    error_result,
    send_result,
)
from claudemesh.broker.blobs import blob_begin, blob_get, blob_put, blob_status, list_blobs
from claudemesh.broker.context import BrokerContext
from claudemesh.broker.delivery import history_item
from claudemesh.broker.handshake import already_authenticated
from claudemesh.broker.presence import peer_view
from claudemesh.broker.store.base import (
    AcceptKind,
    GroupMembership,
    Member,
    Mesh,
    SessionProfile,
    b2_refusal,
)
from claudemesh.errors import ClaudemeshError, InvalidEnvelope, MemberRevoked, RateLimited
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.features import FRAME_BATCH, BatchParams
from claudemesh.protocol.frames import (
    BlobBegin,
    BlobGet,
    BlobPut,
    BlobStatus,
    ClientAck,
    FeatureNegotiationRequest,
    Hello,
    Join,
    JoinGroup,
    LeaveGroup,
    ListBlobs,
    ListGroups,
    ListPeers,
    ListTopics,
    Send,
    SetProfile,
    Subscribe,
    TopicBoxBody,
    TopicEpoch,
    TopicHistory,
    TopicKeys,
    Unsubscribe,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.topic_epochs import TopicState

__all__ = ["HANDLERS", "Handler", "OpenSession"]


class OpenSession(Protocol):
    """What a handler needs of its connection (``session.Session``, once OPEN)."""

    ctx: BrokerContext
    revoked: bool

    @property
    def member(self) -> Member: ...

    @property
    def mesh(self) -> Mesh: ...

    async def send(self, frame: dict[str, Any]) -> bool: ...

    async def close(self, code: int, reason: str) -> None: ...

    def update_member(self, member: Member) -> None:
        """The member's profile changed: later frames see the new one."""

    def cork(self, params: BatchParams) -> None:
        """Batch every frame from now on (once; later calls change nothing)."""


Handler = Callable[[OpenSession, Any], Awaitable[None]]


async def send_message(session: OpenSession, frame: Send) -> None:
    ctx, member, mesh = session.ctx, session.member, session.mesh
    try:
        delay = ctx.hub.rate_delay_s(member)
        if delay > 0:
            raise RateLimited(retry_after_ms=math.ceil(delay * 1000))
        fingerprint = check_send(frame, inline_bytes=ctx.settings.inline_bytes)
        keys = ctx.hub.epoch_keys
        await keys.check(mesh.id, frame.destination_kind, frame.destination_ref, frame.body)
        now = ctx.clock()
        request = accept_input(frame, fingerprint, sender=member,
                               mesh_dedupe_mode=mesh.dedupe_mode,
                               retention_days=mesh.dedupe_retention_days,
                               broker_message_id=new_ulid(now), now_ms=now)
        outcome = await ctx.store.accept(request)
    except ClaudemeshError as exc:
        ctx.metrics.accepted(None)
        await session.send(error_result(frame.req_id, frame.client_message_id, exc))
        if isinstance(exc, MemberRevoked):
            session.revoked = True
            await session.close(CloseCode.MEMBER_REVOKED, exc.code)
        return
    ctx.metrics.accepted(outcome.kind)
    await session.send(send_result(frame.req_id, frame.client_message_id, outcome))
    if outcome.kind is AcceptKind.CREATED:
        sealed = await keys.keys(mesh.id, frame.destination_ref, frame.body.epoch) if (
            isinstance(frame.body, TopicBoxBody)) else None
        await ctx.hub.deliver(deliveries_for(frame, request, outcome, sealed))


async def client_ack(session: OpenSession, frame: ClientAck) -> None:
    ids = [int(d) for d in frame.delivery_ids]
    session.ctx.metrics.acked += await session.ctx.store.ack_deliveries(
        session.member.id, ids, session.ctx.clock())
    session.ctx.hub.acked(session.member, ids)


async def negotiate(session: OpenSession, frame: FeatureNegotiationRequest) -> None:
    """Answers with the feature map; a client listing ``frame_batch`` (and so able to
    read batches) gets its frames batched from then on."""
    features = session.ctx.features
    answer: dict[str, Any] = {
        "type": "feature_negotiation_response", "supported": features,
        "missing_required": [f for f in frame.require if f not in features]}
    if frame.req_id is not None:
        answer["req_id"] = frame.req_id
    await session.send(answer)
    batch = session.ctx.batch
    if batch is not None and FRAME_BATCH in (*frame.require, *frame.optional):
        session.cork(batch)


async def _result(session: OpenSession, req_id: str, **data: Any) -> None:
    await session.send({"type": "result", "req_id": req_id, **data})


async def subscribe(session: OpenSession, frame: Subscribe) -> None:
    changed = await session.ctx.store.subscribe(session.mesh.id, session.member.id,
                                                frame.topic, session.ctx.clock())
    await _result(session, frame.req_id, topic=frame.topic, subscribed=True, changed=changed)
    if changed:
        await _membership_moved(session, frame.topic)


async def unsubscribe(session: OpenSession, frame: Unsubscribe) -> None:
    changed = await session.ctx.store.unsubscribe(session.mesh.id, session.member.id,
                                                  frame.topic)
    await _result(session, frame.req_id, topic=frame.topic, subscribed=False, changed=changed)
    if changed:
        await _membership_moved(session, frame.topic)


async def _membership_moved(session: OpenSession, topic: str) -> None:
    """The ``topic_membership`` event to the topic's subscribers (connected here)."""
    await session.ctx.hub.membership_moved(session.mesh.id, topic)


def _topic_view(state: TopicState) -> dict[str, Any]:
    return {"membership_version": state.membership_version,
            "current_epoch": state.current_epoch, "subscribers": sorted(state.subscribers)}


async def topic_keys(session: OpenSession, frame: TopicKeys) -> None:
    """The topic's key state and the epoch keys sealed to the asking member only."""
    view = await session.ctx.store.topic_keys(session.mesh.id, frame.topic, session.member.id)
    if view is None:
        raise b2_refusal("topic", frame.topic)
    await _result(session, frame.req_id, topic=frame.topic, **_topic_view(view.state),
                  keys=[{"epoch": k.epoch, "membership_version": k.membership_version,
                         "sealer_pubkey": k.sealer_pubkey, "nonce": k.nonce,
                         "ciphertext": k.ciphertext} for k in view.keys])


async def topic_epoch(session: OpenSession, frame: TopicEpoch) -> None:
    """Compare-and-set the next epoch; the loser gets ``epoch_conflict`` with the state."""
    ctx, mesh = session.ctx, session.mesh
    keys = {k.pubkey: (k.nonce, k.ciphertext) for k in frame.keys}
    if len(keys) != len(frame.keys):
        raise InvalidEnvelope("a pubkey appears more than once in keys")
    state = await ctx.store.create_topic_epoch(
        mesh.id, frame.topic, epoch=frame.epoch, membership_version=frame.membership_version,
        creator=session.member, keys=keys, now_ms=ctx.clock())
    ctx.hub.epoch_keys.created(mesh.id, frame.topic)
    await _result(session, frame.req_id, topic=frame.topic, epoch=frame.epoch,
                  **_topic_view(state))


async def list_topics(session: OpenSession, frame: ListTopics) -> None:
    topics = await session.ctx.store.list_topics(session.mesh.id, session.member.id)
    await _result(session, frame.req_id, topics=topics)


async def topic_history(session: OpenSession, frame: TopicHistory) -> None:
    """A page of the topic's messages, newest first; only a subscriber may read it."""
    deliveries = await session.ctx.store.topic_history(
        session.mesh.id, session.member.id, frame.topic,
        before=None if frame.before is None else int(frame.before), limit=frame.limit)
    keys = session.ctx.hub.epoch_keys  # a topic_box item carries the reader's sealed key
    items = [history_item(await keys.attach(d)) for d in deliveries]
    last = items[-1]["history_id"] if len(items) == frame.limit else None
    await _result(session, frame.req_id, topic=frame.topic, items=items, next_before=last)


async def join_group(session: OpenSession, frame: JoinGroup) -> None:
    changed = await session.ctx.store.join_group(session.mesh.id, session.member.id,
                                                 frame.group, session.ctx.clock(), frame.role)
    await _result(session, frame.req_id, group=frame.group, member=True, changed=changed,
                  role=frame.role)


async def list_groups(session: OpenSession, frame: ListGroups) -> None:
    rows = await session.ctx.store.group_members(session.mesh.id)
    online = await session.ctx.hub.online_members(session.mesh.id)
    await _result(session, frame.req_id, groups=group_views(rows, session.member.id, online))


def group_views(rows: list[GroupMembership], me: str,
                online: set[str] | frozenset[str]) -> list[dict[str, Any]]:
    """``list_groups``' answer: each group with its size, whether (and as what) the asker
    is in it, and its roster."""
    groups: dict[str, list[GroupMembership]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    views = []
    for name, members in groups.items():
        mine = next((m for m in members if m.member_id == me), None)
        views.append({"group": name, "members": len(members), "member": mine is not None,
                      "role": None if mine is None else mine.role,
                      "roster": [{"pubkey": m.pubkey, "display_name": m.display_name,
                                  "role": m.role, "online": m.member_id in online}
                                 for m in members]})
    return views


async def leave_group(session: OpenSession, frame: LeaveGroup) -> None:
    changed = await session.ctx.store.leave_group(session.mesh.id, session.member.id,
                                                  frame.group)
    await _result(session, frame.req_id, group=frame.group, member=False, changed=changed)


async def list_peers(session: OpenSession, frame: ListPeers) -> None:
    me = session.member
    members = await session.ctx.store.list_members(session.mesh.id)
    online = await session.ctx.hub.online_members(session.mesh.id)
    peers = [peer_view(m, online=m.id in online) for m in members
             if m.visible or m.id == me.id]
    await _result(session, frame.req_id, peers=peers)


async def set_profile(session: OpenSession, frame: SetProfile) -> None:
    fields = frame.model_dump(exclude={"type", "req_id", "sessions"}, exclude_none=True)
    if frame.sessions is not None:  # the whole list: [] clears it
        fields["sessions"] = tuple(SessionProfile(e.name, e.summary, e.status, e.harness)
                                   for e in frame.sessions)
    updated = await session.ctx.store.set_profile(session.member.id, fields)
    session.update_member(updated)
    await session.ctx.hub.profile_changed(updated)
    await _result(session, frame.req_id, applied=sorted(fields),
                  peer=peer_view(updated, online=True))


HANDLERS: Final[dict[type[Any], Handler]] = {
    Hello: already_authenticated,
    Join: already_authenticated,
    FeatureNegotiationRequest: negotiate,
    Send: send_message,
    ClientAck: client_ack,
    Subscribe: subscribe,
    Unsubscribe: unsubscribe,
    ListTopics: list_topics,
    TopicHistory: topic_history,
    JoinGroup: join_group,
    LeaveGroup: leave_group,
    ListGroups: list_groups,
    ListPeers: list_peers,
    SetProfile: set_profile,
    BlobBegin: blob_begin,
    BlobPut: blob_put,
    BlobStatus: blob_status,
    BlobGet: blob_get,
    ListBlobs: list_blobs,
    TopicKeys: topic_keys,
    TopicEpoch: topic_epoch,
}
