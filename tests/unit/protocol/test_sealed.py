from __future__ import annotations

import json

import pytest

from claudemesh.crypto import MemberKey, verify
from claudemesh.protocol.sealed import (
    Plain,
    Receipt,
    ReceiptPath,
    ReceiptState,
    SealedError,
    SealedMessage,
    open_plaintext,
    receipt_client_message_id,
    seal_message,
    seal_receipt,
)

A = "aa" * 32
B = "bb" * 32


def receipt(**changes: object) -> Receipt:
    fields: dict[str, object] = dict(
        state=ReceiptState.SURFACED, mesh_id="m1", client_message_id="c1",
        broker_message_id="b1", recipient=B, sender=A, session="build",
        path=ReceiptPath.HOOK, at=1764170000000, signature="ff" * 64)
    fields.update(changes)
    return Receipt(**fields)  # type: ignore[arg-type]


def test_bare_text_is_plain() -> None:
    assert open_plaintext("hello ✓".encode()) == Plain("hello ✓")


def test_sealed_message_round_trips() -> None:
    raw = seal_message("hi", to_session="build", from_session=None)
    assert raw[:1] == b"\x00"
    assert open_plaintext(raw) == SealedMessage("hi", "build", None)


def test_sealing_is_canonical() -> None:
    """Same request, same bytes: the fingerprint of a retry must not change."""
    one = seal_message("x", to_session="a", from_session="b")
    assert one == seal_message("x", to_session="a", from_session="b")
    assert one != seal_message("x", to_session="b", from_session="a")


def test_receipt_round_trips_and_its_signature_verifies() -> None:
    key = MemberKey.generate()
    unsigned = receipt(recipient=key.pubkey, signature="")
    signed = Receipt(**{**{f: getattr(unsigned, f) for f in unsigned.__slots__},
                        "signature": key.sign(unsigned.statement())})
    opened = open_plaintext(seal_receipt(signed))
    assert opened == signed
    assert isinstance(opened, Receipt)
    verify(key.pubkey, opened.statement(), opened.signature)


def test_statement_covers_every_field() -> None:
    base = receipt().statement()
    for change in ({"state": ReceiptState.STORED, "path": None}, {"session": None},
                   {"at": 1}, {"client_message_id": "c2"}, {"broker_message_id": "b2"},
                   {"sender": B}, {"recipient": A}, {"mesh_id": "m2"},
                   {"path": ReceiptPath.POLL}):
        assert receipt(**change).statement() != base, change


def test_receipt_ids_are_per_state_and_message() -> None:
    ids = {receipt_client_message_id(s, mesh_id="m", client_message_id=c, recipient=r)
           for s in ReceiptState for c in ("c1", "c2") for r in (A, B)}
    assert len(ids) == 8
    one = receipt_client_message_id(ReceiptState.STORED, mesh_id="m", client_message_id="c1",
                                    recipient=A)
    assert one.startswith("rcpt-stored-") and len(one) <= 128


def sealed(doc: object) -> bytes:
    return b"\x00" + json.dumps(doc).encode()


@pytest.mark.parametrize("raw", [
    b"\xff\xfe",
    b"\x00not json",
    sealed([1]),
    sealed({"v": 2, "kind": "message", "text": "x", "to_session": None, "from_session": None}),
    sealed({"v": 1, "kind": "other"}),
    sealed({"v": 1, "kind": "message", "text": "x", "to_session": None}),
    sealed({"v": 1, "kind": "message", "text": "", "to_session": None, "from_session": None}),
    sealed({"v": 1, "kind": "message", "text": "x", "to_session": "-bad", "from_session": None}),
    sealed({"v": 1, "kind": "message", "text": "x", "to_session": None, "from_session": None,
            "extra": 1}),
    sealed({"v": 1, "kind": "receipt", "receipt": {"state": "stored"}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "state": "read"}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "at": "1"}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "at": True}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "sender": "x"}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "path": None}}),
    sealed({"v": 1, "kind": "receipt", "receipt": {**receipt().to_wire(), "state": "stored"}}),
])
def test_malformed_sealed_documents_are_refused(raw: bytes) -> None:
    with pytest.raises(SealedError):
        open_plaintext(raw)
