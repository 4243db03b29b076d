"""Encrypted topics at the broker: which body a topic post may carry, and the sealed
epoch key each topic_box push carries to its recipient (docs/protocol.md).

An epoch's sealed keys never change once its ``topic_epoch`` committed, so they are
cached here for good (a bounded LRU): a topic_box accept reads them from the store once
per epoch, and every push of that epoch, fresh or re-pushed after a lease, takes its
recipient's copy from the cache. Whether a topic has epochs at all is cached once it
does (epochs are never deleted); a topic without one is asked again on every plain
post, so the first epoch takes effect at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Final

from claudemesh.broker.store.base import BrokerStore, Delivery, SealedEpochKey
from claudemesh.errors import TopicEncrypted, UnknownEpoch
from claudemesh.protocol.frames import BoxBody, PlainBody, TopicBoxBody

__all__ = ["EpochKeys"]

CACHE_EPOCHS: Final = 4096
CLEAR_TTL_S: Final = 1.0

_Key = tuple[str, str, int]  # mesh id, topic, epoch


def is_topic(destination_kind: str, ref: str) -> bool:
    """A ``#topic`` (not a ``@group``, not the ``*`` broadcast)."""
    return destination_kind == "topic" and ref != "*" and not ref.startswith("@")


class EpochKeys:
    def __init__(self, store: BrokerStore) -> None:
        self._store = store
        self._epochs: OrderedDict[_Key, dict[str, SealedEpochKey]] = OrderedDict()
        self._encrypted: set[tuple[str, str]] = set()
        self._clear: dict[tuple[str, str], float] = {}  # no epoch yet, until (monotonic)

    def created(self, mesh_id: str, topic: str) -> None:
        """This broker committed an epoch of ``topic``: plain posts are refused from now."""
        self._encrypted.add((mesh_id, topic))
        self._clear.pop((mesh_id, topic), None)

    async def check(self, mesh_id: str, destination_kind: str, ref: str,
                    body: PlainBody | BoxBody | TopicBoxBody) -> None:
        """B1 for encrypted topics.

        Raises:
            InvalidEnvelope subclasses: a topic_box to a group or broadcast, or to an
                epoch this topic does not have (UnknownEpoch); a plain post to a topic
                that has epochs (TopicEncrypted).
        """
        if isinstance(body, TopicBoxBody):
            if await self.keys(mesh_id, ref, body.epoch) is None:
                raise UnknownEpoch(f"topic #{ref} has no key epoch {body.epoch}",
                                   epoch=body.epoch)
        elif isinstance(body, PlainBody) and is_topic(destination_kind, ref):
            topic = (mesh_id, ref)
            if topic not in self._encrypted:
                if self._clear.get(topic, 0.0) > time.monotonic():
                    return
                if not await self._store.topic_epoch(mesh_id, ref):
                    self._clear[topic] = time.monotonic() + CLEAR_TTL_S
                    if len(self._clear) > CACHE_EPOCHS:
                        self._clear.clear()
                    return
                self._encrypted.add(topic)
            raise TopicEncrypted(f"topic #{ref} is end-to-end encrypted: a post must be a"
                                 " topic_box sealed with a key epoch (see topic_keys)")

    async def keys(self, mesh_id: str, topic: str,
                   epoch: int) -> dict[str, SealedEpochKey] | None:
        """The epoch's sealed keys by member id (cached); None: no such epoch."""
        key = (mesh_id, topic, epoch)
        found = self._epochs.get(key)
        if found is not None:
            self._epochs.move_to_end(key)
            return found
        found = await self._store.epoch_keys(mesh_id, topic, epoch)
        if found is not None:
            self._encrypted.add((mesh_id, topic))
            self._epochs[key] = found
            if len(self._epochs) > CACHE_EPOCHS:
                self._epochs.popitem(last=False)
        return found

    async def attach(self, delivery: Delivery) -> Delivery:
        """``delivery`` with its recipient's sealed key, when it is a topic_box push."""
        body = delivery.body
        if body.get("kind") != "topic_box" or delivery.epoch_key is not None:
            return delivery
        keys = await self.keys(delivery.mesh_id, delivery.destination_ref, int(body["epoch"]))
        sealed = None if keys is None else keys.get(delivery.recipient_member_id)
        return delivery if sealed is None else dataclasses.replace(
            delivery, epoch_key=sealed.wire())
