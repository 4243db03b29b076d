"""What arrived: ``/v1/inbox``, ``/v1/inbox/seen`` and the ``/v1/events`` stream's events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from claudemesh.errors import RemoteError
from claudemesh.sdk.sse import SseEvent
from claudemesh.sdk.wire import Call, Fields, drop_none, with_query

__all__ = ["Event", "InboxItem", "InboxPage", "inbox", "mark_seen"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One received message, stored once per (mesh, ``client_message_id``).

    ``body`` is None when a DM did not open, and ``undecryptable`` says why (R-IN-8).
    ``destination`` is ``#topic``, ``@group``, ``*``, or your own pubkey for a DM. The
    session fields are null for messages filed for every session, and on older daemons.
    """

    seq: int
    id: str
    client_message_id: str
    broker_message_id: str | None
    mesh: str
    sender_pubkey: str
    sender_name: str | None
    destination: str | None
    topic: str | None
    recipient_pubkey: str | None
    body: str | None
    undecryptable: str | None
    meta: dict[str, Any] | None
    priority: str | None
    reply_to: str | None
    history_id: str | None
    created_at: str | None
    received_at: str | None
    session: str | None = None
    from_session: str | None = None
    reply_to_address: str | None = None
    seen_at: str | None = None
    file: dict[str, Any] | None = None  # a shared file the DM carried: {id, name, size, sha256}
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> InboxItem:
        f = Fields(data, "inbox item")
        return cls(
            seq=f.integer("seq"), id=f.text("id"), client_message_id=f.text("client_message_id"),
            broker_message_id=f.opt_text("broker_message_id"), mesh=f.text("mesh"),
            sender_pubkey=f.text("sender_pubkey"), sender_name=f.opt_text("sender_name"),
            destination=f.opt_text("destination"), topic=f.opt_text("topic"),
            recipient_pubkey=f.opt_text("recipient_pubkey"), body=f.opt_text("body"),
            undecryptable=f.opt_text("undecryptable"), meta=f.obj("meta"),
            priority=f.opt_text("priority"), reply_to=f.opt_text("reply_to"),
            history_id=f.opt_text("history_id"), created_at=f.opt_text("created_at"),
            received_at=f.opt_text("received_at"), session=f.opt_text("session"),
            from_session=f.opt_text("from_session"),
            reply_to_address=f.opt_text("reply_to_address"), seen_at=f.opt_text("seen_at"),
            file=f.obj("file"), raw=f.raw)

    @property
    def is_dm(self) -> bool:
        return self.topic is None


@dataclass(frozen=True, slots=True)
class InboxPage:
    """One page; pass ``next_cursor`` back as ``cursor`` for the next (None: the last)."""

    items: list[InboxItem]
    next_cursor: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> InboxPage:
        f = Fields(data, "/v1/inbox answer")
        return cls(items=f.items("items", InboxItem.from_wire),
                   next_cursor=f.opt_text("next_cursor"), raw=f.raw)


@dataclass(frozen=True, slots=True)
class Event:
    """One ``/v1/events`` event: ``kind`` (``message``, ``receipt``, ``peer_join``, …),
    ``id`` (a message's ``seq`` as text; None for live-only events), ``data`` (its JSON)."""

    kind: str
    id: str | None
    data: dict[str, Any]

    @classmethod
    def from_sse(cls, event: SseEvent) -> Event:
        try:
            data = json.loads(event.data)
        except ValueError:
            raise RemoteError(f"the daemon sent a {event.event!r} event whose data is not"
                              " JSON") from None
        if not isinstance(data, dict):
            raise RemoteError(f"the daemon sent a {event.event!r} event whose data is not"
                              " an object")
        return cls(kind=event.event, id=event.id, data=data)

    @classmethod
    def from_wire(cls, data: Any) -> Event:
        """From ``{event, id, data}``, the NDJSON line ``claudemesh events`` prints."""
        f = Fields(data, "event")
        return cls(kind=f.text("event"), id=f.opt_text("id"), data=f.obj("data") or {})

    @property
    def message(self) -> InboxItem | None:
        """The inbox item of a ``message`` event; None for the other kinds."""
        return InboxItem.from_wire(self.data) if self.kind == "message" else None

    @property
    def seq(self) -> int | None:
        """A message event's inbox ``seq``: what ``Last-Event-ID`` resumes after."""
        return int(self.id) if self.id is not None and self.id.isdigit() else None


def inbox(*, session: str | None = None, unread: bool = False, sender: str | None = None,
          topic: str | None = None, mesh: str | None = None, since: str | None = None,
          limit: int = 100, cursor: str | None = None, order: str = "desc") -> Call[InboxPage]:
    path = with_query("/v1/inbox", session=session, unread=unread, since=since,
                      topic=topic, mesh=mesh, limit=limit, cursor=cursor, order=order,
                      **{"from": sender})
    return Call("GET", path, InboxPage.from_wire)


def _marked(data: Any) -> list[int]:
    return Fields(data, "/v1/inbox/seen answer").ints("marked")


def mark_seen(session: str, *, ids: list[str] | None = None, up_to_seq: int | None = None,
              path: str = "poll") -> Call[list[int]]:
    return Call("POST", "/v1/inbox/seen", _marked,
                drop_none(session=session, ids=ids, up_to_seq=up_to_seq, path=path))
