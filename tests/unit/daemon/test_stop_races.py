"""A daemon's stop cancels its per-mesh tasks; a cancel must never be lost.

On Python 3.11, ``asyncio.wait_for`` returns normally when the cancel meets the inner wait
finishing in the same step of the loop (an event set, then the cancel), and the task goes
on: the drain, for one, back to waiting for a link that never opens again. In CI a daemon
stuck so after cancelling its per-mesh tasks made ``daemon down`` time out after 20 s
(a 20 s teardown, daemon_stop_failed); which task lost its cancel there was not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from claudemesh.clock import now_ms
from claudemesh.config import MeshConfig
from claudemesh.crypto import MemberKey
from claudemesh.daemon import meshes
from claudemesh.daemon.drain import Drain
from claudemesh.daemon.link import BrokerLink
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.sqlitedb.db import open_database
from claudemesh.sqlitedb.worker import DbWorker

KEY = MemberKey.generate()
MESH = MeshConfig(slug="demo", mesh_id="m-1", member_id="u-alice", display_name="alice",
                  broker_url="ws://127.0.0.1:1/ws", pubkey=KEY.pubkey, secret_key=KEY.secret_key)


async def _nothing(*_args: object) -> None:
    return None


async def test_a_wake_in_the_same_step_as_the_cancel_still_ends_the_drains_sleep(
        tmp_path: Path) -> None:
    """1. The drain sleeps until its next due row (60 s).
    2. In one step: something becomes due (notify) and the stop cancels the drain.
    3. The sleep ends with the cancel, not as a wake-up the drain would go on from."""
    outbox = DbWorker(open_database(tmp_path / "outbox.db", OUTBOX_MIGRATIONS), name="outbox")
    outbox.start()
    link = BrokerLink(MESH, on_push=_nothing, on_event=lambda _f: None,
                      on_state=lambda _l: None)
    drain = Drain(link, outbox, clock=now_ms)
    try:
        sleeping = asyncio.create_task(drain._sleep(60))
        await asyncio.sleep(0.05)
        drain.notify()
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
    finally:
        await asyncio.to_thread(outbox.stop)


async def test_stop_tasks_cancels_again_a_task_that_went_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A task that lost its first cancel (as wait_for lost them) is cancelled again, and
    the stop names it in the log instead of hanging."""
    monkeypatch.setattr(meshes, "RECANCEL_S", 0.05)
    forever = asyncio.Event()

    async def loses_one_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await forever.wait()
        await forever.wait()

    async def ends() -> None:
        await forever.wait()

    stubborn = asyncio.create_task(loses_one_cancel(), name="stubborn")
    plain = asyncio.create_task(ends(), name="plain")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await meshes.stop_tasks([stubborn, plain])
    assert stubborn.cancelled() and plain.cancelled()
    [record] = [r for r in caplog.records if r.getMessage() == "task_went_on_after_cancel"]
    assert record.tasks == ["stubborn"]
