"""The receipt pump: queued receipts (``inbox.db``) -> signed sealed DMs in the outbox.

Storing a DM and marking it seen each queue a receipt in the same transaction
(:mod:`claudemesh.daemon.store.readstate`). The pump turns queued receipts into outbox
rows under ids derived from the message (``rcpt-<state>-…``), with every field the
fingerprint covers taken from the queue row, so the same receipt always makes the same
request: after a crash between the outbox commit and marking the queue row sent, the
resend is answered from the lookup table (202 or 200) and nothing doubles. The drain
then delivers it like any message, at least once, and the sender's inbox-side dedupe
(its receipt table's key) keeps one.
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
    Receipt,
    ReceiptPath,
    ReceiptState,
    receipt_client_message_id,
)
from claudemesh.sending import prepare_receipt
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["ReceiptPump"]

log = logging.getLogger(__name__)

BATCH: Final = 256
RETRY_S: Final = 5.0  # after a store error, look again this much later


class ReceiptPump:
    def __init__(self, meshes: Sequence[MeshConfig], *, inbox: DbWorker, outbox: DbWorker,
                 clock: Callable[[], int], on_enqueue: Callable[[str], None],
                 delay_s: float = 0.0) -> None:
        self._by_slug = {m.slug: m for m in meshes}
        self._inbox = inbox
        self._outbox = outbox
        self._clock = clock
        self._on_enqueue = on_enqueue
        self._delay_s = delay_s  # tests only: hold receipts back (crash between steps)
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
        """Move one batch; True when a full batch was moved (there may be more)."""
        queued = await self._inbox.run(lambda c: ReadState(c).queued_receipts(limit=BATCH))
        if not queued:
            return False
        sends = [s for s in (self._send_for(q) for q in queued) if s is not None]
        now = self._clock()

        def accept_all(conn: sqlite3.Connection) -> list[Reply]:
            store = OutboxStore(conn)
            return [store.accept(s, now).decision.reply for s in sends]

        replies = await self._outbox.run(accept_all)
        for send, reply in zip(sends, replies, strict=True):
            if reply is Reply.CONFLICT:  # cannot happen unless the derivation changed
                log.error("receipt_id_conflict", extra={
                    "mesh": send.mesh, "client_message_id": send.client_message_id})
        keys = [(q.seq, q.state) for q in queued]
        await self._inbox.run(lambda c: ReadState(c).mark_receipts_sent(keys, now),
                              durable=False)  # lost: resent, and answered as a duplicate
        self.sent += sum(reply is Reply.INSERT for reply in replies)
        for slug in {s.mesh for s, r in zip(sends, replies, strict=True) if r is Reply.INSERT}:
            self._on_enqueue(slug)
        return len(queued) == BATCH

    def _send_for(self, q: QueuedReceipt) -> NewSend | None:
        mesh = self._by_slug.get(q.mesh)
        if mesh is None:  # the mesh was left since: nobody to send it to
            return None
        state = ReceiptState(q.state)
        receipt = Receipt(state, mesh.mesh_id, q.client_message_id, q.broker_message_id or "",
                          recipient=q.recipient_pubkey, sender=q.sender_pubkey,
                          session=q.session,
                          path=None if q.path is None else ReceiptPath(q.path), at=q.at)
        try:
            prepared = prepare_receipt(mesh, receipt)
        except UnknownDestination:
            log.warning("receipt_undeliverable", extra={"mesh": q.mesh,
                                                        "sender": q.sender_pubkey})
            return None
        return NewSend(
            client_message_id=receipt_client_message_id(
                state, mesh_id=mesh.mesh_id, client_message_id=q.client_message_id,
                recipient=q.recipient_pubkey),
            fingerprint=prepared.fingerprint, payload=prepared.frozen.to_bytes(),
            mesh=mesh.slug, destination_kind="dm", destination_ref=q.sender_pubkey,
            priority="next", purpose="receipt")
