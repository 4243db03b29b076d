"""DeliveryPump alone, with an in-memory stand-in for the store: a unit test of one class.

The end-to-end proof is in tests/integration; this pins a race those tests hit only
sometimes: a window-full decline followed by an ack and a fresh offer must not skip the
declined deliveries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from claudemesh.broker.delivery import DeliveryPump
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import Delivery, Member

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

    async def send_unsolicited(self, frame: dict[str, Any]) -> bool:
        self.pushed.append(int(frame["delivery_id"]))
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
