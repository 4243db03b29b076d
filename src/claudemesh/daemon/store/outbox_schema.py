"""``outbox.db``'s schema: its migrations, applied in order by
:func:`claudemesh.sqlitedb.db.open_database` (append only: a released one never changes).
"""

from __future__ import annotations

from typing import Final

__all__ = ["OUTBOX_MIGRATIONS"]

# §4.5.2 exactly, plus what delivery needs later: mesh, destination, priority, history_id
# . The frozen envelope is ``payload`` (R-OBX-3). Times are epoch milliseconds.
OUTBOX_MIGRATIONS: Final = (
    """
    CREATE TABLE outbox (
      id                  TEXT PRIMARY KEY,
      client_message_id   TEXT NOT NULL UNIQUE,
      request_fingerprint BLOB NOT NULL CHECK(length(request_fingerprint) = 32),
      payload             BLOB NOT NULL,
      enqueued_at         INTEGER NOT NULL,
      attempts            INTEGER NOT NULL DEFAULT 0,
      next_attempt_at     INTEGER NOT NULL,
      status              TEXT NOT NULL
                          CHECK(status IN ('pending','inflight','done','dead','aborted')),
      last_error          TEXT,
      delivered_at        INTEGER,
      broker_message_id   TEXT,
      aborted_at          INTEGER,
      aborted_by          TEXT CHECK(aborted_by IN ('operator','auto')),
      superseded_by       TEXT,
      mesh                TEXT NOT NULL,
      destination_kind    TEXT NOT NULL CHECK(destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      priority            TEXT NOT NULL CHECK(priority IN ('now','next','low')),
      history_id          TEXT
    );
    CREATE INDEX outbox_pending ON outbox(status, next_attempt_at);
    CREATE INDEX outbox_aborted ON outbox(status, aborted_at) WHERE status = 'aborted';
    """,
    # 2: the drain claims and schedules per mesh
    """
    CREATE INDEX outbox_mesh_due ON outbox(mesh, status, next_attempt_at);
    """,
    # 3 (issue 12): receipts. A row is a user's message or a receipt this daemon sends;
    # ``receipt`` holds the verified receipts other members sent for our messages.
    """
    ALTER TABLE outbox ADD COLUMN purpose TEXT NOT NULL DEFAULT 'message'
      CHECK(purpose IN ('message', 'receipt'));
    CREATE TABLE receipt (
      mesh              TEXT NOT NULL,
      client_message_id TEXT NOT NULL,
      recipient_pubkey  TEXT NOT NULL,
      state             TEXT NOT NULL CHECK(state IN ('stored', 'surfaced')),
      at                INTEGER NOT NULL,
      received_at       INTEGER NOT NULL,
      session           TEXT,
      path              TEXT,
      signature         TEXT NOT NULL,
      PRIMARY KEY (mesh, client_message_id, recipient_pubkey, state)
    ) WITHOUT ROWID;
    """,
    # 4 (issue 15): scheduled sends. SQLite cannot widen a CHECK in place, so the table is
    # rebuilt with 'scheduled' allowed and a ``deliver_at`` column (NULL: send at once),
    # rows copied with their rowids (list order is rowid order) and the indexes made
    # again; the runner applies it in one transaction with the user_version bump.
    """
    CREATE TABLE outbox_v4 (
      id                  TEXT PRIMARY KEY,
      client_message_id   TEXT NOT NULL UNIQUE,
      request_fingerprint BLOB NOT NULL CHECK(length(request_fingerprint) = 32),
      payload             BLOB NOT NULL,
      enqueued_at         INTEGER NOT NULL,
      attempts            INTEGER NOT NULL DEFAULT 0,
      next_attempt_at     INTEGER NOT NULL,
      status              TEXT NOT NULL CHECK(status IN
                            ('scheduled','pending','inflight','done','dead','aborted')),
      last_error          TEXT,
      delivered_at        INTEGER,
      broker_message_id   TEXT,
      aborted_at          INTEGER,
      aborted_by          TEXT CHECK(aborted_by IN ('operator','auto')),
      superseded_by       TEXT,
      mesh                TEXT NOT NULL,
      destination_kind    TEXT NOT NULL CHECK(destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      priority            TEXT NOT NULL CHECK(priority IN ('now','next','low')),
      history_id          TEXT,
      purpose             TEXT NOT NULL DEFAULT 'message'
                          CHECK(purpose IN ('message', 'receipt')),
      deliver_at          INTEGER,
      CHECK(status <> 'scheduled' OR deliver_at IS NOT NULL)
    );
    INSERT INTO outbox_v4 (rowid, id, client_message_id, request_fingerprint, payload,
      enqueued_at, attempts, next_attempt_at, status, last_error, delivered_at,
      broker_message_id, aborted_at, aborted_by, superseded_by, mesh, destination_kind,
      destination_ref, priority, history_id, purpose)
      SELECT rowid, id, client_message_id, request_fingerprint, payload, enqueued_at,
      attempts, next_attempt_at, status, last_error, delivered_at, broker_message_id,
      aborted_at, aborted_by, superseded_by, mesh, destination_kind, destination_ref,
      priority, history_id, purpose FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v4 RENAME TO outbox;
    CREATE INDEX outbox_pending ON outbox(status, next_attempt_at);
    CREATE INDEX outbox_aborted ON outbox(status, aborted_at) WHERE status = 'aborted';
    CREATE INDEX outbox_mesh_due ON outbox(mesh, status, next_attempt_at);
    """,
    # 5 (issue 15): threads and full-text search of what this daemon sent. ``reply_to_id``
    # is the frozen envelope's ``reply_to`` as a column (read back from the payloads
    # already there). A DM's plaintext exists only at accept (the payload holds its
    # ciphertext), so accept writes it to ``outbox_text`` in the row's own transaction;
    # topic rows already queued are filled from their plain payloads. No foreign key to
    # ``outbox``: a later table rebuild (DROP TABLE with foreign_keys on) would cascade.
    """
    ALTER TABLE outbox ADD COLUMN reply_to_id TEXT;
    UPDATE outbox SET reply_to_id = json_extract(CAST(payload AS TEXT), '$.reply_to')
      WHERE json_valid(CAST(payload AS TEXT));
    CREATE INDEX outbox_reply_to ON outbox(reply_to_id) WHERE reply_to_id IS NOT NULL;
    CREATE INDEX outbox_broker_message_id ON outbox(broker_message_id)
      WHERE broker_message_id IS NOT NULL;
    CREATE TABLE outbox_text (
      seq    INTEGER PRIMARY KEY,
      row_id TEXT NOT NULL UNIQUE,
      body   TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE outbox_fts USING fts5(body, content='outbox_text',
      content_rowid='seq', tokenize='unicode61 remove_diacritics 2', prefix='2 3');
    CREATE TRIGGER outbox_fts_insert AFTER INSERT ON outbox_text BEGIN
      INSERT INTO outbox_fts (rowid, body) VALUES (new.seq, new.body);
    END;
    CREATE TRIGGER outbox_fts_delete AFTER DELETE ON outbox_text BEGIN
      INSERT INTO outbox_fts (outbox_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    END;
    INSERT INTO outbox_text (row_id, body)
      SELECT id, json_extract(CAST(payload AS TEXT), '$.body.text') FROM outbox
      WHERE purpose = 'message' AND json_valid(CAST(payload AS TEXT))
        AND json_extract(CAST(payload AS TEXT), '$.body.kind') = 'plain'
        AND json_type(CAST(payload AS TEXT), '$.body.text') = 'text'
      ORDER BY rowid;
    """,
)
