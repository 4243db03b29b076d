"""Text to JSON document and back, strictly, keeping the file's own layout where we can.

An agent's settings file belongs to the user. We parse it strictly (a duplicate key,
``NaN`` or a top level that is not an object is refused: rewriting such a file would
silently lose or change something), and write it back with the indent, line ending
and final newline it had, keys in their order. A file in Claude Code's own layout
(``JSON.stringify(doc, null, 2)``) therefore comes back byte for byte when the
document does. Pure: strings in, strings out.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from claudemesh.errors import AgentSettingsInvalid
from claudemesh.protocol.strictjson import JsonError, loads_object

__all__ = ["DEFAULT_STYLE", "Document", "Style", "detect_style", "encode_document",
           "parse_document", "render_diff", "render_document", "type_name"]

Document = dict[str, Any]

_FIRST_INDENT = re.compile(r"\A\s*[{\[][ \t]*\r?\n([ \t]+)\S")


@dataclass(frozen=True, slots=True)
class Style:
    """How a file lays its JSON out: the part of its bytes a document does not carry."""

    indent: int | str = 2
    newline: str = "\n"
    final_newline: bool = True


DEFAULT_STYLE = Style()


def parse_document(text: str) -> Document:
    """The JSON object in ``text`` (:func:`claudemesh.protocol.strictjson.loads_object`).

    Raises:
        AgentSettingsInvalid: not JSON, a duplicate key, NaN/Infinity, or not an object.
    """
    try:
        return loads_object(text)
    except JsonError as exc:
        raise AgentSettingsInvalid(str(exc), where="") from exc


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def detect_style(text: str) -> Style:
    """The layout of an existing file; a one-line file (``{}``) gets the default indent."""
    newline = "\r\n" if "\r\n" in text else "\n"
    match = _FIRST_INDENT.match(text)
    indent: int | str = DEFAULT_STYLE.indent
    if match:
        found = match.group(1)
        indent = len(found) if set(found) == {" "} else found
    return Style(indent=indent, newline=newline, final_newline=text.endswith(("\n", "\r")))


def render_document(doc: Document, style: Style = DEFAULT_STYLE) -> str:
    """``doc`` as text in ``style``. Never a raw newline inside a string: JSON escapes it."""
    text = json.dumps(doc, indent=style.indent, ensure_ascii=False)
    if style.newline != "\n":
        text = text.replace("\n", style.newline)
    return text + style.newline if style.final_newline else text


def encode_document(doc: Document, style: Style = DEFAULT_STYLE) -> bytes:
    """UTF-8 bytes of the rendered document.

    A lone surrogate (``"\\ud800"`` in the file) has no UTF-8 form; then every non-ASCII
    character is written as an escape instead, which is the same JSON value.
    """
    try:
        return render_document(doc, style).encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(doc, indent=style.indent, ensure_ascii=True)
        if style.newline != "\n":
            text = text.replace("\n", style.newline)
        return (text + style.newline if style.final_newline else text).encode("ascii")


def render_diff(path: str, old: str, new: str) -> str:
    """A unified diff from ``old`` to ``new``, both named ``path``."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{path} (now)", tofile=f"{path} (after)")
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)
