"""The ``search`` and ``thread`` tools of an agent session (issue 15).

A mixin of :class:`~claudemesh.agent.session.AgentSession`, like
:mod:`~claudemesh.agent.topic_tools`. Both only read: what they show is framed as the
senders' words (:mod:`~claudemesh.agent.framing`), bounded like ``inbox``, and not
marked seen (a lookup is not the delivery of a new message; ``inbox`` still shows an
unread one). Messages this daemon sent are framed too, as sent "from you" to their
destination: their text may quote a peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from claudemesh.agent.framing import frame
from claudemesh.agent.tools import ToolOutcome
from claudemesh.errors import MessageNotFound
from claudemesh.sdk import AsyncClient, InboxItem, OutboxItem, SentMessage, Session

__all__ = ["SearchTools"]

MAX_CHARS: Final = 40_000  # as a tool result of inbox (session.TOOL_MAX_CHARS)
THREAD_LIMIT: Final = 200  # messages asked for; the framing bound cuts further
_SENT_BY: Final = "you (sent from here)"


@dataclass(frozen=True, slots=True)
class _Sent:
    """A sent message in the shape framing reads, with ``sent_to`` for its header."""

    id: str
    mesh: str
    sent_to: str
    body: str | None
    topic: str | None
    priority: str | None
    reply_to: str | None
    created_at: str | None
    sender_name: str = _SENT_BY
    sender_pubkey: str | None = None
    destination: str | None = None
    undecryptable: str | None = None
    session: str | None = None
    reply_to_address: str | None = None


def _from_outbox(item: OutboxItem, body: str | None) -> _Sent:
    return _Sent(id=item.client_message_id, mesh=item.mesh, sent_to=item.destination,
                 body=body, topic=None, priority=item.priority, reply_to=None,
                 created_at=item.enqueued_at)


def _from_thread(item: SentMessage) -> _Sent:
    return _Sent(id=item.client_message_id, mesh=item.mesh, sent_to=item.destination,
                 body=item.body, topic=item.topic, priority=item.priority,
                 reply_to=item.reply_to, created_at=item.created_at)


class SearchTools:
    client: AsyncClient
    session: Session
    _items: Any  # session._Bounded: inbox item id -> InboxItem, what reply() looks up

    def _shown(self, items: list[InboxItem | _Sent]) -> None:
        for item in items:
            if isinstance(item, InboxItem):
                self._items.remember(item.id, item)

    async def _tool_search(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        query, sent, limit = args["query"], args["sent"], args["limit"]
        page = await self.client.search(
            query, sent=sent, mesh=args.get("mesh"), limit=limit,
            session=None if sent else self.session.session_id)
        what = "sent" if sent else "received"
        if not page.items:
            return ToolOutcome(f"No {what} message matches {query!r}.", None)
        items: list[InboxItem | _Sent] = [
            _from_outbox(h.item, h.body) if isinstance(h.item, OutboxItem) else h.item
            for h in page.items]
        self._shown(items)
        more = " (there may be more: narrow the query or raise limit)" if page.next_cursor else ""
        framed = frame(items, max_chars=MAX_CHARS,
                       hint="search again with narrower words or a smaller limit").text
        count = f"1 {what} message matches" if len(items) == 1 else (
            f"{len(items)} {what} messages match")
        return ToolOutcome(f"{count} {query!r}, best match first{more}.\n{framed}", None)

    async def _tool_thread(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        try:
            got = await self.client.thread(args["message_id"], limit=THREAD_LIMIT)
        except MessageNotFound:
            return ToolOutcome(
                f"no message received or sent here has id {args['message_id']!r}; use the id"
                " in a message's header (inbox, wait_for_message, search) or a"
                " client_message_id that send returned", None, is_error=True)
        items: list[InboxItem | _Sent] = [
            _from_thread(i) if isinstance(i, SentMessage) else i for i in got.items]
        self._shown(items)
        cut = (f" (cut at {len(items)} messages: the thread is longer)"
               if got.truncated else "")
        framed = frame(items, max_chars=MAX_CHARS,
                       hint="the thread is longer than fits; search for the later part").text
        return ToolOutcome(f"Thread {got.thread}: {len(items)} messages, oldest first{cut}."
                           f"\n{framed}", None)
