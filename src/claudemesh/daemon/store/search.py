"""Full-text search over the daemon's own decrypted messages (SQLite FTS5).

``inbox_fts`` (inbox.db migration 3) indexes the body of every received row that has
one; ``outbox_fts`` (outbox.db migration 4) the plaintext the caller gave at accept. Both
are kept in their row's transaction, so a hit always names a row that exists. Results
come best first (FTS5 ``rank``, bm25); ``ORDER BY rank`` with a ``LIMIT`` lets FTS5 sort
only the matching rowids and build snippets for the rows returned alone.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from claudemesh.daemon.store.fts_query import FtsQueryError, fts_query
from claudemesh.daemon.store.inbox import ALIASED, InboxFilter, InboxItem, filter_sql
from claudemesh.daemon.store.outbox import OUTBOX_COLUMNS, OutboxRow
from claudemesh.sqlitedb.db import store_error

__all__ = ["HIGHLIGHT", "Highlight", "SentHit", "search_inbox", "search_outbox"]

SNIPPET_TOKENS: Final = 24  # words around the hits in ``highlight`` (FTS5 allows 64)


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
         action: str) -> list[tuple[object, ...]]:
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
    ``f`` but its cursor, best first, skipping ``offset``; each with its highlight.

    Raises:
        FtsQueryError: ``text`` is not a query (a 400 for callers).
    """
    expr = fts_query(text)
    where, args, seen, seen_args = filter_sql(InboxFilter(
        mesh=f.mesh, sender=f.sender, topic=f.topic, since_ms=f.since_ms,
        session=f.session, unread=f.unread))
    more = f" AND {where.removeprefix('WHERE ')}" if where else ""
    rows = _run(conn,
                f"SELECT {ALIASED}, {seen}, snippet(inbox_fts, 0, ?, ?, ?, ?)"  # noqa: S608
                " FROM inbox_fts JOIN inbox i ON i.seq = inbox_fts.rowid"
                f" WHERE inbox_fts MATCH ?{more} ORDER BY inbox_fts.rank LIMIT ? OFFSET ?",
                (*seen_args, marks.open, marks.close, marks.ellipsis, SNIPPET_TOKENS, expr,
                 *args, f.limit, offset), "searching the inbox")
    return [(InboxItem.from_sql(r[:-1]), str(r[-1])) for r in rows]


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
