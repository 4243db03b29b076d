"""``file_ref`` in inbox.db: the shared files this member may download, with their keys.

A file shared *with* us is remembered in the transaction that stores the DM or topic post
carrying it (``InboxStore.insert_new``); one shared *by* us, once its upload is whole,
before the message is queued, so the sender can list and fetch its own files too, and a
retried share with the same ``client_message_id`` finds the finished upload instead of
uploading again. A file of a topic has ``topic`` (inbox migration 5); one shared by us
to a topic has ``#topic`` as its ``peer_pubkey``, the destination it went to. Keys never
leave this table through the API (:meth:`FileRow.view`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.protocol.sealed import FileRef
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["FileRow", "FileStore"]

_COLUMNS: Final = ("file_id, direction, mesh, peer_pubkey, peer_name, name, size, sha256,"
                   " chunk_bytes, key, nonce_prefix, message, client_message_id, created_at, topic")


@dataclass(frozen=True, slots=True)
class FileRow:
    ref: FileRef
    direction: str  # "in": shared with us; "out": shared by us
    mesh: str
    peer_pubkey: str  # the sender (in), the recipient (out), or "#topic" (out to a topic)
    peer_name: str | None
    message: str | None
    client_message_id: str | None
    created_at: int
    topic: str | None = None  # the topic it was shared to, either direction

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> FileRow:
        ref = FileRef(row[0], row[5], int(row[6]), row[7], int(row[8]), row[9], row[10])
        return cls(ref, row[1], row[2], row[3], row[4], row[11], row[12], int(row[13]),
                   row[14])

    def view(self, iso: Any) -> dict[str, Any]:
        return {**self.ref.public(), "direction": self.direction, "mesh": self.mesh,
                "peer_pubkey": self.peer_pubkey, "peer_name": self.peer_name,
                "topic": self.topic,
                "message": self.message, "client_message_id": self.client_message_id,
                "created_at": iso(self.created_at)}


class FileStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def remember(self, ref: FileRef, *, direction: str, mesh: str, peer_pubkey: str,
                 peer_name: str | None, message: str | None, client_message_id: str | None,
                 now_ms: int, topic: str | None = None) -> None:
        """Insert (inside the caller's transaction, if any); a row already there stays."""
        self._conn.execute(
            f"INSERT INTO file_ref ({_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (ref.file_id, direction, mesh, peer_pubkey, peer_name, ref.name, ref.size,
             ref.sha256, ref.chunk_bytes, ref.key, ref.nonce_prefix, message,
             client_message_id, now_ms, topic))

    def remember_shared(self, ref: FileRef, **fields: Any) -> None:
        with store_errors("remembering a shared file"), immediate(self._conn):
            self.remember(ref, direction="out", **fields)

    def get(self, file_id: str) -> FileRow | None:
        """The row for ``file_id``, the received one first (a file sent to oneself)."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM file_ref WHERE file_id = ?"  # noqa: S608
            " ORDER BY direction = 'in' DESC LIMIT 1", (file_id,)).fetchone()
        return None if row is None else FileRow.from_sql(row)

    def shared_as(self, mesh: str, client_message_id: str) -> FileRow | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM file_ref WHERE mesh = ? AND client_message_id = ?"  # noqa: S608
            " AND direction = 'out'", (mesh, client_message_id)).fetchone()
        return None if row is None else FileRow.from_sql(row)

    def list(self, mesh: str | None, limit: int = 500) -> list[FileRow]:
        where, args = ("WHERE mesh = ?", (mesh,)) if mesh is not None else ("", ())
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM file_ref {where}"  # noqa: S608
            " ORDER BY created_at DESC, file_id DESC LIMIT ?", (*args, limit)).fetchall()
        return [FileRow.from_sql(r) for r in rows]
