"""The ledger's schema: one numbered list of migrations, each written in both dialects.

A version is one step of ``MIGRATIONS``; the store applies the steps a database lacks,
under a lock, in one transaction (``ledger.store``). SQLite records the version in
``PRAGMA user_version``, PostgreSQL in its ``ledger_schema`` table; the numbering is
the same. Both scripts of a step describe the same logical schema: SQLite's tables are
STRICT (BLOB, INTEGER) and its triggers ``RAISE(ABORT, ...)``; PostgreSQL's use BYTEA
and BIGINT, add CHECKs for invariants of the protocol (ids of 32 bytes, seqs from 1),
and its triggers are plpgsql functions that also forbid TRUNCATE.

Logged events and registry entries are immutable and undeletable (triggers). The log
is shared: besides device events it holds the registry authority's entries, one leaf
``leaf_hash(entry_id)`` each, and a log index belongs to exactly one row of ``events``
or ``registry_log``.

Add a version by appending a ``Migration`` with both scripts; never edit a released one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: what it brings, and the script that reaches it in each dialect."""

    version: int
    summary: str
    sqlite: str
    postgresql: str


# Version 1: the first schema.
_SQLITE_1 = """
CREATE TABLE device_keys (
    kid         BLOB    PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    site_id     TEXT    NOT NULL,
    public_key  BLOB    NOT NULL UNIQUE,
    enrolled_ms INTEGER NOT NULL,
    revoked_ms  INTEGER
) STRICT;
CREATE INDEX device_keys_device ON device_keys (device_id);

CREATE TABLE events (
    log_index      INTEGER PRIMARY KEY,          -- position of the leaf in the log
    event_id       BLOB    NOT NULL UNIQUE,
    kid            BLOB    NOT NULL REFERENCES device_keys (kid),
    seq            INTEGER NOT NULL,
    device_id      TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    device_time_ms INTEGER NOT NULL,
    received_ms    INTEGER NOT NULL,
    envelope       BLOB    NOT NULL,
    UNIQUE (kid, seq)
) STRICT;

CREATE TABLE masses (
    event_id BLOB    NOT NULL REFERENCES events (event_id),
    field    TEXT    NOT NULL,
    value    INTEGER NOT NULL,
    PRIMARY KEY (event_id, field)
) STRICT, WITHOUT ROWID;

CREATE TABLE heads (
    kid      BLOB    PRIMARY KEY REFERENCES device_keys (kid),
    seq      INTEGER NOT NULL,
    event_id BLOB    NOT NULL
) STRICT;

-- Out-of-order arrivals wait here for their predecessor (bounded per key).
CREATE TABLE waiting (
    kid         BLOB    NOT NULL,
    seq         INTEGER NOT NULL,
    envelope    BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (kid, seq)
) STRICT;

CREATE TABLE rejections (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    kid         BLOB,
    seq         INTEGER,
    event_id    BLOB,
    reason      TEXT    NOT NULL,
    received_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE log_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    size   INTEGER NOT NULL,
    root   BLOB    NOT NULL,
    range_ BLOB    NOT NULL                       -- CompactRange.to_bytes()
) STRICT;

-- Ledger-signed checkpoints (size, root, time), as issued (ledger.log).
CREATE TABLE checkpoints (
    size    INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    root    BLOB    NOT NULL,
    signed  BLOB    NOT NULL,
    PRIMARY KEY (size, time_ms)
) STRICT;

CREATE TRIGGER events_immutable BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'logged events are immutable'); END;
CREATE TRIGGER events_undeletable BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'logged events are never deleted'); END;
"""
_POSTGRESQL_1 = """
CREATE TABLE device_keys (
    kid         BYTEA  PRIMARY KEY,
    device_id   TEXT   NOT NULL,
    site_id     TEXT   NOT NULL,
    public_key  BYTEA  NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
    enrolled_ms BIGINT NOT NULL,
    revoked_ms  BIGINT
);
CREATE INDEX device_keys_device ON device_keys (device_id);

CREATE TABLE events (
    log_index      BIGINT PRIMARY KEY CHECK (log_index >= 0),  -- position of the leaf
    event_id       BYTEA  NOT NULL UNIQUE CHECK (octet_length(event_id) = 32),
    kid            BYTEA  NOT NULL REFERENCES device_keys (kid),
    seq            BIGINT NOT NULL CHECK (seq >= 1),
    device_id      TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    device_time_ms BIGINT NOT NULL,
    received_ms    BIGINT NOT NULL,
    envelope       BYTEA  NOT NULL,
    UNIQUE (kid, seq)
);
CREATE INDEX events_device ON events (device_id, log_index);

CREATE TABLE masses (
    event_id BYTEA  NOT NULL REFERENCES events (event_id),
    field    TEXT   NOT NULL,
    value    BIGINT NOT NULL,
    PRIMARY KEY (event_id, field)
);

CREATE TABLE heads (
    kid      BYTEA  PRIMARY KEY REFERENCES device_keys (kid),
    seq      BIGINT NOT NULL CHECK (seq >= 1),
    event_id BYTEA  NOT NULL CHECK (octet_length(event_id) = 32)
);

-- Out-of-order arrivals wait here for their predecessor (bounded per key by the intake).
CREATE TABLE waiting (
    kid         BYTEA  NOT NULL,
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    envelope    BYTEA  NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (kid, seq)
);

CREATE TABLE rejections (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   TEXT   NOT NULL,
    kid         BYTEA,
    seq         BIGINT,
    event_id    BYTEA,
    reason      TEXT   NOT NULL,
    received_ms BIGINT NOT NULL
);

-- The one row is also the sequencer lock (transaction() locks it FOR UPDATE first).
CREATE TABLE log_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    size   BIGINT  NOT NULL CHECK (size >= 0),
    root   BYTEA   NOT NULL CHECK (octet_length(root) = 32),
    range_ BYTEA   NOT NULL                       -- CompactRange.to_bytes()
);

CREATE FUNCTION ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'logged events are immutable';
    END IF;
    RAISE EXCEPTION 'logged events are never deleted';
END
$$;
CREATE TRIGGER events_immutable BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only();
CREATE TRIGGER events_undeletable BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only();
CREATE TRIGGER events_untruncatable BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only();

CREATE TABLE checkpoints (
    size    BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    root    BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    signed  BYTEA  NOT NULL,
    PRIMARY KEY (size, time_ms)
);
CREATE TABLE ledger_schema (version INTEGER PRIMARY KEY);
"""

# Version 2: key validity start, and the durable fork alarms.
_SQLITE_2 = """
ALTER TABLE device_keys ADD COLUMN valid_from_ms INTEGER NOT NULL DEFAULT 0;
UPDATE device_keys SET valid_from_ms = enrolled_ms;

-- Two different signed events at one (kid, seq): the device key is in two
-- places (a cloned SD card, a restored backup). One row per distinct forked
-- event; a resend of it only moves last_seen_ms and count.
CREATE TABLE forks (
    id                INTEGER PRIMARY KEY,
    device_id         TEXT    NOT NULL,
    kid               BLOB    NOT NULL,
    seq               INTEGER NOT NULL,
    kept_event_id     BLOB    NOT NULL,      -- the event logged (or parked) first at that seq
    forked_event_id   BLOB    NOT NULL,      -- the other one, rejected
    forked_envelope   BLOB    NOT NULL,      -- its signed envelope: the evidence
    first_seen_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL,
    count             INTEGER NOT NULL,
    UNIQUE (kid, seq, forked_event_id)
) STRICT;
"""
_POSTGRESQL_2 = """
ALTER TABLE device_keys ADD COLUMN valid_from_ms BIGINT;
UPDATE device_keys SET valid_from_ms = enrolled_ms;
ALTER TABLE device_keys ALTER COLUMN valid_from_ms SET NOT NULL;

CREATE TABLE forks (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id         TEXT   NOT NULL,
    kid               BYTEA  NOT NULL,
    seq               BIGINT NOT NULL CHECK (seq >= 1),
    kept_event_id     BYTEA  NOT NULL CHECK (octet_length(kept_event_id) = 32),
    forked_event_id   BYTEA  NOT NULL CHECK (octet_length(forked_event_id) = 32),
    forked_envelope   BYTEA  NOT NULL,
    first_seen_ms     BIGINT NOT NULL,
    last_seen_ms      BIGINT NOT NULL,
    count             BIGINT NOT NULL,
    UNIQUE (kid, seq, forked_event_id)
);
"""

# Version 3: what one device can make the ledger store is bounded. Rejections that no
# enrolled key of the device signed are summarised (one row per batch and reason, with a
# count) and the table is pruned to a retention; a message the intake could not handle at
# all is kept once, as a dead letter, in a table of bounded size.
_SQLITE_3 = """
ALTER TABLE rejections ADD COLUMN count INTEGER NOT NULL DEFAULT 1;

CREATE TABLE dead_letters (
    digest        BLOB    PRIMARY KEY,          -- SHA-256 of the topic and payload
    device_id     TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    error         TEXT    NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    count         INTEGER NOT NULL
) STRICT;
CREATE INDEX dead_letters_seen ON dead_letters (last_seen_ms);
"""
_POSTGRESQL_3 = """
ALTER TABLE rejections ADD COLUMN count BIGINT NOT NULL DEFAULT 1 CHECK (count >= 1);

CREATE TABLE dead_letters (
    digest        BYTEA  PRIMARY KEY CHECK (octet_length(digest) = 32),
    device_id     TEXT   NOT NULL,
    topic         TEXT   NOT NULL,
    payload       BYTEA  NOT NULL,
    error         TEXT   NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    count         BIGINT NOT NULL
);
CREATE INDEX dead_letters_seen ON dead_letters (last_seen_ms);
"""

# Version 4: the registry authority's entries share the log with the events. Their seq is
# the authority's own chain (1, 2, ... gapless); a key enrolled by an entry records that
# entry's log index, and a retirement or rotation fixes the last seq its chain may log.
_SQLITE_4 = """
CREATE TABLE registry_log (
    seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
    log_index   INTEGER NOT NULL UNIQUE CHECK (log_index >= 0),  -- position of the leaf
    entry_id    BLOB    NOT NULL UNIQUE CHECK (length(entry_id) = 32),  -- SHA-256 of entry
    entry       BLOB    NOT NULL,                                -- the COSE_Sign1 bytes
    op          TEXT    NOT NULL,
    received_ms INTEGER NOT NULL
) STRICT;

ALTER TABLE device_keys ADD COLUMN last_seq INTEGER CHECK (last_seq >= 0);
-- Checked at commit: an entry and the keys it enrols are written in one transaction.
ALTER TABLE device_keys ADD COLUMN enrolled_index INTEGER
    REFERENCES registry_log (log_index) DEFERRABLE INITIALLY DEFERRED;

CREATE TRIGGER registry_log_immutable BEFORE UPDATE ON registry_log
BEGIN SELECT RAISE(ABORT, 'logged registry entries are immutable'); END;
CREATE TRIGGER registry_log_undeletable BEFORE DELETE ON registry_log
BEGIN SELECT RAISE(ABORT, 'logged registry entries are never deleted'); END;
-- The authority's chain is gapless, and a leaf position holds one row of one table.
-- Events are not checked the other way: their inserts are the hot path, and both
-- kinds take their position from the same compact range under the write lock.
CREATE TRIGGER registry_log_gapless BEFORE INSERT ON registry_log
WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM registry_log)
BEGIN SELECT RAISE(ABORT, 'a registry entry must follow the registry head'); END;
CREATE TRIGGER registry_log_own_leaf BEFORE INSERT ON registry_log
WHEN EXISTS (SELECT 1 FROM events WHERE log_index = NEW.log_index)
BEGIN SELECT RAISE(ABORT, 'an event holds that log index'); END;
"""
_POSTGRESQL_4 = """
CREATE TABLE registry_log (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 1),
    log_index   BIGINT NOT NULL UNIQUE CHECK (log_index >= 0),  -- position of the leaf
    entry_id    BYTEA  NOT NULL UNIQUE CHECK (entry_id = sha256(entry)),
    entry       BYTEA  NOT NULL,                                -- the COSE_Sign1 bytes
    op          TEXT   NOT NULL,
    received_ms BIGINT NOT NULL
);

ALTER TABLE device_keys ADD COLUMN last_seq BIGINT CHECK (last_seq >= 0);
-- Checked at commit: an entry and the keys it enrols are written in one transaction.
ALTER TABLE device_keys ADD COLUMN enrolled_index BIGINT
    REFERENCES registry_log (log_index) DEFERRABLE INITIALLY DEFERRED;

CREATE FUNCTION ledger_registry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'logged registry entries are immutable';
    END IF;
    RAISE EXCEPTION 'logged registry entries are never deleted';
END
$$;
CREATE TRIGGER registry_log_immutable BEFORE UPDATE ON registry_log
    FOR EACH ROW EXECUTE FUNCTION ledger_registry_append_only();
CREATE TRIGGER registry_log_undeletable BEFORE DELETE ON registry_log
    FOR EACH ROW EXECUTE FUNCTION ledger_registry_append_only();
CREATE TRIGGER registry_log_untruncatable BEFORE TRUNCATE ON registry_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_registry_append_only();

-- The authority's chain is gapless, and a leaf position holds one row of one table.
-- Events are not checked the other way: their inserts are the hot path, and both kinds
-- take their position from the log state under the sequencer lock.
CREATE FUNCTION ledger_registry_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq IS DISTINCT FROM (SELECT coalesce(max(seq), 0) + 1 FROM registry_log) THEN
        RAISE EXCEPTION 'a registry entry must follow the registry head';
    END IF;
    IF EXISTS (SELECT 1 FROM events WHERE log_index = NEW.log_index) THEN
        RAISE EXCEPTION 'an event holds that log index';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER registry_log_appends BEFORE INSERT ON registry_log
    FOR EACH ROW EXECUTE FUNCTION ledger_registry_append();
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the first schema", _SQLITE_1, _POSTGRESQL_1),
    Migration(2, "device_keys.valid_from_ms and the forks alarm table", _SQLITE_2, _POSTGRESQL_2),
    Migration(3, "rejections.count and the bounded dead_letters table", _SQLITE_3, _POSTGRESQL_3),
    Migration(4, "registry_log, device_keys.last_seq and enrolled_index", _SQLITE_4, _POSTGRESQL_4),
)
SCHEMA_VERSION = len(MIGRATIONS)
