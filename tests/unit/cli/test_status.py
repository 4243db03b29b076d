"""What ``claudemesh status <client_message_id>`` prints, step by step (pure formatter)."""

from __future__ import annotations

from typing import Any

import pytest

from claudemesh.cli.status import _reached, format_status
from claudemesh.sdk import MessageStatus

BOB = "ab" * 32
T0, T1, T2, T3 = (f"2026-11-26T15:00:0{i}.000Z" for i in range(4))


def status(state: str, **fields: Any) -> MessageStatus:
    doc: dict[str, Any] = {
        "client_message_id": "c-1", "mesh": "demo", "destination": "bob", "outbox_id": "r-1",
        "status": "pending", "state": state, "broker_message_id": None, "enqueued_at": T0,
        "accepted_at": None, "stored_at": None, "surfaced_at": None, "surfaced_path": None,
        "surfaced_session": None, "receipts": []}
    return MessageStatus.from_wire({**doc, **fields})


def test_a_queued_message_shows_only_its_queue_time() -> None:
    assert format_status(status("queued")).splitlines() == [
        "c-1 to bob in demo: queued", f"  queued    {T0}"]


def test_a_surfaced_message_shows_every_step_and_how_it_was_read() -> None:
    info = status("surfaced", status="done", accepted_at=T1, stored_at=T2, surfaced_at=T3,
                  surfaced_path="hook", surfaced_session="build")
    assert format_status(info).splitlines() == [
        "c-1 to bob in demo: surfaced", f"  queued    {T0}", f"  accepted  {T1}",
        f"  stored    {T2}", f"  surfaced  {T3}  via hook, session build"]


def test_a_surfaced_step_without_a_session_names_the_path_alone() -> None:
    info = status("surfaced", surfaced_at=T3, surfaced_path="poll")
    assert format_status(info).splitlines()[-1] == f"  surfaced  {T3}  via poll"


def test_a_failed_message_points_at_the_outbox() -> None:
    lines = format_status(status("failed", destination=BOB)).splitlines()
    assert lines[0] == f"c-1 to {BOB} in demo: failed"
    assert lines[-1] == ("  the broker refused it; see"
                         " `claudemesh daemon outbox list --failed`")


@pytest.mark.parametrize(("state", "target", "reached"), [
    ("accepted", "accepted", True), ("surfaced", "stored", True),
    ("stored", "surfaced", False), ("queued", "accepted", False),
    ("failed", "accepted", False), ("aborted", "accepted", False)])
def test_wait_targets_are_reached_by_any_later_step(state: str, target: str,
                                                    reached: bool) -> None:
    assert _reached(state, target) is reached
