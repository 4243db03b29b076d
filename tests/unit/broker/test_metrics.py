"""The broker's counters and their exposition text (src/claudemesh/broker/metrics.py)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from claudemesh.broker.metrics import (
    STORE_BUCKETS_S,
    BrokerMetrics,
    Histogram,
    Scrape,
    render,
    time_store,
)
from claudemesh.broker.store.base import AcceptKind, BrokerStore
from claudemesh.errors import StoreError

EMPTY = """\
# HELP cm_broker_info This broker: its id and version, always 1
# TYPE cm_broker_info gauge
cm_broker_info{broker_id="B1",version="1.2.3"} 1
# HELP cm_broker_connections_open WebSocket connections open now
# TYPE cm_broker_connections_open gauge
cm_broker_connections_open 0
# HELP cm_broker_connections_total WebSocket connections accepted
# TYPE cm_broker_connections_total counter
cm_broker_connections_total 0
# HELP cm_broker_accepts_total Sends answered, by outcome (error: refused before or by the store)
# TYPE cm_broker_accepts_total counter
cm_broker_accepts_total{outcome="created"} 0
cm_broker_accepts_total{outcome="duplicate"} 0
cm_broker_accepts_total{outcome="conflict"} 0
cm_broker_accepts_total{outcome="error"} 0
# HELP cm_broker_dedupe_hits_total Sends whose client_message_id was already accepted (duplicate or conflict)
# TYPE cm_broker_dedupe_hits_total counter
cm_broker_dedupe_hits_total 0
# HELP cm_broker_deliveries_pushed_total Push frames written to recipients, re-pushes included
# TYPE cm_broker_deliveries_pushed_total counter
cm_broker_deliveries_pushed_total 0
# HELP cm_broker_deliveries_acked_total Deliveries acknowledged by their recipient
# TYPE cm_broker_deliveries_acked_total counter
cm_broker_deliveries_acked_total 0
# HELP cm_broker_store_up 1 when the store passed the readiness check (GET /readyz) at this scrape
# TYPE cm_broker_store_up gauge
cm_broker_store_up 1
# HELP cm_broker_queue_depth Pending (unacknowledged) deliveries per mesh, the 100 deepest
# TYPE cm_broker_queue_depth gauge
# HELP cm_broker_store_seconds Store call durations, by operation
# TYPE cm_broker_store_seconds histogram
"""  # noqa: E501


def test_a_fresh_broker_renders_every_family_with_zeroes() -> None:
    assert render(BrokerMetrics(), Scrape("B1", "1.2.3", {})) == EMPTY


def test_accept_outcomes_and_dedupe_hits_are_counted() -> None:
    m = BrokerMetrics()
    for kind in (AcceptKind.CREATED, AcceptKind.CREATED, AcceptKind.DUPLICATE,
                 AcceptKind.CONFLICT, None):
        m.accepted(kind)
    assert m.accepts == {"created": 2, "duplicate": 1, "conflict": 1, "error": 1}
    assert m.dedupe_hits == 2
    text = render(m, Scrape("B1", "1.2.3", {}))
    assert 'cm_broker_accepts_total{outcome="created"} 2\n' in text
    assert 'cm_broker_accepts_total{outcome="error"} 1\n' in text
    assert "cm_broker_dedupe_hits_total 2\n" in text


def test_queue_depth_has_one_sample_per_mesh_with_escaped_labels() -> None:
    text = render(BrokerMetrics(), Scrape("B1", "1", {"zeta": 3, 'a"b\\c\nd': 1}))
    block = text.split("# TYPE cm_broker_queue_depth gauge\n")[1].split("# HELP")[0]
    assert block == ('cm_broker_queue_depth{mesh="a\\"b\\\\c\\nd"} 1\n'
                     'cm_broker_queue_depth{mesh="zeta"} 3\n')


def test_a_store_that_did_not_answer_is_store_up_0_and_no_queue_samples() -> None:
    text = render(BrokerMetrics(), Scrape("B1", "1", None, store_up=False))
    assert "cm_broker_store_up 0\n" in text
    assert "cm_broker_queue_depth{" not in text


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    m = BrokerMetrics()
    m.observe_store("accept", 0.0005)  # on a bound: that bound's bucket (le is <=)
    m.observe_store("accept", 0.003)
    m.observe_store("accept", 10.0)  # past every bound
    m.observe_store("ack_deliveries", 0.0001)
    text = render(m, Scrape("B1", "1", {}))
    block = text.split("# TYPE cm_broker_store_seconds histogram\n")[1]
    lines = block.splitlines()
    accept = [ln for ln in lines if 'op="accept"' in ln]
    les = [ln.split('le="')[1].split('"')[0] for ln in accept if "_bucket" in ln]
    assert les == [repr(b) for b in STORE_BUCKETS_S] + ["+Inf"]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in accept if "_bucket" in ln]
    assert counts == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert f'cm_broker_store_seconds_sum{{op="accept"}} {0.0005 + 0.003 + 10.0!r}' in accept
    assert 'cm_broker_store_seconds_count{op="accept"} 3' in accept
    assert lines[0] == 'cm_broker_store_seconds_bucket{op="accept",le="0.0005"} 1'  # sorted
    assert 'cm_broker_store_seconds_count{op="ack_deliveries"} 1' in lines


def test_histogram_counts_each_observation_once() -> None:
    hist = Histogram()
    for value in (0.0, 1e-9, 0.01, 0.010001, 5.0, 5.1, math.inf):
        hist.observe(value)
    assert sum(hist.counts) == 7
    assert hist.counts[-1] == 2  # 5.1 and inf: past the last bound


@pytest.mark.parametrize("value, text", [(0, "0"), (7, "7"), (0.25, "0.25"),
                                         (math.inf, "+Inf"), (-math.inf, "-Inf")])
def test_numbers_are_written_as_prometheus_reads_them(value: float, text: str) -> None:
    m = BrokerMetrics()
    m.store["x"] = Histogram(bounds=(), counts=[1], sum_s=value)
    assert f'cm_broker_store_seconds_sum{{op="x"}} {text}\n' in render(m, Scrape("B", "1", {}))


class _Store:
    """Two store operations, one failing; ``close`` must stay untimed."""

    async def ping(self) -> None:
        await asyncio.sleep(0)

    async def accept(self, request: Any) -> str:
        raise StoreError("down")

    async def close(self) -> None:
        pass

    def notifier(self) -> None:
        return None


def test_time_store_times_every_operation_failures_included() -> None:
    m = BrokerMetrics()
    store: Any = _Store()
    assert time_store(store, m) is store

    async def run() -> None:
        await store.ping()
        with pytest.raises(StoreError):
            await store.accept(None)
        await store.close()

    asyncio.run(run())
    assert {op: sum(h.counts) for op, h in m.store.items()} == {"ping": 1, "accept": 1}
    assert store.notifier() is None  # not a coroutine: left as it is
    assert {"ping", "accept", "close"} <= BrokerStore.__abstractmethods__
