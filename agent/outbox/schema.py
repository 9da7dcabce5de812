"""Outbox schema and its explicit, numbered migrations (``PRAGMA user_version``).

Tables are STRICT (SQLite ≥ 3.37) so a wrong type is an error, not a silent
conversion. Triggers make the promises of the design enforceable by the
database itself: a signed envelope is never rewritten, and an event that the
ledger has not acknowledged is never deleted.

Add a migration by appending to ``MIGRATIONS``; never edit a released one.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from custody.errors import StorageError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_V1 = """
CREATE TABLE events (
    id             INTEGER PRIMARY KEY,          -- local insertion order
    kid            BLOB    NOT NULL,             -- device key id (COSE kid)
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    event_id       BLOB    NOT NULL UNIQUE,      -- SHA-256 of the COSE bytes
    prev           BLOB    NOT NULL,
    type           TEXT    NOT NULL,
    device_time_ms INTEGER NOT NULL,
    time_quality   TEXT    NOT NULL,
    boot           INTEGER NOT NULL,
    manual         INTEGER NOT NULL DEFAULT 0,
    envelope       BLOB    NOT NULL,             -- the signed COSE_Sign1, verbatim
    state          TEXT    NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'sent', 'acked', 'rejected')),
    state_ms       INTEGER NOT NULL,
    reject_reason  TEXT,
    UNIQUE (kid, seq)
) STRICT;
CREATE INDEX events_state ON events (state, id);

-- Clear mass values and blindings, for the operator's screen and `events verify`.
CREATE TABLE openings (
    event_id BLOB    NOT NULL REFERENCES events (event_id),
    field    TEXT    NOT NULL,
    value    INTEGER NOT NULL,
    blinding BLOB    NOT NULL,
    PRIMARY KEY (event_id, field)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;

CREATE TABLE alarms (
    id         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    raised_ms  INTEGER NOT NULL,
    cleared_ms INTEGER
) STRICT;

CREATE TRIGGER events_signed_fields_immutable
BEFORE UPDATE OF kid, seq, event_id, prev, envelope ON events
BEGIN
    SELECT RAISE(ABORT, 'signed events are immutable');
END;

CREATE TRIGGER events_unacked_never_deleted
BEFORE DELETE ON events WHEN OLD.state != 'acked'
BEGIN
    SELECT RAISE(ABORT, 'an event the ledger has not acknowledged is never deleted');
END;

CREATE TRIGGER openings_immutable
BEFORE UPDATE ON openings
BEGIN
    SELECT RAISE(ABORT, 'openings are immutable');
END;
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: Database) -> int:
    """Apply pending migrations, each in its own transaction; return the version."""
    conn = db.conn
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"outbox schema version {current} is newer than this software ({SCHEMA_VERSION})"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies contain ';')."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
