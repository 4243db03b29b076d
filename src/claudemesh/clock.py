"""Wall-clock milliseconds and the one way we write them (ISO 8601 UTC, milliseconds, "Z").

The broker's push frames and the daemon's API show the same instants; one formatter keeps
the two from drifting apart, and one ``now_ms`` keeps every store's clock the same clock.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

__all__ = ["iso_ms", "iso_ms_or_none", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@functools.lru_cache(maxsize=256)  # a batch of pushes shares one received_at
def iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms_or_none(epoch_ms: int | None) -> str | None:
    """For optional columns (``delivered_at`` of a row not yet delivered, …)."""
    return None if epoch_ms is None else iso_ms(epoch_ms)
