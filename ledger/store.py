"""The ledger's store (SQLite): registry, logged events, clear masses, the log state.

One file, WAL, ``synchronous=FULL``, STRICT tables, numbered migrations. The
intake pipeline writes one device batch per ``BEGIN IMMEDIATE`` transaction:
the events, their opened masses, the device's chain head and the log's
compact range all move together, so a crash leaves either the whole batch or
none of it, and the log never has a gap or a duplicate (``event_id`` and
``(kid, seq)`` are unique; ``log_index`` is the leaf's position).

Triggers make logged events immutable and undeletable. PostgreSQL (for several
intake workers, issue 4) will implement the same ``LedgerStore`` methods.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from custody.errors import StorageError
from custody.merkle import CompactRange

__all__ = ["DeviceKeyRecord", "LedgerStore", "LoggedEvent", "Store"]

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


@dataclass(frozen=True, slots=True)
class DeviceKeyRecord:
    kid: bytes
    device_id: str
    site_id: str
    public_key: bytes
    enrolled_ms: int
    revoked_ms: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    log_index: int
    event_id: bytes
    kid: bytes
    seq: int
    device_id: str
    type: str
    envelope: bytes


class Store(Protocol):
    """What a ledger store offers: ``LedgerStore`` (SQLite) and ``PostgresLedgerStore``.

    The chain-and-log methods are called inside ``transaction()``. A
    transaction serialises log appends: whatever ``log_range()`` returns inside
    it is the current log, and no other writer can append until it commits.
    Errors of the database library surface as ``StorageError``.
    """

    def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[object]: ...
    def enroll(self, device_id: str, site_id: str, public_key: bytes, kid: bytes) -> None: ...
    def revoke(self, device_id: str) -> int: ...
    def key(self, kid: bytes) -> DeviceKeyRecord | None: ...
    def device_keys(self) -> list[DeviceKeyRecord]: ...
    def head(self, kid: bytes) -> tuple[int, bytes]: ...
    def event_id_at(self, kid: bytes, seq: int) -> bytes | None: ...
    def log_range(self) -> CompactRange: ...
    def append_event(
        self,
        log: CompactRange,
        *,
        event_id: bytes,
        kid: bytes,
        seq: int,
        device_id: str,
        type_: str,
        device_time_ms: int,
        envelope: bytes,
        masses: dict[str, int],
        leaf_hash: bytes,
    ) -> int: ...
    def save_log(self, log: CompactRange) -> None: ...
    def wait(self, kid: bytes, seq: int, envelope: bytes) -> None: ...
    def waiting_count(self, kid: bytes) -> int: ...
    def take_waiting(self, kid: bytes, seq: int) -> bytes | None: ...
    def drop_waiting_through(self, kid: bytes, seq: int) -> None: ...
    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str,
    ) -> None: ...  # fmt: skip
    def log_size(self) -> int: ...
    def events(self, device_id: str | None = None) -> list[LoggedEvent]: ...
    def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...
    def masses(self, event_id: bytes) -> dict[str, int]: ...
    def rejections(self) -> list[tuple[str, int | None, str]]: ...
    def integrity_ok(self) -> bool: ...
    def add_checkpoint(self, size: int, time_ms: int, root: bytes, signed: bytes) -> None: ...
    def latest_checkpoint(self) -> bytes | None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LedgerStore:
    """The SQLite ledger store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10
            )
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if int(self.conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
                self.conn.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = 1; COMMIT;"
                )
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: cannot open the ledger store: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"ledger store: {exc}") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # --- registry --------------------------------------------------------------------
    def enroll(self, device_id: str, site_id: str, public_key: bytes, kid: bytes) -> None:
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (kid, device_id, site_id, public_key, _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"key {kid.hex()} is already enrolled") from exc

    def revoke(self, device_id: str) -> int:
        with self.transaction() as c:
            return c.execute(
                "UPDATE device_keys SET revoked_ms = ? WHERE device_id = ? AND revoked_ms IS NULL",
                (_now_ms(), device_id),
            ).rowcount

    def key(self, kid: bytes) -> DeviceKeyRecord | None:
        row = self.conn.execute(
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms "
            "FROM device_keys WHERE kid = ?",
            (kid,),
        ).fetchone()
        return None if row is None else DeviceKeyRecord(*row)

    def device_keys(self) -> list[DeviceKeyRecord]:
        rows = self.conn.execute(
            "SELECT kid, device_id, site_id, public_key, enrolled_ms, revoked_ms "
            "FROM device_keys ORDER BY enrolled_ms, kid"
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

    def append_event(
        self,
        log: CompactRange,
        *,
        event_id: bytes,
        kid: bytes,
        seq: int,
        device_id: str,
        type_: str,
        device_time_ms: int,
        envelope: bytes,
        masses: dict[str, int],
        leaf_hash: bytes,
    ) -> int:
        """Append one verified event; returns its log index (call inside a transaction)."""
        index = log.size
        self.conn.execute(
            "INSERT INTO events (log_index, event_id, kid, seq, device_id, type, device_time_ms,"
            " received_ms, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (index, event_id, kid, seq, device_id, type_, device_time_ms, _now_ms(), envelope),
        )
        self.conn.executemany(
            "INSERT INTO masses (event_id, field, value) VALUES (?, ?, ?)",
            [(event_id, f, v) for f, v in masses.items()],
        )
        self.conn.execute(
            "INSERT INTO heads (kid, seq, event_id) VALUES (?, ?, ?) ON CONFLICT (kid) "
            "DO UPDATE SET seq = excluded.seq, event_id = excluded.event_id",
            (kid, seq, event_id),
        )
        log.append_hash(leaf_hash)
        return index

    def save_log(self, log: CompactRange) -> None:
        self.conn.execute(
            "INSERT INTO log_state (id, size, root, range_) VALUES (1, ?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET size = excluded.size, root = excluded.root, range_ = excluded.range_",
            (log.size, log.root(), log.to_bytes()),
        )

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

    def record_rejection(
        self, device_id: str, kid: bytes | None, seq: int | None, event_id: bytes | None,
        reason: str,
    ) -> None:  # fmt: skip
        self.conn.execute(
            "INSERT INTO rejections (device_id, kid, seq, event_id, reason, received_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, kid, seq, event_id, reason, _now_ms()),
        )

    # --- reads -----------------------------------------------------------------------------
    def log_size(self) -> int:
        row = self.conn.execute("SELECT size FROM log_state WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def events(self, device_id: str | None = None) -> list[LoggedEvent]:
        sql = "SELECT log_index, event_id, kid, seq, device_id, type, envelope FROM events"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        rows = self.conn.execute(sql + " ORDER BY log_index", args)
        return [
            LoggedEvent(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], bytes(r[6])) for r in rows
        ]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        from custody.merkle import leaf_hash

        rows = self.conn.execute(
            "SELECT event_id FROM events WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, end),
        )
        return [leaf_hash(bytes(r[0])) for r in rows]

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
