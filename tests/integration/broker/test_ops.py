"""An operable broker (issue 14): /healthz, /readyz and /metrics on the broker's own port,
its JSON log lines, and the 1001 drain on SIGTERM, all against a real broker process."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from brokerkit import BrokerProcess, Client, Mesh, clients, new_broker
from claudemesh.crypto import MemberKey
from meshkit import Mesh2, link_state, wait_for
from pgkit import PgCluster, fresh_dsn

# -- a strict reader of the Prometheus text format 0.0.4 --------------------------------

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    help: str
    kind: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def get(self, sample: str | None = None, **labels: str) -> float | None:
        return self.samples.get((sample or self.name, tuple(sorted(labels.items()))))


def _labels(text: str) -> Labels:
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad labels at {text[pos:]!r}"
        value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match.group(2))
        found.append((match.group(1), value))
        pos = match.end()
        if pos < len(text):
            assert text[pos] == ",", text
            pos += 1
    names = [k for k, _ in found]
    assert len(names) == len(set(names)), f"a label twice: {text}"
    return tuple(sorted(found))


def parse_exposition(text: str) -> dict[str, Family]:
    """Families by name; fails on anything a Prometheus server would refuse or misread:
    samples outside a HELP/TYPE'd family, repeated series, non-cumulative buckets."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            assert name not in families, f"family {name} twice"
            current = families[name] = Family(name, help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            assert current is not None and current.name == name and not current.kind, line
            assert kind in ("counter", "gauge", "histogram"), line
            assert kind != "counter" or name.endswith("_total"), line
            current.kind = kind
        else:
            assert line and not line.startswith("#"), repr(line)
            match = _SAMPLE.fullmatch(line)
            assert match and current is not None and current.kind, line
            name, labels, value = match.groups()
            allowed = ({f"{current.name}_{s}" for s in ("bucket", "sum", "count")}
                       if current.kind == "histogram" else {current.name})
            assert name in allowed, f"{name} inside family {current.name}"
            key = (name, _labels(labels or ""))
            assert key not in current.samples, f"series twice: {line}"
            current.samples[key] = float(value)
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in family.samples.items():
        if name.endswith("_bucket"):
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels)["le"]
            series.setdefault(rest, []).append((float(le), value))
    for rest, buckets in series.items():
        buckets.sort()
        counts = [n for _, n in buckets]
        assert counts == sorted(counts), f"{family.name}{rest}: buckets not cumulative"
        assert buckets[-1][0] == float("inf")
        assert family.samples[(f"{family.name}_count", rest)] == counts[-1]
        assert (f"{family.name}_sum", rest) in family.samples


# -- HTTP on the broker's port -----------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


async def get(broker: BrokerProcess, path: str) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(http_get, broker.port, path)


async def scrape(broker: BrokerProcess) -> dict[str, Family]:
    status, content_type, body = await get(broker, "/metrics")
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    return parse_exposition(body.decode())


def value(families: dict[str, Family], name: str, sample: str | None = None,
          **labels: str) -> float | None:
    return families[name].get(sample, **labels)


# -- the tests ---------------------------------------------------------------------------


async def test_healthz_readyz_and_metrics_answer_beside_ws(broker: BrokerProcess,
                                                           mesh: Mesh) -> None:
    assert await get(broker, "/healthz") == (200, "application/json", b'{"ok": true}')
    assert await get(broker, "/readyz") == (200, "application/json", b'{"ok": true}')
    status, _, body = await get(broker, "/elsewhere")
    assert (status, body) == (404, b"the broker serves /ws only\n")
    families = await scrape(broker)
    assert {"cm_broker_info", "cm_broker_connections_open", "cm_broker_accepts_total",
            "cm_broker_dedupe_hits_total", "cm_broker_deliveries_pushed_total",
            "cm_broker_queue_depth", "cm_broker_store_seconds",
            "cm_broker_store_up"} <= set(families)
    assert families["cm_broker_connections_open"].kind == "gauge"
    assert families["cm_broker_store_seconds"].kind == "histogram"
    assert value(families, "cm_broker_store_up") == 1
    client, ack = await Client.hello(broker.url, mesh.join("alice"))  # /ws is as it was
    try:
        assert ack["type"] == "hello_ack"
        families = await scrape(broker)
        assert value(families, "cm_broker_connections_open") == 1
    finally:
        await client.close()


async def test_counters_move_with_sends_pushes_and_acks(broker: BrokerProcess,
                                                        mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await b.request({"type": "subscribe", "topic": "ops"})
        assert (await a.post("#ops", "hello", "ops-1"))["code"] == 201
        assert (await a.post("#ops", "hello", "ops-1"))["code"] == 200
        assert (await a.post("#ops", "HELLO", "ops-1"))["code"] == 409
        assert (await a.post(MemberKey.generate().pubkey, "nobody", "ops-2"))["code"] == 404
        push = await b.next("push")
        during = await scrape(broker)
        await b.ack(push["delivery_id"])
        deadline = time.monotonic() + 10
        while value(after := await scrape(broker), "cm_broker_deliveries_acked_total") != 1:
            assert time.monotonic() < deadline, "the ack was never counted"
            await asyncio.sleep(0.05)
    accepts = {o: value(during, "cm_broker_accepts_total", outcome=o)
               for o in ("created", "duplicate", "conflict", "error")}
    assert accepts == {"created": 1, "duplicate": 1, "conflict": 1, "error": 1}
    assert value(during, "cm_broker_dedupe_hits_total") == 2
    assert value(during, "cm_broker_deliveries_pushed_total") == 1
    assert value(during, "cm_broker_connections_open") == 2
    assert value(during, "cm_broker_queue_depth", mesh="demo") == 1
    assert value(after, "cm_broker_queue_depth", mesh="demo") is None  # nothing pending
    assert value(during, "cm_broker_store_seconds", "cm_broker_store_seconds_count",
                 op="accept") == 4
    assert value(after, "cm_broker_connections_total") == 4  # two joins, two hellos


@pytest.fixture
def private_cluster() -> Any:
    """A PostgreSQL server of this test's own, which it may stop."""
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_readyz_is_503_with_the_reason_once_the_store_is_gone(
        store_kind: str, request: pytest.FixtureRequest) -> None:
    """SQLite: the file is moved away under the open connection. PostgreSQL: the server
    stops. Liveness stays 200 (the process serves), a scrape says store_up 0."""
    cluster: PgCluster | None = None
    if store_kind == "postgres":
        cluster = request.getfixturevalue("private_cluster")
        broker = new_broker(dsn=fresh_dsn(cluster))
    else:
        broker = new_broker()
    try:
        assert (await get(broker, "/readyz"))[0] == 200
        if cluster is not None:
            cluster.stop_server()
        else:
            (broker.root / "broker.db").rename(broker.root / "moved.db")
        status, content_type, body = await get(broker, "/readyz")
        assert (status, content_type) == (503, "application/json")
        answer = json.loads(body)
        assert answer["ok"] is False
        assert re.match("the store file .* is gone" if cluster is None
                        else "checking the store: ", answer["reason"]), answer
        assert await get(broker, "/healthz") == (200, "application/json", b'{"ok": true}')
        families = await scrape(broker)
        assert value(families, "cm_broker_store_up") == 0
        assert not families["cm_broker_queue_depth"].samples
    finally:
        broker.cleanup()


async def test_sigterm_closes_links_with_1001_and_daemons_back_off(
        store_kind: str, request: pytest.FixtureRequest) -> None:
    """1. both daemons are linked; 2. SIGTERM the broker: it exits 0 after closing every
    connection with 1001; 3. alice's link records the 1001 and goes to backoff; 4. the
    broker's stderr was JSON lines from start to stop."""
    if store_kind == "postgres":
        pytest.skip("the drain does not depend on the store")
    pair: Mesh2 = request.getfixturevalue("pair")
    wait_for(lambda: link_state(pair.alice) == "open" and link_state(pair.bob) == "open")
    assert pair.broker.stop() == 0

    def link_closed() -> dict[str, Any] | None:
        for line in pair.alice.paths.log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "broker_link_backoff":
                return dict(entry)
        return None

    closed = wait_for(link_closed)
    assert str(closed["error"]).startswith("closed 1001")
    wait_for(lambda: link_state(pair.alice) in ("backoff", "connecting"))
    lines = (pair.broker.root / "broker.log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line is one JSON object
    # (asyncio's debug mode, as CI runs, logs lines of its own around them: JSON too)
    assert events.index("broker_started") < events.index("broker_stopped")
