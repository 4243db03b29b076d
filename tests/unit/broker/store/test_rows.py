"""The row mapping both broker stores share (store/rows.py), with no database at all."""

from __future__ import annotations

import pytest

from claudemesh.broker.store.base import Delivery, Member, PresenceChange, SessionProfile
from claudemesh.broker.store.rows import (
    dedupe_orphan,
    delivery_from_row,
    delivery_orphan,
    member_columns,
    member_from_row,
    presence_change,
    profile_columns,
    topic_entry,
)
from claudemesh.errors import StoreError

MEMBER_ROW = ("U1", "M1", "ab" * 32, "alice", 5, None, "on it", "working", 1, None, "t", "b",
              '["x","y"]', '[{"name":"build","summary":null,"status":"idle","harness":null}]')


def test_member_columns_are_read_in_the_order_member_from_row_expects() -> None:
    assert member_columns().split(", ")[:3] == ["id", "mesh_id", "pubkey"]
    assert member_columns("m.").split(", ")[-2:] == ["m.capabilities", "m.sessions"]
    assert len(member_columns().split(", ")) == len(MEMBER_ROW)


def test_a_member_row_becomes_a_member() -> None:
    member = member_from_row(MEMBER_ROW, ("ops",))
    assert member == Member("U1", "M1", "ab" * 32, "alice", 5, None, "on it", "working", True,
                            None, "t", "b", ("x", "y"), ("ops",),
                            (SessionProfile("build", None, "idle", None),))
    assert member_from_row((*MEMBER_ROW[:8], 0, *MEMBER_ROW[9:])).visible is False


def test_a_delivery_row_becomes_a_delivery() -> None:
    row = (7, "U2", "M1", "B1", "c1", 42, "pk", "alice", "dm", "ref", "next", None, None,
           '{"kind":"crypto_box"}', "00", 9)
    assert delivery_from_row(row) == Delivery(7, "U2", "M1", "B1", "c1", "42", "pk", "alice",
                                              "dm", "ref", "next", None, None,
                                              {"kind": "crypto_box"}, "00", 9)
    pruned = delivery_from_row((*row[:5], None, *row[6:12], '{"k":1}', *row[13:]))
    assert (pruned.history_id, pruned.meta) == (None, {"k": 1})


def test_profile_fields_become_column_values() -> None:
    columns = profile_columns({"capabilities": ("a",), "visible": True, "status": "dnd",
                               "sessions": [SessionProfile("s")], "nope": 1})
    assert columns == {"capabilities": '["a"]', "visible": 1, "status": "dnd",
                       "sessions": '[{"name":"s","summary":null,"status":null,"harness":null}]'}
    assert profile_columns({"visible": "0"}, visible=lambda v: bool(int(v))) == {
        "visible": False}
    with pytest.raises(StoreError, match="SessionProfile"):
        profile_columns({"sessions": [{"name": "s"}]})


@pytest.mark.parametrize(("row", "change"), [
    (None, PresenceChange(None, None, None)),
    (("s1", "b1", "online", 1_000), PresenceChange("s1", "b1", "online")),
    (("s1", "b1", "online", 999), PresenceChange("s1", "b1", "leased")),  # silent broker
    (("s1", "b1", "online", None), PresenceChange("s1", "b1", "leased")),  # never beat
    (("s1", "b1", "leased", 1_000), PresenceChange("s1", "b1", "leased")),
])
def test_the_presence_before_an_attach(row: tuple[object, ...] | None,
                                       change: PresenceChange) -> None:
    assert presence_change(row, 31_000, 30_000) == change


def test_topic_entries_and_orphan_findings() -> None:
    assert topic_entry("news", 2, None) == {"topic": "news", "subscribers": 2,
                                            "subscribed": False}
    assert dedupe_orphan("M1", "c1", "B1") == {"kind": "dedupe_without_message",
                                               "mesh_id": "M1", "client_message_id": "c1",
                                               "broker_message_id": "B1"}
    assert delivery_orphan(3, "B1") == {"kind": "delivery_without_message", "delivery_id": 3,
                                        "broker_message_id": "B1"}
