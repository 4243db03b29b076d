"""Push -> inbox (and receipts) -> client_ack -> events, for one mesh (daemon-spec §5).

Persist, then react (R-IN-1). Pushes are validated (R-IN-5: a strict model, unknown
fields refused, counted), DMs decrypted with this member's key, posts to encrypted
topics with their epoch's key (:mod:`.topic_keys`; a missing key is "undecryptable"), and written to
``inbox.db`` in batches: whatever arrived while the previous batch was committing goes
in the next one, in one transaction. Only after that COMMIT are the pushes acked, and
only rows that were new raise a ``message`` event; a repeat delivery just counts as a
dedupe hit. A DM that does not open is still stored (body empty, with the reason), still
acked, and still raises its event, so it is visible and never redelivered (R-IN-8). A push
that fails validation is acked and dropped: left unacked it would come back forever.

A DM's plaintext, and an encrypted topic post's, may be sealed
(:mod:`claudemesh.protocol.sealed`): a shared file's reference is filed with the row (its
key in ``file_ref``, for ``/v1/file/get``). On a DM only, a message naming sessions is
filed for its ``to_session``, and a receipt for one of our messages is checked
(signature by the member who sent it, about our DM to that member) and recorded in
``outbox.db`` beside the message, never stored in the inbox. Each new DM from another
member queues its ``stored`` receipt in the inbox transaction; ``on_stored`` then wakes
the receipt pump.

Topic history (``topic_history`` pages, backfill) goes through the same validation, the
same opening and the same insert as pushes (:meth:`Inbound.file_history`): a message
already in the inbox is not filed twice and raises no second event. The member's own
posts come back in history too; they are shown but not filed (a push never brings them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.config import MeshConfig
from claudemesh.crypto import BoxedBody, CryptoFailure, box_decrypt, secretbox_decrypt, verify
from claudemesh.daemon.events import Event, EventBus
from claudemesh.daemon.link import BrokerLink
from claudemesh.daemon.store.inbox import InboxItem, InboxStore, NewInboxItem
from claudemesh.daemon.store.receipts import ReceiptStore
from claudemesh.daemon.topic_keys import TopicSender
from claudemesh.errors import ClaudemeshError
from claudemesh.protocol.frames import (
    BoxBody,
    FrameError,
    HistoryItem,
    Push,
    TopicBoxBody,
    parse_history_item,
    parse_push,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.sealed import (
    FileRef,
    Plain,
    ReceiptItem,
    Receipts,
    SealedError,
    SealedFile,
    SealedMessage,
    open_plaintext,
)
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["Inbound", "InboundCounters", "inbox_item_view", "reply_address"]

log = logging.getLogger(__name__)

BATCH_MAX: Final = 512
ACK_MAX: Final = 1024  # delivery ids per client_ack frame
QUEUE_MAX: Final = 4096


@dataclass(slots=True)
class InboundCounters:
    received: int = 0
    stored: int = 0
    dedupe_hits: int = 0
    invalid: int = 0
    undecryptable: int = 0
    receipts: int = 0
    receipts_invalid: int = 0


def _destination(item: InboxItem) -> str:
    if item.topic is None:
        return item.recipient_pubkey
    return item.topic if item.topic[0] in "@*" else f"#{item.topic}"


def reply_address(item: InboxItem) -> str:
    """Where a reply goes: the topic or group it came through, else its sender (and the
    session that sent it). A name holding ``/`` is given as its pubkey, which parses."""
    if item.topic is not None and item.topic != "*":
        return _destination(item)
    who = item.sender_pubkey if "/" in item.sender_name else item.sender_name
    return who if item.from_session is None else f"{who}/{item.from_session}"


def inbox_item_view(item: InboxItem, iso: Callable[[int], str | None]) -> dict[str, Any]:
    """An inbox row as the API and SSE ``message`` events show it (DESIGN §4)."""
    return {
        "seq": item.seq, "id": item.id, "client_message_id": item.client_message_id,
        "broker_message_id": item.broker_message_id, "mesh": item.mesh,
        "sender_pubkey": item.sender_pubkey, "sender_name": item.sender_name,
        "destination": _destination(item), "topic": item.topic,
        "recipient_pubkey": item.recipient_pubkey, "body": item.body,
        "undecryptable": item.undecryptable, "meta": item.meta, "priority": item.priority,
        "reply_to": item.reply_to_id, "history_id": item.history_id,
        "created_at": item.created_at, "received_at": iso(item.received_at),
        "session": item.session, "from_session": item.from_session,
        "reply_to_address": reply_address(item),
        "seen_at": None if item.seen_at is None else iso(item.seen_at),
        "file": item.file,
    }


class Inbound:
    def __init__(self, mesh: MeshConfig, link: BrokerLink, inbox: DbWorker, bus: EventBus, *,
                 clock: Callable[[], int], iso: Callable[[int], str | None],
                 outbox: DbWorker | None = None,
                 on_stored: Callable[[], None] = lambda: None,
                 topics: TopicSender | None = None) -> None:
        self.mesh = mesh
        self._topics = topics
        self.link = link
        self._inbox = inbox
        self._outbox = outbox
        self._on_stored = on_stored
        self._bus = bus
        self._clock = clock
        self._iso = iso
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.counters = InboundCounters()

    async def put(self, frame: dict[str, Any]) -> None:
        """Called by the link's reader; waits when the queue is full (backpressure)."""
        await self._queue.put(frame)

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._process(batch)

    async def _process(self, frames: list[dict[str, Any]]) -> None:
        items: list[NewInboxItem] = []
        receipts: list[Receipts] = []
        acks: list[str] = []
        for frame in frames:
            self.counters.received += 1
            try:
                push = self._validate(frame)
            except FrameError as exc:
                self.counters.invalid += 1
                log.warning("invalid_inbound", extra={"mesh": self.mesh.slug,
                                                      "reason": exc.detail})
                delivery = frame.get("delivery_id")
                if isinstance(delivery, str) and delivery.isdigit() and len(delivery) <= 20:
                    acks.append(delivery)
                continue
            acks.append(push.delivery_id)
            opened = self._item(push)
            if isinstance(opened, NewInboxItem):
                items.append(opened)
            elif self._valid_receipt(opened, push):
                receipts.append(opened)
        now = self._clock()
        try:
            created = await self._inbox.run(lambda conn: _insert(conn, items, now)) if (
                items) else []
            new_receipts = await self._record(receipts, now)
        except ClaudemeshError:
            log.exception("inbox_write_failed; the broker will push these again",
                          extra={"mesh": self.mesh.slug, "count": len(items)})
            return
        self.counters.stored += len(created)
        self.counters.dedupe_hits += len(items) - len(created)
        for start in range(0, len(acks), ACK_MAX):
            await self.link.send({"type": "client_ack",
                                  "delivery_ids": acks[start:start + ACK_MAX]})
        for item in created:
            self._bus.publish(Event("message", inbox_item_view(item, self._iso), id=item.seq))
        for recipient, receipt in new_receipts:
            self._bus.publish(Event("receipt", {
                "mesh": self.mesh.slug, "client_message_id": receipt.client_message_id,
                "state": str(receipt.state), "recipient_pubkey": recipient,
                "at": self._iso(receipt.at), "session": receipt.session,
                "path": None if receipt.path is None else str(receipt.path)}))
        if any(i.wants_receipts for i in created):
            self._on_stored()

    def _valid_receipt(self, receipts: Receipts, push: HistoryItem) -> bool:
        """Signed by the member who sent it, about messages of ours in this mesh."""
        ok = (receipts.recipient == push.sender_pubkey and receipts.sender == self.mesh.pubkey
              and receipts.mesh_id == self.mesh.mesh_id)
        if ok:
            try:
                verify(receipts.recipient, receipts.statement(), receipts.signature)
            except CryptoFailure:
                ok = False
        if not ok:
            self._refused_receipts(len(receipts.items), receipts.recipient,
                                   "the signature or the parties do not check out")
        return ok

    def _refused_receipts(self, count: int, recipient: str, why: str) -> None:
        self.counters.receipts_invalid += count
        log.warning("receipts_ignored", extra={"mesh": self.mesh.slug, "count": count,
                                               "recipient": recipient, "reason": why})

    async def _record(self, batches: list[Receipts],
                      now: int) -> list[tuple[str, ReceiptItem]]:
        if not batches or self._outbox is None:
            return []
        slug = self.mesh.slug
        new, refused = await self._outbox.run(
            lambda conn: ReceiptStore(conn).record(slug, batches, now))
        if refused:
            self._refused_receipts(refused, ",".join(sorted({b.recipient for b in batches})),
                                   "no DM of ours to that member has that id")
        self.counters.receipts += len(new)
        return new

    def _validate(self, frame: dict[str, Any]) -> Push:
        push = parse_push(frame)
        if push.mesh_id != self.mesh.mesh_id:
            raise FrameError("invalid_frame", "a push for another mesh", frame)
        return push

    def _validate_item(self, doc: Any) -> HistoryItem:
        if not isinstance(doc, dict):
            raise FrameError("invalid_frame", "a history item is not an object")
        entry = parse_history_item(doc)
        if entry.mesh_id != self.mesh.mesh_id:
            raise FrameError("invalid_frame", "a history item of another mesh", doc)
        return entry

    async def file_history(self, docs: list[Any]) -> list[dict[str, Any]]:
        """File a page of topic history like pushes (no acks: nothing was delivered).

        Returns every valid item as the inbox shows it, in the page's order; rows that
        were new raise the ``message`` event, repeats count as dedupe hits.
        """
        items: list[NewInboxItem] = []
        for doc in docs:
            self.counters.received += 1
            try:
                entry = self._validate_item(doc)
            except FrameError as exc:
                self.counters.invalid += 1
                log.warning("invalid_history_item", extra={"mesh": self.mesh.slug,
                                                           "reason": exc.detail})
                continue
            opened = self._item(entry)
            if isinstance(opened, NewInboxItem):
                items.append(opened)
        filed = [i for i in items if i.sender_pubkey != self.mesh.pubkey]
        now, slug = self._clock(), self.mesh.slug

        def op(conn: sqlite3.Connection) -> tuple[list[InboxItem], dict[str, InboxItem]]:
            created = _insert(conn, filed, now) if filed else []
            return created, InboxStore(conn).by_client_ids(
                slug, [i.client_message_id for i in filed])
        created, rows = await self._inbox.run(op)
        self.counters.stored += len(created)
        self.counters.dedupe_hits += len(filed) - len(created)
        for item in created:
            self._bus.publish(Event("message", inbox_item_view(item, self._iso), id=item.seq))
        return [inbox_item_view(rows[i.client_message_id], self._iso)
                if i.client_message_id in rows else _unfiled_view(i, self._iso) for i in items]

    def _item(self, push: HistoryItem) -> NewInboxItem | Receipts:
        """The inbox row a push becomes, or the receipt it carries."""
        body, reason = self._open(push)
        to_session = from_session = None
        file: FileRef | None = None
        text: str | None = None
        if body is not None:
            try:
                opened = open_plaintext(body) if push.destination_kind == "dm" else (
                    _topic_plaintext(body) if isinstance(push.body, TopicBoxBody)
                    else Plain(body.decode("utf-8")))
            except SealedError as exc:
                opened, reason = None, str(exc)
            except UnicodeDecodeError:
                opened, reason = None, "the content is not UTF-8 text"
            if isinstance(opened, Receipts):
                return opened
            if isinstance(opened, SealedMessage):
                to_session, from_session = opened.to_session, opened.from_session
            if isinstance(opened, SealedFile):
                file = opened.ref
                text = opened.text or f"shared a file: {file.name} ({file.size} bytes)"
            elif opened is not None:
                text = opened.text
        if reason is not None:
            self.counters.undecryptable += 1
        return NewInboxItem(
            id=new_ulid(self._clock()), client_message_id=push.client_message_id,
            broker_message_id=push.broker_message_id, mesh=self.mesh.slug,
            recipient_pubkey=self.mesh.pubkey,
            topic=None if push.destination_kind == "dm" else push.destination_ref,
            sender_pubkey=push.sender_pubkey, sender_name=push.sender_name, body=text,
            undecryptable=reason, meta=push.meta, priority=push.priority,
            reply_to_id=push.reply_to, history_id=push.history_id, created_at=push.created_at,
            session=to_session, from_session=from_session, file=file)

    def _open(self, push: HistoryItem) -> tuple[bytes | None, str | None]:
        """The plaintext bytes, checked against ``body_hash``, or None and why not."""
        raw, reason = self._raw(push)
        if raw is None:
            return None, reason
        if hashlib.sha256(raw).hexdigest() != push.body_hash:
            return None, "body_hash does not match the content"
        return raw, None


    def _raw(self, push: HistoryItem) -> tuple[bytes | None, str | None]:
        if push.destination_kind != "dm":
            return self._topic_raw(push)
        if not isinstance(push.body, BoxBody):
            return None, "a DM arrived unencrypted; refused"
        if push.destination_ref != self.mesh.pubkey:
            return None, "a DM addressed to another key"
        try:
            return box_decrypt(BoxedBody(push.body.nonce, push.body.ciphertext),
                               recipient_secret_hex=self.mesh.secret_key,
                               sender_pubkey_hex=push.sender_pubkey), None
        except CryptoFailure:
            return None, "crypto_box did not open with this member's key"


    def _topic_raw(self, push: HistoryItem) -> tuple[bytes | None, str | None]:
        if isinstance(push.body, BoxBody):
            return None, "a crypto_box body on a topic; refused"
        if isinstance(push.body, TopicBoxBody):
            return self._topic_box(push, push.body)
        return push.body.text.encode("utf-8"), None

    def _topic_box(self, push: HistoryItem, body: TopicBoxBody) -> tuple[bytes | None, str | None]:
        """A post to an encrypted topic: its epoch's key from the keyring, else from the
        push's own sealed copy (kept for next time)."""
        if self._topics is None:
            return None, "an encrypted topic post; this daemon keeps no topic keys"
        sealed = None if push.epoch_key is None else push.epoch_key.model_dump()
        key = self._topics.key_for(push.destination_ref, body.epoch, sealed)
        if key is None:
            return None, f"no key for epoch {body.epoch} of #{push.destination_ref}"
        try:
            return secretbox_decrypt(BoxedBody(body.nonce, body.ciphertext), key), None
        except CryptoFailure:
            return None, f"the post does not open with epoch {body.epoch}'s key"


def _topic_plaintext(raw: bytes) -> Plain | SealedFile:
    """An encrypted topic post's plaintext: text, or a shared file's reference (sealed
    like a DM's; sessions and receipts are for DMs only).

    Raises:
        SealedError: as :func:`open_plaintext`, or a sealed document of another kind.
    """
    opened = open_plaintext(raw)
    if not isinstance(opened, Plain | SealedFile):
        raise SealedError("a sealed document on a topic that is not a file reference")
    return opened


def _insert(conn: sqlite3.Connection, items: list[NewInboxItem], now: int) -> list[InboxItem]:
    return InboxStore(conn).insert_new(items, now)


def _unfiled_view(item: NewInboxItem, iso: Callable[[int], str | None]) -> dict[str, Any]:
    """A history item not in the inbox (our own post) as a view: no seq, never received."""
    row = InboxItem(0, item.id, item.client_message_id, item.broker_message_id, item.mesh,
                    item.recipient_pubkey, item.topic, item.sender_pubkey, item.sender_name,
                    item.body, item.undecryptable, item.meta, item.priority, item.reply_to_id,
                    item.history_id, item.created_at, 0, item.session, item.from_session)
    return {**inbox_item_view(row, iso), "seq": None, "received_at": None}
