"""The ledger store's SQLite dialect: one file, the default store (``ledger.store``).

WAL, ``synchronous=FULL`` (a batch is acked right after its commit, so the commit
must be on disk), foreign keys on, autocommit mode with explicit transactions. The
sequencer lock is SQLite's write lock: ``BEGIN IMMEDIATE`` takes it at the start of
a transaction, so the log state, chain heads and waiting records read inside it are
the current ones and no other writer (thread or process) appends until the commit.
A transaction opened again by the thread whose transaction is open is a savepoint
of it, as a nested transaction is in PostgreSQL; another thread sharing the
connection is refused (one writer per connection), not queued.

The schema version is ``PRAGMA user_version``. ``sqlite3`` errors become the typed
storage errors here (STYLE.md §5), with the same result codes as the outbox's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from custody.errors import CorruptDatabaseError, DiskFullError, StorageError
from ledger.schema import Migration

__all__ = ["SqliteDialect"]

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
# How long a writer waits for another process's write lock before its error.
_BUSY_TIMEOUT_S = 10


class SqliteDialect:
    """A SQLite ledger file at ``path``."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    duplicate: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"SQLite {path}"
        # Threads are not serialised: the one holding a transaction nests in it, others fail.
        self.lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        self._tx_thread: int | None = None  # the thread whose transaction is open
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the ledger store is not open")
        return self._conn

    def open(self) -> None:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_S
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def revive(self) -> None:
        """Nothing to do: a file does not go away under its connection."""

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def storage_error(self, message: str, exc: Exception) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL or "disk is full" in str(exc):
            return DiskFullError(f"{message}: the disk is full: {exc}")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in str(exc):
            return CorruptDatabaseError(f"{message}: the database is corrupt: {exc}")
        return StorageError(f"{message}: {exc}")

    # --- schema ------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrating(self) -> contextlib.AbstractContextManager[None]:
        return self.transaction()

    def apply(self, migration: Migration) -> None:
        for statement in statements(migration.sqlite):
            self.conn.execute(statement)
        self.conn.execute(f"PRAGMA user_version = {int(migration.version)}")

    # --- statements and transactions ---------------------------------------------------
    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; a savepoint inside this thread's own."""
        conn = self.conn
        me = threading.get_ident()
        if self._tx_thread == me:
            conn.execute("SAVEPOINT nested")
            try:
                yield
            except BaseException:
                if conn.in_transaction:  # see below
                    conn.execute("ROLLBACK TO nested")
                    conn.execute("RELEASE nested")
                raise
            conn.execute("RELEASE nested")
            return
        conn.execute("BEGIN IMMEDIATE")
        self._tx_thread = me
        try:
            try:
                yield
            except BaseException:
                # SQLite rolls the whole transaction back itself after some errors (a full
                # disk, an I/O error): a ROLLBACK then would fail and hide the error.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                # A deferred foreign key (a key naming no logged registry entry) fails here.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            self._tx_thread = None

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Several statements as one: SQLite has only the one kind of write transaction."""
        return self.transaction()

    def integrity_ok(self) -> bool:
        return [r[0] for r in self.conn.execute("PRAGMA integrity_check")] == ["ok"]


def statements(script: str) -> list[str]:
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
