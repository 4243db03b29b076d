"""Pure pieces both clients share: a request described as data, and typed reads of answers.

A :class:`Call` is one API request (method, path, JSON body) together with the function
that turns its answer into a model. The topic modules (:mod:`~claudemesh.sdk.info`,
:mod:`~claudemesh.sdk.messages`, :mod:`~claudemesh.sdk.inbox`,
:mod:`~claudemesh.sdk.peers`, :mod:`~claudemesh.sdk.sessions`) build them; the sync and
async clients only send them (httpx's ``BaseClient`` split: the logic once, the I/O twice).

:class:`Fields` reads one answer object for a model's ``from_wire``. Unknown fields are
ignored (a newer daemon may add some); a field of the wrong type, or a required one that
is missing, is the daemon breaking the contract, and raises :class:`RemoteError` with the
field's name rather than handing the caller a half-typed object.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from claudemesh.errors import RemoteError

__all__ = ["Call", "Fields", "as_object", "drop_none", "path_part", "with_query"]

T = TypeVar("T")
_MISSING: Any = object()


class Call(Generic[T]):
    """One request and how to read its answer; sent by :class:`Client` or :class:`AsyncClient`."""

    __slots__ = ("body", "decode", "method", "path")

    def __init__(self, method: str, path: str, decode: Callable[[Any], T],
                 body: dict[str, Any] | None = None) -> None:
        self.method = method
        self.path = path
        self.decode = decode
        self.body = body

    def __repr__(self) -> str:
        return f"Call({self.method} {self.path})"


def drop_none(**values: Any) -> dict[str, Any]:
    """A JSON body without the fields left out (None), so the daemon applies its defaults."""
    return {k: v for k, v in values.items() if v is not None}


def with_query(path: str, **params: Any) -> str:
    """``path?a=1&b=x`` without the parameters that are None or False; True is ``1``."""
    kept = {k: ("1" if v is True else str(v)) for k, v in params.items()
            if v is not None and v is not False}
    if not kept:
        return path
    return path + "?" + urllib.parse.urlencode(kept, quote_via=urllib.parse.quote)


def as_object(data: Any) -> dict[str, Any]:
    """An answer that stays a plain dict (``/v1/health``, a requeue, a profile)."""
    return Fields(data, "answer").raw


def path_part(value: str) -> str:
    """One path segment, percent-encoded (a client_message_id may hold ``/`` or ``?``)."""
    return urllib.parse.quote(value, safe="")


class Fields:
    """Typed reads from one JSON object of an answer; ``what`` names it in errors."""

    __slots__ = ("raw", "what")

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, Mapping):
            raise RemoteError(f"the daemon answered {type(data).__name__} where {what}"
                              " (an object) belongs")
        self.raw: dict[str, Any] = dict(data)
        self.what = what

    def _get(self, name: str, kinds: tuple[type, ...], label: str, *, optional: bool) -> Any:
        value = self.raw.get(name, _MISSING)
        if value is _MISSING or value is None:
            if optional:
                return None
            raise RemoteError(f"the daemon's {self.what} lacks {name!r}", field=name)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RemoteError(f"the daemon's {self.what} has {name!r} of type"
                              f" {type(value).__name__}, not {label}", field=name)
        return value

    def text(self, name: str) -> str:
        return str(self._get(name, (str,), "a string", optional=False))

    def opt_text(self, name: str) -> str | None:
        value = self._get(name, (str,), "a string", optional=True)
        return None if value is None else str(value)

    def integer(self, name: str) -> int:
        return int(self._get(name, (int,), "an integer", optional=False))

    def opt_integer(self, name: str) -> int | None:
        value = self._get(name, (int,), "an integer", optional=True)
        return None if value is None else int(value)

    def flag_or(self, name: str, default: bool) -> bool:
        """A boolean that older daemons leave out; absent or null is ``default``."""
        value = self._get(name, (bool,), "a boolean", optional=True)
        return default if value is None else bool(value)

    def obj(self, name: str) -> dict[str, Any] | None:
        value = self._get(name, (dict,), "an object", optional=True)
        return None if value is None else dict(value)

    def texts(self, name: str) -> list[str]:
        """A list of strings; absent or null is empty."""
        values = self._get(name, (list,), "a list", optional=True) or []
        if not all(isinstance(v, str) for v in values):
            raise RemoteError(f"the daemon's {self.what} has {name!r} with a non-string",
                              field=name)
        return list(values)

    def ints(self, name: str) -> list[int]:
        values = self._get(name, (list,), "a list", optional=True) or []
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise RemoteError(f"the daemon's {self.what} has {name!r} with a non-integer",
                              field=name)
        return list(values)

    def items(self, name: str, decode: Callable[[Any], T]) -> list[T]:
        """A list of objects, each read by ``decode`` (a model's ``from_wire``)."""
        values = self._get(name, (list,), "a list", optional=True) or []
        return [decode(v) for v in values]
