"""The receipt pump: queued receipts (``inbox.db``) -> signed sealed DMs in the outbox.

Storing a DM and marking it seen each queue a receipt in the same transaction
(:mod:`claudemesh.daemon.store.readstate`). The pump turns queued receipts into outbox
rows, one per sender and up to MAX_RECEIPTS receipts each (under load one DM and one
signature stand for hundreds of messages), under ids derived from what they report on,
with every field the fingerprint covers taken from the queue rows: the same batch
always makes the same request, so after a crash between the outbox commit and marking
the queue rows sent, the resend is answered from the lookup table (202 or 200). A batch
regrouped after a crash goes out under another id; the sender's receipt table (keyed by
message, recipient and state) keeps each receipt once either way. The drain delivers
receipts like any message, at least once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from claudemesh.config import MeshConfig
from claudemesh.daemon.store.outbox import NewSend, OutboxStore
from claudemesh.daemon.store.outbox_rules import Reply
from claudemesh.daemon.store.readstate import QueuedReceipt, ReadState
from claudemesh.errors import ClaudemeshError, UnknownDestination
from claudemesh.protocol.sealed import (
    MAX_RECEIPTS,
    ReceiptItem,
    ReceiptPath,
    Receipts,
    ReceiptState,
)
from claudemesh.sending import prepare_receipts
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["ReceiptPump"]

log = logging.getLogger(__name__)

BATCH: Final = 256
RETRY_S: Final = 5.0  # after a store error, look again this much later
# How long a receipt waits for company: the receipts of a conversation's next messages
# join its batch (one DM, one signature, a fraction of the fsyncs), and the work leaves
# the path of the conversation itself. A receipt is news about the past; 0.1 s is cheap.
LINGER_S: Final = 0.1


class ReceiptPump:
    def __init__(self, meshes: Sequence[MeshConfig], *, inbox: DbWorker, outbox: DbWorker,
                 clock: Callable[[], int], on_enqueue: Callable[[str], None],
                 delay_s: float = LINGER_S) -> None:
        self._by_slug = {m.slug: m for m in meshes}
        self._inbox = inbox
        self._outbox = outbox
        self._clock = clock
        self._on_enqueue = on_enqueue
        self._delay_s = delay_s  # LINGER_S; tests hold receipts back longer (a crash between)
        self._wake = asyncio.Event()
        self._wake.set()  # the queue may hold receipts from before a restart
        self.sent = 0

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            try:
                while await self._pump_once():
                    pass
            except ClaudemeshError:
                log.exception("receipt_pump_failed; retrying")
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    async def _pump_once(self) -> bool:
        """Move one batch of the queue; True when it was full (there may be more)."""
        queued = await self._inbox.run(lambda c: ReadState(c).queued_receipts(limit=BATCH))
        if not queued:
            return False
        sends = [self._send_for(slug, sender, group)
                 for slug, sender, group in _by_destination(queued)]
        ready = [s for s in sends if s is not None]
        now = self._clock()

        def accept_all(conn: sqlite3.Connection) -> list[Reply]:
            store = OutboxStore(conn)
            return [store.accept(s, now).decision.reply for s in ready]

        replies = await self._outbox.run(accept_all)
        for send, reply in zip(ready, replies, strict=True):
            if reply is Reply.CONFLICT:  # cannot happen unless the derivation changed
                log.error("receipt_id_conflict", extra={
                    "mesh": send.mesh, "client_message_id": send.client_message_id})
        keys = [(q.seq, q.state) for q in queued]
        await self._inbox.run(lambda c: ReadState(c).mark_receipts_sent(keys, now),
                              durable=False)  # lost: resent, and answered as a duplicate
        self.sent += sum(reply is Reply.INSERT for reply in replies)
        for slug in {s.mesh for s, r in zip(ready, replies, strict=True) if r is Reply.INSERT}:
            self._on_enqueue(slug)
        return len(queued) == BATCH

    def _send_for(self, slug: str, sender: str, group: list[QueuedReceipt]) -> NewSend | None:
        mesh = self._by_slug.get(slug)
        if mesh is None:  # the mesh was left since: nobody to send them to
            return None
        receipts = Receipts(mesh.mesh_id, recipient=mesh.pubkey, sender=sender, items=tuple(
            ReceiptItem(ReceiptState(q.state), q.client_message_id, q.broker_message_id or "-",
                        q.session, None if q.path is None else ReceiptPath(q.path), q.at)
            for q in group))
        try:
            prepared = prepare_receipts(mesh, receipts)
        except UnknownDestination:
            log.warning("receipt_undeliverable", extra={"mesh": slug, "sender": sender})
            return None
        return NewSend(
            client_message_id=receipts.client_message_id(), fingerprint=prepared.fingerprint,
            payload=prepared.frozen.to_bytes(), mesh=slug, destination_kind="dm",
            destination_ref=sender, priority="next", purpose="receipt")


def _by_destination(queued: list[QueuedReceipt]) -> list[tuple[str, str,
                                                                list[QueuedReceipt]]]:
    """(mesh, sender, receipts) in queue order, at most MAX_RECEIPTS per receipt DM."""
    groups: dict[tuple[str, str], list[QueuedReceipt]] = {}
    for q in queued:
        groups.setdefault((q.mesh, q.sender_pubkey), []).append(q)
    return [(slug, sender, group[i:i + MAX_RECEIPTS]) for (slug, sender), group in groups.items()
            for i in range(0, len(group), MAX_RECEIPTS)]
