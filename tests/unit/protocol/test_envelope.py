from __future__ import annotations

import json

from claudemesh.protocol.envelope import FrozenSend


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
