"""Operator routes: ``GET /v1/outbox``, ``POST /v1/outbox/requeue`` (R-RQ-1..4, R-OBX-9) and
``POST /v1/outbox/abort`` (issue 15: cancel a scheduled or waiting send, no copy).

``GET /v1/outbox?q=`` searches the plaintext of what this daemon sent (FTS5).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from claudemesh.clock import iso_ms, iso_ms_or_none
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import (
    AbortRequest,
    RequeueRequest,
    ascii_digits,
    deliver_at_ms,
    parse_json_object,
    validate,
)
from claudemesh.daemon.store.fts_query import FtsQueryError
from claudemesh.daemon.store.outbox import OutboxRow, OutboxStore
from claudemesh.daemon.store.outbox_rules import OutboxStatus
from claudemesh.daemon.store.receipts import ReceiptStore, ReceiptSummary
from claudemesh.daemon.store.search import search_outbox
from claudemesh.errors import InvalidRequest
from claudemesh.protocol.destination import Destination, DestinationKind
from claudemesh.protocol.fingerprint import fingerprint_prefix

__all__ = ["QUERY_PARAMS", "get_outbox", "outbox_item", "post_abort", "post_requeue",
           "with_receipts"]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
QUERY_PARAMS: Final = frozenset({"status", "limit", "client_message_id", "purpose", "q",
                                  "cursor", "mesh"})


def outbox_item(row: OutboxRow, receipts: ReceiptSummary | None = None) -> dict[str, Any]:
    destination = Destination(DestinationKind(row.destination_kind), row.destination_ref)
    return {
        "id": row.id,
        "client_message_id": row.client_message_id,
        "status": str(row.status),
        "attempts": row.attempts,
        "enqueued_at": iso_ms(row.enqueued_at),
        "next_attempt_at": iso_ms(row.next_attempt_at),
        "deliver_at": iso_ms_or_none(row.deliver_at),
        "delivered_at": iso_ms_or_none(row.delivered_at),
        "broker_message_id": row.broker_message_id,
        "history_id": row.history_id,
        "last_error": row.last_error,
        "aborted_at": iso_ms_or_none(row.aborted_at),
        "aborted_by": row.aborted_by,
        "superseded_by": row.superseded_by,
        "mesh": row.mesh,
        "destination": destination.address,
        "priority": row.priority,
        "fingerprint_prefix": fingerprint_prefix(row.request_fingerprint),
        "payload_bytes": row.payload_bytes,
        "purpose": row.purpose,
        "stored_at": iso_ms_or_none(receipts.stored_at if receipts else None),
        "surfaced_at": iso_ms_or_none(receipts.surfaced_at if receipts else None),
        "surfaced_path": receipts.surfaced_path if receipts else None,
    }


async def with_receipts(ctx: DaemonContext, rows: list[OutboxRow]) -> dict[
        tuple[str, str], ReceiptSummary]:
    keys = [(r.mesh, r.client_message_id) for r in rows if r.purpose == "message"]
    if not keys:
        return {}
    return await ctx.outbox.run(lambda conn: ReceiptStore(conn).summaries(keys))


_PURPOSES: Final = {"message": "message", "receipt": "receipt", "all": None}


def _parse_query(query: Any) -> tuple[OutboxStatus | None, int, str | None, str | None]:
    unknown = set(query) - QUERY_PARAMS
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    raw_status = query.get("status") or None
    try:
        status = OutboxStatus(raw_status) if raw_status else None
    except ValueError:
        names = ", ".join(s.value for s in OutboxStatus)
        raise InvalidRequest(f"status must be one of {names}") from None
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    if not ascii_digits(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    purpose = query.get("purpose") or "message"
    if purpose not in _PURPOSES:
        raise InvalidRequest("purpose must be message, receipt or all")
    return status, int(raw_limit), query.get("client_message_id") or None, _PURPOSES[purpose]


async def get_outbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    status, limit, cmid, purpose = _parse_query(request.query)
    text = request.query.get("q")
    if text is not None:
        return await _search(ctx, text, status=status, limit=limit, cmid=cmid,
                             purpose=purpose, query=request.query)
    for name in ("cursor", "mesh"):
        if name in request.query:
            raise InvalidRequest(f"{name} applies to a search; it needs q")
    rows = await ctx.outbox.run(lambda conn: OutboxStore(conn).list_rows(
        status=status, limit=limit, client_message_id=cmid, purpose=purpose))
    receipts = await with_receipts(ctx, rows)
    return json_reply({"items": [outbox_item(r, receipts.get((r.mesh, r.client_message_id)))
                                 for r in rows]})


async def post_requeue(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(RequeueRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    now = ctx.clock()
    when = deliver_at_ms(req.deliver_at, now)
    outcome = await ctx.outbox.run(lambda conn: OutboxStore(conn).requeue(
        req.id, new_client_message_id=req.new_client_message_id, now_ms=now, deliver_at=when))
    ctx.on_enqueue(outcome.mesh)
    body: dict[str, Any] = {
        "aborted_row_id": outcome.aborted_row_id,
        "new_row_id": outcome.new_row_id,
        "new_client_message_id": outcome.new_client_message_id,
        "status": str(outcome.new_status),
        "deliver_at": iso_ms_or_none(outcome.deliver_at),
    }
    warning = _maybe_sent(outcome.previous_status, outcome.previous_attempts)
    if warning:
        body["warning"] = f"{warning}, so the recipient may see it twice"
    return json_reply(body)


def _maybe_sent(status: OutboxStatus, attempts: int) -> str | None:
    """A-12: a pending row after an attempt may already be at the broker."""
    if status is OutboxStatus.PENDING and attempts > 0:
        return (f"the old row was pending after {attempts} attempt(s); the broker may"
                " already have it")
    return None


async def post_abort(request: web.Request) -> web.Response:
    """Cancel a row for good: ``aborted`` by the operator, nothing queued in its place."""
    ctx = request.app[CONTEXT]
    req = validate(AbortRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    now = ctx.clock()
    outcome = await ctx.outbox.run(lambda conn: OutboxStore(conn).abort(req.id, now_ms=now))
    body: dict[str, Any] = {"aborted_row_id": outcome.row_id,
                            "previous_status": str(outcome.previous_status)}
    warning = _maybe_sent(outcome.previous_status, outcome.previous_attempts)
    if warning:
        body["warning"] = f"{warning}, so the recipient may see it anyway"
    return json_reply(body)


async def _search(ctx: DaemonContext, text: str, *, status: OutboxStatus | None, limit: int,
                  cmid: str | None, purpose: str | None, query: Any) -> web.Response:
    """``q``: sent messages whose plaintext matches, best first; ``cursor`` is an offset."""
    raw = query.get("cursor") or "0"
    if not ascii_digits(raw) or int(raw) > 2**62:
        raise InvalidRequest("cursor must be an integer from 0")
    offset = int(raw)
    mesh = query.get("mesh") or None
    if mesh is not None:
        ctx.pick_mesh(mesh)  # 422 unknown_mesh
    try:
        hits = await ctx.outbox.run(lambda c: search_outbox(
            c, text, status=None if status is None else str(status), purpose=purpose,
            client_message_id=cmid, limit=limit, mesh=mesh, offset=offset))
    except FtsQueryError as exc:
        raise InvalidRequest(f"q: {exc}") from None
    receipts = await with_receipts(ctx, [h.row for h in hits])
    items = [{**outbox_item(h.row, receipts.get((h.row.mesh, h.row.client_message_id))),
              "body": h.body, "highlight": h.highlight} for h in hits]
    next_cursor = str(offset + len(hits)) if len(hits) == limit else None
    return json_reply({"items": items, "next_cursor": next_cursor})
