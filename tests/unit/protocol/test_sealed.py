from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from claudemesh.crypto import MemberKey, verify
from claudemesh.protocol.sealed import (
    MAX_RECEIPTS,
    Plain,
    ReceiptItem,
    ReceiptPath,
    Receipts,
    ReceiptState,
    SealedError,
    SealedMessage,
    open_plaintext,
    seal_message,
    seal_receipts,
)

A = "aa" * 32
B = "bb" * 32
SIG = "ff" * 64


def item(**changes: Any) -> ReceiptItem:
    fields: dict[str, Any] = dict(state=ReceiptState.SURFACED, client_message_id="c1",
                                  broker_message_id="b1", session="build",
                                  path=ReceiptPath.HOOK, at=1764170000000)
    fields.update(changes)
    return ReceiptItem(**fields)


def batch(*items: ReceiptItem, **changes: Any) -> Receipts:
    fields: dict[str, Any] = dict(mesh_id="m1", recipient=B, sender=A,
                                  items=items or (item(),), signature=SIG)
    fields.update(changes)
    return Receipts(**fields)


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


def test_receipts_round_trip_and_their_signature_verifies() -> None:
    key = MemberKey.generate()
    unsigned = batch(item(), item(state=ReceiptState.STORED, path=None, session=None),
                     recipient=key.pubkey, signature="")
    signed = dataclasses.replace(unsigned, signature=key.sign(unsigned.statement()))
    opened = open_plaintext(seal_receipts(signed))
    assert opened == signed
    assert isinstance(opened, Receipts)
    verify(key.pubkey, opened.statement(), opened.signature)


def test_statement_covers_every_field() -> None:
    base = batch().statement()
    for change in ({"state": ReceiptState.STORED, "path": None}, {"session": None},
                   {"at": 1}, {"client_message_id": "c2"}, {"broker_message_id": "b2"},
                   {"path": ReceiptPath.POLL}):
        assert batch(item(**change)).statement() != base, change
    for whole in ({"sender": B}, {"recipient": A}, {"mesh_id": "m2"},
                  {"items": (item(), item(client_message_id="c2"))}):
        assert batch(**whole).statement() != base, whole
    assert batch(signature="00" * 64).statement() == base  # the signature is not signed


def test_the_id_depends_on_what_is_reported_not_on_order_or_times() -> None:
    one, two = item(), item(client_message_id="c2")
    assert batch(one, two).client_message_id() == batch(two, one).client_message_id()
    assert batch(one).client_message_id() == batch(item(at=5)).client_message_id()
    ids = {batch(one).client_message_id(), batch(two).client_message_id(),
           batch(one, two).client_message_id(),
           batch(item(state=ReceiptState.STORED, path=None)).client_message_id(),
           batch(one, recipient=A).client_message_id()}
    assert len(ids) == 5
    assert all(i.startswith("rcpt-") and len(i) <= 128 for i in ids)


def sealed(doc: object) -> bytes:
    return b"\x00" + json.dumps(doc).encode()


def receipts_doc(**changes: Any) -> dict[str, Any]:
    doc = {"v": 1, "kind": "receipts", **batch().unsigned(), "signature": SIG}
    doc.update(changes)
    return doc


def item_doc(**changes: Any) -> dict[str, Any]:
    return {**item().to_wire(), **changes}


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
    sealed(receipts_doc(receipts=[])),
    sealed(receipts_doc(receipts=[item_doc()] * 2)),
    sealed(receipts_doc(receipts=[item_doc(client_message_id=str(i))
                                  for i in range(MAX_RECEIPTS + 1)])),
    sealed(receipts_doc(receipts=[{"state": "stored"}])),
    sealed(receipts_doc(receipts=[item_doc(state="read")])),
    sealed(receipts_doc(receipts=[item_doc(at="1")])),
    sealed(receipts_doc(receipts=[item_doc(at=True)])),
    sealed(receipts_doc(receipts=[item_doc(path=None)])),
    sealed(receipts_doc(receipts=[item_doc(state="stored")])),
    sealed(receipts_doc(receipts=[item_doc(client_message_id="")])),
    sealed(receipts_doc(sender="x")),
    sealed(receipts_doc(signature="ab")),
    sealed(receipts_doc(extra=1)),
])
def test_malformed_sealed_documents_are_refused(raw: bytes) -> None:
    with pytest.raises(SealedError):
        open_plaintext(raw)


def test_a_full_batch_of_long_ids_fits_the_broker_limit() -> None:
    items = tuple(item(client_message_id="c" * 120 + f"{i:08d}", broker_message_id="b" * 26,
                       session="s" * 64) for i in range(MAX_RECEIPTS))
    assert len(seal_receipts(batch(*items))) + 16 < 65536
