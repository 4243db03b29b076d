"""Full-text search over the daemon's own decrypted messages (SQLite FTS5).

``inbox_fts`` (inbox.db migration 3) indexes the body of every received row that has
one; ``outbox_fts`` (outbox.db migration 4) the plaintext the caller gave at accept. Both
are kept in their row's transaction, so a hit always names a row that exists. Results
come best first (FTS5 ``rank``, bm25; the inbox ranks a bounded window, see
:data:`RANK_WINDOW`), and snippets are built for the rows returned alone.
"""

from __future__ import annotations

import operator
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.daemon.store.fts_query import FtsQueryError, fts_query
from claudemesh.daemon.store.inbox import ALIASED, InboxFilter, InboxItem, filter_sql
from claudemesh.daemon.store.outbox import OUTBOX_COLUMNS, OutboxRow
from claudemesh.sqlitedb.db import store_error

__all__ = ["HIGHLIGHT", "Highlight", "SentHit", "search_inbox", "search_outbox"]

SNIPPET_TOKENS: Final = 24  # words around the hits in ``highlight`` (FTS5 allows 64)
# Ranking costs 5-12 us per matching row (bm25 reads each one's positions and length),
# so ranking every row holding a common word in a 100,000-row inbox would take about a
# second. The inbox ranks the newest RANK_WINDOW matches (after the filters) instead:
# exact for any search matching fewer rows, the best of the recent ones otherwise.
RANK_WINDOW: Final = 500


@dataclass(frozen=True, slots=True)
class Highlight:
    """How hits are marked in ``highlight``: around each hit, and where text was cut."""

    open: str = "["
    close: str = "]"
    ellipsis: str = "…"


HIGHLIGHT: Final = Highlight()


@dataclass(frozen=True, slots=True)
class SentHit:
    row: OutboxRow
    body: str
    highlight: str


def _is_query_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return text.startswith(("fts5:", "no such column", "unknown special query"))


def _run(conn: sqlite3.Connection, sql: str, args: tuple[object, ...],
         action: str) -> list[tuple[Any, ...]]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if _is_query_error(exc):
            raise FtsQueryError(f"not a valid search: {exc}") from None
        raise store_error(exc, action) from exc
    except sqlite3.Error as exc:
        raise store_error(exc, action) from exc


def search_inbox(conn: sqlite3.Connection, f: InboxFilter, text: str, *, offset: int = 0,
                 marks: Highlight = HIGHLIGHT) -> list[tuple[InboxItem, str]]:
    """Rows matching ``text`` (see :func:`.fts_query.fts_query`) and every filter of
    ``f`` but its cursor, best first among the newest :data:`RANK_WINDOW` matches,
    skipping ``offset``; each with its highlight.

    Raises:
        FtsQueryError: ``text`` is not a query (a 400 for callers).
    """
    expr = fts_query(text)
    where, args, seen, seen_args = filter_sql(InboxFilter(
        mesh=f.mesh, sender=f.sender, topic=f.topic, since_ms=f.since_ms,
        session=f.session, unread=f.unread))
    more = f" AND {where.removeprefix('WHERE ')}" if where else ""
    window = _run(conn,
                  "SELECT inbox_fts.rowid, inbox_fts.rank FROM inbox_fts"  # noqa: S608
                  f" JOIN inbox i ON i.seq = inbox_fts.rowid WHERE inbox_fts MATCH ?{more}"
                  " ORDER BY inbox_fts.rowid DESC LIMIT ?",
                  (expr, *args, RANK_WINDOW), "searching the inbox")
    # bm25 ``rank`` is lower for better matches; ties go to the newer row (the window
    # is newest first and the sort is stable).
    ranked = sorted(window, key=operator.itemgetter(1))
    best: list[int] = [seq for seq, _ in ranked[offset:offset + f.limit]]
    if not best:
        return []
    # The snippets: one pass over the matches between the lowest and highest seq picked
    # (FTS5 walks a rowid range cheaply; ``rowid IN (...)`` would run the whole MATCH
    # once per id), building a snippet and reading the row for the picked ones alone.
    marks_in = ",".join("?" * len(best))
    rows = _run(conn,
                f"SELECT inbox_fts.rowid, CASE WHEN inbox_fts.rowid IN ({marks_in}) THEN"  # noqa: S608
                " snippet(inbox_fts, 0, ?, ?, ?, ?) END FROM inbox_fts"
                " WHERE inbox_fts MATCH ? AND inbox_fts.rowid BETWEEN ? AND ?",
                (*best, marks.open, marks.close, marks.ellipsis, SNIPPET_TOKENS, expr,
                 min(best), max(best)), "searching the inbox")
    snippets = {seq: snippet for seq, snippet in rows if snippet is not None}
    items = _run(conn,
                 f"SELECT {ALIASED}, {seen} FROM inbox i WHERE i.seq IN ({marks_in})",  # noqa: S608
                 (*seen_args, *best), "searching the inbox")
    found = {r[0]: InboxItem.from_sql(r) for r in items}
    return [(found[seq], snippets.get(seq, "")) for seq in best if seq in found]


def search_outbox(conn: sqlite3.Connection, text: str, *, status: str | None,
                  purpose: str | None, client_message_id: str | None, limit: int,
                  mesh: str | None = None, offset: int = 0,
                  marks: Highlight = HIGHLIGHT) -> list[SentHit]:
    """Sent messages whose plaintext matches ``text``, best first (as ``search_inbox``).

    Raises:
        FtsQueryError: ``text`` is not a query.
    """
    expr = fts_query(text)
    given = (("o.status = ?", status), ("o.purpose = ?", purpose),
             ("o.client_message_id = ?", client_message_id), ("o.mesh = ?", mesh))
    clauses = [c for c, v in given if v]
    args = tuple(v for _, v in given if v)
    more = "".join(f" AND {c}" for c in clauses)
    rows = _run(conn,
                f"SELECT {OUTBOX_COLUMNS}, t.body,"  # noqa: S608
                " snippet(outbox_fts, 0, ?, ?, ?, ?) FROM outbox_fts"
                " JOIN outbox_text t ON t.seq = outbox_fts.rowid JOIN outbox o ON o.id = t.row_id"
                f" WHERE outbox_fts MATCH ?{more} ORDER BY outbox_fts.rank LIMIT ? OFFSET ?",
                (marks.open, marks.close, marks.ellipsis, SNIPPET_TOKENS, expr, *args, limit,
                 offset), "searching the outbox")
    return [SentHit(OutboxRow.from_sql(r[:-2]), str(r[-2]), str(r[-1])) for r in rows]
