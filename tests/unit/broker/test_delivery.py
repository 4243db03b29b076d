"""DeliveryPump alone, with an in-memory stand-in for the store: a unit test of one class.

The end-to-end proof is in tests/integration; this pins a race those tests hit only
sometimes: a window-full decline followed by an ack and a fresh offer must not skip the
declined deliveries.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import orjson
import pytest

from claudemesh.broker import delivery as delivery_module
from claudemesh.broker.accept import push_frame
from claudemesh.broker.delivery import DeliveryPump, PushEncoder, encode_push
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import Delivery, Member
from claudemesh.protocol.strictjson import dumps

MEMBER = Member("bob", "mesh", "ab" * 32, "bob", 0, None)


def delivery(n: int) -> Delivery:
    return Delivery(n, "bob", "mesh", f"b{n}", f"c{n}", None, "cd" * 32, "alice", "dm",
                    "ab" * 32, "next", None, None, {"kind": "plain", "text": "x"}, "00", 0)


@dataclass
class FakeStore:
    rows: dict[int, Delivery] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)

    async def pending_deliveries(self, member_id: str, *, after: int, limit: int,
                                 **_: Any) -> list[Delivery]:
        await asyncio.sleep(0)
        ids = sorted(i for i in self.rows if i > after and i not in self.acked)[:limit]
        return [self.rows[i] for i in ids]


@dataclass
class FakeSession:
    session_id: str = "s1"
    member: Member = MEMBER
    pushed: list[int] = field(default_factory=list)

    async def send_unsolicited(self, data: bytes) -> bool:
        self.pushed.append(int(json.loads(data)["delivery_id"]))
        return True

    async def close(self, code: int, reason: str) -> None:
        return None


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_declined_offer_is_never_skipped_after_an_ack_and_a_newer_offer() -> None:
    store, session = FakeStore(), FakeSession()
    settings = BrokerSettings(delivery_window=4)
    pump = DeliveryPump(session, store, settings)  # type: ignore[arg-type]
    task = asyncio.create_task(pump.run())
    try:
        await settle()  # the first read finds nothing: caught up
        for n in range(1, 7):  # 1-4 fill the window, 5 and 6 are declined
            store.rows[n] = delivery(n)
            await pump.offer(store.rows[n])
        assert session.pushed == [1, 2, 3, 4]
        store.acked |= {1, 2, 3, 4}
        pump.acked([1, 2, 3, 4])
        store.rows[7] = delivery(7)
        await pump.offer(store.rows[7])  # before the pump's read runs
        await settle()
        store.acked |= set(session.pushed)
        pump.acked(session.pushed)
        await settle()
        assert sorted(set(session.pushed)) == [1, 2, 3, 4, 5, 6, 7]
    finally:
        task.cancel()


async def test_pushes_follow_order_when_nothing_is_declined() -> None:
    store, session = FakeStore(), FakeSession()
    pump = DeliveryPump(session, store, BrokerSettings(delivery_window=8))  # type: ignore[arg-type]
    task = asyncio.create_task(pump.run())
    try:
        await settle()
        for n in range(1, 6):
            store.rows[n] = delivery(n)
            await pump.offer(store.rows[n])
        await settle()
        assert session.pushed == [1, 2, 3, 4, 5]
    finally:
        task.cancel()


# -- the push frame's bytes ------------------------------------------------------------

def sample(n: int, **fields: Any) -> Delivery:
    base = delivery(n)
    values = {name: getattr(base, name) for name in Delivery.__dataclass_fields__}
    return Delivery(**{**values, **fields})


SAMPLES = [
    delivery(1),
    sample(2, history_id="h2", reply_to="c1", priority="now", created_at=1_700_000_000_123,
           meta={"z": [1, 2.5, None, True], "a": {"ünï": "cödé"}},
           body={"kind": "plain", "text": "héllo \u2028 \x01 \"quoted\" \\ / 🙂"}),
    sample(3, destination_kind="topic", destination_ref="#ops",
           body={"kind": "crypto_box", "nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy"}),
]


@pytest.mark.parametrize("d", SAMPLES, ids=["plain", "unicode_and_meta", "box"])
def test_a_push_is_encoded_to_exactly_the_bytes_of_dumps_of_its_frame(d: Delivery) -> None:
    expected = dumps(push_frame(d))
    assert encode_push(d) == expected
    assert PushEncoder()(d) == expected


def test_the_push_frame_on_the_wire_is_pinned() -> None:
    assert PushEncoder()(SAMPLES[0]) == (
        b'{"type":"push","delivery_id":"1","mesh_id":"mesh","client_message_id":"c1",'
        b'"broker_message_id":"b1","history_id":null,"sender_pubkey":"' + b"cd" * 32 +
        b'","sender_name":"alice","destination_kind":"dm","destination_ref":"' + b"ab" * 32 +
        b'","priority":"next","reply_to":null,"meta":null,'
        b'"body":{"kind":"plain","text":"x"},"body_hash":"00",'
        b'"created_at":"1970-01-01T00:00:00.000Z"}')


def test_a_frame_orjson_refuses_takes_the_whole_frame_fallback_as_before() -> None:
    d = sample(4, meta={"big": 2**70}, body={"kind": "plain", "text": "héllo"})
    expected = dumps(push_frame(d))
    assert expected.isascii() and b"\\u00e9" in expected  # the fallback escapes the body too
    assert PushEncoder()(d) == expected


def test_one_accepts_shared_body_is_encoded_once_for_all_its_recipients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"kind": "plain", "text": "to everyone"}
    recipients = [sample(n, recipient_member_id=f"m{n}", body=body) for n in range(1, 4)]
    expected = [dumps(push_frame(d)) for d in recipients]
    encoded: list[Any] = []

    def counting_dumps(value: Any) -> bytes:
        encoded.append(value)
        return orjson.dumps(value)

    monkeypatch.setattr(delivery_module, "orjson",
                        SimpleNamespace(dumps=counting_dumps, Fragment=orjson.Fragment))
    encode = PushEncoder()
    assert [encode(d) for d in recipients] == expected
    assert sum(1 for value in encoded if value is body) == 1
    assert [value for value in encoded if value is not body] == [
        {**push_frame(d), "body": ANY} for d in recipients]
