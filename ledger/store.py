"""The ledger's store: registry, logged events, clear masses, the log state.

One class, ``LedgerStore``, on one of two databases: SQLite (one file, the default;
``ledger.dialect_sqlite``) or PostgreSQL (several intake workers share it;
``ledger.dialect_pg``). The store holds every statement, written once with ``?``
placeholders, and the schema is one list of migrations (``ledger.schema``). What
differs between the databases is a small dialect object: how to connect, the
placeholder style, how a transaction takes the log's sequencer lock (SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's ``SELECT ... FOR UPDATE`` of the log state row),
how the schema version is kept and a migration applied, the integrity check, and
how the driver's errors become the typed ``StorageError`` tree (STYLE.md §5). Every
method, read or write, runs through ``_op``, the one place where that translation
happens.

The intake pipeline writes one device batch per ``transaction()``: the events,
their opened masses, the device's chain head and the log's compact range all move
together, so a crash leaves either the whole batch or none of it, and the log never
has a gap or a duplicate (``event_id`` and ``(kid, seq)`` are unique;
``log_index`` is the leaf's position). A transaction opened again by the thread
whose transaction is open is a savepoint of it, in both databases.

The log is shared: besides device events it holds the registry authority's
entries (COSE_Sign1 documents that enrol, retire and pin, chained by their own
seq), one leaf ``leaf_hash(entry_id)`` each, so a verifier can tell by log index
whether a key was enrolled before a record was logged. A log index belongs to
exactly one row of ``events`` or ``registry_log``; readers of leaves merge both.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from custody.errors import StorageError
from custody.merkle import CompactRange, leaf_hash
from ledger.schema import MIGRATIONS, SCHEMA_VERSION, Migration

__all__ = [
    "MAX_FORKS_PER_KEY",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DeviceKeyRecord",
    "Dialect",
    "ForkAlarm",
    "LedgerStore",
    "LoggedEvent",
    "LoggedRegistryEntry",
    "NewEvent",
    "Rejection",
    "Store",
]

_T = TypeVar("_T")

# Distinct forks kept per device key, with their evidence (``record_fork``).
MAX_FORKS_PER_KEY = 100


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


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejection row: what the ledger refused of a device, why, and when it arrived.

    ``count`` rows stand for a batch's records that no enrolled key signed (one row per batch
    and reason); ``kid``, ``seq`` and ``event_id`` are None where the record gave none."""

    device_id: str
    kid: bytes | None
    seq: int | None
    event_id: bytes | None
    reason: str
    received_ms: int
    count: int

    def to_json(self) -> dict[str, object]:
        return {
            "device_id": self.device_id, "kid": None if self.kid is None else self.kid.hex(),
            "seq": self.seq, "event_id": None if self.event_id is None else self.event_id.hex(),
            "reason": self.reason, "received_ms": self.received_ms, "count": self.count,
        }  # fmt: skip


def _rejection(r: Sequence[Any]) -> Rejection:
    return Rejection(
        str(r[0]), None if r[1] is None else bytes(r[1]), None if r[2] is None else int(r[2]),
        None if r[3] is None else bytes(r[3]), str(r[4]), int(r[5]), int(r[6]),
    )  # fmt: skip


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


class Cursor(Protocol):
    """What a statement returns, in either driver."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Dialect(Protocol):
    """What differs between the databases a ``LedgerStore`` runs on; one object is one
    connection (``ledger.dialect_sqlite.SqliteDialect``, ``ledger.dialect_pg.PostgresDialect``).

    Its methods may raise the driver's exceptions (``errors``): the store translates
    them with ``storage_error``. ``lock`` is held for a whole operation or transaction
    (a no-op where the connection does not serialise threads itself).
    """

    name: str  # names the store in error messages
    errors: tuple[type[Exception], ...]  # the driver's exceptions
    duplicate: tuple[type[Exception], ...]  # a unique key refused an insert
    lock: contextlib.AbstractContextManager[object]

    @property
    def conn(self) -> Any: ...  # the driver's connection (for tests and operators' tools)
    def open(self) -> None: ...
    def revive(self) -> None: ...  # open a new session if the old one broke
    def close(self) -> None: ...
    def storage_error(self, message: str, exc: Exception) -> StorageError: ...
    def schema_version(self) -> int: ...
    def migrating(self) -> contextlib.AbstractContextManager[None]: ...
    def apply(self, migration: Migration) -> None: ...
    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def atomic(self) -> contextlib.AbstractContextManager[Any]: ...
    def integrity_ok(self) -> bool: ...


def events_where(device_id: str | None, types: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause of ``events()``."""
    clauses: list[str] = []
    args: list[str] = []
    if device_id is not None:
        clauses.append("device_id = ?")
        args.append(device_id)
    if types is not None:
        clauses.append(f"type IN ({', '.join(['?'] * len(types))})" if types else "FALSE")
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
    """The ledger store on SQLite (``where``: the file's path) or on the database a
    ``Dialect`` connects to (``ledger.stores.open_store`` picks one from a location)."""

    def __init__(self, where: Path | str | Dialect) -> None:
        if isinstance(where, (str, Path)):
            from ledger.dialect_sqlite import SqliteDialect

            where = SqliteDialect(Path(where))
        self.dialect: Dialect = where
        self._closed = False
        with self._translated("cannot open the ledger store"):
            self.dialect.open()
            try:
                self._migrate()
            except BaseException:
                self.dialect.close()
                raise

    @property
    def conn(self) -> Any:
        """The driver's connection, for tests and an operator's tools; the store's own
        statements go through its methods."""
        return self.dialect.conn

    def _migrate(self) -> None:
        """Apply the migrations the database lacks, in one transaction under a lock that
        serialises migrations; the version is read again under it, so two processes
        opening an old store together migrate it once."""
        db = self.dialect
        if db.schema_version() == SCHEMA_VERSION:
            return
        with db.migrating():
            version = db.schema_version()
            if version not in range(SCHEMA_VERSION + 1):
                raise StorageError(
                    f"ledger store ({db.name}): schema version {version}, this program "
                    f"knows {SCHEMA_VERSION}"
                )
            for migration in MIGRATIONS[version:]:
                db.apply(migration)

    def close(self) -> None:
        with self.dialect.lock:
            self._closed = True
            self.dialect.close()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """The driver's errors become ``StorageError`` here, at the boundary (STYLE.md §5)."""
        try:
            yield
        except self.dialect.errors as exc:
            message = f"ledger store ({self.dialect.name}): {what}"
            raise self.dialect.storage_error(message, exc) from exc

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[Dialect]:
        """Every operation: one thread at a time where the dialect needs it, a live
        session, and typed errors for whatever the database refuses."""
        db = self.dialect
        with db.lock:
            if self._closed:
                raise StorageError(f"ledger store ({db.name}): {what}: the store is closed")
            with self._translated(what):
                db.revive()
                yield db

    def _statement(
        self, what: str, sql: str, params: Sequence[object], result: Callable[[Cursor], _T]
    ) -> _T:
        """One statement and its ``result``, as ``_op`` would run it. Spelt out without the
        context managers: the intake makes several of these calls per record."""
        db = self.dialect
        with db.lock:
            if self._closed:
                raise StorageError(f"ledger store ({db.name}): {what}: the store is closed")
            try:
                db.revive()
                return result(db.execute(sql, params))
            except db.errors as exc:
                raise db.storage_error(f"ledger store ({db.name}): {what}", exc) from exc

    def _one(self, what: str, sql: str, params: Sequence[object] = ()) -> Any:
        return self._statement(what, sql, params, _fetchone)

    def _all(self, what: str, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return self._statement(what, sql, params, _fetchall)

    def _count(self, what: str, sql: str, params: Sequence[object] = ()) -> int:
        """An aggregate's value (an aggregate always returns a row)."""
        return int(self._one(what, sql, params)[0])

    def _run(self, what: str, sql: str, params: Sequence[object] = ()) -> int:
        """A write; the number of rows it changed."""
        return self._statement(what, sql, params, _rowcount)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One durable write transaction that holds the log sequencer lock from its start;
        yields the driver's connection. Called again by the thread whose transaction is
        open, it is a savepoint inside it: so ``enroll`` of a key that a registry entry
        enrols joins the transaction that logs the entry."""
        with self._op("transaction") as db, db.transaction():
            yield db.conn

    # --- registry --------------------------------------------------------------------
    def enroll(
        self, device_id: str, site_id: str, public_key: bytes, kid: bytes,
        valid_from_ms: int | None = None, *, enrolled_index: int | None = None,
    ) -> None:  # fmt: skip
        """Enrol a key; it is accepted from ``valid_from_ms`` (default: now) on.

        ``enrolled_index``: the log index of the registry entry that enrols it (call
        this inside the ``transaction()`` that appended the entry)."""
        now = _now_ms()
        with self._op("enrolling a device key") as db, self.transaction():
            try:
                db.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                    " valid_from_ms, enrolled_index) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kid, device_id, site_id, public_key, now,
                     now if valid_from_ms is None else valid_from_ms, enrolled_index),
                )  # fmt: skip
            except db.duplicate as exc:
                raise StorageError(f"key {kid.hex()} is already enrolled") from exc

    def retire_key(self, kid: bytes, last_seq: int) -> None:
        """Fix the last seq ``kid`` may log and revoke it (now, unless revoked before).

        A bound already fixed is only ever lowered (``min(coalesce(last_seq, ?), ?)``,
        spelt as a CASE that both dialects know): a later retirement cannot reopen seqs
        that the key's rotation or an earlier retirement closed."""
        done = self._run(
            "retiring a device key",
            "UPDATE device_keys SET last_seq = CASE WHEN last_seq < ? THEN last_seq ELSE ? END,"
            " revoked_ms = coalesce(revoked_ms, ?) WHERE kid = ?",
            (last_seq, last_seq, _now_ms(), kid),
        )
        if done == 0:
            raise StorageError(f"key {kid.hex()} is not enrolled")

    def revoke(self, device_id: str) -> int:
        with self._op("revoking a device") as db, self.transaction():
            return db.execute(
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
        with self._op("rotating a device key") as db:
            if enrol_new:
                db.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
                    " valid_from_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (new_kid, device_id, site_id, new_public_key, _now_ms(), valid_from_ms),
                )
            db.execute(
                "UPDATE device_keys SET revoked_ms = ? WHERE kid = ? AND revoked_ms IS NULL",
                (retired_ms, old_kid),
            )
            if last_seq is not None:
                db.execute(
                    "UPDATE device_keys SET last_seq ="
                    " CASE WHEN last_seq < ? THEN last_seq ELSE ? END WHERE kid = ?",
                    (last_seq, last_seq, old_kid),
                )

    def key(self, kid: bytes) -> DeviceKeyRecord | None:
        row = self._one(
            "reading a device key",
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms,"
            " valid_from_ms, last_seq, enrolled_index FROM device_keys WHERE kid = ?",
            (kid,),
        )
        return None if row is None else _key_record(row)

    def device_keys(self) -> list[DeviceKeyRecord]:
        rows = self._all(
            "listing device keys",
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms, valid_from_ms,"
            " last_seq, enrolled_index FROM device_keys ORDER BY enrolled_ms, kid",
        )
        return [_key_record(r) for r in rows]

    # --- chain and log (inside a transaction) ----------------------------------------------
    def head(self, kid: bytes) -> tuple[int, bytes]:
        row = self._one(
            "reading a chain head", "SELECT seq, event_id FROM heads WHERE kid = ?", (kid,)
        )
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def event_id_at(self, kid: bytes, seq: int) -> bytes | None:
        row = self._one(
            "reading an event id",
            "SELECT event_id FROM events WHERE kid = ? AND seq = ?",
            (kid, seq),
        )
        return None if row is None else bytes(row[0])

    def log_range(self) -> CompactRange:
        row = self._one("reading the log state", "SELECT range_ FROM log_state WHERE id = 1")
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
        heads = {e.kid: (e.seq, e.event_id) for e in events}
        mass_rows = [(e.event_id, f, v) for e in events for f, v in e.masses.items()]
        with self._op("appending events") as db:
            db.executemany(
                "INSERT INTO events (log_index, event_id, kid, seq, device_id, type,"
                " device_time_ms, received_ms, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (start + i, e.event_id, e.kid, e.seq, e.device_id, e.type, e.device_time_ms,
                     now, e.envelope)
                    for i, e in enumerate(events)
                ],
            )  # fmt: skip
            if mass_rows:
                db.executemany(
                    "INSERT INTO masses (event_id, field, value) VALUES (?, ?, ?)", mass_rows
                )
            db.executemany(
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
        self._run(
            f"appending registry entry {seq}",
            "INSERT INTO registry_log (seq, log_index, entry_id, entry, op, received_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (seq, index, entry_id, entry, op, _now_ms()),
        )
        log.append_hash(leaf_hash(entry_id))
        return index

    def registry_head(self) -> tuple[int, bytes]:
        row = self._one(
            "reading the registry head",
            "SELECT seq, entry_id FROM registry_log ORDER BY seq DESC LIMIT 1",
        )
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def registry_entries(self, upto_index: int | None = None) -> list[LoggedRegistryEntry]:
        """The registry entries in seq order; with ``upto_index``, those logged before it."""
        sql = "SELECT seq, log_index, entry_id, entry, op FROM registry_log"
        rows = (
            self._all("reading registry entries", sql + " ORDER BY seq")
            if upto_index is None
            else self._all(
                "reading registry entries",
                sql + " WHERE log_index < ? ORDER BY seq",
                (upto_index,),
            )
        )
        return [_registry_entry(r) for r in rows]

    def save_log(self, log: CompactRange) -> None:
        self._run(
            "saving the log state",
            "INSERT INTO log_state (id, size, root, range_) VALUES (1, ?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET size = excluded.size, root = excluded.root, range_ = excluded.range_",
            (log.size, log.root(), log.to_bytes()),
        )

    def waiting_envelope(self, kid: bytes, seq: int) -> bytes | None:
        row = self._one(
            "reading a waiting record",
            "SELECT envelope FROM waiting WHERE kid = ? AND seq = ?",
            (kid, seq),
        )
        return None if row is None else bytes(row[0])

    def wait(self, kid: bytes, seq: int, envelope: bytes) -> None:
        self._run(
            "parking an out-of-order record",
            "INSERT INTO waiting (kid, seq, envelope, received_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kid, seq) DO UPDATE SET envelope = excluded.envelope,"
            " received_ms = excluded.received_ms",
            (kid, seq, envelope, _now_ms()),
        )

    def waiting_count(self, kid: bytes) -> int:
        return self._count(
            "counting waiting records", "SELECT count(*) FROM waiting WHERE kid = ?", (kid,)
        )

    def take_waiting(self, kid: bytes, seq: int) -> bytes | None:
        row = self._one(
            "taking a waiting record",
            "DELETE FROM waiting WHERE kid = ? AND seq = ? RETURNING envelope",
            (kid, seq),
        )
        return None if row is None else bytes(row[0])

    def drop_waiting_through(self, kid: bytes, seq: int) -> None:
        self._run(
            "dropping waiting records",
            "DELETE FROM waiting WHERE kid = ? AND seq <= ?",
            (kid, seq),
        )

    def take_all_waiting(self, kid: bytes) -> list[tuple[int, bytes]]:
        """Remove and return every record parked for ``kid``, in seq order."""
        rows = self._all(
            "taking waiting records",
            "DELETE FROM waiting WHERE kid = ? RETURNING seq, envelope",
            (kid,),
        )
        return sorted((int(r[0]), bytes(r[1])) for r in rows)

    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str, count: int = 1,
    ) -> None:  # fmt: skip
        self._run(
            "recording a rejection",
            "INSERT INTO rejections (device_id, kid, seq, event_id, reason, received_ms, count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, kid, seq, event_id, reason, _now_ms(), count),
        )

    def prune_rejections(self, keep: int) -> int:
        """Keep the newest ``keep`` rejection rows; returns how many were removed."""
        return self._run(
            "pruning rejections",
            "DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - ?",
            (keep,),
        )

    def rejection_rows(self) -> int:
        return self._count("counting rejections", "SELECT count(*) FROM rejections")

    def record_dead_letter(
        self, device_id: str, topic: str, payload: bytes, error: str, keep: int
    ) -> bool:
        """Keep a message the intake could not handle (once per topic and payload, counted
        again when redelivered), and only the ``keep`` most recently seen; True when new."""
        now = _now_ms()
        with self._op("recording a dead letter") as db, db.atomic():
            row = db.execute(
                "INSERT INTO dead_letters (digest, device_id, topic, payload, error,"
                " first_seen_ms, last_seen_ms, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (digest) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
                " error = excluded.error, count = dead_letters.count + 1 RETURNING count",
                (dead_letter_digest(topic, payload), device_id, topic, payload, error, now, now),
            ).fetchone()
            db.execute(
                "DELETE FROM dead_letters WHERE digest NOT IN"
                " (SELECT digest FROM dead_letters ORDER BY last_seen_ms DESC LIMIT ?)",
                (keep,),
            )
        return int(row[0]) == 1

    def dead_letter_count(self) -> int:
        return self._count("counting dead letters", "SELECT count(*) FROM dead_letters")

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._all(
            "reading dead letters",
            "SELECT digest, device_id, topic, payload, error, first_seen_ms, last_seen_ms, count"
            " FROM dead_letters ORDER BY last_seen_ms",
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
        with self._op("recording a fork alarm") as db, db.atomic():
            seen = db.execute(
                "UPDATE forks SET last_seen_ms = ?, count = count + 1"
                " WHERE kid = ? AND seq = ? AND forked_event_id = ? RETURNING count",
                (now, kid, seq, forked_event_id),
            ).fetchone()
            if seen is not None:
                return False
            kept = db.execute("SELECT count(*) FROM forks WHERE kid = ?", (kid,)).fetchone()
            if kept is not None and int(kept[0]) >= MAX_FORKS_PER_KEY:
                return False
            db.execute(
                "INSERT INTO forks (device_id, kid, seq, kept_event_id, forked_event_id,"
                " forked_envelope, first_seen_ms, last_seen_ms, count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (device_id, kid, seq, kept_event_id, forked_event_id, forked_envelope, now, now),
            )
        return True

    def forks(self) -> list[ForkAlarm]:
        rows = self._all(
            "reading fork alarms",
            "SELECT device_id, kid, seq, kept_event_id, forked_event_id, first_seen_ms,"
            " last_seen_ms, count FROM forks ORDER BY id",
        )
        return [_fork(r) for r in rows]

    def add_checkpoint(self, size: int, time_ms: int, root: bytes, signed: bytes) -> None:
        self._run(
            "storing a checkpoint",
            "INSERT INTO checkpoints (size, time_ms, root, signed) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (size, time_ms, root, signed),
        )

    def latest_checkpoint(self) -> bytes | None:
        row = self._one(
            "reading the latest checkpoint",
            "SELECT signed FROM checkpoints ORDER BY size DESC, time_ms DESC LIMIT 1",
        )
        return None if row is None else bytes(row[0])

    # --- reads -----------------------------------------------------------------------------
    def log_size(self) -> int:
        row = self._one("reading the log size", "SELECT size FROM log_state WHERE id = 1")
        return 0 if row is None else int(row[0])

    # --- the status page's reads (ledger.page) --------------------------------------------
    def last_received_by_device(self) -> dict[str, int]:
        """When each device's newest logged record arrived (ms), by device id."""
        rows = self._all(
            "reading when devices were last seen",
            "SELECT device_id, MAX(received_ms) FROM events GROUP BY device_id",
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def rejections_by_device(self) -> dict[str, tuple[int, int, str]]:
        """Rejected records kept (within the retention), the newest one's arrival (ms) and
        its reason, by device id."""
        rows = self._all(
            "counting rejections by device",
            "SELECT r.device_id, SUM(r.count), MAX(r.received_ms), (SELECT n.reason FROM"
            " rejections n WHERE n.device_id = r.device_id ORDER BY n.id DESC LIMIT 1)"
            " FROM rejections r GROUP BY r.device_id",
        )
        return {str(r[0]): (int(r[1]), int(r[2]), str(r[3])) for r in rows}

    def recent_events(self, types: Sequence[str], limit: int) -> list[tuple[LoggedEvent, int]]:
        """The newest ``limit`` logged events of ``types`` with their arrival time (ms),
        newest first."""
        where, args = events_where(None, types)
        sql = "SELECT log_index, event_id, kid, seq, device_id, type, envelope, received_ms"
        sql += " FROM events" + where + " ORDER BY log_index DESC LIMIT ?"
        rows = self._all("reading recent events", sql, (*args, int(limit)))
        return [
            (LoggedEvent(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]), r[4], r[5], bytes(r[6])),
             int(r[7]))
            for r in rows
        ]  # fmt: skip

    def events(
        self, device_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[LoggedEvent]:
        """Logged events in log order, optionally of one device and of some types only."""
        where, args = events_where(device_id, types)
        sql = "SELECT log_index, event_id, kid, seq, device_id, type, envelope FROM events"
        rows = self._all("reading events", sql + where + " ORDER BY log_index", args)
        return [
            LoggedEvent(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]), r[4], r[5], bytes(r[6]))
            for r in rows
        ]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaves ``start`` .. ``end - 1``: a log position is one event's or one registry
        entry's, so the leaves are both tables' rows, merged in log order."""
        rows = self._all(
            "reading leaf hashes",
            "SELECT log_index, event_id FROM events WHERE log_index >= ? AND log_index < ?"
            " UNION ALL SELECT log_index, entry_id FROM registry_log"
            " WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, end, start, end),
        )
        return [leaf_hash(bytes(r[1])) for r in rows]

    def masses(self, event_id: bytes) -> dict[str, int]:
        rows = self._all(
            "reading masses", "SELECT field, value FROM masses WHERE event_id = ?", (event_id,)
        )
        return {str(f): int(v) for f, v in rows}

    def rejections(self) -> list[tuple[str, int | None, str]]:
        rows = self._all(
            "reading rejections", "SELECT device_id, seq, reason FROM rejections ORDER BY id"
        )
        return [(r[0], None if r[1] is None else int(r[1]), r[2]) for r in rows]

    def rejection_list(
        self, device_id: str | None = None, since_ms: int | None = None, limit: int = 1000
    ) -> list[Rejection]:
        """The newest ``limit`` rejection rows (of ``device_id``, received at or after
        ``since_ms``), oldest first."""
        # COALESCE(?, column): a None filter matches every row, and PostgreSQL types the
        # parameter from the column.
        rows = self._all(
            "reading rejections",
            "SELECT device_id, kid, seq, event_id, reason, received_ms, count FROM rejections"
            " WHERE device_id = COALESCE(?, device_id)"
            " AND received_ms >= COALESCE(?, received_ms) ORDER BY id DESC LIMIT ?",
            (device_id, since_ms, limit),
        )
        return [_rejection(r) for r in reversed(rows)]

    def waiting_by_device(self) -> dict[str, int]:
        """Records parked ahead of a missing predecessor, per device: the ledger's backlog."""
        rows = self._all(
            "counting waiting records",
            "SELECT k.device_id, count(*) FROM waiting w JOIN device_keys k ON k.kid = w.kid"
            " GROUP BY k.device_id",
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def integrity_ok(self) -> bool:
        """SQLite's ``PRAGMA integrity_check``; on PostgreSQL, the log's own invariants
        (``PostgresDialect.integrity_ok``)."""
        with self._op("checking integrity") as db:
            return db.integrity_ok()


def _fetchone(cursor: Cursor) -> Any:
    return cursor.fetchone()


def _fetchall(cursor: Cursor) -> list[Any]:
    return cursor.fetchall()


def _rowcount(cursor: Cursor) -> int:
    return cursor.rowcount


# What callers name in annotations: the one store class.
Store = LedgerStore


def _key_record(row: tuple[Any, ...]) -> DeviceKeyRecord:
    return DeviceKeyRecord(
        bytes(row[0]), row[1], row[2], bytes(row[3]), int(row[4]),
        None if row[5] is None else int(row[5]), int(row[6]),
        None if row[7] is None else int(row[7]), None if row[8] is None else int(row[8]),
    )  # fmt: skip


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
