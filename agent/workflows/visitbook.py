"""The weighbridge visit book: open visits, stored tares and occupancy, in SQLite.

A small database next to the outbox (``weighbridge.sqlite``), owned by the weighbridge workflow.
It is a projection of the outbox, never a second truth; ``agent.workflows.visits`` documents how it
is kept in step. It reads the outbox only through ``Outbox`` methods; its own SQLite connection is
the one exception to "SQLite lives in agent/outbox" that tests/test_layout.py names.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.outbox import Outbox, StoredEvent
from custody.errors import StorageError
from custody.event import EventType

__all__ = ["BOOK_FILE", "MAX_PENDING_SEALS", "OpenVisit", "Pending", "StoredTare", "VisitBook"]

BOOK_FILE = "weighbridge.sqlite"
MAX_PENDING_SEALS = 1000  # custody.event MAX_LIST: a weighing carries at most this many seals
CATCH_UP_PAGE = 500  # outbox rows read per query while catching up


@dataclass(frozen=True, slots=True)
class OpenVisit:
    vehicle: str
    inbound: bytes  # event id of the pass-in weighing
    units: int
    seals: tuple[str, ...]
    at_ms: int


@dataclass(frozen=True, slots=True)
class StoredTare:
    vehicle: str
    units: int
    event_id: bytes
    at_ms: int


@dataclass(frozen=True, slots=True)
class Pending:
    """What is known about the vehicle on (or about to drive on) the bridge."""

    vehicle: str | None = None
    source: str | None = None  # rfid | scan | manual
    seals: tuple[str, ...] = ()
    captured: bool = False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_visits (
    vehicle   TEXT    PRIMARY KEY,
    inbound   BLOB    NOT NULL UNIQUE,
    units     INTEGER NOT NULL,
    seals     TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tares (
    vehicle   TEXT    PRIMARY KEY,
    units     INTEGER NOT NULL,
    event_id  BLOB    NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS pending (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    vehicle   TEXT,
    source    TEXT,
    seals     TEXT    NOT NULL,
    captured  INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS book_meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;
INSERT OR IGNORE INTO pending (id, vehicle, source, seals, captured)
    VALUES (1, NULL, NULL, '[]', 0);
"""


class VisitBook:
    """Open visits, stored tares and the current occupancy, durable (module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Same durability as the outbox (agent.outbox.store): WAL, fsync at COMMIT.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: cannot open the weighbridge visit book: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {what}: {exc}") from exc

    # --- reads --------------------------------------------------------------------------
    def open_visit(self, vehicle: str) -> OpenVisit | None:
        row = self._db.execute(
            "SELECT vehicle, inbound, units, seals, at_ms FROM open_visits WHERE vehicle = ?",
            (vehicle,),
        ).fetchone()
        return None if row is None else _visit(row)

    def open_visits(self) -> list[OpenVisit]:
        rows = self._db.execute(
            "SELECT vehicle, inbound, units, seals, at_ms FROM open_visits ORDER BY at_ms"
        )
        return [_visit(r) for r in rows]

    def stored_tare(self, vehicle: str) -> StoredTare | None:
        row = self._db.execute(
            "SELECT vehicle, units, event_id, at_ms FROM tares WHERE vehicle = ?", (vehicle,)
        ).fetchone()
        return None if row is None else StoredTare(row[0], row[1], bytes(row[2]), row[3])

    def pending(self) -> Pending:
        vehicle, source, seals, captured = self._db.execute(
            "SELECT vehicle, source, seals, captured FROM pending WHERE id = 1"
        ).fetchone()
        return Pending(vehicle, source, tuple(json.loads(seals)), bool(captured))

    def applied_id(self) -> int:
        row = self._db.execute("SELECT value FROM book_meta WHERE key = 'applied_id'").fetchone()
        return int(row[0]) if row is not None else 0

    # --- occupancy -----------------------------------------------------------------------
    def set_vehicle(self, vehicle: str, source: str) -> None:
        with self._tx("setting the vehicle") as c:
            c.execute("UPDATE pending SET vehicle = ?, source = ? WHERE id = 1", (vehicle, source))

    def add_seal(self, seal: str) -> bool:
        """Attach a scanned seal to the current visit; False when already attached."""
        with self._tx("adding a seal") as c:
            seals = json.loads(c.execute("SELECT seals FROM pending WHERE id = 1").fetchone()[0])
            if seal in seals or len(seals) >= MAX_PENDING_SEALS:
                return False
            seals.append(seal)
            c.execute("UPDATE pending SET seals = ? WHERE id = 1", (json.dumps(seals),))
        return True

    def vehicle_off(self) -> None:
        """The vehicle drove off: forget its id; seals stay unless a capture took them."""
        with self._tx("ending the occupancy") as c:
            c.execute("UPDATE pending SET vehicle = NULL, source = NULL, captured = 0 WHERE id = 1")

    # --- the projection of the outbox ------------------------------------------------------
    def apply(self, stored: StoredEvent, body: dict[str, Any], clear: dict[str, int]) -> None:
        """Apply one durable weighbridge weighing (``body`` signed, ``clear`` its masses)."""
        with self._tx("applying a weighing") as c:
            _apply(c, stored, body, clear)
            c.execute(
                "INSERT INTO book_meta (key, value) VALUES ('applied_id', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (stored.id,),
            )

    def catch_up(
        self, outbox: Outbox, decode: Callable[[StoredEvent], dict[str, Any] | None]
    ) -> int:
        """Apply weighings durable in the outbox since ``applied_id``; return how many.

        ``decode`` returns a weighbridge weighing's verified body, None for any other event.
        """
        applied = 0
        after = self.applied_id()
        while rows := outbox.rows_after(after, CATCH_UP_PAGE):
            after = rows[-1][0]
            for _row_id, event_id, type_, _ms, _env in rows:
                if type_ != EventType.WEIGHING:
                    continue
                stored = outbox.find(event_id.hex())
                body = None if stored is None else decode(stored)
                if stored is None or body is None:
                    continue
                clear = {k: v for k, (v, _) in outbox.openings(stored.event_id).items()}
                self.apply(stored, body, clear)
                applied += 1
        return applied


def _visit(row: tuple[Any, ...]) -> OpenVisit:
    return OpenVisit(row[0], bytes(row[1]), row[2], tuple(json.loads(row[3])), row[4])


def _upsert_tare(c: sqlite3.Connection, vehicle: str, units: int, eid: bytes, at: int) -> None:
    c.execute(
        "INSERT INTO tares (vehicle, units, event_id, at_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (vehicle) DO UPDATE SET units = excluded.units, "
        "event_id = excluded.event_id, at_ms = excluded.at_ms",
        (vehicle, units, eid, at),
    )


def _apply(
    c: sqlite3.Connection, stored: StoredEvent, body: dict[str, Any], clear: dict[str, int]
) -> None:
    if "outcome" in body:
        return
    stage, vehicle = body.get("pass"), body.get("vehicle")
    seals = list(body.get("seals", []))
    if stage == "in" and vehicle is not None:
        c.execute(
            "INSERT OR REPLACE INTO open_visits (vehicle, inbound, units, seals, at_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (vehicle, stored.event_id, clear["gross"], json.dumps(seals), stored.device_time_ms),
        )
    elif stage == "out" and vehicle is not None:
        c.execute("DELETE FROM open_visits WHERE inbound = ?", (body.get("inbound"),))
        _upsert_tare(c, vehicle, clear["tare"], stored.event_id, stored.device_time_ms)
    # The capture consumed the seals scanned so far (they are in its signed body).
    remaining = [s for s in _pending_seals(c) if s not in seals]
    c.execute("UPDATE pending SET captured = 1, seals = ? WHERE id = 1", (json.dumps(remaining),))


def _pending_seals(c: sqlite3.Connection) -> list[str]:
    return list(json.loads(c.execute("SELECT seals FROM pending WHERE id = 1").fetchone()[0]))
