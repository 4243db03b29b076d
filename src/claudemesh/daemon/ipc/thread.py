"""``GET /v1/inbox?thread=<id>``: a whole thread, oldest first, received and sent.

The id may be a ``broker_message_id``, an inbox ``id`` or a ``client_message_id`` (ours
or a sender's). From that message the walk goes up the ``reply_to`` chain to the
oldest message this daemon holds (the root), then down, level by level, to every
message whose chain leads to it, in inbox.db and outbox.db alike, across DMs and topics.
Caps: :data:`MAX_DEPTH` levels each way and ``limit`` messages (``truncated`` says when
the cap cut the walk). A message this daemon both sent and received (a DM to itself)
appears once, as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from claudemesh.clock import iso_ms, iso_ms_or_none
from claudemesh.daemon.inbound import inbox_item_view
from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.store.inbox import InboxItem
from claudemesh.daemon.store.threads import (
    SentMessage,
    find_received,
    find_sent,
    received_replies,
    received_with_ids,
    sent_replies,
    sent_with_ids,
)
from claudemesh.errors import MessageNotFound
from claudemesh.protocol.destination import Destination, DestinationKind

__all__ = ["MAX_DEPTH", "thread_view"]

MAX_DEPTH: Final = 100  # reply levels walked up to the root, and again down from it


@dataclass(frozen=True, slots=True)
class _Node:
    key: tuple[int, int, int]  # (time ms, 0 received / 1 sent, seq or rowid): the order
    broker_message_id: str | None
    reply_to: str | None
    mesh: str
    view: dict[str, Any]


def _ms(created_at: str | None, fallback: int) -> int:
    if created_at:
        try:
            return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
                       * 1000)
        except ValueError:
            pass
    return fallback


def _received(item: InboxItem) -> _Node:
    view = {"direction": "received", **inbox_item_view(item, iso_ms)}
    return _Node((_ms(item.created_at, item.received_at), 0, item.seq),
                 item.broker_message_id, item.reply_to_id, item.mesh, view)


def _sent(sent: SentMessage) -> _Node:
    row = sent.row
    destination = Destination(DestinationKind(row.destination_kind), row.destination_ref)
    view = {
        "direction": "sent", "id": row.id, "client_message_id": row.client_message_id,
        "broker_message_id": row.broker_message_id, "mesh": row.mesh,
        "destination": destination.address,
        "topic": row.destination_ref if row.destination_kind == "topic" else None,
        "body": sent.body, "priority": row.priority, "reply_to": row.reply_to_id,
        "status": str(row.status), "created_at": iso_ms(row.enqueued_at),
        "delivered_at": iso_ms_or_none(row.delivered_at),
    }
    return _Node((row.enqueued_at, 1, sent.rowid), row.broker_message_id, row.reply_to_id,
                 row.mesh, view)


async def _by_ids(ctx: DaemonContext, ids: set[str]) -> list[_Node]:
    got = [_received(i) for i in await ctx.inbox.run(lambda c: received_with_ids(c, ids))]
    return got + [_sent(s) for s in await ctx.outbox.run(lambda c: sent_with_ids(c, ids))]


async def _replies(ctx: DaemonContext, ids: set[str]) -> list[_Node]:
    got = [_received(i) for i in await ctx.inbox.run(lambda c: received_replies(c, ids))]
    return got + [_sent(s) for s in await ctx.outbox.run(lambda c: sent_replies(c, ids))]


async def _start(ctx: DaemonContext, ident: str, mesh: str | None) -> _Node:
    found = [_received(i) for i in await ctx.inbox.run(lambda c: find_received(c, ident))]
    found += [_sent(s) for s in await ctx.outbox.run(lambda c: find_sent(c, ident))]
    found = [n for n in found if mesh is None or n.mesh == mesh]
    if not found:
        raise MessageNotFound(f"no message received or sent here has id {ident!r}",
                              id=ident)
    return min(found, key=lambda n: n.key)


async def _root(ctx: DaemonContext, node: _Node) -> _Node:
    seen = {node.broker_message_id}
    for _ in range(MAX_DEPTH):
        parent = node.reply_to
        if parent is None or parent in seen:
            break
        found = await _by_ids(ctx, {parent})
        if not found:
            break  # replied to a message this daemon never held: this one is the root
        node = min(found, key=lambda n: n.key)
        seen.add(parent)
    return node


def _identity(node: _Node) -> tuple[str, str]:
    if node.broker_message_id is not None:
        return ("b", node.broker_message_id)
    return (str(node.view["direction"]), str(node.view["id"]))


async def thread_view(ctx: DaemonContext, ident: str, *, mesh: str | None,
                      limit: int) -> dict[str, Any]:
    """The thread holding message ``ident``, as ``GET /v1/inbox?thread=`` answers it.

    Raises:
        MessageNotFound: no message here has that id (404).
    """
    root = await _root(ctx, await _start(ctx, ident, mesh))
    nodes: dict[tuple[str, str], _Node] = {_identity(root): root}
    frontier: set[str] = set() if root.broker_message_id is None else {root.broker_message_id}
    truncated = False
    for _ in range(MAX_DEPTH):
        if not frontier:
            break
        fresh: set[str] = set()
        for node in sorted(await _replies(ctx, frontier), key=lambda n: (n.key[1], n.key)):
            key = _identity(node)
            if key in nodes:
                continue  # a message sent and received here: the received copy came first
            if len(nodes) >= limit:
                truncated = True
                break
            nodes[key] = node
            if node.broker_message_id is not None:
                fresh.add(node.broker_message_id)
        if truncated:
            break
        frontier = set(fresh)
    else:
        truncated = bool(frontier)
    ordered = sorted(nodes.values(), key=lambda n: n.key)
    return {"thread": root.broker_message_id or root.view["id"],
            "items": [n.view for n in ordered if mesh is None or n.mesh == mesh],
            "truncated": truncated, "next_cursor": None}
