"""``batch`` frames (feature ``frame_batch``, docs/protocol.md): several frames in one.

Every WebSocket frame costs both ends a fixed toll (framing, a read wake-up, a parse), and
under load most of a connection's frames are small and leave in the same event-loop turn:
send results and pushes from the broker, sends from a daemon's drain. A batch carries
them as ``{"type": "batch", "frames": [frame, ...]}``; its receiver handles each inner
frame exactly as if it had arrived alone, in order. Pure: the I/O half is ``cork.py``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from claudemesh.protocol.features import BatchParams
from claudemesh.protocol.frames import FrameError

__all__ = ["BATCH_TYPE", "encode_batch", "take_chunk", "unbatch"]

BATCH_TYPE: Final = "batch"
_HEAD: Final = b'{"type":"batch","frames":['
_TAIL: Final = b"]}"
OVERHEAD: Final = len(_HEAD) + len(_TAIL)


def encode_batch(frames: list[bytes]) -> bytes:
    """One frame alone goes as itself; several are wrapped (each is already JSON)."""
    if len(frames) == 1:
        return frames[0]
    return _HEAD + b",".join(frames) + _TAIL


def take_chunk(queue: deque[bytes], params: BatchParams) -> list[bytes]:
    """Pop the longest prefix of ``queue`` that fits one batch (always at least one frame,
    so a frame too big to share still leaves, alone)."""
    chunk = [queue.popleft()]
    size = OVERHEAD + len(chunk[0])
    while queue and len(chunk) < params.max_frames:
        size += len(queue[0]) + 1
        if size > params.max_bytes:
            break
        chunk.append(queue.popleft())
    return chunk


def unbatch(doc: dict[str, Any], max_frames: int) -> list[dict[str, Any]]:
    """The frames a received frame stands for, to handle in order: a batch's inner frames,
    or any other frame alone.

    Raises:
        FrameError: ``invalid_frame`` when ``frames`` is not a list of 1..max_frames
            objects, or holds another batch (batches do not nest).
    """
    if doc.get("type") != BATCH_TYPE:
        return [doc]
    frames = doc.get("frames")
    if set(doc) != {"type", "frames"} or not isinstance(frames, list):
        raise FrameError("invalid_frame", "a batch is exactly {type, frames: [...]}", doc)
    if not 1 <= len(frames) <= max_frames:
        raise FrameError("invalid_frame",
                         f"a batch holds 1 to {max_frames} frames, not {len(frames)}", doc)
    for inner in frames:
        if not isinstance(inner, dict):
            raise FrameError("invalid_frame", "every frame in a batch is a JSON object", doc)
        if inner.get("type") == BATCH_TYPE:
            raise FrameError("invalid_frame", "batches do not nest", doc)
    return frames
