"""One place that prints: ``--json`` or human text, ``NO_COLOR``-clean (STYLE (b)12).

Formatters are pure (value in, string out) and unit-tested; :class:`Printer` decides
where the string goes. ``--json`` output is one compact object per line. Errors go to
stderr as text, or to stdout as JSON with ``--json`` so scripts can parse both outcomes
the same way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from claudemesh.errors import ClaudemeshError

__all__ = ["PRINTER", "Printer", "format_duration", "format_table", "paint"]

_COLORS = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}


def paint(text: str, color: str, *, stream: object = None) -> str:
    """ANSI colour on a terminal, never with ``NO_COLOR`` set (https://no-color.org)."""
    target = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR") or not getattr(target, "isatty", lambda: False)():
        return text
    return f"\033[{_COLORS[color]}m{text}\033[0m"


class Printer:
    def __init__(self) -> None:
        self.json = False

    def result(self, data: Any, text: str) -> None:
        if self.json:
            sys.stdout.write(_one_line(data))
        elif text:
            sys.stdout.write(text.rstrip("\n") + "\n")

    def warn(self, text: str) -> None:
        """On stderr in both modes, so ``--json`` output stays one parseable line."""
        sys.stderr.write(f"{paint('warning', 'yellow', stream=sys.stderr)}: {text}\n")

    def error(self, exc: ClaudemeshError) -> None:
        if self.json:
            sys.stdout.write(_one_line(exc.to_wire()))
        else:
            label = paint("error", "red", stream=sys.stderr)
            sys.stderr.write(f"{label}: {exc.detail} [{exc.code}]\n")


def _one_line(data: Any) -> str:
    """One JSON object per line, so scripts can read results line by line."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


PRINTER = Printer()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` prints as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``93784`` -> ``1d 2h 3m 4s``; under a minute keeps one decimal."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        value, whole = divmod(whole, size)
        if value or parts:
            parts.append(f"{value}{unit}")
    return " ".join(parts)
