"""Sending, and the outbox behind it: ``/v1/send``, ``/v1/outbox``, ``/v1/outbox/requeue``,
``/v1/outbox/abort``. A send with ``deliver_at`` (ISO 8601 with a zone) waits in the
outbox as ``scheduled`` until then.

A send is made safe to retry by its ``client_message_id``: the daemon answers the same id
with the same row (its lookup table, R-ACC-2), so the clients mint the id *before* the
first attempt and repeat a timed-out or broken attempt with it (:data:`SEND_ATTEMPTS`).
A refusal (4xx, 409) is raised at once and never retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from claudemesh.errors import DaemonUnreachable, InvalidRequest, RemoteError
from claudemesh.sdk.wire import Call, Fields, as_object, drop_none, with_query

__all__ = [
    "SEND_ATTEMPTS",
    "OutboxItem",
    "SendResult",
    "abort",
    "deliver_at_text",
    "outbox",
    "requeue",
    "send",
    "send_body",
    "send_gave_up",
    "send_retry_delay",
]

SEND_ATTEMPTS: Final = 3
SendStatus = Literal["queued", "scheduled", "inflight", "done"]
_SEND_STATUSES: Final[dict[str, SendStatus]] = {
    "queued": "queued", "scheduled": "scheduled", "inflight": "inflight", "done": "done"}


def deliver_at_text(value: datetime | str | None) -> str | None:
    """A ``deliver_at`` as the daemon takes it: an aware ``datetime`` becomes ISO 8601 UTC
    with milliseconds; a string goes as given (the daemon checks it: 400 if malformed).

    Raises:
        InvalidRequest: a naive ``datetime`` (its instant would depend on a time zone).
    """
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest("deliver_at needs a time zone: pass an aware datetime"
                             " (e.g. datetime.now(UTC) + timedelta(minutes=5))",
                             field="deliver_at")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send_retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

    Linear, not :class:`claudemesh.backoff.Schedule`: there are only ``SEND_ATTEMPTS``
    tries against a local daemon that is starting or restarting, so 0.2 s then 0.4 s is
    the whole schedule, and a growing wait would only delay the caller's error.
    """
    return 0.2 * attempt


def send_gave_up(exc: DaemonUnreachable, client_message_id: str) -> DaemonUnreachable:
    """The error after the last attempt: the message may be queued, and how to find out."""
    return DaemonUnreachable(
        f"{exc.detail}; the message may still be queued: look for client_message_id"
        f" {client_message_id} in `claudemesh daemon outbox list`, or send it again with"
        " the same client_message_id (safe: it cannot double-send)",
        client_message_id=client_message_id)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The daemon's answer to a send: durable once you hold it.

    ``status`` is ``queued``, ``scheduled`` or ``inflight`` for a new or still-moving row
    (202), and ``done`` with ``duplicate`` for an id the broker already accepted (200).
    ``deliver_at`` is the row's stored time (a retry with another time keeps the first).
    """

    client_message_id: str
    outbox_id: str | None
    status: SendStatus
    duplicate: bool
    broker_message_id: str | None
    history_id: str | None
    deliver_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> SendResult:
        f = Fields(data, "/v1/send answer")
        duplicate = f.flag_or("duplicate", default=False)
        text = "done" if duplicate else f.text("status")
        status = _SEND_STATUSES.get(text)
        if status is None:
            raise RemoteError(f"the daemon answered a send with status {text!r}",
                              field="status")
        return cls(client_message_id=f.text("client_message_id"),
                   outbox_id=f.opt_text("outbox_id"), status=status,
                   duplicate=duplicate, broker_message_id=f.opt_text("broker_message_id"),
                   history_id=f.opt_text("history_id"), deliver_at=f.opt_text("deliver_at"),
                   raw=f.raw)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One outbox row; times are ISO 8601 UTC strings with milliseconds."""

    id: str
    client_message_id: str
    status: str  # scheduled | pending | inflight | done | dead | aborted
    attempts: int
    enqueued_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    broker_message_id: str | None
    history_id: str | None
    last_error: str | None
    aborted_at: str | None
    aborted_by: str | None
    superseded_by: str | None
    mesh: str
    destination: str
    priority: str
    fingerprint_prefix: str | None
    payload_bytes: int | None
    stored_at: str | None = None
    surfaced_at: str | None = None
    surfaced_path: str | None = None
    purpose: str | None = None
    deliver_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> OutboxItem:
        f = Fields(data, "outbox item")
        return cls(
            id=f.text("id"), client_message_id=f.text("client_message_id"),
            status=f.text("status"), attempts=f.integer("attempts"),
            enqueued_at=f.text("enqueued_at"), next_attempt_at=f.opt_text("next_attempt_at"),
            delivered_at=f.opt_text("delivered_at"),
            broker_message_id=f.opt_text("broker_message_id"),
            history_id=f.opt_text("history_id"), last_error=f.opt_text("last_error"),
            aborted_at=f.opt_text("aborted_at"), aborted_by=f.opt_text("aborted_by"),
            superseded_by=f.opt_text("superseded_by"), mesh=f.text("mesh"),
            destination=f.text("destination"), priority=f.text("priority"),
            fingerprint_prefix=f.opt_text("fingerprint_prefix"),
            payload_bytes=f.opt_integer("payload_bytes"), stored_at=f.opt_text("stored_at"),
            surfaced_at=f.opt_text("surfaced_at"), surfaced_path=f.opt_text("surfaced_path"),
            purpose=f.opt_text("purpose"), deliver_at=f.opt_text("deliver_at"), raw=f.raw)


def send_body(to: str, message: str, *, client_message_id: str, mesh: str | None = None,
              priority: str = "next", meta: dict[str, Any] | None = None,
              reply_to: str | None = None, session: str | None = None,
              anycast: bool = False,
              deliver_at: datetime | str | None = None) -> dict[str, Any]:
    return drop_none(to=to, message=message, priority=priority,
                     client_message_id=client_message_id, mesh=mesh, meta=meta,
                     reply_to=reply_to, session=session, anycast=anycast or None,
                     deliver_at=deliver_at_text(deliver_at))


def send(body: dict[str, Any]) -> Call[SendResult]:
    return Call("POST", "/v1/send", SendResult.from_wire, body)


def _items(data: Any) -> list[OutboxItem]:
    return Fields(data, "/v1/outbox answer").items("items", OutboxItem.from_wire)


def outbox(*, status: str | None = None, limit: int = 50, client_message_id: str | None = None,
           purpose: str | None = None) -> Call[list[OutboxItem]]:
    return Call("GET", with_query("/v1/outbox", status=status, limit=limit,
                                  client_message_id=client_message_id, purpose=purpose), _items)


def requeue(row_id: str, new_client_message_id: str | None = None,
            deliver_at: datetime | str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/outbox/requeue", as_object,
                drop_none(id=row_id, new_client_message_id=new_client_message_id,
                          deliver_at=deliver_at_text(deliver_at)))


def abort(row_id: str) -> Call[dict[str, Any]]:
    """Cancel a scheduled, pending or dead row; nothing is queued in its place."""
    return Call("POST", "/v1/outbox/abort", as_object, {"id": row_id})
