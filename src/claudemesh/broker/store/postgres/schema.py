"""The PostgreSQL store's schema: its migrations, and the one way they are applied.

*Layout.* Every table lives in the PostgreSQL schema ``mesh`` with the columns and
meaning of the SQLite store (``sqlite/schema.py``, daemon-spec §4.3): ids are TEXT ULIDs,
times are BIGINT epoch milliseconds, ``meta``/``body`` are the JSON text exactly as
accepted. Text that is compared or ordered uses the "C" collation
(``lower(x COLLATE "C")``, ``ORDER BY x COLLATE "C"``) so names fold and sort byte-wise,
as SQLite does, whatever the database's locale. ``delivery_queue`` adds the claim columns
``claimed_by`` and ``claim_expires_at`` (several brokers may fetch one member's rows).
Migration 3 is the accept itself, the SQL function ``mesh.accept_message`` (store.py).

*Migrations.* ``mesh.schema_migrations`` records the applied versions. Each pending
migration runs in its own transaction under ``pg_advisory_xact_lock``, re-checking its
version once the lock is held, so brokers starting together apply each one exactly once.
A released migration is never edited: a change is a new one at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from claudemesh.broker.store.postgres.connection import Conn
from claudemesh.errors import StoreError

__all__ = ["PG_MIGRATIONS", "migrate"]

log = logging.getLogger(__name__)

_MIGRATION_LOCK: Final = 0x636C_6D65_7368_0001  # one bigint key: "clmesh" + 1

#: Migration 3, the accept function as first released (migration 5 derives its successor).
_ACCEPT_V1: Final =     """
    CREATE FUNCTION mesh.accept_message(
      p_mesh_id TEXT, p_cmid TEXT, p_bmid TEXT, p_fp BYTEA, p_kind TEXT, p_ref TEXT,
      p_now BIGINT, p_expires BIGINT, p_sender TEXT, p_sender_pubkey TEXT,
      p_sender_name TEXT, p_priority TEXT, p_reply_to TEXT, p_meta TEXT, p_body TEXT,
      p_body_hash TEXT, p_lock_class INTEGER)
    RETURNS TABLE (o_kind TEXT, o_bmid TEXT, o_history BIGINT, o_fp BYTEA, o_first_seen BIGINT,
                   o_history_available BOOLEAN, o_members TEXT[], o_seqs BIGINT[])
    LANGUAGE plpgsql AS $$
    DECLARE
      claim RECORD;
      hist BIGINT;
      members TEXT[];
      sender_revoked BIGINT;
      target TEXT;
    BEGIN
      LOOP  -- steps 3-4: claim the key, then read whoever holds it
        INSERT INTO mesh.client_message_dedupe (mesh_id, client_message_id,
          broker_message_id, request_fingerprint, destination_kind, destination_ref,
          first_seen_at, expires_at)
        VALUES (p_mesh_id, p_cmid, p_bmid, p_fp, p_kind, p_ref, p_now, p_expires)
        ON CONFLICT (mesh_id, client_message_id) DO NOTHING;
        SELECT d.broker_message_id AS bmid, d.request_fingerprint AS fp,
               d.history_available AS available, d.first_seen_at AS first_seen
          INTO claim FROM mesh.client_message_dedupe d
         WHERE d.mesh_id = p_mesh_id AND d.client_message_id = p_cmid FOR SHARE;
        EXIT WHEN FOUND;  -- else the winner's row was swept in between: claim again
      END LOOP;
      IF claim.bmid <> p_bmid THEN  -- step 5: someone else's row; end without writes
        SELECT h.seq INTO hist FROM mesh.message_history h WHERE h.message_id = claim.bmid;
        RETURN QUERY SELECT CASE WHEN claim.fp = p_fp THEN 'duplicate' ELSE 'conflict' END,
          claim.bmid, hist, claim.fp, claim.first_seen, claim.available,
          NULL::TEXT[], NULL::BIGINT[];
        RETURN;
      END IF;
      -- step 6, B2: raising rolls the claim back with everything else
      SELECT m.revoked_at INTO sender_revoked FROM mesh.member m WHERE m.id = p_sender
         FOR SHARE;
      IF NOT FOUND OR sender_revoked IS NOT NULL THEN
        RAISE EXCEPTION 'sender' USING ERRCODE = 'CM403';
      END IF;
      IF p_kind = 'dm' THEN
        SELECT m.id INTO target FROM mesh.member m
         WHERE m.mesh_id = p_mesh_id AND m.pubkey = p_ref AND m.revoked_at IS NULL;
        IF target IS NULL THEN
          RAISE EXCEPTION 'dm' USING ERRCODE = 'CM404';
        END IF;
        members := ARRAY[target];
      ELSIF p_ref = '*' THEN
        SELECT coalesce(array_agg(m.id ORDER BY m.id COLLATE "C"), '{}') INTO members
          FROM mesh.member m WHERE m.mesh_id = p_mesh_id AND m.revoked_at IS NULL;
        members := array_remove(members, p_sender);
      ELSIF left(p_ref, 1) = '@' THEN
        SELECT coalesce(array_agg(g.member_id ORDER BY g.member_id COLLATE "C"), '{}')
          INTO members FROM mesh.group_member g JOIN mesh.member m ON m.id = g.member_id
         WHERE g.mesh_id = p_mesh_id AND g.group_name = substr(p_ref, 2)
           AND m.revoked_at IS NULL;
        IF cardinality(members) = 0 THEN
          RAISE EXCEPTION 'group' USING ERRCODE = 'CM404';
        END IF;
        members := array_remove(members, p_sender);
      ELSE
        PERFORM 1 FROM mesh.topic t WHERE t.mesh_id = p_mesh_id AND t.name = p_ref;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'topic' USING ERRCODE = 'CM404';
        END IF;
        SELECT coalesce(array_agg(s.member_id ORDER BY s.member_id COLLATE "C"), '{}')
          INTO members FROM mesh.topic_subscription s JOIN mesh.member m
            ON m.id = s.member_id
         WHERE s.mesh_id = p_mesh_id AND s.topic = p_ref AND m.revoked_at IS NULL;
        members := array_remove(members, p_sender);
      END IF;
      -- the mesh's commit order (see Ordering), held to the end of the transaction
      PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_mesh_id));
      -- step 7: the side effects
      INSERT INTO mesh.message (id, mesh_id, client_message_id, sender_member_id,
        sender_pubkey, sender_name, destination_kind, destination_ref, priority, reply_to,
        meta, body, body_hash, created_at)
      VALUES (p_bmid, p_mesh_id, p_cmid, p_sender, p_sender_pubkey, p_sender_name, p_kind,
        p_ref, p_priority, p_reply_to, p_meta, p_body, p_body_hash, p_now);
      INSERT INTO mesh.message_history (mesh_id, message_id, created_at)
      VALUES (p_mesh_id, p_bmid, p_now) RETURNING seq INTO hist;
      RETURN QUERY
        WITH queued AS (
          INSERT INTO mesh.delivery_queue (mesh_id, message_id, recipient_member_id,
                                           created_at)
          SELECT p_mesh_id, p_bmid, r.id, p_now
            FROM unnest(members) WITH ORDINALITY AS r(id, n) ORDER BY r.n
          RETURNING seq, recipient_member_id)
        SELECT 'created', p_bmid, hist, p_fp, p_now, TRUE,
          (SELECT array_agg(q.recipient_member_id ORDER BY q.recipient_member_id COLLATE "C")
             FROM queued q),
          (SELECT array_agg(q.seq ORDER BY q.recipient_member_id COLLATE "C") FROM queued q);
    END
    $$;
    """

# Migration 5's accept: the same function, plus anycast (``queue`` to ``@group``, issue 15):
# one other live member of the group, online ones first, round-robin by ``anycast_seq``.
_ANYCAST_AFTER: Final = """        members := ARRAY[target];
"""
_ANYCAST_BRANCH: Final = """      ELSIF p_kind = 'queue' THEN
        SELECT g.member_id INTO target FROM mesh.group_member g
          JOIN mesh.member m ON m.id = g.member_id
         WHERE g.mesh_id = p_mesh_id AND g.group_name = substr(p_ref, 2)
           AND m.revoked_at IS NULL AND g.member_id <> p_sender
         ORDER BY EXISTS (SELECT 1 FROM mesh.presence p WHERE p.mesh_id = g.mesh_id
                          AND p.member_id = g.member_id) DESC,
                  g.anycast_seq, g.member_id COLLATE "C"
         LIMIT 1 FOR UPDATE OF g;
        IF target IS NULL THEN
          RAISE EXCEPTION 'group' USING ERRCODE = 'CM404';
        END IF;
        UPDATE mesh.group_member SET anycast_seq = 1 + (SELECT max(x.anycast_seq)
          FROM mesh.group_member x WHERE x.mesh_id = p_mesh_id
           AND x.group_name = substr(p_ref, 2))
         WHERE mesh_id = p_mesh_id AND group_name = substr(p_ref, 2) AND member_id = target;
        members := ARRAY[target];
"""
if _ANYCAST_AFTER not in _ACCEPT_V1:  # pragma: no cover - a build-time check
    raise RuntimeError("migration 5 cannot find its anchor in the accept function")
_ACCEPT_V2: Final = _ACCEPT_V1.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(
    _ANYCAST_AFTER, _ANYCAST_AFTER + _ANYCAST_BRANCH, 1)

# Migration 9's accept: the history row names its topic (``#topic``, ``@group`` or ``*``
# posts), so a topic's history page walks one index instead of sorting the whole topic.
_HISTORY_INSERT: Final = """      INSERT INTO mesh.message_history (mesh_id, message_id, created_at)
      VALUES (p_mesh_id, p_bmid, p_now) RETURNING seq INTO hist;
"""
if _HISTORY_INSERT not in _ACCEPT_V2:  # pragma: no cover - a build-time check
    raise RuntimeError("migration 9 cannot find its anchor in the accept function")
_ACCEPT_V3: Final = _ACCEPT_V2.replace(_HISTORY_INSERT, """\
      INSERT INTO mesh.message_history (mesh_id, message_id, created_at, topic)
      VALUES (p_mesh_id, p_bmid, p_now, CASE WHEN p_kind = 'topic' THEN p_ref END)
      RETURNING seq INTO hist;
""", 1)

PG_MIGRATIONS: Final = (
    """
    CREATE TABLE mesh.mesh (
      id                     TEXT PRIMARY KEY,
      name                   TEXT NOT NULL CONSTRAINT mesh_name_unique UNIQUE,
      created_at             BIGINT NOT NULL,
      dedupe_mode            TEXT NOT NULL
                             CHECK (dedupe_mode IN ('retention_scoped','permanent')),
      dedupe_retention_days  INTEGER NOT NULL CHECK (dedupe_retention_days >= 3),
      message_retention_days INTEGER NOT NULL CHECK (message_retention_days >= 1),
      connection_policy      TEXT NOT NULL
                             CHECK (connection_policy IN ('prefer_newest','prefer_oldest')),
      invite_pubkey          TEXT NOT NULL,
      invite_secret_key      TEXT NOT NULL
    );
    CREATE TABLE mesh.member (
      id           TEXT PRIMARY KEY,
      mesh_id      TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      pubkey       TEXT NOT NULL,
      display_name TEXT NOT NULL,
      joined_at    BIGINT NOT NULL,
      revoked_at   BIGINT,
      summary      TEXT,
      status       TEXT NOT NULL DEFAULT 'idle' CHECK (status IN ('idle','working','dnd')),
      visible      BOOLEAN NOT NULL DEFAULT TRUE,
      avatar       TEXT,
      title        TEXT,
      bio          TEXT,
      capabilities TEXT NOT NULL DEFAULT '[]',
      CONSTRAINT member_mesh_pubkey UNIQUE (mesh_id, pubkey)
    );
    CREATE UNIQUE INDEX member_live_name ON mesh.member (mesh_id, lower(display_name COLLATE "C"))
      WHERE revoked_at IS NULL;
    CREATE INDEX member_revoked ON mesh.member (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE mesh.invite (
      id            TEXT PRIMARY KEY,
      mesh_id       TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      secret_sha256 TEXT NOT NULL,
      created_at    BIGINT NOT NULL,
      expires_at    BIGINT NOT NULL,
      max_uses      INTEGER NOT NULL CHECK (max_uses >= 1),
      uses          INTEGER NOT NULL DEFAULT 0,
      revoked_at    BIGINT
    );
    CREATE TABLE mesh.hello_nonce (
      pubkey     TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (pubkey, nonce)
    );
    CREATE INDEX hello_nonce_expires ON mesh.hello_nonce (expires_at);
    CREATE TABLE mesh.topic (
      mesh_id    TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      name       TEXT NOT NULL,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, name)
    );
    CREATE TABLE mesh.topic_subscription (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES mesh.member(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, topic, member_id),
      FOREIGN KEY (mesh_id, topic) REFERENCES mesh.topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE INDEX topic_subscription_member ON mesh.topic_subscription (member_id);
    CREATE TABLE mesh.group_member (
      mesh_id    TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      group_name TEXT NOT NULL,
      member_id  TEXT NOT NULL REFERENCES mesh.member(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, group_name, member_id)
    );
    CREATE INDEX group_member_member ON mesh.group_member (member_id);
    CREATE TABLE mesh.client_message_dedupe (
      mesh_id             TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
      client_message_id   TEXT NOT NULL,
      broker_message_id   TEXT NOT NULL,
      request_fingerprint BYTEA NOT NULL CHECK (octet_length(request_fingerprint) = 32),
      destination_kind    TEXT NOT NULL CHECK (destination_kind IN ('topic','dm','queue')),
      destination_ref     TEXT NOT NULL,
      first_seen_at       BIGINT NOT NULL,
      expires_at          BIGINT,
      history_available   BOOLEAN NOT NULL DEFAULT TRUE,
      PRIMARY KEY (mesh_id, client_message_id)
    );
    CREATE INDEX client_message_dedupe_expires_idx ON mesh.client_message_dedupe (expires_at)
      WHERE expires_at IS NOT NULL;
    CREATE INDEX client_message_dedupe_message ON mesh.client_message_dedupe (broker_message_id);
    CREATE TABLE mesh.message (
      id                TEXT PRIMARY KEY,
      mesh_id           TEXT NOT NULL REFERENCES mesh.mesh(id) ON DELETE CASCADE,
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
      created_at        BIGINT NOT NULL
    );
    CREATE INDEX message_created ON mesh.message (created_at);
    CREATE TABLE mesh.message_history (
      seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      mesh_id    TEXT NOT NULL,
      message_id TEXT NOT NULL UNIQUE REFERENCES mesh.message(id) ON DELETE CASCADE,
      created_at BIGINT NOT NULL
    );
    CREATE TABLE mesh.delivery_queue (
      seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      mesh_id             TEXT NOT NULL,
      message_id          TEXT NOT NULL REFERENCES mesh.message(id) ON DELETE CASCADE,
      recipient_member_id TEXT NOT NULL,
      created_at          BIGINT NOT NULL,
      acked_at            BIGINT,
      claimed_by          TEXT,
      claim_expires_at    BIGINT,
      UNIQUE (message_id, recipient_member_id)
    );
    CREATE INDEX delivery_pending ON mesh.delivery_queue (recipient_member_id, seq)
      WHERE acked_at IS NULL;
    """,
    # 2: presence and broker liveness live in the store (issue 6: several brokers)
    """
    CREATE TABLE mesh.broker (
      id           TEXT PRIMARY KEY,
      started_at   BIGINT NOT NULL,
      last_seen_at BIGINT NOT NULL
    );
    CREATE TABLE mesh.presence (
      mesh_id          TEXT NOT NULL,
      member_id        TEXT NOT NULL,
      session_id       TEXT NOT NULL,
      broker_id        TEXT NOT NULL,
      state            TEXT NOT NULL CHECK (state IN ('online','leased')),
      since            BIGINT NOT NULL,
      lease_expires_at BIGINT,
      PRIMARY KEY (mesh_id, member_id)
    );
    CREATE INDEX presence_lease ON mesh.presence (state, lease_expires_at);
    """,
    # 3: the accept (R-BRK-10, §4.7.2) as one server-side call: one round trip, not ten
_ACCEPT_V1,
    # 4: the sessions a member publishes (member_sessions), a JSON list
    """
    ALTER TABLE mesh.member ADD COLUMN sessions TEXT NOT NULL DEFAULT '[]';
    """,
    # 5 (issue 15): group roles, the anycast rotation, topic history by topic, and the
    # accept with anycast (see _ACCEPT_V2)
    """
    ALTER TABLE mesh.group_member ADD COLUMN role TEXT;
    ALTER TABLE mesh.group_member ADD COLUMN anycast_seq BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX message_destination ON mesh.message (mesh_id, destination_kind,
                                                      destination_ref);
    """ + _ACCEPT_V2,
    # 6: shared files (issue 15): one row per blob; its bytes are files in --blob-dir
    """
    CREATE TABLE mesh.blob (
      file_id            TEXT PRIMARY KEY,
      mesh_id            TEXT NOT NULL,
      uploader_member_id TEXT NOT NULL,
      uploader_pubkey    TEXT NOT NULL,
      recipients         TEXT NOT NULL,
      size               BIGINT NOT NULL,
      created_at         BIGINT NOT NULL,
      completed_at       BIGINT
    );
    CREATE INDEX blob_mesh ON mesh.blob(mesh_id, created_at);
    """,
    # 7 (issue 15): end-to-end encrypted topics: membership versions, key epochs, sealed keys
    """
    ALTER TABLE mesh.topic ADD COLUMN membership_version BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE mesh.topic ADD COLUMN current_epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE mesh.topic_epoch (
      mesh_id            TEXT NOT NULL,
      topic              TEXT NOT NULL,
      epoch              INTEGER NOT NULL,
      membership_version BIGINT NOT NULL,
      creator_member_id  TEXT NOT NULL,
      creator_pubkey     TEXT NOT NULL,
      created_at         BIGINT NOT NULL,
      PRIMARY KEY (mesh_id, topic, epoch),
      FOREIGN KEY (mesh_id, topic) REFERENCES mesh.topic(mesh_id, name) ON DELETE CASCADE
    );
    CREATE TABLE mesh.topic_epoch_key (
      mesh_id    TEXT NOT NULL,
      topic      TEXT NOT NULL,
      epoch      INTEGER NOT NULL,
      member_id  TEXT NOT NULL,
      nonce      TEXT NOT NULL,
      ciphertext TEXT NOT NULL,
      PRIMARY KEY (mesh_id, topic, epoch, member_id),
      FOREIGN KEY (mesh_id, topic, epoch) REFERENCES mesh.topic_epoch(mesh_id, topic, epoch)
        ON DELETE CASCADE
    );
    CREATE INDEX topic_epoch_key_member ON mesh.topic_epoch_key (member_id);
    """,
    # 8 (issue 15): files to a topic: a blob bound to ``topic`` (recipients []) is read by
    # the topic's subscribers at the time they fetch it, and by its uploader
    """
    ALTER TABLE mesh.blob ADD COLUMN topic TEXT;
    """,
    # 9 (issue 15): a topic's history by index: message_history.topic, filled for the rows
    # there are, and set by the accept from now on (see _ACCEPT_V3)
    """
    ALTER TABLE mesh.message_history ADD COLUMN topic TEXT;
    UPDATE mesh.message_history h SET topic = m.destination_ref FROM mesh.message m
     WHERE m.id = h.message_id AND m.destination_kind = 'topic';
    CREATE INDEX message_history_topic ON mesh.message_history (mesh_id, topic, seq)
     WHERE topic IS NOT NULL;
    """ + _ACCEPT_V3,  # noqa: S608 - constants only
)


async def migrate(conn: Conn, migrations: Sequence[str] = PG_MIGRATIONS) -> None:
    """Apply the pending migrations, each in its own transaction under the advisory lock.

    ``migrations`` is this build's list; tests pass a prefix to build an older schema.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS mesh;"
            " CREATE TABLE IF NOT EXISTS mesh.schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_at BIGINT NOT NULL"
            " DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)")
    for version, script in enumerate(migrations, start=1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            newest = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM mesh.schema_migrations")
            if int(newest) > len(migrations):
                raise StoreError(f"database schema {newest} is newer than this build knows"
                                 f" ({len(migrations)})")
            if await conn.fetchval("SELECT 1 FROM mesh.schema_migrations WHERE version = $1",
                                   version):
                continue
            await conn.execute(script)
            await conn.execute("INSERT INTO mesh.schema_migrations (version) VALUES ($1)",
                               version)
            log.info("store_migrated", extra={"version": version})

