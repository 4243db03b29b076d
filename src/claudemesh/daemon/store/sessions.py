"""Sessions in ``inbox.db``: who is registered, and since when each name counts messages.

A session row lives as long as its owner (a pid with its start time, or a lease): the
registry in :mod:`claudemesh.daemon.sessions` decides liveness and calls :meth:`delete`
for the dead. ``session_name`` keeps, per name and forever, the inbox ``seq`` at the
name's first registration: older traffic for every session counts as read for it, so a
new name is not flooded with history (docs/api.md, "Which messages a session sees").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["NewSession", "SessionRow", "SessionStore"]

_COLUMNS: Final = ("id, name, harness, pid, pid_start, cwd, is_default, summary, status,"
                   " lease_s, lease_expires_at, created_at, last_seen_at")


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    name: str
    harness: str | None
    pid: int | None
    pid_start: str | None
    cwd: str | None
    is_default: bool
    summary: str | None
    status: str | None
    lease_s: int | None
    lease_expires_at: int | None
    created_at: int
    last_seen_at: int

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> SessionRow:
        values = list(row)
        values[6] = bool(values[6])
        return cls(*values)

    def same_owner(self, pid: int | None, pid_start: str | None) -> bool:
        return self.pid == pid and self.pid_start == pid_start


@dataclass(frozen=True, slots=True)
class NewSession:
    id: str
    name: str
    harness: str | None
    pid: int | None
    pid_start: str | None
    cwd: str | None
    is_default: bool
    lease_s: int | None


class SessionStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def all(self) -> list[SessionRow]:
        with store_errors("listing sessions"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM session ORDER BY created_at, id").fetchall()  # noqa: S608
        return [SessionRow.from_sql(r) for r in rows]

    def get(self, session_id: str) -> SessionRow | None:
        with store_errors("reading a session"):
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM session WHERE id = ?", (session_id,)).fetchone()  # noqa: S608
        return None if row is None else SessionRow.from_sql(row)

    def insert(self, new: NewSession, now_ms: int) -> SessionRow:
        """A new registration; the name's watermark is set on its first one ever."""
        with store_errors("registering a session"), immediate(self._conn):
            if new.is_default:
                self._conn.execute("UPDATE session SET is_default = 0 WHERE is_default = 1")
            self._conn.execute(
                "INSERT INTO session (id, name, harness, pid, pid_start, cwd, is_default,"
                " lease_s, lease_expires_at, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.id, new.name, new.harness, new.pid, new.pid_start, new.cwd,
                 int(new.is_default), new.lease_s, _expiry(new.lease_s, now_ms), now_ms,
                 now_ms))
            # The first registration of a name sets its horizons (inbox.UNREAD_SEQS):
            # older rows for every session count as read; rows filed for the name stay
            # unread, however old.
            self._conn.execute(
                "INSERT INTO session_name (name, since_seq, filed_seq, registered_at)"
                " SELECT ?, coalesce(max(seq), 0), 0, ? FROM inbox WHERE true"
                " ON CONFLICT (name) DO NOTHING", (new.name, now_ms))
        row = self.get(new.id)
        assert row is not None
        return row

    def refresh(self, session_id: str, *, harness: str | None, cwd: str | None,
                is_default: bool | None, now_ms: int) -> SessionRow | None:
        """A repeated registration by the same owner: update what it says of itself."""
        with store_errors("updating a session"), immediate(self._conn):
            if is_default:
                self._conn.execute(
                    "UPDATE session SET is_default = 0 WHERE is_default = 1 AND id != ?",
                    (session_id,))
            self._conn.execute(
                "UPDATE session SET harness = coalesce(?, harness), cwd = coalesce(?, cwd),"
                " is_default = coalesce(?, is_default), last_seen_at = ?,"
                " lease_expires_at = CASE WHEN lease_s IS NULL THEN NULL ELSE ? + lease_s * 1000"
                " END WHERE id = ?",
                (harness, cwd, None if is_default is None else int(is_default), now_ms, now_ms,
                 session_id))
        return self.get(session_id)

    def touch(self, session_id: str, now_ms: int) -> SessionRow | None:
        """Any call naming a session renews its lease (pid-less sessions)."""
        return self.refresh(session_id, harness=None, cwd=None, is_default=None,
                            now_ms=now_ms)

    def set_line(self, session_id: str, *, summary: str | None,
                 status: str | None) -> SessionRow | None:
        with store_errors("updating a session"), immediate(self._conn):
            self._conn.execute(
                "UPDATE session SET summary = coalesce(?, summary), status = coalesce(?, status)"
                " WHERE id = ?", (summary, status, session_id))
        return self.get(session_id)

    def delete(self, session_ids: list[str]) -> int:
        if not session_ids:
            return 0
        marks = ",".join("?" * len(session_ids))
        with store_errors("ending sessions"), immediate(self._conn):
            cur = self._conn.execute(
                f"DELETE FROM session WHERE id IN ({marks})", session_ids)  # noqa: S608
        return cur.rowcount


def _expiry(lease_s: int | None, now_ms: int) -> int | None:
    return None if lease_s is None else now_ms + lease_s * 1000
