"""What became of a message we sent: ``/v1/messages/{id}`` and the signed receipts.

Apart from :mod:`~claudemesh.sdk.messages` so that ``claudemesh send``, which never asks,
does not create these models at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from claudemesh.sdk.wire import Call, Fields, path_part

__all__ = ["MessageStatus", "Receipt", "message_status"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified, signed receipt from the recipient: ``stored`` or ``surfaced``."""

    state: str
    recipient_pubkey: str
    at: str | None  # the recipient's clock, as it signed it
    received_at: str | None  # this daemon's clock
    session: str | None
    path: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> Receipt:
        f = Fields(data, "receipt")
        return cls(state=f.text("state"), recipient_pubkey=f.text("recipient_pubkey"),
                   at=f.opt_text("at"), received_at=f.opt_text("received_at"),
                   session=f.opt_text("session"), path=f.opt_text("path"), raw=f.raw)


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """How far a message this daemon sent got: ``state`` is the furthest step reached
    (``queued``, ``accepted``, ``stored``, ``surfaced``, or ``failed`` / ``aborted``)."""

    client_message_id: str
    mesh: str
    destination: str
    outbox_id: str | None
    status: str
    state: str
    broker_message_id: str | None
    enqueued_at: str | None
    accepted_at: str | None
    stored_at: str | None
    surfaced_at: str | None
    surfaced_path: str | None
    surfaced_session: str | None
    receipts: list[Receipt]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> MessageStatus:
        f = Fields(data, "/v1/messages answer")
        return cls(
            client_message_id=f.text("client_message_id"), mesh=f.text("mesh"),
            destination=f.text("destination"), outbox_id=f.opt_text("outbox_id"),
            status=f.text("status"), state=f.text("state"),
            broker_message_id=f.opt_text("broker_message_id"),
            enqueued_at=f.opt_text("enqueued_at"), accepted_at=f.opt_text("accepted_at"),
            stored_at=f.opt_text("stored_at"), surfaced_at=f.opt_text("surfaced_at"),
            surfaced_path=f.opt_text("surfaced_path"),
            surfaced_session=f.opt_text("surfaced_session"),
            receipts=f.items("receipts", Receipt.from_wire), raw=f.raw)


def message_status(client_message_id: str) -> Call[MessageStatus]:
    return Call("GET", f"/v1/messages/{path_part(client_message_id)}",
                MessageStatus.from_wire)
