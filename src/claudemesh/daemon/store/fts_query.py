"""A search string made safe for FTS5 ``MATCH`` (pure; no SQLite here).

Callers are agents and people typing words, not FTS5 experts: ``e2e-test`` or
``build#42`` are syntax errors to FTS5 (``-`` and ``#`` are not bareword characters) and
``body:x`` names a column. So every word that is not plain FTS5 bareword is quoted as a
phrase (``"e2e-test"`` matches the tokens ``e2e test`` in a row), while the operators stay
usable: ``"exact phrase"``, ``prefix*``, ``AND``/``OR``/``NOT``, ``NEAR(a b, 5)`` and
parentheses. What is still malformed (an unbalanced quote, a dangling ``AND``) raises
:class:`FtsQueryError`; the store also maps SQLite's own syntax errors to it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_QUERY_CHARS", "FtsQueryError", "fts_query"]

MAX_QUERY_CHARS: Final = 512
_OPERATORS: Final = frozenset({"AND", "OR", "NOT"})
# FTS5 barewords: ASCII letters, digits, '_', and every non-ASCII character.
_BAREWORD: Final = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")
_TOKEN: Final = re.compile(r'"(?:[^"]|"")*"\*?|[(),]|[^\s"(),]+|"')


class FtsQueryError(ValueError):
    """The search string cannot be a query; the message says why (a 400 for callers)."""


def _word(word: str) -> str:
    if word in _OPERATORS or word == "NEAR":
        return word
    stem, star = (word[:-1], "*") if word.endswith("*") and len(word) > 1 else (word, "")
    if _BAREWORD.fullmatch(stem):
        return stem + star
    if not stem.strip("*"):
        raise FtsQueryError(f"{word!r} is not a word to search for")
    return '"' + stem.replace('"', '""') + '"' + star


def fts_query(text: str) -> str:
    """``text`` as an FTS5 query expression; raises FtsQueryError if it cannot be one."""
    if not text.strip():
        raise FtsQueryError("the search string is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise FtsQueryError(f"the search string is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in text:
        raise FtsQueryError("the search string holds a NUL character")
    out: list[str] = []
    depth = 0
    for part in _TOKEN.findall(text):
        if part == '"':
            raise FtsQueryError('unbalanced double quote: close every "phrase"')
        if part.startswith('"'):
            out.append(part)
        elif part == "(":
            depth += 1
            out.append(part)
        elif part == ")":
            depth -= 1
            if depth < 0:
                raise FtsQueryError("unbalanced parenthesis: ')' without '('")
            out.append(part)
        elif part == ",":
            out.append(part)
        else:
            out.append(_word(part))
    if depth:
        raise FtsQueryError("unbalanced parenthesis: '(' without ')'")
    return " ".join(out)
