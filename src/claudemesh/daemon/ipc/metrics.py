"""``GET /v1/metrics``: Prometheus text built at scrape time (daemon-spec §10, R-OBS-2/3).

Components keep plain counters (the request and accept counts in ``ServerState``, each
mesh's ``DrainCounters``, ``InboundCounters`` and link connect count); the outbox gauges are
read from ``outbox.db`` when scraped. A collector turns them into metric families in a
registry of this daemon's own, so nothing global is shared and tests can scrape twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from claudemesh.daemon.ipc.context import DURATION_BUCKETS_S, DaemonContext
from claudemesh.daemon.link_rules import LinkState
from claudemesh.daemon.store.outbox_rules import OutboxStatus

__all__ = ["CONTENT_TYPE", "OutboxSnapshot", "render_metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class OutboxSnapshot:
    depth: dict[str, dict[OutboxStatus, int]]  # mesh -> status -> rows
    oldest_ms: dict[str, int | None]  # mesh -> when the oldest undelivered row fell due
    now_ms: int


class _DaemonCollector(Collector):
    def __init__(self, ctx: DaemonContext, outbox: OutboxSnapshot) -> None:
        self._ctx = ctx
        self._outbox = outbox

    def collect(self) -> Iterator[Metric]:
        yield from self._ipc()
        yield from self._meshes()
        yield from self._queue()

    def _ipc(self) -> Iterator[Metric]:
        state = self._ctx.state
        requests = CounterMetricFamily("cm_daemon_ipc_request", "Local API answers",
                                       labels=["endpoint", "status", "transport"])
        for (route, status, transport), n in sorted(state.requests.items()):
            requests.add_metric([route, str(status), transport], n)
        yield requests
        durations = HistogramMetricFamily("cm_daemon_ipc_duration_seconds",
                                          "Local API request time", labels=["endpoint"])
        for route, hist in sorted(state.durations.items()):
            buckets = [(str(b), c) for b, c in zip(DURATION_BUCKETS_S, hist.counts, strict=True)]
            durations.add_metric([route], [*buckets, ("+Inf", hist.total)], hist.sum_s)
        yield durations
        accepts = CounterMetricFamily("cm_daemon_accept", "Accepts by lookup-table outcome",
                                      labels=["mesh", "outcome"])
        conflicts = CounterMetricFamily("cm_daemon_accept_conflicts",
                                        "409s at accept, by conflict", labels=["mesh", "conflict"])
        for (mesh, outcome), n in sorted(state.accepts.items()):
            (conflicts if outcome.startswith("outbox_") else accepts).add_metric([mesh, outcome], n)
        yield accepts
        yield conflicts
        streams = GaugeMetricFamily("cm_daemon_event_streams", "Open /v1/events streams")
        streams.add_metric([], self._ctx.bus.streams)
        yield streams

    def _meshes(self) -> Iterator[Metric]:
        names: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "connected": GaugeMetricFamily("cm_daemon_connected", "Link open (1) or not",
                                           labels=["mesh"]),
            "state": GaugeMetricFamily("cm_daemon_link_state", "1 for the link's state",
                                       labels=["mesh", "state"]),
            "reconnects": CounterMetricFamily("cm_daemon_reconnects", "Connection attempts"
                                              " after the first", labels=["mesh"]),
            "lag": GaugeMetricFamily("cm_daemon_lag_ms", "Last send -> broker answer round"
                                     " trip", labels=["mesh"]),
            "send": CounterMetricFamily("cm_daemon_send", "Broker answers to sends",
                                        labels=["mesh", "result"]),
            "dead": CounterMetricFamily("cm_daemon_outbox_dead", "Rows that went dead",
                                        labels=["mesh"]),
            "pruned": CounterMetricFamily("cm_daemon_dedupe_history_pruned", "Duplicates whose"
                                          " history the broker had pruned", labels=["mesh"]),
            "dedupe": CounterMetricFamily("cm_daemon_dedupe", "Repeats absorbed",
                                          labels=["mesh", "direction"]),
            "recv": CounterMetricFamily("cm_daemon_recv", "New inbox rows", labels=["mesh"]),
            "invalid": CounterMetricFamily("cm_daemon_invalid_inbound", "Pushes refused by"
                                           " validation", labels=["mesh"]),
            "undecryptable": CounterMetricFamily("cm_daemon_undecryptable", "Messages stored"
                                                 " without a readable body", labels=["mesh"]),
            "receipts": CounterMetricFamily("cm_daemon_receipts", "Verified receipts for our"
                                            " messages", labels=["mesh"]),
            "receipts_invalid": CounterMetricFamily(
                "cm_daemon_receipts_invalid", "Receipts ignored: bad signature, wrong party,"
                " or no such message of ours", labels=["mesh"]),
        }
        accepts = self._ctx.state.accepts
        for slug, runtime in sorted(self._ctx.meshes.by_slug.items()):
            link, drain, inbound = runtime.link, runtime.drain.counters, runtime.inbound.counters
            names["connected"].add_metric([slug], 1.0 if link.is_open else 0.0)
            for state in LinkState:
                names["state"].add_metric([slug, str(state)], 1.0 if link.state is state else 0.0)
            names["reconnects"].add_metric([slug], max(0, link.connects - 1))
            if drain.last_rtt_ms is not None:
                names["lag"].add_metric([slug], drain.last_rtt_ms)
            for result, n in (("delivered", drain.delivered), ("retry", drain.retries),
                              ("dead", drain.dead), ("resealed", drain.resealed)):
                names["send"].add_metric([slug, result], n)
            names["dead"].add_metric([slug], drain.dead)
            names["pruned"].add_metric([slug], drain.history_pruned)
            out = sum(n for (m, o), n in accepts.items()
                      if m == slug and o in ("queued", "inflight", "duplicate"))
            names["dedupe"].add_metric([slug, "out"], out)
            names["dedupe"].add_metric([slug, "in"], inbound.dedupe_hits)
            names["recv"].add_metric([slug], inbound.stored)
            names["invalid"].add_metric([slug], inbound.invalid)
            names["undecryptable"].add_metric([slug], inbound.undecryptable)
            names["receipts"].add_metric([slug], inbound.receipts)
            names["receipts_invalid"].add_metric([slug], inbound.receipts_invalid)
        yield from names.values()

    def _queue(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("cm_daemon_outbox_depth", "Outbox rows by status",
                                  labels=["mesh", "status"])
        age = GaugeMetricFamily("cm_daemon_outbox_age_seconds", "Age of the oldest undelivered"
                                " row", labels=["mesh"])
        snap = self._outbox
        for slug in sorted(self._ctx.meshes.by_slug):
            counts = snap.depth.get(slug, dict.fromkeys(OutboxStatus, 0))
            for status in (OutboxStatus.SCHEDULED, OutboxStatus.PENDING, OutboxStatus.INFLIGHT,
                           OutboxStatus.DEAD):
                depth.add_metric([slug, str(status)], counts[status])
            oldest = snap.oldest_ms.get(slug)
            age.add_metric([slug], 0.0 if oldest is None else (snap.now_ms - oldest) / 1000)
        yield depth
        yield age


def render_metrics(ctx: DaemonContext, outbox: OutboxSnapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DaemonCollector(ctx, outbox))
    return generate_latest(registry)
