"""Rows to records and back, the same for both stores (SQLite and PostgreSQL).

The two stores read the same columns in the same order and give the same answers
(base.py's contract); what a row means, and what a profile field is stored as, is written
once here so the two cannot drift. Only the SQL dialect differs, and that stays in each
store's module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Protocol

from claudemesh.broker.store.base import (
    Blob,
    Delivery,
    Member,
    PresenceChange,
    sessions_from_json,
    sessions_to_json,
)

__all__ = [
    "BLOB_ABANDONED_MS",
    "BLOB_COLUMNS",
    "DAY_MS",
    "DELIVERY_MESSAGE_COLUMNS",
    "MESH_COLUMNS",
    "PROFILE_FIELDS",
    "Row",
    "blob_from_row",
    "blob_params",
    "dedupe_orphan",
    "delivery_from_row",
    "delivery_orphan",
    "member_columns",
    "member_from_row",
    "presence_change",
    "profile_columns",
    "topic_entry",
]

DAY_MS: Final = 86_400_000

BLOB_COLUMNS: Final = ("file_id, mesh_id, uploader_member_id, uploader_pubkey, recipients,"
                       " size, created_at, completed_at, topic")
BLOB_ABANDONED_MS: Final = DAY_MS  # an upload incomplete this long is swept


def blob_params(blob: Blob) -> tuple[Any, ...]:
    """A blob's values in :data:`BLOB_COLUMNS` order."""
    return (blob.file_id, blob.mesh_id, blob.uploader_member_id, blob.uploader_pubkey,
            json.dumps(list(blob.recipients)), blob.size, blob.created_at, blob.completed_at,
            blob.topic)


def blob_from_row(row: Any) -> Blob:
    return Blob(str(row[0]), str(row[1]), str(row[2]), str(row[3]),
                tuple(json.loads(row[4])), int(row[5]), int(row[6]),
                None if row[7] is None else int(row[7]), None if row[8] is None else str(row[8]))

MESH_COLUMNS: Final = ("id, name, created_at, dedupe_mode, dedupe_retention_days,"
                       " message_retention_days, connection_policy, invite_pubkey")
_MEMBER_FIELDS: Final = ("id", "mesh_id", "pubkey", "display_name", "joined_at", "revoked_at",
                         "summary", "status", "visible", "avatar", "title", "bio",
                         "capabilities", "sessions")
#: What follows ``seq, recipient_member_id`` in a delivery row (``m``: the message,
#: ``h``: its history row), in :func:`delivery_from_row`'s order.
DELIVERY_MESSAGE_COLUMNS: Final = (
    "m.mesh_id, m.id, m.client_message_id, h.seq, m.sender_pubkey, m.sender_name,"
    " m.destination_kind, m.destination_ref, m.priority, m.reply_to, m.meta, m.body,"
    " m.body_hash, m.created_at")
PROFILE_FIELDS: Final = ("summary", "status", "visible", "avatar", "title", "bio",
                         "capabilities", "sessions")


class Row(Protocol):
    """What we use of a row: a ``sqlite3`` tuple or an ``asyncpg.Record``."""

    def __getitem__(self, key: int, /) -> Any: ...

    def __len__(self) -> int: ...


def member_columns(prefix: str = "") -> str:
    """The member columns :func:`member_from_row` reads, each after ``prefix`` (``"m."``)."""
    return ", ".join(f"{prefix}{name}" for name in _MEMBER_FIELDS)


def member_from_row(row: Row, groups: tuple[str, ...] = ()) -> Member:
    """A row of :func:`member_columns`; ``capabilities`` and ``sessions`` are JSON text."""
    return Member(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]),
                  row[9], row[10], row[11], tuple(json.loads(row[12])), groups,
                  sessions_from_json(row[13]))


def delivery_from_row(r: Row) -> Delivery:
    """``seq, recipient_member_id`` and then :data:`DELIVERY_MESSAGE_COLUMNS`."""
    return Delivery(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else str(r[5]),
                    r[6], r[7], r[8], r[9], r[10], r[11],
                    None if r[12] is None else json.loads(r[12]), json.loads(r[13]),
                    r[14], r[15])


def profile_columns(fields: dict[str, Any], *,
                    visible: Callable[[Any], Any] = int) -> dict[str, Any]:
    """set_profile's fields as the values their columns hold (unknown names dropped).

    ``visible`` makes the column's value of the flag: SQLite keeps an INTEGER, PostgreSQL
    a BOOLEAN.

    Raises:
        StoreError: ``sessions`` holds something other than SessionProfile records.
    """
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "capabilities":
            columns[name] = json.dumps(list(value))
        elif name == "sessions":
            columns[name] = sessions_to_json(value)
        elif name == "visible":
            columns[name] = visible(value)
        elif name in PROFILE_FIELDS:
            columns[name] = value
    return columns


def presence_change(row: Row | None, now_ms: int, dead_after_ms: int) -> PresenceChange:
    """The presence before an attach, from ``session_id, broker_id, state, last_seen_at``;
    an online row of a silent broker counts as leased."""
    if row is None:
        return PresenceChange(None, None, None)
    session, broker, state, last_seen = row[0], row[1], row[2], row[3]
    if state == "online" and (last_seen is None or last_seen < now_ms - dead_after_ms):
        state = "leased"
    return PresenceChange(session, broker, state)


def topic_entry(name: str, subscribers: int, subscribed: Any) -> dict[str, Any]:
    """One entry of ``list_topics``."""
    return {"topic": name, "subscribers": int(subscribers), "subscribed": bool(subscribed)}


def dedupe_orphan(mesh_id: str, client_message_id: str,
                  broker_message_id: str) -> dict[str, Any]:
    """An ``orphan_check`` finding: a dedupe row that still claims a deleted message."""
    return {"kind": "dedupe_without_message", "mesh_id": mesh_id,
            "client_message_id": client_message_id, "broker_message_id": broker_message_id}


def delivery_orphan(delivery_id: int, broker_message_id: str) -> dict[str, Any]:
    """An ``orphan_check`` finding: a delivery row whose message is gone."""
    return {"kind": "delivery_without_message", "delivery_id": delivery_id,
            "broker_message_id": broker_message_id}
