"""The ledger's store (SQLite): registry, logged events, clear masses, the log state.

One file, WAL, ``synchronous=FULL``, STRICT tables, numbered migrations. The
intake pipeline writes one device batch per ``BEGIN IMMEDIATE`` transaction:
the events, their opened masses, the device's chain head and the log's
compact range all move together, so a crash leaves either the whole batch or
none of it, and the log never has a gap or a duplicate (``event_id`` and
``(kid, seq)`` are unique; ``log_index`` is the leaf's position).

Triggers make logged events immutable and undeletable. ``PostgresLedgerStore``
(``ledger.store_pg``, several intake workers) implements the same methods.

Schema versions (``PRAGMA user_version``), applied in order on open, each in
one transaction: 1 the first schema; 2 adds ``device_keys.valid_from_ms`` (a
key is accepted only from then on; existing keys get their enrolment time) and
the ``forks`` alarm table; 3 adds ``rejections.count`` (summarised rejections) and the
bounded ``dead_letters`` table; 4 adds the ``registry_log`` and the key columns
``last_seq`` and ``enrolled_index``.

The log is shared: besides device events it holds the registry authority's
entries (COSE_Sign1 documents that enrol, retire and pin, chained by their own
seq), one leaf ``leaf_hash(entry_id)`` each, so a verifier can tell by log index
whether a key was enrolled before a record was logged. A log index belongs to
exactly one row of ``events`` or ``registry_log``; readers of leaves merge both.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from custody.errors import StorageError
from custody.merkle import CompactRange, leaf_hash

__all__ = [
    "MAX_FORKS_PER_KEY",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DeviceKeyRecord",
    "ForkAlarm",
    "LedgerStore",
    "LoggedEvent",
    "LoggedRegistryEntry",
    "NewEvent",
    "Store",
]

_SCHEMA = """
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

# Version 2: key validity start, and the durable fork alarms.
_MIGRATION_2 = """
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
# Version 3: what one device can make the ledger store is bounded. Rejections that no
# enrolled key of the device signed are summarised (one row per batch and reason, with a
# count) and the table is pruned to a retention; a message the intake could not handle at
# all is kept once, as a dead letter, in a table of bounded size.
_MIGRATION_3 = """
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
# Version 4: the registry authority's entries share the log with the events. Their seq is
# the authority's own chain (1, 2, ... gapless); a key enrolled by an entry records that
# entry's log index, and a retirement or rotation fixes the last seq its chain may log.
_MIGRATION_4 = """
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
_MIGRATIONS = (_SCHEMA, _MIGRATION_2, _MIGRATION_3, _MIGRATION_4)
# Distinct forks kept per device key, with their evidence (``record_fork``).
MAX_FORKS_PER_KEY = 100
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, slots=True)
class DeviceKeyRecord:
    kid: bytes
    device_id: str
    site_id: str
    public_key: bytes
    enrolled_ms: int
    revoked_ms: int | None
    valid_from_ms: int = 0
    # The last seq of the key's chain that may be logged (a retirement or the key's
    # rotation fixed it); None: open.
    last_seq: int | None = None
    # Log index of the registry entry that enrolled the key; None for an operator's
    # enrolment and for a key a device announced in its own key_rotation.
    enrolled_index: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def valid_yet(self, now_ms: int) -> bool:
        """The key's validity has started (records signed before are still rejected
        until then: a key enrolled ahead of its commissioning date)."""
        return self.valid_from_ms <= now_ms


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One verified event to append (``append_events``)."""

    event_id: bytes
    kid: bytes
    seq: int
    device_id: str
    type: str
    device_time_ms: int
    envelope: bytes
    masses: dict[str, int]
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class ForkAlarm:
    """A durable fork alarm: two different signed events of one key at one seq."""

    device_id: str
    kid: bytes
    seq: int
    kept_event_id: bytes
    forked_event_id: bytes
    first_seen_ms: int
    last_seen_ms: int
    count: int

    def to_json(self) -> dict[str, object]:
        return {
            "device_id": self.device_id, "kid": self.kid.hex(), "seq": self.seq,
            "kept_event_id": self.kept_event_id.hex(),
            "forked_event_id": self.forked_event_id.hex(),
            "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms,
            "count": self.count,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the intake could not handle at all, kept for an operator (bounded)."""

    digest: bytes
    device_id: str
    topic: str
    payload: bytes
    error: str
    first_seen_ms: int
    last_seen_ms: int
    count: int

    def to_json(self) -> dict[str, object]:
        return {
            "digest": self.digest.hex(), "device_id": self.device_id, "topic": self.topic,
            "bytes": len(self.payload), "error": self.error,
            "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms,
            "count": self.count,
        }  # fmt: skip


def dead_letter_digest(topic: str, payload: bytes) -> bytes:
    """The key of a dead letter: a redelivered message is the same row, counted again."""
    return hashlib.sha256(topic.encode() + b"\x00" + payload).digest()


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    log_index: int
    event_id: bytes
    kid: bytes
    seq: int
    device_id: str
    type: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class LoggedRegistryEntry:
    """A registry authority's entry as logged: its chain seq and its leaf's position."""

    seq: int
    log_index: int
    entry_id: bytes
    entry: bytes
    op: str


class Store(Protocol):
    """What a ledger store offers: ``LedgerStore`` (SQLite) and ``PostgresLedgerStore``.

    The chain-and-log methods are called inside ``transaction()``. A
    transaction serialises log appends: whatever ``log_range()`` returns inside
    it is the current log, and no other writer can append until it commits.
    Errors of the database library surface as ``StorageError``.
    """

    def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[object]: ...
    def enroll(
        self, device_id: str, site_id: str, public_key: bytes, kid: bytes,
        valid_from_ms: int | None = None, *, enrolled_index: int | None = None,
    ) -> None: ...  # fmt: skip
    def revoke(self, device_id: str) -> int: ...
    def retire_key(self, kid: bytes, last_seq: int) -> None: ...
    def rotate_key(
        self, device_id: str, site_id: str, old_kid: bytes, new_kid: bytes, new_public_key: bytes,
        *, valid_from_ms: int, retired_ms: int, enrol_new: bool = True,
        last_seq: int | None = None,
    ) -> None: ...  # fmt: skip
    def key(self, kid: bytes) -> DeviceKeyRecord | None: ...
    def device_keys(self) -> list[DeviceKeyRecord]: ...
    def head(self, kid: bytes) -> tuple[int, bytes]: ...
    def event_id_at(self, kid: bytes, seq: int) -> bytes | None: ...
    def log_range(self) -> CompactRange: ...
    def append_events(self, log: CompactRange, events: Sequence[NewEvent]) -> None: ...
    def append_registry_entry(
        self, log: CompactRange, seq: int, entry_id: bytes, entry: bytes, op: str
    ) -> int: ...
    def registry_head(self) -> tuple[int, bytes]: ...
    def registry_entries(self, upto_index: int | None = None) -> list[LoggedRegistryEntry]: ...
    def save_log(self, log: CompactRange) -> None: ...
    def waiting_envelope(self, kid: bytes, seq: int) -> bytes | None: ...
    def wait(self, kid: bytes, seq: int, envelope: bytes) -> None: ...
    def waiting_count(self, kid: bytes) -> int: ...
    def take_waiting(self, kid: bytes, seq: int) -> bytes | None: ...
    def drop_waiting_through(self, kid: bytes, seq: int) -> None: ...
    def take_all_waiting(self, kid: bytes) -> list[tuple[int, bytes]]: ...
    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str, count: int = 1,
    ) -> None: ...  # fmt: skip
    def prune_rejections(self, keep: int) -> int: ...
    def rejection_rows(self) -> int: ...
    def record_dead_letter(
        self, device_id: str, topic: str, payload: bytes, error: str, keep: int
    ) -> bool: ...
    def dead_letters(self) -> list[DeadLetter]: ...
    def dead_letter_count(self) -> int: ...
    def record_fork(
        self, device_id: str, kid: bytes, seq: int, kept_event_id: bytes,
        forked_event_id: bytes, forked_envelope: bytes,
    ) -> bool: ...  # fmt: skip
    def forks(self) -> list[ForkAlarm]: ...
    def log_size(self) -> int: ...
    def events(
        self, device_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[LoggedEvent]: ...
    def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...
    def masses(self, event_id: bytes) -> dict[str, int]: ...
    def rejections(self) -> list[tuple[str, int | None, str]]: ...
    def integrity_ok(self) -> bool: ...
    def add_checkpoint(self, size: int, time_ms: int, root: bytes, signed: bytes) -> None: ...
    def latest_checkpoint(self) -> bytes | None: ...


def events_where(
    device_id: str | None, types: Sequence[str] | None, mark: str
) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause of ``events()`` for either store (``mark``: ``?`` or ``%s``)."""
    clauses: list[str] = []
    args: list[str] = []
    if device_id is not None:
        clauses.append(f"device_id = {mark}")
        args.append(device_id)
    if types is not None:
        clauses.append(f"type IN ({', '.join([mark] * len(types))})" if types else "FALSE")
        args.extend(str(t) for t in types)  # plain text, also for StrEnum members
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def check_registry_entry(head_seq: int, seq: int, entry_id: bytes, entry: bytes) -> None:
    """The store's guard on a registry entry to append: it follows the head and its id
    is the SHA-256 of its bytes (``StorageError`` otherwise)."""
    if seq != head_seq + 1:
        raise StorageError(
            f"registry entry seq {seq} does not follow the registry head (seq {head_seq})"
        )
    if hashlib.sha256(entry).digest() != entry_id:
        raise StorageError(f"registry entry {seq}: its id is not the SHA-256 of its bytes")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LedgerStore:
    """The SQLite ledger store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tx_thread: int | None = None  # the thread whose transaction is open
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10
            )
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: cannot open the ledger store: {exc}") from exc

    def _migrate(self) -> None:
        # Each step re-reads the version under the write lock (BEGIN IMMEDIATE), so
        # two processes opening an old store together migrate it once.
        while True:
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.path}: ledger schema version {version}, this program knows "
                        f"{SCHEMA_VERSION}"
                    )
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if int(self.conn.execute("PRAGMA user_version").fetchone()[0]) != version:
                    self.conn.execute("ROLLBACK")  # someone else migrated meanwhile
                    continue
                for statement in _statements(_MIGRATIONS[version]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

        Called again by the thread whose transaction is open, it is a savepoint inside
        it, as a nested transaction is in PostgreSQL: so ``enroll`` of a key that a
        registry entry enrols joins the transaction that logs the entry.
        """
        me = threading.get_ident()
        if self._tx_thread == me:
            self.conn.execute("SAVEPOINT nested")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK TO nested")
                self.conn.execute("RELEASE nested")
                raise
            self.conn.execute("RELEASE nested")
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"ledger store: {exc}") from exc
        self._tx_thread = me
        try:
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # A deferred foreign key (a key naming no logged registry entry) fails here.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise StorageError(f"ledger store: commit: {exc}") from exc
        finally:
            self._tx_thread = None

    # --- registry --------------------------------------------------------------------
    def enroll(
        self, device_id: str, site_id: str, public_key: bytes, kid: bytes,
        valid_from_ms: int | None = None, *, enrolled_index: int | None = None,
    ) -> None:  # fmt: skip
        """Enrol a key; it is accepted from ``valid_from_ms`` (default: now) on.

        ``enrolled_index``: the log index of the registry entry that enrols it (call
        this inside the ``transaction()`` that appended the entry)."""
        now = _now_ms()
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                    " valid_from_ms, enrolled_index) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kid, device_id, site_id, public_key, now,
                     now if valid_from_ms is None else valid_from_ms, enrolled_index),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"key {kid.hex()} is already enrolled") from exc

    def retire_key(self, kid: bytes, last_seq: int) -> None:
        """Fix the last seq ``kid`` may log and revoke it (now, unless revoked before).

        A bound already fixed is only ever lowered: a later retirement cannot reopen
        seqs that the key's rotation or an earlier retirement closed."""
        try:
            done = self.conn.execute(
                "UPDATE device_keys SET last_seq = min(coalesce(last_seq, ?), ?),"
                " revoked_ms = coalesce(revoked_ms, ?) WHERE kid = ?",
                (last_seq, last_seq, _now_ms(), kid),
            ).rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"ledger store: retiring key {kid.hex()}: {exc}") from exc
        if done == 0:
            raise StorageError(f"key {kid.hex()} is not enrolled")

    def revoke(self, device_id: str) -> int:
        with self.transaction() as c:
            return c.execute(
                "UPDATE device_keys SET revoked_ms = ? WHERE device_id = ? AND revoked_ms IS NULL",
                (_now_ms(), device_id),
            ).rowcount

    def rotate_key(
        self, device_id: str, site_id: str, old_kid: bytes, new_kid: bytes, new_public_key: bytes,
        *, valid_from_ms: int, retired_ms: int, enrol_new: bool = True,
        last_seq: int | None = None,
    ) -> None:  # fmt: skip
        """Inside ``transaction()``, with the ``key_rotation`` event's append: enrol the key it
        announced (from ``valid_from_ms``) and retire the old one (revoked at ``retired_ms``,
        just after the rotation event, its last record, whose seq is ``last_seq``; a bound
        fixed before is only lowered). ledger/intake.py checks beforehand."""
        if enrol_new:
            self.conn.execute(
                "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                " valid_from_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (new_kid, device_id, site_id, new_public_key, _now_ms(), valid_from_ms),
            )
        self.conn.execute(
            "UPDATE device_keys SET revoked_ms = ? WHERE kid = ? AND revoked_ms IS NULL",
            (retired_ms, old_kid),
        )
        if last_seq is not None:
            self.conn.execute(
                "UPDATE device_keys SET last_seq = min(coalesce(last_seq, ?), ?) WHERE kid = ?",
                (last_seq, last_seq, old_kid),
            )

    def key(self, kid: bytes) -> DeviceKeyRecord | None:
        row = self.conn.execute(
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms,"
            " valid_from_ms, last_seq, enrolled_index FROM device_keys WHERE kid = ?",
            (kid,),
        ).fetchone()
        return None if row is None else DeviceKeyRecord(*row)

    def device_keys(self) -> list[DeviceKeyRecord]:
        rows = self.conn.execute(
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms, valid_from_ms,"
            " last_seq, enrolled_index FROM device_keys ORDER BY enrolled_ms, kid"
        )
        return [DeviceKeyRecord(*r) for r in rows]

    # --- chain and log (inside a transaction) ----------------------------------------------
    def head(self, kid: bytes) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT seq, event_id FROM heads WHERE kid = ?", (kid,)).fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def event_id_at(self, kid: bytes, seq: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT event_id FROM events WHERE kid = ? AND seq = ?", (kid, seq)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def log_range(self) -> CompactRange:
        row = self.conn.execute("SELECT range_ FROM log_state WHERE id = 1").fetchone()
        return CompactRange() if row is None else CompactRange.from_bytes(bytes(row[0]))

    def append_events(self, log: CompactRange, events: Sequence[NewEvent]) -> None:
        """Append verified events in order at the log's end (inside a transaction).

        Each key's events must extend its chain in seq order; its head moves to the
        last of them. One statement per table for the whole list: per-row statements
        were a fifth of the intake's time.
        """
        if not events:
            return
        now = _now_ms()
        start = log.size
        self.conn.executemany(
            "INSERT INTO events (log_index, event_id, kid, seq, device_id, type, device_time_ms,"
            " received_ms, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (start + i, e.event_id, e.kid, e.seq, e.device_id, e.type, e.device_time_ms,
                 now, e.envelope)
                for i, e in enumerate(events)
            ],
        )  # fmt: skip
        self.conn.executemany(
            "INSERT INTO masses (event_id, field, value) VALUES (?, ?, ?)",
            [(e.event_id, f, v) for e in events for f, v in e.masses.items()],
        )
        heads = {e.kid: (e.seq, e.event_id) for e in events}
        self.conn.executemany(
            "INSERT INTO heads (kid, seq, event_id) VALUES (?, ?, ?) ON CONFLICT (kid) "
            "DO UPDATE SET seq = excluded.seq, event_id = excluded.event_id",
            [(kid, seq, event_id) for kid, (seq, event_id) in heads.items()],
        )
        for e in events:
            log.append_hash(e.leaf_hash)

    def append_registry_entry(
        self, log: CompactRange, seq: int, entry_id: bytes, entry: bytes, op: str
    ) -> int:
        """Append a registry authority's entry at the log's end (inside a transaction);
        returns its log index. ``seq`` must follow ``registry_head()``: the caller checks
        the entry's chain first, this refusal is the store's own guard."""
        check_registry_entry(self.registry_head()[0], seq, entry_id, entry)
        index = log.size
        try:
            self.conn.execute(
                "INSERT INTO registry_log (seq, log_index, entry_id, entry, op, received_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (seq, index, entry_id, entry, op, _now_ms()),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"ledger store: appending registry entry {seq}: {exc}") from exc
        log.append_hash(leaf_hash(entry_id))
        return index

    def registry_head(self) -> tuple[int, bytes]:
        row = self.conn.execute(
            "SELECT seq, entry_id FROM registry_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def registry_entries(self, upto_index: int | None = None) -> list[LoggedRegistryEntry]:
        """The registry entries in seq order; with ``upto_index``, those logged before it."""
        sql = "SELECT seq, log_index, entry_id, entry, op FROM registry_log"
        rows = (
            self.conn.execute(sql + " ORDER BY seq")
            if upto_index is None
            else self.conn.execute(sql + " WHERE log_index < ? ORDER BY seq", (upto_index,))
        )
        return [_registry_entry(r) for r in rows]

    def save_log(self, log: CompactRange) -> None:
        self.conn.execute(
            "INSERT INTO log_state (id, size, root, range_) VALUES (1, ?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET size = excluded.size, root = excluded.root, range_ = excluded.range_",
            (log.size, log.root(), log.to_bytes()),
        )

    def waiting_envelope(self, kid: bytes, seq: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT envelope FROM waiting WHERE kid = ? AND seq = ?", (kid, seq)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def wait(self, kid: bytes, seq: int, envelope: bytes) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO waiting (kid, seq, envelope, received_ms) VALUES (?, ?, ?, ?)",
            (kid, seq, envelope, _now_ms()),
        )

    def waiting_count(self, kid: bytes) -> int:
        return int(
            self.conn.execute("SELECT COUNT(*) FROM waiting WHERE kid = ?", (kid,)).fetchone()[0]
        )

    def take_waiting(self, kid: bytes, seq: int) -> bytes | None:
        row = self.conn.execute(
            "DELETE FROM waiting WHERE kid = ? AND seq = ? RETURNING envelope", (kid, seq)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def drop_waiting_through(self, kid: bytes, seq: int) -> None:
        self.conn.execute("DELETE FROM waiting WHERE kid = ? AND seq <= ?", (kid, seq))

    def take_all_waiting(self, kid: bytes) -> list[tuple[int, bytes]]:
        """Remove and return every record parked for ``kid``, in seq order."""
        rows = self.conn.execute(
            "DELETE FROM waiting WHERE kid = ? RETURNING seq, envelope", (kid,)
        ).fetchall()
        return sorted((int(r[0]), bytes(r[1])) for r in rows)

    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str, count: int = 1,
    ) -> None:  # fmt: skip
        self.conn.execute(
            "INSERT INTO rejections (device_id, kid, seq, event_id, reason, received_ms, count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, kid, seq, event_id, reason, _now_ms(), count),
        )

    def prune_rejections(self, keep: int) -> int:
        """Keep the newest ``keep`` rejection rows; returns how many were removed."""
        with self.transaction() as c:
            return c.execute(
                "DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - ?", (keep,)
            ).rowcount

    def rejection_rows(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM rejections").fetchone()[0])

    def record_dead_letter(
        self, device_id: str, topic: str, payload: bytes, error: str, keep: int
    ) -> bool:
        """Keep a message the intake could not handle (once per topic and payload, counted
        again when redelivered), and only the ``keep`` most recently seen; True when new."""
        now = _now_ms()
        with self.transaction() as c:
            row = c.execute(
                "INSERT INTO dead_letters (digest, device_id, topic, payload, error,"
                " first_seen_ms, last_seen_ms, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (digest) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
                " error = excluded.error, count = count + 1 RETURNING count",
                (dead_letter_digest(topic, payload), device_id, topic, payload, error, now, now),
            ).fetchone()
            c.execute(
                "DELETE FROM dead_letters WHERE digest NOT IN"
                " (SELECT digest FROM dead_letters ORDER BY last_seen_ms DESC LIMIT ?)",
                (keep,),
            )
        return int(row[0]) == 1

    def dead_letter_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self) -> list[DeadLetter]:
        rows = self.conn.execute(
            "SELECT digest, device_id, topic, payload, error, first_seen_ms, last_seen_ms, count"
            " FROM dead_letters ORDER BY last_seen_ms"
        )
        return [_dead_letter(r) for r in rows]

    def record_fork(
        self, device_id: str, kid: bytes, seq: int, kept_event_id: bytes,
        forked_event_id: bytes, forked_envelope: bytes,
    ) -> bool:  # fmt: skip
        """Record (or, seen before, count again) a fork alarm; True when it is new.

        Only the first ``MAX_FORKS_PER_KEY`` distinct forks of a key keep a row with the
        evidence: a stolen key can sign forks without end, and the first ones prove it."""
        now = _now_ms()
        with contextlib.nullcontext(self.conn) as c:  # inside the intake's transaction
            seen = c.execute(
                "UPDATE forks SET last_seen_ms = ?, count = count + 1"
                " WHERE kid = ? AND seq = ? AND forked_event_id = ? RETURNING count",
                (now, kid, seq, forked_event_id),
            ).fetchone()
            if seen is not None:
                return False
            kept = c.execute("SELECT count(*) FROM forks WHERE kid = ?", (kid,)).fetchone()
            if kept is not None and int(kept[0]) >= MAX_FORKS_PER_KEY:
                return False
            c.execute(
                "INSERT INTO forks (device_id, kid, seq, kept_event_id, forked_event_id,"
                " forked_envelope, first_seen_ms, last_seen_ms, count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (device_id, kid, seq, kept_event_id, forked_event_id, forked_envelope, now, now),
            )
        return True

    def forks(self) -> list[ForkAlarm]:
        rows = self.conn.execute(
            "SELECT device_id, kid, seq, kept_event_id, forked_event_id, first_seen_ms,"
            " last_seen_ms, count"
            " FROM forks ORDER BY id"
        )
        return [_fork(r) for r in rows]

    # --- reads -----------------------------------------------------------------------------
    def log_size(self) -> int:
        row = self.conn.execute("SELECT size FROM log_state WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def events(
        self, device_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[LoggedEvent]:
        """Logged events in log order, optionally of one device and of some types only."""
        where, args = events_where(device_id, types, "?")
        sql = "SELECT log_index, event_id, kid, seq, device_id, type, envelope FROM events"
        rows = self.conn.execute(sql + where + " ORDER BY log_index", args)
        return [
            LoggedEvent(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], bytes(r[6])) for r in rows
        ]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaves ``start`` .. ``end - 1``: a log position is one event's or one registry
        entry's, so the leaves are both tables' rows, merged in log order."""
        rows = self.conn.execute(
            "SELECT log_index, event_id FROM events WHERE log_index >= ? AND log_index < ?"
            " UNION ALL SELECT log_index, entry_id FROM registry_log"
            " WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, end, start, end),
        )
        return [leaf_hash(bytes(r[1])) for r in rows]

    def masses(self, event_id: bytes) -> dict[str, int]:
        rows = self.conn.execute("SELECT field, value FROM masses WHERE event_id = ?", (event_id,))
        return {str(f): int(v) for f, v in rows}

    def rejections(self) -> list[tuple[str, int | None, str]]:
        rows = self.conn.execute("SELECT device_id, seq, reason FROM rejections ORDER BY id")
        return [(r[0], r[1], r[2]) for r in rows]

    def integrity_ok(self) -> bool:
        return [r[0] for r in self.conn.execute("PRAGMA integrity_check")] == ["ok"]

    def add_checkpoint(self, size: int, time_ms: int, root: bytes, signed: bytes) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO checkpoints (size, time_ms, root, signed) VALUES (?, ?, ?, ?)",
            (size, time_ms, root, signed),
        )

    def latest_checkpoint(self) -> bytes | None:
        row = self.conn.execute(
            "SELECT signed FROM checkpoints ORDER BY size DESC, time_ms DESC LIMIT 1"
        ).fetchone()
        return None if row is None else bytes(row[0])


def _dead_letter(r: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        bytes(r[0]), str(r[1]), str(r[2]), bytes(r[3]), str(r[4]), int(r[5]), int(r[6]), int(r[7])
    )


def _registry_entry(r: tuple[Any, ...]) -> LoggedRegistryEntry:
    return LoggedRegistryEntry(int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), str(r[4]))


def _fork(r: tuple[Any, ...]) -> ForkAlarm:
    return ForkAlarm(
        str(r[0]), bytes(r[1]), int(r[2]), bytes(r[3]), bytes(r[4]), int(r[5]), int(r[6]),
        int(r[7]),
    )  # fmt: skip


def _statements(script: str) -> list[str]:
    """Split a schema script into whole statements (triggers hold ``;`` inside)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()
    ):
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:60]}")
    return out
