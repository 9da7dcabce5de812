"""The ledger store's PostgreSQL dialect: the scale-out store several intake workers share.

Theory of operation. Each intake worker (ARCHITECTURE.md "Scale beyond one machine")
opens its own ``LedgerStore`` on the same database. PostgreSQL is the single
sequencer of log positions: a transaction is READ COMMITTED and, before anything
else, locks the one ``log_state`` row (``SELECT ... FOR UPDATE``). Appends are
therefore made by one writer at a time, in commit order; because every later
statement of a READ COMMITTED transaction reads the latest committed data, the
compact range, chain heads and waiting records read after the lock are the current
ones, so a log position is never assigned twice and a device key's chain is extended
by one worker at a time. Reads outside a transaction see the last committed state.

The schema is created on first open, and an older one migrated, inside one
transaction holding an advisory lock, so workers that start together do not race;
``ledger_schema`` records its version (``ledger.schema``).

A lost connection is not retried within an operation: the error stops it, the next
operation opens a new session once the server answers, and the broker redelivers
what was not PUBACKed (STYLE.md §8). One dialect object is one connection; threads
may share it (the store serialises them for a whole transaction with ``lock``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from custody.errors import DecodeError, StorageError
from custody.merkle import CompactRange
from ledger.schema import Migration

__all__ = ["PostgresDialect"]

# pg_advisory_xact_lock key guarding schema creation ("custody" + 0x01, a positive bigint).
_SCHEMA_LOCK = int.from_bytes(b"custody\x01", "big")


class PostgresDialect:
    """PostgreSQL at ``dsn``, a libpq connection string or URL."""

    name = "PostgreSQL"  # never the DSN in messages: it may hold a password
    errors: tuple[type[Exception], ...] = (psycopg.Error,)
    duplicate: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.lock: contextlib.AbstractContextManager[object] = threading.RLock()
        self._conn: psycopg.Connection[TupleRow] | None = None

    @property
    def conn(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None:
            raise psycopg.InterfaceError("the ledger store is not open")
        return self._conn

    def open(self) -> None:
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
        self._conn = conn

    def revive(self) -> None:
        """The server restarted or the network dropped: a new session, once the server
        answers again (the failed transaction was rolled back by it)."""
        if self._conn is None or self._conn.broken or self._conn.closed:
            self.open()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()

    def storage_error(self, message: str, exc: Exception) -> StorageError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageError(f"{message}: {detail}")

    # --- schema ------------------------------------------------------------------------
    def schema_version(self) -> int:
        # A scan of pg_class under the statement's snapshot, not to_regclass: that looks
        # the name up in the session's catalog cache, which can still hold "no such table"
        # from a look before the lock while another worker created the schema.
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'ledger_schema' AND n.nspname = ANY (current_schemas(false)))"
        ).fetchone()
        if row is None or not row[0]:
            return 0
        found = self.conn.execute("SELECT max(version) FROM ledger_schema").fetchone()
        return -1 if found is None or found[0] is None else int(found[0])

    @contextlib.contextmanager
    def migrating(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            yield

    def apply(self, migration: Migration) -> None:
        # No parameters: one multi-statement simple query per step.
        self.conn.execute(migration.postgresql)
        self.conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (migration.version,))
        if migration.version == 1:
            self._insert_empty_log()

    def _insert_empty_log(self) -> None:
        empty = CompactRange()
        self.conn.execute(
            "INSERT INTO log_state (id, size, root, range_) VALUES (1, 0, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (empty.root(), empty.to_bytes()),
        )

    # --- statements and transactions ---------------------------------------------------
    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor[TupleRow]:
        return self.conn.execute(_placeholders(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self.conn.cursor() as cur:  # pipelines the rows
            cur.executemany(_placeholders(sql), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction holding the log sequencer lock from its start (nested: a savepoint)."""
        with self.conn.transaction():
            self._lock_sequencer()
            yield

    def _lock_sequencer(self) -> None:
        lock = "SELECT size FROM log_state WHERE id = 1 FOR UPDATE"
        if self.conn.execute(lock).fetchone() is None:
            # Only when someone deleted the row: recreate it (the insert waits for a
            # concurrent one to commit, then does nothing) and lock it.
            self._insert_empty_log()
            if self.conn.execute(lock).fetchone() is None:  # pragma: no cover - just inserted
                raise StorageError("ledger store (PostgreSQL): the log state row is missing")

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """Several statements as one, without the sequencer lock (nested: a savepoint)."""
        return self.conn.transaction()

    def integrity_ok(self) -> bool:
        """The log's invariants hold (SQLite's ``PRAGMA integrity_check`` has no PostgreSQL peer
        without the amcheck extension; the server checks its own pages).

        The logged leaves (events and registry entries) are exactly positions
        0..size-1, each once, the saved compact range is well-formed and matches the
        saved size and root, every device key's events are seq 1..head with the head
        pointing at the last of them, and the registry entries are seq 1..n.
        """
        c = self.conn
        outside = c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with c.transaction():
            if outside:  # one snapshot for the three reads
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            state = c.execute("SELECT size, root, range_ FROM log_state WHERE id = 1").fetchone()
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


def _placeholders(sql: str) -> str:
    """The store writes ``?`` (qmark); psycopg takes ``%s``. No statement of the store holds
    a literal ``?`` or ``%``."""
    return sql.replace("?", "%s")
