from __future__ import annotations

import json

from claudemesh.protocol.envelope import WIRE_FIELDS, FrozenSend, wire_part


def test_frozen_send_round_trips_and_holds_no_client_message_id() -> None:
    frozen = FrozenSend(mesh="demo", destination_kind="dm", destination_ref="ab" * 32,
                        priority="now", reply_to="r-1", meta={"é": [1, {"x": None}]},
                        body="héllo 😀", body_hash="00" * 32)
    raw = frozen.to_bytes()
    assert FrozenSend.from_bytes(raw) == frozen
    doc = json.loads(raw)
    assert doc["envelope_version"] == "1"
    assert "client_message_id" not in doc
    assert set(doc) == set(FrozenSend.__slots__)


def test_the_stored_layout_is_mesh_then_the_wire_members_in_wire_order() -> None:
    frozen = FrozenSend(mesh="démo", destination_kind="topic", destination_ref="news",
                        priority="next", reply_to=None, meta=None,
                        body={"kind": "plain", "text": "hi"}, body_hash="00" * 32)
    raw = frozen.to_bytes()
    assert list(json.loads(raw)) == ["mesh", *WIRE_FIELDS]
    part = wire_part(raw, "démo")
    assert part is not None and bytes(part) == raw[raw.index(b'"envelope_version"'):]
    assert wire_part(raw, "demo") is None
