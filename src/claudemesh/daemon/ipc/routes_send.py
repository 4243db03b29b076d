"""``POST /v1/send``: the idempotent accept (daemon-spec §4.5, R-ACC-1..5, R-CMID-1).

Phase A (validation, mesh, destination, id) raises before anything is written, so a
refused request consumes no id. Then the fingerprint is computed once (R-FP-3), the
frozen envelope built, and the worker runs the lookup table inside ``BEGIN IMMEDIATE``;
the answer goes out only after the group's COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from aiohttp import web

from claudemesh.clock import iso_ms
from claudemesh.daemon.directory import PeerDirectory
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import (
    SendRequest,
    deliver_at_ms,
    parse_json_object,
    validate,
)
from claudemesh.daemon.store.outbox import AcceptOutcome, NewSend, OutboxStore
from claudemesh.daemon.store.outbox_rules import Reply
from claudemesh.daemon.topic_keys import EpochKey
from claudemesh.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    SessionNotFound,
    UnknownDestination,
    UnknownSession,
)
from claudemesh.protocol.destination import (
    Destination,
    DestinationError,
    DestinationKind,
    PeerName,
    anycast,
    parse_address,
)
from claudemesh.protocol.fingerprint import fingerprint_prefix
from claudemesh.protocol.ids import is_valid_client_message_id, new_ulid
from claudemesh.sending import prepare

__all__ = ["accept_send", "post_send", "prepare_send"]


@dataclass(frozen=True, slots=True)
class _Prepared:
    send: NewSend
    request_fingerprint: bytes


def choose_client_message_id(header: str | None, body: str | None) -> str | None:
    """R-CMID-1 / A-15: the ``Idempotency-Key`` header first, then the body field.

    Raises:
        InvalidRequest: the header is malformed, or both are given and differ.
    """
    if header is not None:
        if not is_valid_client_message_id(header):
            raise InvalidRequest(
                "Idempotency-Key must be 1-128 printable ASCII characters without spaces")
        if body is not None and body != header:
            raise InvalidRequest("Idempotency-Key header and client_message_id differ")
        return header
    return body


def resolve_destination(target: Destination | PeerName, mesh: str,
                        directory: PeerDirectory) -> Destination:
    """A display name becomes the one pubkey it names in ``mesh`` (A-14f).

    Raises:
        UnknownDestination: nobody, or more than one peer, has that name (422).
    """
    if isinstance(target, Destination):
        return target
    matches = directory.resolve(mesh, target.name)
    if len(matches) == 1:
        return Destination(DestinationKind.DM, matches[0])
    if not matches:
        raise UnknownDestination(
            f"no known peer in mesh {mesh!r} is called {target.name!r}; use a 64-hex"
            " pubkey, or wait until the daemon has seen that peer", to=target.name)
    raise UnknownDestination(
        f"{len(matches)} peers in mesh {mesh!r} are called {target.name!r}; address one"
        " by pubkey", to=target.name, candidates=matches)


async def sending_session(ctx: DaemonContext, session_id: str | None) -> str | None:
    """The name of the live session a send comes from (it becomes ``from_session``).

    Raises:
        UnknownSession: no live session has that id (422; the send consumes no id).
    """
    if session_id is None:
        return None
    try:
        return (await ctx.sessions.touch(session_id)).name
    except SessionNotFound:
        raise UnknownSession(f"no live session has id {session_id!r}; register one with"
                             " POST /v1/sessions", session=session_id) from None


def prepare_send(ctx: DaemonContext, req: SendRequest, header_id: str | None,
                 from_session: str | None = None,
                 topic_key: EpochKey | None = None) -> _Prepared:
    """Phase A plus fingerprint and frozen envelope; raises 4xx, writes nothing. A post to
    an encrypted ``#topic`` is sealed with ``topic_key`` (:func:`topic_key_for`)."""
    cmid = choose_client_message_id(header_id, req.client_message_id)
    mesh = ctx.pick_mesh(req.mesh)
    try:
        address = parse_address(req.to)
        target = anycast(address.target) if req.anycast else address.target
    except DestinationError as exc:
        raise InvalidRequest(f"field 'to': {exc}") from None
    dest = resolve_destination(target, mesh.slug, ctx.directory)
    negotiated = ctx.runtime(mesh.slug).link.negotiated
    prepared = prepare(mesh, dest, req.message, priority=req.priority, reply_to=req.reply_to,
                       meta=req.meta, inline_limit=None if negotiated is None
                       else negotiated.inline_bytes, to_session=address.session,
                       from_session=from_session, topic_key=None if topic_key is None
                       else (topic_key.epoch, topic_key.key))
    send = NewSend(
        client_message_id=cmid or new_ulid(ctx.clock()), fingerprint=prepared.fingerprint,
        payload=prepared.frozen.to_bytes(), mesh=mesh.slug, destination_kind=str(dest.kind),
        destination_ref=dest.ref, priority=req.priority,
        deliver_at=deliver_at_ms(req.deliver_at, ctx.clock()), reply_to_id=req.reply_to,
        text=req.message,
    )
    return _Prepared(send, prepared.fingerprint)


async def topic_key_for(ctx: DaemonContext, req: SendRequest) -> EpochKey | None:
    """The epoch key a post to a ``#topic`` is sealed with (daemon.topic_keys); None for
    every other destination, and for a topic that stays plain. Refusals of the address
    itself are left to :func:`prepare_send`.

    Raises:
        BrokerUnavailable: no key for the topic and the link is down (503).
    """
    try:
        target = parse_address(req.to).target
    except DestinationError:
        return None
    if not isinstance(target, Destination) or target.kind is not DestinationKind.TOPIC or (
            target.ref[0] in "@*"):
        return None
    mesh = ctx.pick_mesh(req.mesh)
    return await ctx.runtime(mesh.slug).topics.key_for_post(target.ref)


async def post_send(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(SendRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    return await accept_send(ctx, req, request.headers.get("Idempotency-Key"))


async def accept_send(ctx: DaemonContext, req: SendRequest,
                      header_id: str | None) -> web.Response:
    """The accept of a validated send: ``/v1/send`` and ``/v1/topic/post`` (A-53)."""
    from_session = await sending_session(ctx, req.session)
    prepared = prepare_send(ctx, req, header_id, from_session)  # every 4xx first
    topic_key = await topic_key_for(ctx, req)
    if topic_key is not None:  # sealed under the topic's epoch, checked again for size
        prepared = prepare_send(ctx, req, header_id, from_session, topic_key)
    now = ctx.clock()
    outcome = await ctx.outbox.run(lambda conn: OutboxStore(conn).accept(prepared.send, now))
    if outcome.decision.reply is Reply.INSERT:
        ctx.on_enqueue(prepared.send.mesh)
    kind = outcome.decision.conflict or outcome.decision.reply.value
    ctx.state.accepts[(prepared.send.mesh, kind)] += 1
    return _reply(outcome, prepared.request_fingerprint)


def _accepted(outcome: AcceptOutcome, status: str) -> web.Response:
    """202; a row that has a ``deliver_at`` says it (the stored one: a retry with another
    time answers the row as it is, since ``deliver_at`` is not part of the fingerprint)."""
    body: dict[str, object] = {"client_message_id": outcome.client_message_id,
                               "outbox_id": outcome.row_id, "status": status}
    if outcome.deliver_at is not None:
        body["deliver_at"] = iso_ms(outcome.deliver_at)
    return json_reply(body, 202)


def _reply(outcome: AcceptOutcome, request_fp: bytes) -> web.Response:
    decision = outcome.decision
    match decision.reply:
        case Reply.INSERT:
            return _accepted(outcome, "queued" if outcome.deliver_at is None else "scheduled")
        case Reply.QUEUED:
            return _accepted(outcome, "queued")
        case Reply.SCHEDULED:
            return _accepted(outcome, "scheduled")
        case Reply.INFLIGHT:
            return _accepted(outcome, "inflight")
        case Reply.DUPLICATE:
            return json_reply({"client_message_id": outcome.client_message_id,
                               "outbox_id": outcome.row_id, "duplicate": True,
                               "broker_message_id": outcome.broker_message_id,
                               "history_id": outcome.history_id}, 200)
        case Reply.CONFLICT:
            fields: dict[str, object] = {
                "conflict": decision.conflict,
                "client_message_id": outcome.client_message_id,
                "daemon_fingerprint_prefix": fingerprint_prefix(outcome.stored_fingerprint),
                "request_fingerprint_prefix": fingerprint_prefix(request_fp),
                "broker_message_id": outcome.broker_message_id,
            }
            if decision.conflict == "outbox_dead_fingerprint_match":
                fields["reason"] = outcome.last_error
            raise IdempotencyKeyReused(
                f"client_message_id {outcome.client_message_id!r} is taken"
                f" ({decision.conflict})", **fields)
    assert_never(decision.reply)
