"""Golden vectors for the §4.4 fingerprint; daemon and broker must both reproduce them."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claudemesh.protocol.fingerprint import (
    ENVELOPE_VERSION,
    MetaError,
    body_hash,
    canonical_meta,
    fingerprint_prefix,
    request_fingerprint,
)

# name: (kind, ref, reply_to, priority, meta, message, canonical meta bytes, fingerprint hex)
VECTORS: dict[str, tuple[Any, ...]] = {
    "plain_topic": (
        "topic", "general", None, "next", None, "hello", b"",
        "c05dcb8a8f473e00d3a3099843753299c636858370b46b3945bc8ffcb6a90b8f"),
    "dm_reply_nested_meta": (
        "dm", "ab" * 32, "01HQXBROKERMSG", "now",
        {"z": 1, "a": {"y": [1.0, 2.5, "x"], "b": None}}, "hi bob",
        b'{"a":{"b":null,"y":[1,2.5,"x"]},"z":1}',
        "b9bf22f614726c5cc87f6eab3ccfeb40bcf971a452c9e851d590c195ed99219b"),
    "unicode_keys_sorted_by_utf16": (
        "topic", "@team", None, "low",
        {"€": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "ö": 7},
        "héllo 😀 世界",
        '{"\\r":2,"1":4,"\u0080":6,"ö":7,"€":1,"\U0001f600":5,"\ufb33":3}'.encode(),
        "f70dc46d5cb728ad4f9d6c14ac96bcf15d736b519863083251ff49e36c901cff"),
    "escapes": (
        "topic", "*", None, "next", {"s": "line\nquote\"back\\slash\u0001\u2028</tag>"},
        "tab\there",
        '{"s":"line\\nquote\\"back\\\\slash\\u0001\u2028</tag>"}'.encode(),
        "5f46df875340c58287fdcd45453d4dba3cf377cfcedcaa46fcb7dc79ce4c334a"),
    "numbers": (
        "topic", "n", None, "next",
        {"n": [0, -0.0, 1.0, 1e21, 1e-7, 0.1, 123456789012345, 9007199254740991, -1.5e300,
               5e-324]},
        "n",
        b'{"n":[0,0,1,1e+21,1e-7,0.1,123456789012345,9007199254740991,-1.5e+300,5e-324]}',
        "bde49d3db63cc158df95341c5b6d7ff4f106881720c81d9073875ddf44508977"),
}


def by_hand(kind: str, ref: str, reply: str | None, priority: str, meta_json: bytes,
            message: str) -> bytes:
    """R-FP-1 written out again: NUL-separated fields, hex body hash, no trailing NUL."""
    body_hex = hashlib.sha256(message.encode("utf-8")).hexdigest().encode()
    preimage = (b"1\x00" + kind.encode() + b"\x00" + ref.encode() + b"\x00"
                + (reply or "").encode() + b"\x00" + priority.encode() + b"\x00"
                + meta_json + b"\x00" + body_hex)
    return hashlib.sha256(preimage).digest()


def fingerprint_of(kind: str, ref: str, reply: str | None, priority: str,
                   meta: dict[str, Any] | None, message: str) -> bytes:
    return request_fingerprint(destination_kind=kind, destination_ref=ref, reply_to_id=reply,
                               priority=priority, meta_canonical=canonical_meta(meta),
                               body_hash_hex=body_hash(message))


@pytest.mark.parametrize("name", list(VECTORS))
def test_golden_vector(name: str) -> None:
    kind, ref, reply, priority, meta, message, meta_json, expected_hex = VECTORS[name]
    assert canonical_meta(meta) == meta_json
    fp = fingerprint_of(kind, ref, reply, priority, meta, message)
    assert fp == by_hand(kind, ref, reply, priority, meta_json, message)
    assert fp.hex() == expected_hex
    assert len(fp) == 32


def test_envelope_version_is_1() -> None:
    assert ENVELOPE_VERSION == "1"


def test_body_hash_is_sha256_hex_of_utf8() -> None:
    assert body_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert len(body_hash("")) == 64


def test_absent_null_and_empty_meta_are_all_the_empty_string() -> None:
    assert canonical_meta(None) == canonical_meta({}) == b""


def test_each_field_changes_the_fingerprint() -> None:
    base = ("topic", "general", None, "next", {"a": 1}, "hello")
    seen = {fingerprint_of(*base)}
    for index, value in enumerate(["dm", "other", "r-1", "now", {"a": 2}, "hello!"]):
        variant = list(base)
        variant[index] = value
        seen.add(fingerprint_of(*variant))
    assert len(seen) == 7


def test_separators_keep_fields_apart() -> None:
    """'ab' + '' and 'a' + 'b' must not collide across a field boundary."""
    one = request_fingerprint(destination_kind="topic", destination_ref="ab", reply_to_id=None,
                              priority="next", meta_canonical=b"", body_hash_hex="00")
    two = request_fingerprint(destination_kind="topic", destination_ref="a", reply_to_id="b",
                              priority="next", meta_canonical=b"", body_hash_hex="00")
    assert one != two


@pytest.mark.parametrize("bad", [{"n": 2**53 + 1}, {"n": float("nan")}, {"n": float("inf")},
                                 {"s": "\ud800"}])
def test_meta_that_jcs_cannot_represent_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(MetaError):
        canonical_meta(bad)


def test_prefix_is_the_first_8_bytes_as_16_hex() -> None:
    assert fingerprint_prefix(bytes(range(32))) == "0001020304050607"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_key_order_never_changes_the_fingerprint(meta: dict[str, Any], rng: Any) -> None:
    items = list(meta.items())
    rng.shuffle(items)
    shuffled = dict(items)
    assert canonical_meta(shuffled) == canonical_meta(meta)
    assert fingerprint_of("topic", "t", None, "next", shuffled, "m") == fingerprint_of(
        "topic", "t", None, "next", meta, "m")
