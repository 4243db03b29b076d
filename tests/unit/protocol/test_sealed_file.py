"""The sealed ``file`` kind: a shared file's reference and key inside a DM (issue 15)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claudemesh.protocol.sealed import (
    FileRef,
    SealedError,
    SealedFile,
    open_plaintext,
    seal_file,
)

REF = FileRef("01JF0000000000000000000000", "build.log", 1234, "ab" * 32, 131072, "cd" * 32,
              "ef" * 16)


def test_a_file_reference_round_trips_and_its_public_view_has_no_key() -> None:
    opened = open_plaintext(seal_file(REF, "the log"))
    assert opened == SealedFile(REF, "the log")
    assert open_plaintext(seal_file(REF, None)) == SealedFile(REF, None)
    assert REF.public() == {"id": REF.file_id, "name": "build.log", "size": 1234,
                            "sha256": "ab" * 32}
    assert "cd" * 32 not in repr(REF)


@pytest.mark.parametrize("change", [
    {"name": "../etc/passwd"}, {"name": ""}, {"name": ".."}, {"name": "a\x00b"},
    {"name": "x" * 256}, {"size": -1}, {"size": True}, {"size": "1"},
    {"chunk_bytes": 0}, {"chunk_bytes": 200_000}, {"file_id": "short"}, {"file_id": "../../x" * 4},
    {"sha256": "AB" * 32}, {"key": "cd" * 31}, {"nonce_prefix": "ef" * 15},
    {"text": ""}, {"text": 5}, {"extra": 1},
])
def test_malformed_references_make_the_dm_undecryptable(change: dict[str, Any]) -> None:
    doc = {"v": 1, "kind": "file", **REF.to_wire(), "text": None, **change}
    with pytest.raises(SealedError):
        open_plaintext(b"\x00" + json.dumps(doc).encode())
