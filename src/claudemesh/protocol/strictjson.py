"""Strict JSON for untrusted input, shared by the daemon's HTTP edge and the broker's frames.

Stricter than ``json.loads``: duplicate keys are refused (a fingerprint would depend on
which copy won), ``NaN``/``Infinity`` are refused (they are not JSON), the input must be
UTF-8, and nesting deep enough to exhaust the recursion limit is an error, not a crash.
Lone surrogates in ``\\u`` escapes still decode; callers validate strings before hashing.

Writing goes through :func:`dumps`: orjson, about twenty times faster than ``json.dumps``
on our frames (encoding was 6-8 % of each process in bench/e2e.py's profiles), with
``json.dumps`` as the fallback for what orjson refuses (integers past 64 bits, lone
surrogates): ASCII-escaped, so even a lone surrogate comes out as valid UTF-8.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["JsonError", "dumps", "loads_object"]

_FALLBACK: Final = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces; non-ASCII kept as is, escaped only in the fallback)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _FALLBACK.encode(value).encode("ascii")


class JsonError(ValueError):
    """The input is not one strict JSON object; the message says why."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # built in C; a repeated key shows as a shorter dict
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonError(f"duplicate key {key!r} in JSON object")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise JsonError(f"{name} is not valid JSON")


# Built once: json.loads with hooks builds a new decoder (and scanner) on every call.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_reject_duplicates,
                                   parse_constant=_reject_constant)


def loads_object(raw: bytes | str) -> dict[str, Any]:
    """Decode text that must hold exactly one JSON object.

    Raises:
        JsonError: not UTF-8, not JSON, not an object, duplicate keys, or NaN/Infinity.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(f"not UTF-8 (byte {exc.start})") from exc
    if not raw.strip():
        raise JsonError("empty; expected a JSON object")
    try:
        doc = _DECODER.decode(raw)
    except JsonError:
        raise
    except ValueError as exc:
        raise JsonError(f"not valid JSON: {exc}") from exc
    except RecursionError:
        raise JsonError("nested too deeply") from None
    if not isinstance(doc, dict):
        raise JsonError("must be a JSON object")
    return doc
