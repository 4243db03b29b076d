"""The broker's counters, and their Prometheus text (``GET /metrics``, text format 0.0.4).

Hot paths only add to plain ints (everything runs on the event loop, so no lock), which
costs nothing measurable; the text is built at scrape time by :func:`render`, which is
pure: the counters, plus a :class:`Scrape` of what the store answered then (the pending
deliveries per mesh). Store call durations go into one histogram per operation:
:func:`time_store` wraps the store's operations once, when the broker starts, so every
caller (sessions, hub, presence, the jobs) is timed without knowing it.

Metric names (docs/protocol.md, "Operations") are ``cm_broker_*``, as the daemon's are
``cm_daemon_*``.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from claudemesh.broker.store.base import AcceptKind, BrokerStore

__all__ = [
    "ACCEPT_OUTCOMES",
    "CONTENT_TYPE",
    "QUEUE_DEPTH_MESHES",
    "STORE_BUCKETS_S",
    "BrokerMetrics",
    "Histogram",
    "Scrape",
    "render",
    "time_store",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
ACCEPT_OUTCOMES: Final = ("created", "duplicate", "conflict", "error")
STORE_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                          1.0, 2.5, 5.0)
QUEUE_DEPTH_MESHES: Final = 100  # a scrape reports at most this many meshes' queues
_UNTIMED: Final = frozenset({"close"})  # not a call anyone waits on while serving


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket (not cumulative: :func:`render` sums them)."""

    bounds: tuple[float, ...] = STORE_BUCKETS_S
    counts: list[int] = field(default_factory=list)  # len(bounds) + 1: the last is +Inf
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le is <=).
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds


@dataclass(slots=True)
class BrokerMetrics:
    """What the broker counts while it serves; one per broker process."""

    connections_open: int = 0  # WebSocket connections being served now
    connections: int = 0  # every connection since the start
    accepts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCEPT_OUTCOMES, 0))
    dedupe_hits: int = 0  # sends whose client_message_id was already in the dedupe table
    pushed: int = 0  # push frames written (re-pushes after a lease included)
    acked: int = 0  # deliveries marked acked by client_ack
    store: dict[str, Histogram] = field(default_factory=dict)  # operation -> durations

    def accepted(self, kind: AcceptKind | None) -> None:
        """One ``send`` answered: its outcome, or None when the broker refused it."""
        self.accepts["error" if kind is None else kind.value] += 1
        if kind is AcceptKind.DUPLICATE or kind is AcceptKind.CONFLICT:
            self.dedupe_hits += 1

    def observe_store(self, operation: str, seconds: float) -> None:
        hist = self.store.get(operation)
        if hist is None:
            hist = self.store[operation] = Histogram()
        hist.observe(seconds)


def time_store(store: BrokerStore, metrics: BrokerMetrics) -> BrokerStore:
    """Time every operation of ``store`` (the ``async`` abstract methods of
    :class:`BrokerStore`, but ``close``) into ``metrics``; returns the same object.

    The wrappers are set on the instance, so the store's class and every caller stay as
    they are, and an operation added to the interface is timed without a change here.
    """
    for name in sorted(BrokerStore.__abstractmethods__ - _UNTIMED):
        method = getattr(store, name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            setattr(store, name, _timed(name, method, metrics))
    return store


def _timed(operation: str, method: Callable[..., Awaitable[Any]],
           metrics: BrokerMetrics) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            metrics.observe_store(operation, time.perf_counter() - start)
    return timed


# -- the text (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """What is read at scrape time: ``queue_depth`` is None when the store did not answer."""

    broker_id: str
    version: str
    queue_depth: dict[str, int] | None  # mesh name -> pending (unacked) deliveries
    store_up: bool = True  # the store passed the readiness check (GET /readyz) just now


Labels = tuple[tuple[str, str], ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(value)


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {_number(value)}"


def _family(name: str, kind: str, text: str,
            samples: Iterable[tuple[str, Labels, float]]) -> list[str]:
    help_text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(_sample(n, labels, v) for n, labels, v in samples)]


def _histogram(name: str, text: str, label: str,
               hists: dict[str, Histogram]) -> list[str]:
    samples: list[tuple[str, Labels, float]] = []
    for key, hist in sorted(hists.items()):
        running = 0
        for bound, n in zip((*hist.bounds, math.inf), hist.counts, strict=True):
            running += n
            samples.append((f"{name}_bucket", ((label, key), ("le", _number(bound))), running))
        samples.append((f"{name}_sum", ((label, key),), hist.sum_s))
        samples.append((f"{name}_count", ((label, key),), running))
    return _family(name, "histogram", text, samples)


def render(metrics: BrokerMetrics, scrape: Scrape) -> str:
    """The whole exposition, families in a fixed order, labels sorted: same input,
    same bytes (tests/unit/broker/test_metrics.py pins them)."""
    m = metrics
    lines = [
        *_family("cm_broker_info", "gauge", "This broker: its id and version, always 1",
                 [("cm_broker_info", (("broker_id", scrape.broker_id),
                                      ("version", scrape.version)), 1)]),
        *_family("cm_broker_connections_open", "gauge", "WebSocket connections open now",
                 [("cm_broker_connections_open", (), m.connections_open)]),
        *_family("cm_broker_connections_total", "counter", "WebSocket connections accepted",
                 [("cm_broker_connections_total", (), m.connections)]),
        *_family("cm_broker_accepts_total", "counter",
                 "Sends answered, by outcome (error: refused before or by the store)",
                 [("cm_broker_accepts_total", (("outcome", o),), m.accepts.get(o, 0))
                  for o in ACCEPT_OUTCOMES]),
        *_family("cm_broker_dedupe_hits_total", "counter",
                 "Sends whose client_message_id was already accepted (duplicate or conflict)",
                 [("cm_broker_dedupe_hits_total", (), m.dedupe_hits)]),
        *_family("cm_broker_deliveries_pushed_total", "counter",
                 "Push frames written to recipients, re-pushes included",
                 [("cm_broker_deliveries_pushed_total", (), m.pushed)]),
        *_family("cm_broker_deliveries_acked_total", "counter",
                 "Deliveries acknowledged by their recipient",
                 [("cm_broker_deliveries_acked_total", (), m.acked)]),
        *_family("cm_broker_store_up", "gauge",
                 "1 when the store passed the readiness check (GET /readyz) at this scrape",
                 [("cm_broker_store_up", (), 1 if scrape.store_up else 0)]),
        *_family("cm_broker_queue_depth", "gauge",
                 f"Pending (unacknowledged) deliveries per mesh, the {QUEUE_DEPTH_MESHES}"
                 " deepest",
                 [("cm_broker_queue_depth", (("mesh", mesh),), n)
                  for mesh, n in sorted((scrape.queue_depth or {}).items())]),
        *_histogram("cm_broker_store_seconds", "Store call durations, by operation", "op",
                    m.store),
    ]
    return "\n".join(lines) + "\n"
