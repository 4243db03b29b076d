"""The SQLite broker store's schema: its migrations, in order, never edited once released.

The tables follow daemon-spec §4.3 with SQLite types: UUID/TIMESTAMPTZ become TEXT ids and
epoch milliseconds; ``topic_message``/``message_queue`` are one ``message`` table (the
split served the original's two delivery paths; we have one). ``message_history`` gives
each message a mesh-wide sequence that is its ``history_id``.
:func:`~claudemesh.sqlitedb.db.open_database` applies what is pending and counts the
applied ones in ``PRAGMA user_version``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BROKER_MIGRATIONS"]

BROKER_MIGRATIONS: Final = (
    """
    CREATE TABLE mesh (
      id                     TEXT PRIMARY KEY,
      name                   TEXT NOT NULL UNIQUE,
      created_at             INTEGER NOT NULL,
      dedupe_mode            TEXT NOT NULL CHECK(dedupe_mode IN ('retention_scoped','permanent')),
      dedupe_retention_days  INTEGER NOT NULL CHECK(dedupe_retention_days >= 3),
      message_retention_days INTEGER NOT NULL CHECK(message_retention_days >= 1),
      connection_policy      TEXT NOT NULL
                             CHECK(connection_policy IN ('prefer_newest','prefer_oldest')),
      invite_pubkey          TEXT NOT NULL,
      invite_secret_key      TEXT NOT NULL
    );
    CREATE TABLE member (
      id           TEXT PRIMARY KEY,
      mesh_id      TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      pubkey       TEXT NOT NULL,
      display_name TEXT NOT NULL,
      joined_at    INTEGER NOT NULL,
      revoked_at   INTEGER,
      summary      TEXT,
      status       TEXT NOT NULL DEFAULT 'idle' CHECK(status IN ('idle','working','dnd')),
      visible      INTEGER NOT NULL DEFAULT 1,
      avatar       TEXT,
      title        TEXT,
      bio          TEXT,
      capabilities TEXT NOT NULL DEFAULT '[]',
      UNIQUE (mesh_id, pubkey)
    );
    CREATE UNIQUE INDEX member_live_name ON member(mesh_id, lower(display_name))
      WHERE revoked_at IS NULL;
    CREATE INDEX member_revoked ON member(revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE invite (
      id            TEXT PRIMARY KEY,
      mesh_id       TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      secret_sha256 TEXT NOT NULL,
      created_at    INTEGER NOT NULL,
      expires_at    INTEGER NOT NULL,
      max_uses      INTEGER NOT NULL CHECK(max_uses >= 1),
      uses          INTEGER NOT NULL DEFAULT 0,
      revoked_at    INTEGER
    );
    CREATE TABLE hello_nonce (
      pubkey     TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      expires_at INTEGER NOT NULL,
      PRIMARY KEY (pubkey, nonce)
    ) WITHOUT ROWID;
    CREATE TABLE topic (
      mesh_id    TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      name       TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, name)
    );
    CREATE TABLE topic_subscription (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES member(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, topic, member_id),
      FOREIGN KEY (mesh_id, topic) REFERENCES topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE TABLE group_member (
      mesh_id    TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      group_name TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES member(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, group_name, member_id)
    );
    CREATE TABLE client_message_dedupe (
      mesh_id             TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      client_message_id   TEXT NOT NULL,
      broker_message_id   TEXT NOT NULL,
      request_fingerprint BLOB NOT NULL CHECK(length(request_fingerprint) = 32),
      destination_kind    TEXT NOT NULL CHECK(destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      first_seen_at       INTEGER NOT NULL,
      expires_at          INTEGER,
      history_available   INTEGER NOT NULL DEFAULT 1,
      PRIMARY KEY (mesh_id, client_message_id)
    );
    CREATE INDEX client_message_dedupe_expires_idx ON client_message_dedupe(expires_at)
      WHERE expires_at IS NOT NULL;
    CREATE TABLE message (
      id                TEXT PRIMARY KEY,
      mesh_id           TEXT NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
      client_message_id TEXT NOT NULL,
      sender_member_id  TEXT NOT NULL,
      sender_pubkey     TEXT NOT NULL,
      sender_name       TEXT NOT NULL,
      destination_kind  TEXT NOT NULL,
      destination_ref   TEXT NOT NULL,
      priority          TEXT NOT NULL,
      reply_to          TEXT,
      meta              TEXT,
      body              TEXT NOT NULL,
      body_hash         TEXT NOT NULL,
      created_at        INTEGER NOT NULL
    );
    CREATE INDEX message_created ON message(created_at);
    CREATE TABLE message_history (
      seq        INTEGER PRIMARY KEY AUTOINCREMENT,
      mesh_id    TEXT NOT NULL,
      message_id TEXT NOT NULL UNIQUE REFERENCES message(id) ON DELETE CASCADE,
      created_at INTEGER NOT NULL
    );
    CREATE TABLE delivery_queue (
      seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
      mesh_id             TEXT NOT NULL,
      message_id          TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
      recipient_member_id TEXT NOT NULL,
      created_at          INTEGER NOT NULL,
      acked_at            INTEGER,
      UNIQUE (message_id, recipient_member_id)
    );
    CREATE INDEX delivery_pending ON delivery_queue(recipient_member_id, seq)
      WHERE acked_at IS NULL;
    """,
    # 2: presence and broker liveness live in the store (issue 6: several brokers)
    """
    CREATE TABLE broker (
      id           TEXT PRIMARY KEY,
      started_at   INTEGER NOT NULL,
      last_seen_at INTEGER NOT NULL
    );
    CREATE TABLE presence (
      mesh_id          TEXT NOT NULL,
      member_id        TEXT NOT NULL,
      session_id       TEXT NOT NULL,
      broker_id        TEXT NOT NULL,
      state            TEXT NOT NULL CHECK(state IN ('online','leased')),
      since            INTEGER NOT NULL,
      lease_expires_at INTEGER,
      PRIMARY KEY (mesh_id, member_id)
    );
    CREATE INDEX presence_lease ON presence(state, lease_expires_at);
    """,
    # 3: the sessions a member publishes (member_sessions), a JSON list
    """
    ALTER TABLE member ADD COLUMN sessions TEXT NOT NULL DEFAULT '[]';
    """,
    # 4 (issue 15): a member's role in a group; the anycast rotation (the group's last
    # anycast went to the member with the highest anycast_seq); topic history by topic
    """
    ALTER TABLE group_member ADD COLUMN role TEXT;
    ALTER TABLE group_member ADD COLUMN anycast_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX message_destination ON message(mesh_id, destination_kind, destination_ref);
    """,
    # 5: shared files (issue 15): one row per blob; its bytes are files in <db>.blobs/
    """
    CREATE TABLE blob (
      file_id            TEXT PRIMARY KEY,
      mesh_id            TEXT NOT NULL,
      uploader_member_id TEXT NOT NULL,
      uploader_pubkey    TEXT NOT NULL,
      recipients         TEXT NOT NULL,
      size               INTEGER NOT NULL,
      created_at         INTEGER NOT NULL,
      completed_at       INTEGER
    );
    CREATE INDEX blob_mesh ON blob(mesh_id, created_at);
    """,
    # 6 (issue 15): end-to-end encrypted topics: membership versions, key epochs, sealed keys
    """
    ALTER TABLE topic ADD COLUMN membership_version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE topic ADD COLUMN current_epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE topic_epoch (
      mesh_id            TEXT NOT NULL,
      topic              TEXT NOT NULL,
      epoch              INTEGER NOT NULL,
      membership_version INTEGER NOT NULL,
      creator_member_id  TEXT NOT NULL,
      creator_pubkey     TEXT NOT NULL,
      created_at         INTEGER NOT NULL,
      PRIMARY KEY (mesh_id, topic, epoch),
      FOREIGN KEY (mesh_id, topic) REFERENCES topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE TABLE topic_epoch_key (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      epoch      INTEGER NOT NULL,
      member_id  TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      ciphertext TEXT NOT NULL,
      PRIMARY KEY (mesh_id, topic, epoch, member_id),
      FOREIGN KEY (mesh_id, topic, epoch) REFERENCES topic_epoch(mesh_id, topic, epoch)
        ON DELETE CASCADE
    );
    CREATE INDEX topic_epoch_key_member ON topic_epoch_key(member_id);
    """,
    # 7 (issue 15): files to a topic: a blob bound to ``topic`` (recipients []) is read by
    # the topic's subscribers at the time they fetch it, and by its uploader
    """
    ALTER TABLE blob ADD COLUMN topic TEXT;
    """,
    # 8 (issue 15): a topic's history page walks one index instead of sorting the topic:
    # message_history.topic, filled for the rows there are; the accept sets it from now on
    """
    ALTER TABLE message_history ADD COLUMN topic TEXT;
    UPDATE message_history SET topic = (SELECT m.destination_ref FROM message m
      WHERE m.id = message_history.message_id AND m.destination_kind = 'topic');
    CREATE INDEX message_history_topic ON message_history(mesh_id, topic, seq)
      WHERE topic IS NOT NULL;
    """,
)
