"""Receipts other members sent for our messages, in ``outbox.db`` beside the rows they
report on (docs/api.md, "Receipts").

A receipt counts only for a message of ours that was a DM to the member who signed it:
:meth:`ReceiptStore.record` checks that against the outbox row in the same transaction
as the insert, and the primary key (mesh, id, recipient, state) makes a redelivered or
resent receipt a no-op. The signature itself is checked before this (pure crypto, in
:mod:`claudemesh.daemon.inbound`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from claudemesh.protocol.sealed import ReceiptItem, Receipts
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = ["ReceiptRow", "ReceiptStore", "ReceiptSummary"]

_COLUMNS: Final = "client_message_id, recipient_pubkey, state, at, received_at, session, path"


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    client_message_id: str
    recipient_pubkey: str
    state: str
    at: int
    received_at: int
    session: str | None
    path: str | None


@dataclass(frozen=True, slots=True)
class ReceiptSummary:
    """The furthest steps of one message: when it was first stored and surfaced."""

    stored_at: int | None = None
    surfaced_at: int | None = None
    surfaced_path: str | None = None
    surfaced_session: str | None = None


class ReceiptStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def record(self, mesh: str, batches: Sequence[Receipts],
               now_ms: int) -> tuple[list[tuple[str, ReceiptItem]], int]:
        """Store each receipt that reports on our DM to its signer; returns the new ones
        (with their recipient) and how many were refused (no such message of ours to
        that member). Duplicates are neither."""
        new: list[tuple[str, ReceiptItem]] = []
        refused = 0
        with store_errors("recording receipts"), immediate(self._conn):
            for batch in batches:
                for r in batch.items:
                    ours = self._conn.execute(
                        "SELECT 1 FROM outbox WHERE client_message_id = ? AND mesh = ?"
                        " AND purpose = 'message' AND destination_kind = 'dm'"
                        " AND destination_ref = ?", (r.client_message_id, mesh, batch.recipient),
                    ).fetchone()
                    if ours is None:
                        refused += 1
                        continue
                    inserted = self._conn.execute(
                        "INSERT INTO receipt (mesh, client_message_id, recipient_pubkey, state,"
                        " at, received_at, session, path, signature)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                        " RETURNING 1",
                        (mesh, r.client_message_id, batch.recipient, str(r.state), r.at, now_ms,
                         r.session, None if r.path is None else str(r.path), batch.signature),
                    ).fetchone()
                    if inserted is not None:
                        new.append((batch.recipient, r))
        return new, refused

    def for_message(self, mesh: str, client_message_id: str) -> list[ReceiptRow]:
        with store_errors("reading receipts"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM receipt WHERE mesh = ? AND client_message_id = ?"  # noqa: S608
                " ORDER BY at, state", (mesh, client_message_id)).fetchall()
        return [ReceiptRow(*r) for r in rows]

    def summaries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                 ReceiptSummary]:
        """(mesh, client_message_id) -> its summary, for the rows that have receipts."""
        found: dict[tuple[str, str], ReceiptSummary] = {}
        with store_errors("reading receipts"):
            for mesh, cmid in keys:
                rows = self._conn.execute(
                    "SELECT state, min(at), path, session FROM receipt"
                    " WHERE mesh = ? AND client_message_id = ? GROUP BY state",
                    (mesh, cmid)).fetchall()
                if not rows:
                    continue
                by_state = {state: (at, path, session) for state, at, path, session in rows}
                stored = by_state.get("stored")
                surfaced = by_state.get("surfaced")
                found[(mesh, cmid)] = ReceiptSummary(
                    stored_at=None if stored is None else stored[0],
                    surfaced_at=None if surfaced is None else surfaced[0],
                    surfaced_path=None if surfaced is None else surfaced[1],
                    surfaced_session=None if surfaced is None else surfaced[2])
        return found
