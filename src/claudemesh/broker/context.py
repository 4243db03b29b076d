"""What every connection of one broker shares: the store, the hub, settings and features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from claudemesh.broker.blobfiles import BlobFiles
from claudemesh.broker.hub import Hub
from claudemesh.broker.metrics import BrokerMetrics
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import BrokerStore
from claudemesh.clock import now_ms
from claudemesh.protocol.features import BatchParams

__all__ = ["BrokerContext"]


@dataclass(slots=True)
class BrokerContext:
    store: BrokerStore
    hub: Hub
    settings: BrokerSettings
    features: dict[str, Any]
    batch: BatchParams | None = None  # frame_batch, when this broker advertises it
    clock: Callable[[], int] = now_ms
    metrics: BrokerMetrics = field(default_factory=BrokerMetrics)
    blobs: BlobFiles | None = None  # where shared files' ciphertext goes (None: no files)
