"""Network faults between the daemons and the broker (issue 14, item 4).

Alice's and bob's daemons reach the broker through a fault proxy (tests/faultproxy.py).
For each fault in turn, 500 messages stream from alice to bob while the fault is switched
on for a while and off again; then every accepted message must be in bob's inbox exactly
once and alice's outbox all done. The daemons' keepalive is shortened (a ping each second,
2 s for the pong) so that a half-open connection is found out within seconds. One broker
and one pair of daemons serve every case in turn (each case has its own message ids and
starts from open links and empty queues), so they also show recovery from fault after
fault. A last test puts bob alone behind the proxy to see the broker's end of a
half-open connection.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from faultproxy import (
    Bandwidth,
    Blackhole,
    FaultProxy,
    Fragment,
    HalfOpen,
    Latency,
    ProxyStats,
    ResetMidFrame,
    Toxic,
)
from helpers import DaemonHandle
from meshkit import Mesh2, SseReader, inbox, mesh2, wait_for

MESSAGES = 500
BEFORE = 200  # sent before the fault goes on; the rest while it is on
SENDERS = 4
FAULT_S = 1.5  # how long a fault stays on (at least)
KEEPALIVE = ("--ping-interval", "1", "--ping-timeout", "2")
LIVENESS_BOUND_S = 1 + 2 + 2  # ping interval + pong timeout + websockets' close timeout


@dataclass
class Faulty:
    """A broker, alice and bob, the daemons' broker links through ``proxy``."""

    mesh: Mesh2
    proxy: FaultProxy

    @property
    def alice(self) -> DaemonHandle:
        return self.mesh.alice

    @property
    def bob(self) -> DaemonHandle:
        return self.mesh.bob


def through(daemon: DaemonHandle, url: str) -> None:
    """Point the daemon's joined mesh at ``url`` (the broker does not care which address
    a client used), as `join` would have written it."""
    path = daemon.config_dir / "config.json"
    config = json.loads(path.read_text())
    for mesh in config["meshes"]:
        mesh["broker_url"] = url
    path.write_text(json.dumps(config))
    daemon.meshes = config["meshes"]


@pytest.fixture(scope="module")
def faulty() -> Iterator[Faulty]:
    m = mesh2(start=False)
    proxy = FaultProxy(("127.0.0.1", m.broker.port)).start()
    try:
        for daemon in (m.alice, m.bob):
            through(daemon, proxy.url())
            daemon.start(*KEEPALIVE)
        yield Faulty(m, proxy)
    finally:
        proxy.clear()  # daemons stop over a clean link
        m.cleanup()
        proxy.stop()


def settle(f: Faulty) -> None:
    """No fault; both links open and both outboxes empty (receipts included)."""
    f.proxy.clear()
    for daemon in (f.alice, f.bob):
        wait_for(lambda d=daemon: quiet(health(d)), timeout=60, interval=0.1)


def quiet(h: dict[str, Any]) -> bool:
    return bool(h["queue_depth"] == 0 and h["meshes"][0]["link"] == "open")


def health(daemon: DaemonHandle) -> dict[str, Any]:
    return dict(daemon.uds().call("GET", "/v1/health"))


def left_open(events: SseReader, timeout: float) -> dict[str, Any]:
    """The first broker_status event that is not ``open``."""
    deadline = time.monotonic() + timeout
    while True:
        _, data = events.next("broker_status", max(0.01, deadline - time.monotonic()))
        if data["status"] != "open":
            return data


# How a case keeps its fault on: given the proxy's counters from when it went on.
Hold = Callable[[Faulty, SseReader, ProxyStats], None]


def hold_for(seconds: float) -> Hold:
    return lambda _f, _events, _before: time.sleep(seconds)


def hold_until_reset(f: Faulty, _events: SseReader, before: ProxyStats) -> None:
    """Both daemons' connections are cut mid-frame at least once (bob's by a push or a
    ping), and the fault stays on a while longer (the reconnects are cut too)."""
    wait_for(lambda: f.proxy.stats.resets >= before.resets + 2, timeout=15)
    time.sleep(1.0)


def detect_half_open(events: SseReader) -> None:
    """Nothing says the connection is gone: alice's keepalive must find out."""
    left = left_open(events, timeout=LIVENESS_BOUND_S + 10)
    assert left["mesh"] == "demo", left


def hold_until_detected(_f: Faulty, events: SseReader, _before: ProxyStats) -> None:
    """Half-open: once found out, the fault stays on a while, so the reconnect meets the
    broker while it still holds the stale connection (which it replaces)."""
    detect_half_open(events)
    time.sleep(FAULT_S)


def hold_partitioned(f: Faulty, events: SseReader, before: ProxyStats) -> None:
    """Half-open and a blackhole at once: the dead link is found out, and the reconnects
    hang in the hole until the network heals (only then can the backlog drain)."""
    detect_half_open(events)
    wait_for(lambda: f.proxy.stats.held > before.held, timeout=15)
    time.sleep(FAULT_S)


def blackhole_after_cut(f: Faulty, events: SseReader, before: ProxyStats) -> None:
    """The open connections are reset, and the reconnects fall into the hole."""
    f.proxy.cut()
    left_open(events, timeout=10)
    wait_for(lambda: f.proxy.stats.held > before.held, timeout=15)
    time.sleep(FAULT_S)


@dataclass(frozen=True)
class Case:
    toxics: tuple[Toxic, ...]
    hold: Hold
    padding: int = 0  # bytes added to each message body


CASES = {
    "latency": Case((Latency(0.05, jitter_s=0.03),), hold_for(FAULT_S)),
    "bandwidth": Case((Bandwidth(32_000),), hold_for(FAULT_S)),
    "reset_mid_frame": Case((ResetMidFrame(7),), hold_until_reset),
    "half_open": Case((HalfOpen(),), hold_until_detected),
    # 300 x 20 kB written into a frozen connection: the send buffers fill, so alice's
    # keepalive ping waits behind them (the pong timer never starts); the link must be cut
    # all the same (liveness.py, set by daemon/link.py).
    "half_open_full_buffers": Case((HalfOpen(),), hold_until_detected, padding=20_000),
    "partition": Case((HalfOpen(), Blackhole()), hold_partitioned),
    "blackhole": Case((Blackhole(),), blackhole_after_cut),
    "fragmentation": Case((Fragment(max_bytes=16, pause_s=0.0005),), hold_for(FAULT_S)),
}


def send_all(daemon: DaemonHandle, to: str, ids: list[str], pool: ThreadPoolExecutor, *,
             padding: int = 0) -> None:
    def send(cmid: str) -> int:
        body = f"body of {cmid}" + "." * padding
        return daemon.send({"to": to, "message": body, "client_message_id": cmid}).status

    statuses = list(pool.map(send, ids))
    assert statuses == [202] * len(ids)  # accepted locally, whatever the link is doing


@pytest.mark.parametrize("name", list(CASES))
def test_every_message_arrives_exactly_once_through_a_network_fault(
        faulty: Faulty, name: str) -> None:
    """1. alice sends 200 messages to bob; 2. the fault goes on, and she sends 300 more;
    3. the fault stays on (for a while, or until it had its effect), then goes off;
    4. alice's outbox drains, all done; 5. bob holds each of the 500 exactly once."""
    case, f = CASES[name], faulty
    settle(f)
    ids = [f"{name}-{i}" for i in range(MESSAGES)]
    events = SseReader(f.alice).start()
    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            send_all(f.alice, f.mesh.bob_key, ids[:BEFORE], pool, padding=case.padding)
            before = dataclasses.replace(f.proxy.stats)
            f.proxy.set(*case.toxics)
            send_all(f.alice, f.mesh.bob_key, ids[BEFORE:], pool, padding=case.padding)
        case.hold(f, events, before)
    finally:
        f.proxy.clear()
        events.close()

    def arrived() -> Counter[str]:
        return Counter(i["client_message_id"] for i in inbox(f.bob)
                       if i["client_message_id"].startswith(f"{name}-"))

    wait_for(lambda: quiet(health(f.alice)), timeout=60, interval=0.1)
    wait_for(lambda: len(arrived()) >= MESSAGES, timeout=60, interval=0.1)
    wait_for(lambda: quiet(health(f.bob)), timeout=60, interval=0.1)  # bob's receipts
    time.sleep(0.5)  # a duplicate would land now
    got = arrived()
    assert set(got) == set(ids)
    assert [cmid for cmid, n in got.items() if n > 1] == []
    rows = [r for r in f.alice.db_rows() if r[0].startswith(f"{name}-")]
    assert len(rows) == MESSAGES and {r[1] for r in rows} == {"done"}
    at_broker = [c for (c,) in f.mesh.broker.query("SELECT client_message_id FROM message")
                 if c.startswith(f"{name}-")]
    assert sorted(at_broker) == sorted(ids)  # one accepted message per id


def closed_sessions(m: Mesh2) -> set[str]:
    """The broker sessions its log says have closed."""
    lines = (m.broker.root / "broker.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return {e["session"] for e in events if e.get("event") == "connection_closed"}


def test_the_broker_cuts_a_stale_connection_whose_send_buffer_is_full() -> None:
    """1. bob, alone behind the proxy, goes half-open; 2. alice sends him 200 x 20 kB,
    which the broker pushes into the frozen connection until its buffers are full; 3. bob's
    keepalive finds out, he reconnects and gets everything once; 4. while the fault is
    still on, the broker closes the stale connection within its own bound (its keepalive,
    and its close, wait behind the full buffer: broker/server.py sets liveness.py's)."""
    m = mesh2("--ping-interval", "1", "--ping-timeout", "2", start=False)
    proxy = FaultProxy(("127.0.0.1", m.broker.port)).start()
    try:
        m.alice.start(*KEEPALIVE)
        through(m.bob, proxy.url())
        m.bob.start(*KEEPALIVE)
        stale = health(m.bob)["meshes"][0]["session_id"]
        ids = [f"stale-{i}" for i in range(200)]
        with proxy.toxic(HalfOpen()):
            with ThreadPoolExecutor(SENDERS) as pool:
                send_all(m.alice, m.bob_key, ids, pool, padding=20_000)
            wait_for(lambda: len(inbox(m.bob)) >= len(ids), timeout=60, interval=0.1)
            wait_for(lambda: stale in closed_sessions(m), timeout=LIVENESS_BOUND_S + 10)
        time.sleep(0.5)
        got = Counter(item["client_message_id"] for item in inbox(m.bob))
        assert got == Counter(ids)
    finally:
        proxy.clear()
        m.cleanup()
        proxy.stop()
