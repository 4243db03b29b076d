"""Batch frames, the pure half: wrapping, chunking under both limits, and refusals."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from claudemesh.protocol.batch import OVERHEAD, encode_batch, take_chunk, unbatch
from claudemesh.protocol.features import BatchParams
from claudemesh.protocol.frames import FrameError


def test_one_frame_goes_as_itself_and_several_are_wrapped() -> None:
    assert encode_batch([b'{"a":1}']) == b'{"a":1}'
    raw = encode_batch([b'{"a":1}', b'{"b":[2]}'])
    assert json.loads(raw) == {"type": "batch", "frames": [{"a": 1}, {"b": [2]}]}


def test_chunks_stop_at_max_frames() -> None:
    queue = deque([b"{}"] * 7)
    params = BatchParams(max_frames=3, max_bytes=1 << 20)
    assert [len(take_chunk(queue, params)) for _ in range(3)] == [3, 3, 1]
    assert not queue


def test_chunks_stop_before_max_bytes_and_fit_exactly() -> None:
    frame = b"x" * 100
    exact = OVERHEAD + 3 * 100 + 2  # three frames and their two commas
    queue = deque([frame] * 4)
    chunk = take_chunk(queue, BatchParams(max_frames=10, max_bytes=exact))
    assert len(chunk) == 3 and len(encode_batch(chunk)) == exact
    queue = deque([frame] * 4)
    assert len(take_chunk(queue, BatchParams(max_frames=10, max_bytes=exact - 1))) == 2


def test_a_frame_too_big_to_share_still_leaves_alone() -> None:
    queue = deque([b"y" * 5000, b"{}"])
    params = BatchParams(max_frames=10, max_bytes=4096)
    assert take_chunk(queue, params) == [b"y" * 5000]
    assert take_chunk(queue, params) == [b"{}"]


def test_members_come_back_in_order() -> None:
    frames = [{"type": "client_ack", "delivery_ids": [str(i)]} for i in range(5)]
    assert unbatch({"type": "batch", "frames": frames}, 5) == frames


def test_any_other_frame_stands_alone() -> None:
    ack = {"type": "client_ack", "delivery_ids": ["1"]}
    assert unbatch(ack, 5) == [ack]
    assert unbatch({"frames": [ack]}, 5) == [{"frames": [ack]}]  # no type: not a batch


@pytest.mark.parametrize(("doc", "detail"), [
    ({"type": "batch"}, "exactly {type, frames"),
    ({"type": "batch", "frames": "[]"}, "exactly {type, frames"),
    ({"type": "batch", "frames": [], "req_id": "1"}, "exactly {type, frames"),
    ({"type": "batch", "frames": []}, "1 to 4 frames, not 0"),
    ({"type": "batch", "frames": [{}] * 5}, "1 to 4 frames, not 5"),
    ({"type": "batch", "frames": [{}, None]}, "every frame in a batch is a JSON object"),
    ({"type": "batch", "frames": [{"type": "batch", "frames": [{}]}]}, "do not nest"),
])
def test_bad_batches_are_refused(doc: dict[str, Any], detail: str) -> None:
    with pytest.raises(FrameError) as info:
        unbatch(doc, 4)
    assert info.value.code == "invalid_frame" and detail in info.value.detail
    assert info.value.frame_type == "batch"
