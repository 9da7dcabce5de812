"""The ledger's store on PostgreSQL: the same methods and semantics as ``LedgerStore``.

Theory of operation. Several intake workers (ARCHITECTURE.md "Scale beyond one
machine") each open their own ``PostgresLedgerStore`` on the same database.
PostgreSQL is the single sequencer of log positions: ``transaction()`` begins a
READ COMMITTED transaction and, before anything else, locks the one
``log_state`` row (``SELECT ... FOR UPDATE``). Appends are therefore made by one
writer at a time, in commit order; because every later statement of a READ
COMMITTED transaction reads the latest committed data, the compact range, chain
heads and waiting records read after the lock are the current ones, so a log
position is never assigned twice and a device key's chain is extended by one
worker at a time. Reads outside a transaction see the last committed state.

The logical schema is ``ledger.store``'s (BYTEA for blobs, BIGINT for integers,
the same UNIQUE keys, plus CHECKs for invariants of the protocol). Triggers make
logged events and registry entries immutable and undeletable (and the tables
untruncatable). Registry entries share the log with the events (as in
``ledger.store``): a log position is one row of ``events`` or ``registry_log``. The
schema is created on first open, and an older one migrated, inside one
transaction holding an advisory lock, so workers that start together do not
race; ``ledger_schema`` records its version (the same numbering as SQLite's
``user_version`` in ``ledger.store``: 2 adds key validity starts and fork alarms, 3
summarised rejections and dead letters, 4 the registry log and the key columns
``last_seq`` and ``enrolled_index``).

Every psycopg error is translated here into ``StorageError`` (STYLE.md §5). A
lost connection is not retried: the error stops the worker and its supervisor
restarts it (STYLE.md §8); the broker redelivers what was not PUBACKed.

One store object is one connection. Threads may share it: an internal lock
serialises them for a whole transaction, but workers should each open their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from custody.errors import DecodeError, StorageError
from custody.merkle import CompactRange, leaf_hash
from ledger.store import (
    MAX_FORKS_PER_KEY,
    DeadLetter,
    DeviceKeyRecord,
    ForkAlarm,
    LoggedEvent,
    LoggedRegistryEntry,
    NewEvent,
    check_registry_entry,
    dead_letter_digest,
    events_where,
)

__all__ = ["SCHEMA_VERSION", "PostgresLedgerStore"]

SCHEMA_VERSION = 4
# pg_advisory_xact_lock key guarding schema creation ("custody" + 0x01, a positive bigint).
_SCHEMA_LOCK = int.from_bytes(b"custody\x01", "big")

_SCHEMA = """
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

# Version 2 (as ledger.store's): key validity start and the durable fork alarms.
_MIGRATION_2 = """
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
# Version 3 (as ledger.store's): summarised rejections and bounded dead letters.
_MIGRATION_3 = """
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
# Version 4 (as ledger.store's): the registry authority's entries share the log.
_MIGRATION_4 = """
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
# version -> the script to reach it
_MIGRATIONS = {1: _SCHEMA, 2: _MIGRATION_2, 3: _MIGRATION_3, 4: _MIGRATION_4}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """psycopg's errors become ``StorageError`` here, at the boundary (STYLE.md §5)."""
    try:
        yield
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"ledger store (PostgreSQL): {what}: {detail}") from exc


class PostgresLedgerStore:
    """The PostgreSQL ledger store; ``dsn`` is a libpq connection string or URL."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.RLock()
        self._closed = False
        self.conn = self._connect()
        try:
            with _translated("cannot open the ledger store"):
                self._migrate()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> psycopg.Connection[TupleRow]:
        with _translated("cannot open the ledger store"):
            conn: psycopg.Connection[TupleRow] = psycopg.connect(self.dsn, autocommit=True)
            try:
                # FOR UPDATE + per-statement snapshots is what makes the sequencer
                # correct; REPEATABLE READ (a server default some set) would fail instead.
                conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                if sync is not None and sync[0] == "off":
                    # A batch is acked right after its commit: the commit must be durable.
                    conn.execute("SET synchronous_commit = on")
            except BaseException:
                conn.close()
                raise
        return conn

    def _migrate(self) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            row = self.conn.execute("SELECT to_regclass('ledger_schema') IS NOT NULL").fetchone()
            version = 0
            if row is not None and row[0]:
                found = self.conn.execute("SELECT max(version) FROM ledger_schema").fetchone()
                version = -1 if found is None or found[0] is None else int(found[0])
            if version not in range(SCHEMA_VERSION + 1):
                raise StorageError(
                    f"ledger store (PostgreSQL): schema version {version}, this program "
                    f"knows {SCHEMA_VERSION}"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                # No parameters: one multi-statement simple query per step.
                self.conn.execute(_MIGRATIONS[step])
                self.conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (step,))
            if version == 0:
                self._insert_empty_log()

    def _insert_empty_log(self) -> None:
        empty = CompactRange()
        self.conn.execute(
            "INSERT INTO log_state (id, size, root, range_) VALUES (1, 0, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (empty.root(), empty.to_bytes()),
        )

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error), self._lock:
            self._closed = True
            self.conn.close()

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[psycopg.Connection[TupleRow]]:
        with self._lock:
            if self._closed:
                raise StorageError(f"ledger store (PostgreSQL): {what}: the store is closed")
            if self.conn.broken or self.conn.closed:
                # The server restarted or the network dropped: a new session, once the
                # server answers again (the failed transaction was rolled back by it).
                self.conn = self._connect()
            with _translated(what):
                yield self.conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """One durable write transaction that holds the log sequencer lock from its start."""
        with self._op("transaction") as conn, conn.transaction():
            self._lock_sequencer()
            yield conn

    def _lock_sequencer(self) -> None:
        lock = "SELECT size FROM log_state WHERE id = 1 FOR UPDATE"
        if self.conn.execute(lock).fetchone() is None:
            # Only when someone deleted the row: recreate it (the insert waits for a
            # concurrent one to commit, then does nothing) and lock it.
            self._insert_empty_log()
            if self.conn.execute(lock).fetchone() is None:  # pragma: no cover - just inserted
                raise StorageError("ledger store (PostgreSQL): the log state row is missing")

    # --- registry --------------------------------------------------------------------
    def enroll(
        self, device_id: str, site_id: str, public_key: bytes, kid: bytes,
        valid_from_ms: int | None = None, *, enrolled_index: int | None = None,
    ) -> None:  # fmt: skip
        """Enrol a key; it is accepted from ``valid_from_ms`` (default: now) on.

        ``enrolled_index``: as ``LedgerStore.enroll`` (inside the transaction that
        appended the entry, this is a savepoint of it)."""
        now = _now_ms()
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                    " valid_from_ms, enrolled_index) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (kid, device_id, site_id, public_key, now,
                     now if valid_from_ms is None else valid_from_ms, enrolled_index),
                )  # fmt: skip
            except psycopg.errors.UniqueViolation as exc:
                raise StorageError(f"key {kid.hex()} is already enrolled") from exc

    def retire_key(self, kid: bytes, last_seq: int) -> None:
        """As ``LedgerStore.retire_key``: fix (or lower) the key's last seq, revoke it."""
        with self._op("retiring a device key") as c:
            done = c.execute(
                "UPDATE device_keys SET last_seq = least(coalesce(last_seq, %s), %s),"
                " revoked_ms = coalesce(revoked_ms, %s) WHERE kid = %s",
                (last_seq, last_seq, _now_ms(), kid),
            ).rowcount
        if done == 0:
            raise StorageError(f"key {kid.hex()} is not enrolled")

    def revoke(self, device_id: str) -> int:
        with self.transaction() as c:
            return c.execute(
                "UPDATE device_keys SET revoked_ms = %s"
                " WHERE device_id = %s AND revoked_ms IS NULL",
                (_now_ms(), device_id),
            ).rowcount

    def rotate_key(
        self, device_id: str, site_id: str, old_kid: bytes, new_kid: bytes, new_public_key: bytes,
        *, valid_from_ms: int, retired_ms: int, enrol_new: bool = True,
        last_seq: int | None = None,
    ) -> None:  # fmt: skip
        """Inside ``transaction()``: as ``LedgerStore.rotate_key``."""
        with self._op("rotating a device key") as c:
            if enrol_new:
                c.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                    " valid_from_ms) VALUES (%s, %s, %s, %s, %s, %s)",
                    (new_kid, device_id, site_id, new_public_key, _now_ms(), valid_from_ms),
                )
            c.execute(
                "UPDATE device_keys SET revoked_ms = %s WHERE kid = %s AND revoked_ms IS NULL",
                (retired_ms, old_kid),
            )
            if last_seq is not None:
                c.execute(
                    "UPDATE device_keys SET last_seq = least(coalesce(last_seq, %s), %s)"
                    " WHERE kid = %s",
                    (last_seq, last_seq, old_kid),
                )

    def key(self, kid: bytes) -> DeviceKeyRecord | None:
        with self._op("reading a device key") as c:
            row = c.execute(
                "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms,"
                " valid_from_ms, last_seq, enrolled_index FROM device_keys WHERE kid = %s",
                (kid,),
            ).fetchone()
        return None if row is None else _key_record(row)

    def device_keys(self) -> list[DeviceKeyRecord]:
        with self._op("listing device keys") as c:
            rows = c.execute(
                "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms,"
                " valid_from_ms, last_seq, enrolled_index FROM device_keys"
                " ORDER BY enrolled_ms, kid"
            ).fetchall()
        return [_key_record(r) for r in rows]

    # --- chain and log (inside a transaction) ----------------------------------------------
    def head(self, kid: bytes) -> tuple[int, bytes]:
        with self._op("reading a chain head") as c:
            row = c.execute("SELECT seq, event_id FROM heads WHERE kid = %s", (kid,)).fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def event_id_at(self, kid: bytes, seq: int) -> bytes | None:
        with self._op("reading an event id") as c:
            row = c.execute(
                "SELECT event_id FROM events WHERE kid = %s AND seq = %s", (kid, seq)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def log_range(self) -> CompactRange:
        with self._op("reading the log state") as c:
            row = c.execute("SELECT range_ FROM log_state WHERE id = 1").fetchone()
        return CompactRange() if row is None else CompactRange.from_bytes(bytes(row[0]))

    def append_events(self, log: CompactRange, events: Sequence[NewEvent]) -> None:
        """Append verified events in order at the log's end (inside a transaction);
        each key's head moves to its last event. ``executemany`` pipelines the rows."""
        if not events:
            return
        now = _now_ms()
        start = log.size
        heads = {e.kid: (e.seq, e.event_id) for e in events}
        with self._op("appending events") as c, c.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (log_index, event_id, kid, seq, device_id, type,"
                " device_time_ms, received_ms, envelope)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (start + i, e.event_id, e.kid, e.seq, e.device_id, e.type, e.device_time_ms,
                     now, e.envelope)
                    for i, e in enumerate(events)
                ],
            )  # fmt: skip
            mass_rows = [(e.event_id, f, v) for e in events for f, v in e.masses.items()]
            if mass_rows:
                cur.executemany(
                    "INSERT INTO masses (event_id, field, value) VALUES (%s, %s, %s)", mass_rows
                )
            cur.executemany(
                "INSERT INTO heads (kid, seq, event_id) VALUES (%s, %s, %s) ON CONFLICT (kid) "
                "DO UPDATE SET seq = excluded.seq, event_id = excluded.event_id",
                [(kid, seq, event_id) for kid, (seq, event_id) in heads.items()],
            )
        for e in events:
            log.append_hash(e.leaf_hash)

    def append_registry_entry(
        self, log: CompactRange, seq: int, entry_id: bytes, entry: bytes, op: str
    ) -> int:
        """As ``LedgerStore.append_registry_entry`` (inside a transaction)."""
        check_registry_entry(self.registry_head()[0], seq, entry_id, entry)
        index = log.size
        with self._op("appending a registry entry") as c:
            c.execute(
                "INSERT INTO registry_log (seq, log_index, entry_id, entry, op, received_ms)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (seq, index, entry_id, entry, op, _now_ms()),
            )
        log.append_hash(leaf_hash(entry_id))
        return index

    def registry_head(self) -> tuple[int, bytes]:
        with self._op("reading the registry head") as c:
            row = c.execute(
                "SELECT seq, entry_id FROM registry_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def registry_entries(self, upto_index: int | None = None) -> list[LoggedRegistryEntry]:
        """The registry entries in seq order; with ``upto_index``, those logged before it."""
        with self._op("reading registry entries") as c:
            rows = c.execute(
                "SELECT seq, log_index, entry_id, entry, op FROM registry_log"
                " WHERE %s::bigint IS NULL OR log_index < %s ORDER BY seq",
                (upto_index, upto_index),
            ).fetchall()
        return [
            LoggedRegistryEntry(int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), r[4]) for r in rows
        ]

    def save_log(self, log: CompactRange) -> None:
        with self._op("saving the log state") as c:
            c.execute(
                "INSERT INTO log_state (id, size, root, range_) VALUES (1, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root,"
                " range_ = excluded.range_",
                (log.size, log.root(), log.to_bytes()),
            )

    def waiting_envelope(self, kid: bytes, seq: int) -> bytes | None:
        with self._op("reading a waiting record") as c:
            row = c.execute(
                "SELECT envelope FROM waiting WHERE kid = %s AND seq = %s", (kid, seq)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def wait(self, kid: bytes, seq: int, envelope: bytes) -> None:
        with self._op("parking an out-of-order record") as c:
            c.execute(
                "INSERT INTO waiting (kid, seq, envelope, received_ms) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (kid, seq) DO UPDATE SET envelope = excluded.envelope,"
                " received_ms = excluded.received_ms",
                (kid, seq, envelope, _now_ms()),
            )

    def waiting_count(self, kid: bytes) -> int:
        with self._op("counting waiting records") as c:
            row = c.execute("SELECT count(*) FROM waiting WHERE kid = %s", (kid,)).fetchone()
        return 0 if row is None else int(row[0])

    def take_waiting(self, kid: bytes, seq: int) -> bytes | None:
        with self._op("taking a waiting record") as c:
            row = c.execute(
                "DELETE FROM waiting WHERE kid = %s AND seq = %s RETURNING envelope", (kid, seq)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def take_all_waiting(self, kid: bytes) -> list[tuple[int, bytes]]:
        """Remove and return every record parked for ``kid``, in seq order."""
        with self._op("taking waiting records") as c:
            rows = c.execute(
                "DELETE FROM waiting WHERE kid = %s RETURNING seq, envelope", (kid,)
            ).fetchall()
        return sorted((int(r[0]), bytes(r[1])) for r in rows)

    def drop_waiting_through(self, kid: bytes, seq: int) -> None:
        with self._op("dropping waiting records") as c:
            c.execute("DELETE FROM waiting WHERE kid = %s AND seq <= %s", (kid, seq))

    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str, count: int = 1,
    ) -> None:  # fmt: skip
        with self._op("recording a rejection") as c:
            c.execute(
                "INSERT INTO rejections (device_id, kid, seq, event_id, reason, received_ms,"
                " count) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (device_id, kid, seq, event_id, reason, _now_ms(), count),
            )

    def prune_rejections(self, keep: int) -> int:
        """Keep the newest ``keep`` rejection rows; returns how many were removed."""
        with self._op("pruning rejections") as c:
            return c.execute(
                "DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - %s",
                (keep,),
            ).rowcount

    def rejection_rows(self) -> int:
        with self._op("counting rejections") as c:
            row = c.execute("SELECT count(*) FROM rejections").fetchone()
        assert row is not None  # an aggregate always returns a row
        return int(row[0])

    def record_dead_letter(
        self, device_id: str, topic: str, payload: bytes, error: str, keep: int
    ) -> bool:
        """Keep a message the intake could not handle (once per topic and payload, counted
        again when redelivered), and only the ``keep`` most recently seen; True when new."""
        now = _now_ms()
        with self._op("recording a dead letter") as c, c.transaction():
            row = c.execute(
                "INSERT INTO dead_letters (digest, device_id, topic, payload, error,"
                " first_seen_ms, last_seen_ms, count) VALUES (%s, %s, %s, %s, %s, %s, %s, 1)"
                " ON CONFLICT (digest) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
                " error = excluded.error, count = dead_letters.count + 1 RETURNING count",
                (dead_letter_digest(topic, payload), device_id, topic, payload, error, now, now),
            ).fetchone()
            c.execute(
                "DELETE FROM dead_letters WHERE digest NOT IN"
                " (SELECT digest FROM dead_letters ORDER BY last_seen_ms DESC LIMIT %s)",
                (keep,),
            )
        assert row is not None  # RETURNING of an upsert always returns the row
        return int(row[0]) == 1

    def dead_letter_count(self) -> int:
        with self._op("counting dead letters") as c:
            row = c.execute("SELECT count(*) FROM dead_letters").fetchone()
        assert row is not None  # an aggregate always returns a row
        return int(row[0])

    def dead_letters(self) -> list[DeadLetter]:
        with self._op("reading dead letters") as c:
            rows = c.execute(
                "SELECT digest, device_id, topic, payload, error, first_seen_ms, last_seen_ms,"
                " count FROM dead_letters ORDER BY last_seen_ms"
            ).fetchall()
        return [
            DeadLetter(bytes(r[0]), r[1], r[2], bytes(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]))
            for r in rows
        ]

    def record_fork(
        self, device_id: str, kid: bytes, seq: int, kept_event_id: bytes,
        forked_event_id: bytes, forked_envelope: bytes,
    ) -> bool:  # fmt: skip
        """Record (or, seen before, count again) a fork alarm; True when it is new.

        Only the first ``MAX_FORKS_PER_KEY`` distinct forks of a key keep a row with the
        evidence: a stolen key can sign forks without end, and the first ones prove it."""
        now = _now_ms()
        with self._op("recording a fork alarm") as c, c.transaction():
            seen = c.execute(
                "UPDATE forks SET last_seen_ms = %s, count = count + 1"
                " WHERE kid = %s AND seq = %s AND forked_event_id = %s RETURNING count",
                (now, kid, seq, forked_event_id),
            ).fetchone()
            if seen is not None:
                return False
            kept = c.execute("SELECT count(*) FROM forks WHERE kid = %s", (kid,)).fetchone()
            if kept is not None and int(kept[0]) >= MAX_FORKS_PER_KEY:
                return False
            c.execute(
                "INSERT INTO forks (device_id, kid, seq, kept_event_id, forked_event_id,"
                " forked_envelope, first_seen_ms, last_seen_ms, count)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1)",
                (device_id, kid, seq, kept_event_id, forked_event_id, forked_envelope, now, now),
            )
        return True

    def forks(self) -> list[ForkAlarm]:
        with self._op("reading fork alarms") as c:
            rows = c.execute(
                "SELECT device_id, kid, seq, kept_event_id, forked_event_id, first_seen_ms,"
                " last_seen_ms, count"
                " FROM forks ORDER BY id"
            ).fetchall()
        return [
            ForkAlarm(r[0], bytes(r[1]), int(r[2]), bytes(r[3]), bytes(r[4]), int(r[5]),
                      int(r[6]), int(r[7]))
            for r in rows
        ]  # fmt: skip

    def add_checkpoint(self, size: int, time_ms: int, root: bytes, signed: bytes) -> None:
        with self._op("storing a checkpoint") as c:
            c.execute(
                "INSERT INTO checkpoints (size, time_ms, root, signed) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (size, time_ms, root, signed),
            )

    def latest_checkpoint(self) -> bytes | None:
        with self._op("reading the latest checkpoint") as c:
            row = c.execute(
                "SELECT signed FROM checkpoints ORDER BY size DESC, time_ms DESC LIMIT 1"
            ).fetchone()
        return None if row is None else bytes(row[0])

    # --- reads -----------------------------------------------------------------------------
    def log_size(self) -> int:
        with self._op("reading the log size") as c:
            row = c.execute("SELECT size FROM log_state WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def events(
        self, device_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[LoggedEvent]:
        where, args = events_where(device_id, types, "%s")
        sql = "SELECT log_index, event_id, kid, seq, device_id, type, envelope FROM events"
        with self._op("reading events") as c:
            rows = c.execute(sql + where + " ORDER BY log_index", args).fetchall()
        return [
            LoggedEvent(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]), r[4], r[5], bytes(r[6]))
            for r in rows
        ]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaves ``start`` .. ``end - 1``: events and registry entries, in log order."""
        with self._op("reading leaf hashes") as c:
            rows = c.execute(
                "SELECT log_index, event_id FROM events WHERE log_index >= %s AND log_index < %s"
                " UNION ALL SELECT log_index, entry_id FROM registry_log"
                " WHERE log_index >= %s AND log_index < %s ORDER BY log_index",
                (start, end, start, end),
            ).fetchall()
        return [leaf_hash(bytes(r[1])) for r in rows]

    def masses(self, event_id: bytes) -> dict[str, int]:
        with self._op("reading masses") as c:
            rows = c.execute(
                "SELECT field, value FROM masses WHERE event_id = %s", (event_id,)
            ).fetchall()
        return {str(f): int(v) for f, v in rows}

    def rejections(self) -> list[tuple[str, int | None, str]]:
        with self._op("reading rejections") as c:
            rows = c.execute("SELECT device_id, seq, reason FROM rejections ORDER BY id").fetchall()
        return [(r[0], None if r[1] is None else int(r[1]), r[2]) for r in rows]

    def integrity_ok(self) -> bool:
        """The log's invariants hold (SQLite's ``PRAGMA integrity_check`` has no PostgreSQL peer
        without the amcheck extension; the server checks its own pages).

        The logged leaves (events and registry entries) are exactly positions
        0..size-1, each once, the saved compact range is well-formed and matches the
        saved size and root, every device key's events are seq 1..head with the head
        pointing at the last of them, and the registry entries are seq 1..n.
        """
        with self._op("checking integrity") as c:
            outside = c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            with c.transaction():
                if outside:  # one snapshot for the three reads
                    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                state = c.execute(
                    "SELECT size, root, range_ FROM log_state WHERE id = 1"
                ).fetchone()
                log = c.execute(
                    "SELECT count(*), count(DISTINCT log_index), coalesce(max(log_index) + 1, 0)"
                    " FROM (SELECT log_index FROM events"
                    " UNION ALL SELECT log_index FROM registry_log) AS leaves"
                ).fetchone()
                registry = c.execute(
                    "SELECT count(*), coalesce(max(seq), 0) FROM registry_log"
                ).fetchone()
                bad_chains = c.execute(
                    "SELECT count(*) FROM (SELECT kid, count(*) AS n, max(seq) AS top FROM events"
                    " GROUP BY kid) AS e FULL JOIN heads AS h USING (kid)"
                    " LEFT JOIN events AS x ON x.kid = h.kid AND x.seq = h.seq"
                    " AND x.event_id = h.event_id"
                    " WHERE e.n IS DISTINCT FROM e.top OR h.seq IS DISTINCT FROM e.top"
                    " OR x.log_index IS NULL"
                ).fetchone()
        # Aggregates always return a row.
        assert log is not None
        assert registry is not None
        assert bad_chains is not None
        chains_ok = int(bad_chains[0]) == 0 and int(registry[0]) == int(registry[1])
        if state is None:  # as log_size(): no state row is the empty log
            return int(log[0]) == 0 and chains_ok
        size, saved_root, saved_range = int(state[0]), bytes(state[1]), bytes(state[2])
        try:
            compact = CompactRange.from_bytes(saved_range)
        except DecodeError:
            return False
        return (
            int(log[0]) == int(log[1]) == int(log[2]) == size == compact.size
            and compact.root() == saved_root
            and chains_ok
        )


def _key_record(row: tuple[Any, ...]) -> DeviceKeyRecord:
    return DeviceKeyRecord(
        bytes(row[0]), row[1], row[2], bytes(row[3]), int(row[4]),
        None if row[5] is None else int(row[5]), int(row[6]),
        None if row[7] is None else int(row[7]), None if row[8] is None else int(row[8]),
    )  # fmt: skip
