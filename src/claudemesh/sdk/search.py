"""Search and threads: ``GET /v1/inbox?q=``, ``GET /v1/outbox?q=``, ``GET /v1/inbox?thread=``.

The daemon searches its own decrypted copies (the broker never sees the words), best
match first, each hit with a ``highlight`` (hits in ``[`` ``]``); the cursor of a search
is an offset. A thread is one conversation in order, received and sent messages alike,
across DMs and topics. Kept apart from :mod:`~claudemesh.sdk.inbox` so that a hook
reading the inbox does not pay for these models (see :mod:`~claudemesh.sdk.client`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from claudemesh.errors import InvalidRequest, RemoteError
from claudemesh.sdk.inbox import InboxItem
from claudemesh.sdk.messages import OutboxItem
from claudemesh.sdk.wire import Call, Fields, with_query

__all__ = ["SearchHit", "SearchPage", "SentMessage", "Thread", "search", "thread"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One match: the message (an :class:`InboxItem` received, an :class:`OutboxItem`
    sent), its text, and ``highlight``: up to 24 words around the hits, each in ``[ ]``."""

    item: InboxItem | OutboxItem
    body: str | None
    highlight: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sent(self) -> bool:
        return isinstance(self.item, OutboxItem)

    @classmethod
    def from_wire(cls, data: Any, *, sent: bool) -> SearchHit:
        f = Fields(data, "search hit")
        item: InboxItem | OutboxItem = (OutboxItem.from_wire(data) if sent
                                        else InboxItem.from_wire(data))
        return cls(item=item, body=f.opt_text("body"), highlight=f.text("highlight"), raw=f.raw)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Hits best first; pass ``next_cursor`` back as ``cursor`` for more (None: no more)."""

    items: list[SearchHit]
    next_cursor: str | None
    sent: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def reader(cls, *, sent: bool) -> Callable[[Any], SearchPage]:
        def read(data: Any) -> SearchPage:
            f = Fields(data, "search answer")
            hits = f.items("items", lambda d: SearchHit.from_wire(d, sent=sent))
            return cls(items=hits, next_cursor=f.opt_text("next_cursor"), sent=sent, raw=f.raw)
        return read


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message of a thread that this daemon sent (``id`` is its outbox row; ``body``
    the plaintext given at accept; ``created_at`` the accept time)."""

    id: str
    client_message_id: str
    broker_message_id: str | None
    mesh: str
    destination: str
    topic: str | None
    body: str | None
    priority: str | None
    reply_to: str | None
    status: str
    created_at: str | None
    delivered_at: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    direction: Literal["sent"] = "sent"

    @classmethod
    def from_wire(cls, data: Any) -> SentMessage:
        f = Fields(data, "sent thread item")
        return cls(
            id=f.text("id"), client_message_id=f.text("client_message_id"),
            broker_message_id=f.opt_text("broker_message_id"), mesh=f.text("mesh"),
            destination=f.text("destination"), topic=f.opt_text("topic"),
            body=f.opt_text("body"), priority=f.opt_text("priority"),
            reply_to=f.opt_text("reply_to"), status=f.text("status"),
            created_at=f.opt_text("created_at"), delivered_at=f.opt_text("delivered_at"),
            raw=f.raw)


def _thread_item(data: Any) -> InboxItem | SentMessage:
    direction = Fields(data, "thread item").text("direction")
    if direction == "sent":
        return SentMessage.from_wire(data)
    if direction == "received":
        return InboxItem.from_wire(data)
    raise RemoteError(f"the daemon sent a thread item with direction {direction!r}",
                      field="direction")


@dataclass(frozen=True, slots=True)
class Thread:
    """One thread, oldest first: :class:`InboxItem` for what arrived, :class:`SentMessage`
    for what this daemon sent. ``thread`` is the root's id; ``truncated`` says a cap
    (100 reply levels, ``limit`` messages) cut the walk."""

    thread: str
    items: list[InboxItem | SentMessage]
    truncated: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> Thread:
        f = Fields(data, "thread answer")
        return cls(thread=f.text("thread"), items=f.items("items", _thread_item),
                   truncated=f.flag_or("truncated", default=False), raw=f.raw)


def search(q: str, *, sent: bool = False, mesh: str | None = None, limit: int = 20,
           cursor: str | None = None, session: str | None = None, sender: str | None = None,
           topic: str | None = None) -> Call[SearchPage]:
    """``sent=False`` searches what arrived (``session``, ``sender``, ``topic`` narrow it),
    ``sent=True`` what this daemon sent.

    Raises:
        InvalidRequest: ``session``, ``sender`` or ``topic`` with ``sent=True`` (they
            describe received messages).
    """
    if sent:
        given = [n for n, v in (("session", session), ("sender", sender), ("topic", topic))
                 if v is not None]
        if given:
            raise InvalidRequest(f"{given[0]} describes received messages; it cannot be"
                                 " combined with sent=True")
        path = with_query("/v1/outbox", q=q, mesh=mesh, limit=limit, cursor=cursor)
    else:
        path = with_query("/v1/inbox", q=q, mesh=mesh, limit=limit, cursor=cursor,
                          session=session, topic=topic, **{"from": sender})
    return Call("GET", path, SearchPage.reader(sent=sent))


def thread(message_id: str, *, mesh: str | None = None,
           limit: int | None = None) -> Call[Thread]:
    """``message_id``: a ``broker_message_id``, an inbox ``id`` or a ``client_message_id``."""
    return Call("GET", with_query("/v1/inbox", thread=message_id, mesh=mesh, limit=limit),
                Thread.from_wire)
