"""``GET /v1/messages/{client_message_id}``: how far a message we sent got.

``accepted`` is the broker's word (the outbox row is done); ``stored`` and ``surfaced``
are the recipient's, from receipts verified against its key (docs/api.md, "Receipts").
"""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from claudemesh.clock import iso_ms, iso_ms_or_none
from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.http import json_reply
from claudemesh.daemon.ipc.routes_outbox import outbox_item
from claudemesh.daemon.store.outbox import OutboxRow, OutboxStore
from claudemesh.daemon.store.outbox_rules import OutboxStatus
from claudemesh.daemon.store.receipts import ReceiptRow, ReceiptStore, ReceiptSummary
from claudemesh.errors import MessageNotFound

__all__ = ["get_message", "message_state"]


def message_state(row: OutboxRow, summary: ReceiptSummary) -> str:
    """The furthest step: scheduled, queued, accepted, stored, surfaced, or failed /
    aborted."""
    if summary.surfaced_at is not None:
        return "surfaced"
    if summary.stored_at is not None:
        return "stored"
    return {OutboxStatus.DONE: "accepted", OutboxStatus.DEAD: "failed",
            OutboxStatus.ABORTED: "aborted",
            OutboxStatus.SCHEDULED: "scheduled"}.get(row.status, "queued")


def _receipt(r: ReceiptRow) -> dict[str, Any]:
    return {"state": r.state, "recipient_pubkey": r.recipient_pubkey, "at": iso_ms(r.at),
            "received_at": iso_ms(r.received_at), "session": r.session, "path": r.path}


async def get_message(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    cmid = request.match_info["client_message_id"]

    def read(conn: sqlite3.Connection) -> tuple[OutboxRow, list[ReceiptRow],
                                                ReceiptSummary] | None:
        rows = OutboxStore(conn).list_rows(status=None, limit=1, client_message_id=cmid)
        if not rows:
            return None
        receipts = ReceiptStore(conn)
        key = (rows[0].mesh, cmid)
        return (rows[0], receipts.for_message(*key),
                receipts.summaries([key]).get(key, ReceiptSummary()))

    found = await ctx.outbox.run(read, durable=False)
    if found is None:
        raise MessageNotFound(f"this daemon sent no message with client_message_id {cmid!r}",
                              client_message_id=cmid)
    row, receipts, summary = found
    item = outbox_item(row, summary)
    return json_reply({
        "client_message_id": cmid, "mesh": row.mesh, "destination": item["destination"],
        "outbox_id": row.id, "status": str(row.status), "state": message_state(row, summary),
        "broker_message_id": row.broker_message_id, "enqueued_at": item["enqueued_at"],
        "accepted_at": iso_ms_or_none(row.delivered_at), "stored_at": item["stored_at"],
        "surfaced_at": item["surfaced_at"], "surfaced_path": summary.surfaced_path,
        "surfaced_session": summary.surfaced_session,
        "receipts": [_receipt(r) for r in receipts]})
