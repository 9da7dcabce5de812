"""The outbox database: opening, checking, quarantining, and reading it.

Theory of operation. The outbox is one SQLite file in WAL mode with
``synchronous=FULL``: a transaction is on the platter when COMMIT returns
(SQLite "WAL mode ... synchronous=FULL ... durable"), which is the moment a
capture may be reported as taken. Writes go through ``OutboxWriter`` only
(one writer thread per process; several processes serialise on SQLite's write
lock with ``BEGIN IMMEDIATE``); this module opens, checks and reads.

At open, the file is checked (``PRAGMA integrity_check`` or ``quick_check``).
A file that fails, or is not a database at all, is *renamed aside* into
``quarantine/`` together with its WAL, never deleted; a new file is started and
every event that can still be read from the old one and verifies is copied
over (``salvage``), so the chain continues from its last readable head. An
alarm records what happened.

sqlite3 exceptions are translated here, once, into the custody error tree.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.outbox.lifecycle import UNACKED, RecordState
from agent.outbox.schema import migrate
from custody.errors import (
    CorruptDatabaseError,
    CustodyError,
    DiskFullError,
    NotInitialisedError,
    StorageError,
)
from custody.files import move_file

__all__ = [
    "EVENT_COLUMNS",
    "OpenReport",
    "Outbox",
    "StoredEvent",
    "connect",
    "raise_alarm",
    "translate_sqlite_errors",
]

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
BUSY_TIMEOUT_MS = 10_000

# ``state IN (?, ?)`` for the unsettled states, bound to ``UNACKED`` (the lifecycle table
# owns the names).
_UNACKED_SQL = "(" + ", ".join("?" * len(UNACKED)) + ")"


@contextlib.contextmanager
def translate_sqlite_errors(what: str) -> Iterator[None]:
    """Map sqlite3/OS errors to the custody tree (STYLE.md §5)."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL or "disk is full" in str(exc):
            raise DiskFullError(
                f"{what}: the disk is full; nothing in this write was kept"
            ) from exc
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in str(exc):
            raise CorruptDatabaseError(f"{what}: database is corrupt: {exc}") from exc
        raise StorageError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"{what}: {exc.strerror or exc}") from exc


def connect(path: Path) -> sqlite3.Connection:
    """A connection with our pragmas; autocommit mode, explicit transactions."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"{path}: cannot switch to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every commit
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    kid: bytes
    seq: int
    event_id: bytes
    prev: bytes
    type: str
    device_time_ms: int
    time_quality: str
    boot: int
    manual: bool
    envelope: bytes
    state: RecordState
    state_ms: int
    reject_reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[Any, ...]) -> StoredEvent:
        (id_, kid, seq, event_id, prev, type_, t, tq, boot, manual, env, state, sms, reason) = row
        return cls(
            id_, kid, seq, event_id, prev, type_, t, tq, boot, bool(manual), env,
            RecordState(state), sms, reason,
        )  # fmt: skip


EVENT_COLUMNS = (
    "id, kid, seq, event_id, prev, type, device_time_ms, time_quality, boot, manual, "
    "envelope, state, state_ms, reject_reason"
)


@dataclass(frozen=True, slots=True)
class OpenReport:
    """What happened when the outbox was opened."""

    quarantined: Path | None = None
    reason: str | None = None
    salvaged: int = 0


class Outbox:
    """An open outbox database (reads; writes go through ``OutboxWriter``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, report: OpenReport) -> None:
        self.path = path
        self.conn = conn
        self.report = report

    # --- opening -----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        *,
        check: str | None = "integrity",
        salvage_verify: Callable[[bytes, bytes], bool] | None = None,
        create: bool = True,
    ) -> Outbox:
        """Open (creating if asked), check, quarantine if corrupt, migrate.

        ``check=None`` skips the start-up check and never quarantines: read-only
        commands must not rename files under a running gateway service.

        ``salvage_verify(kid, envelope)`` decides which events of a quarantined
        file are copied into the new one (only ones that still verify).
        """
        report = OpenReport()
        if path.exists():
            problem = None if check is None else _check(path, check)
            if problem is not None:
                moved = _quarantine(path)
                salvaged = _salvage(moved, path, salvage_verify) if salvage_verify else 0
                report = OpenReport(moved, problem, salvaged)
        elif not create:
            raise NotInitialisedError(f"{path}: no outbox here (run `custody-agent init`)")
        with translate_sqlite_errors(f"opening {path}"):
            conn = connect(path)
            migrate(Database(conn))
        outbox = cls(path, conn, report)
        if report.quarantined is not None:
            outbox.raise_alarm(
                "outbox_quarantined",
                f"{path.name} failed its check ({report.reason}); moved to "
                f"{report.quarantined}; {report.salvaged} event(s) salvaged",
            )
        return outbox

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    # --- reads ---------------------------------------------------------------------
    def head(self, kid: bytes) -> tuple[int, bytes] | None:
        with translate_sqlite_errors("reading the chain head"):
            row = self.conn.execute(
                "SELECT seq, event_id FROM events WHERE kid = ? ORDER BY seq DESC LIMIT 1", (kid,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def events(
        self,
        *,
        state: RecordState | None = None,
        kid: bytes | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(str(state))
        if kid is not None:
            where.append("kid = ?")
            args.append(kid)
        sql = f"SELECT {EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with translate_sqlite_errors("listing events"):
            return [StoredEvent.from_row(r) for r in self.conn.execute(sql, args)]

    def iter_chain(self, kid: bytes) -> Iterator[StoredEvent]:
        """A key's events in seq order, streamed (for verification and export)."""
        with translate_sqlite_errors("reading the chain"):
            cur = self.conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE kid = ? ORDER BY seq", (kid,)
            )
            for row in cur:
                yield StoredEvent.from_row(row)

    def chain_between(self, kid: bytes, after_seq: int, upto_seq: int) -> list[StoredEvent]:
        """A key's events with ``after_seq < seq <= upto_seq``, in seq order."""
        with translate_sqlite_errors("reading the chain"):
            rows = self.conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE kid = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq",
                (kid, after_seq, upto_seq),
            )
            return [StoredEvent.from_row(r) for r in rows]

    def of_type(
        self, kid: bytes, type_: str, *, newest_first: bool = False, limit: int | None = None
    ) -> list[StoredEvent]:
        """A key's events of one type, in seq order (or newest first), at most ``limit``.

        Newest first with a limit walks the (kid, seq) index back from the head, so finding
        the latest checkpoint costs the records since it, not the whole chain.
        """
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE kid = ? AND type = ? ORDER BY seq {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with translate_sqlite_errors("reading events by type"):
            rows = self.conn.execute(sql, (kid, type_))
            return [StoredEvent.from_row(r) for r in rows]

    def kids(self) -> list[bytes]:
        """Device key ids with events here, oldest key first."""
        with translate_sqlite_errors("listing keys"):
            rows = self.conn.execute("SELECT kid FROM events GROUP BY kid ORDER BY MIN(id)")
            return [bytes(r[0]) for r in rows]

    def find(self, ref: str) -> StoredEvent | None:
        """An event by hex event id (or a unique prefix of at least 8 hex digits) or seq."""
        with translate_sqlite_errors("finding an event"):
            if ref.isdigit():
                row = self.conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ? ORDER BY id DESC LIMIT 1",
                    (int(ref),),
                ).fetchone()
                return None if row is None else StoredEvent.from_row(row)
            try:
                prefix = bytes.fromhex(ref if len(ref) % 2 == 0 else ref[:-1])
            except ValueError:
                return None
            if len(ref) < 8:
                return None
            rows = self.conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE substr(event_id, 1, ?) = ? LIMIT 2",
                (len(prefix), prefix),
            ).fetchall()
        matches = [StoredEvent.from_row(r) for r in rows if r[3].hex().startswith(ref.lower())]
        return matches[0] if len(matches) == 1 else None

    def openings(self, event_id: bytes) -> dict[str, tuple[int, bytes]]:
        with translate_sqlite_errors("reading openings"):
            rows = self.conn.execute(
                "SELECT field, value, blinding FROM openings WHERE event_id = ?", (event_id,)
            )
            return {str(f): (int(v), bytes(b)) for f, v, b in rows}

    def counts_by_state(self) -> dict[str, int]:
        counts = {str(s): 0 for s in RecordState}
        with translate_sqlite_errors("counting events"):
            for state, n in self.conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state"):
                counts[str(state)] = int(n)
        return counts

    def unacked_by_type(self) -> dict[str, int]:
        """Records the ledger has not settled, by event type."""
        with translate_sqlite_errors("counting unsettled records"):
            rows = self.conn.execute(
                f"SELECT type, COUNT(*) FROM events WHERE state IN {_UNACKED_SQL} "
                "GROUP BY type ORDER BY 1",
                UNACKED,
            ).fetchall()
        return {str(t): int(n) for t, n in rows}

    def rejected_reasons(self) -> dict[str, int]:
        """How many records the ledger refused, by the reason its signed ack gave."""
        with translate_sqlite_errors("counting rejections"):
            rows = self.conn.execute(
                "SELECT COALESCE(reject_reason, '?'), COUNT(*) FROM events "
                "WHERE state = ? GROUP BY 1 ORDER BY 2 DESC, 1",
                (str(RecordState.REJECTED),),
            ).fetchall()
        return {str(reason): int(n) for reason, n in rows}

    def oldest_unacked_ms(self) -> int | None:
        """Local insertion time of the oldest event the ledger has not acknowledged."""
        with translate_sqlite_errors("reading the backlog"):
            row = self.conn.execute(
                f"SELECT MIN(state_ms) FROM events WHERE state IN {_UNACKED_SQL} "
                f"AND id = (SELECT MIN(id) FROM events WHERE state IN {_UNACKED_SQL})",
                (*UNACKED, *UNACKED),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def unacked_count(self, kid: bytes) -> int:
        """Records of ``kid`` the ledger has not settled. Cheap enough for every turn of the
        uplink loop: an index range (events_state), not a GROUP BY over the whole table."""
        with translate_sqlite_errors("counting the backlog"):
            row = self.conn.execute(
                f"SELECT COUNT(*) FROM events WHERE kid = ? AND state IN {_UNACKED_SQL}",
                (kid, *UNACKED),
            ).fetchone()
        return int(row[0])

    def has_unacked(self, kid: bytes) -> bool:
        with translate_sqlite_errors("reading the backlog"):
            row = self.conn.execute(
                f"SELECT 1 FROM events WHERE kid = ? AND state IN {_UNACKED_SQL} LIMIT 1",
                (kid, *UNACKED),
            ).fetchone()
        return row is not None

    def rows_after(self, after_id: int, limit: int) -> list[tuple[int, bytes, str, int, bytes]]:
        """``(id, event_id, type, device_time_ms, envelope)`` of the events with row id above
        ``after_id``, oldest first, at most ``limit``: for readers that page through the
        outbox (the scan index), never holding it all in memory."""
        with translate_sqlite_errors("reading new events"):
            rows = self.conn.execute(
                "SELECT id, event_id, type, device_time_ms, envelope FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [(int(i), bytes(e), str(t), int(ms), bytes(env)) for i, e, t, ms, env in rows]

    def captures_between(
        self, types: tuple[str, ...], start_ms: int, end_ms: int, *, limit: int
    ) -> list[StoredEvent]:
        """Events of ``types`` whose device time is in ``[start_ms, end_ms)``, newest first,
        at most ``limit`` (the status page's "today")."""
        marks = ", ".join("?" * len(types))
        with translate_sqlite_errors("listing captures"):
            rows = self.conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE type IN ({marks}) "
                "AND device_time_ms >= ? AND device_time_ms < ? ORDER BY id DESC LIMIT ?",
                (*types, start_ms, end_ms, int(limit)),
            ).fetchall()
        return [StoredEvent.from_row(r) for r in rows]

    def last_acked_ms(self) -> int | None:
        """When the newest acknowledged record was acknowledged (local time), or None.

        Acks release a chain prefix, so the acked record with the highest row id carries
        the latest ack; the (state, id) index finds it without a scan."""
        with translate_sqlite_errors("reading the last ack"):
            row = self.conn.execute(
                "SELECT state_ms FROM events WHERE state = ? ORDER BY id DESC LIMIT 1",
                (str(RecordState.ACKED),),
            ).fetchone()
        return None if row is None else int(row[0])

    def usage_bytes(self) -> int:
        """Bytes on disk: the database, its WAL and shared-memory file."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # --- meta and alarms -----------------------------------------------------------------
    def meta(self, key: str) -> Any:
        with translate_sqlite_errors("reading meta"):
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def next_boot(self) -> int:
        """Increment and return the boot counter, durably, in one transaction.

        It never goes backwards: after a quarantine it continues from the
        highest boot counter found in salvaged events.
        """
        with translate_sqlite_errors("incrementing the boot counter"):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                row = self.conn.execute(
                    "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'boot_counter'), 0),"
                    " COALESCE((SELECT MAX(boot) FROM events), 0))"
                ).fetchone()
                boot = int(row[0]) + 1
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('boot_counter', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (boot,),
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return boot

    def boot_counter(self) -> int:
        value = self.meta("boot_counter")
        return int(value) if value is not None else 0

    def raise_alarm(self, kind: str, message: str) -> bool:
        """Record an alarm unless one of this kind is already active; True if new."""
        return raise_alarm(self.conn, kind, message)

    def clear_alarm(self, kind: str) -> None:
        with translate_sqlite_errors("clearing an alarm"):
            self.conn.execute(
                "UPDATE alarms SET cleared_ms = ? WHERE kind = ? AND cleared_ms IS NULL",
                (_now_ms(), kind),
            )

    def active_alarms(self) -> list[dict[str, Any]]:
        with translate_sqlite_errors("reading alarms"):
            rows = self.conn.execute(
                "SELECT kind, message, raised_ms FROM alarms WHERE cleared_ms IS NULL ORDER BY id"
            ).fetchall()
        return [{"kind": k, "message": m, "raised_ms": t} for k, m, t in rows]

    def integrity_ok(self) -> bool:
        with translate_sqlite_errors("checking integrity"):
            rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        return [r[0] for r in rows] == ["ok"]


def raise_alarm(conn: sqlite3.Connection, kind: str, message: str) -> bool:
    """Insert an alarm unless one of ``kind`` is active (one statement, autocommit)."""
    with translate_sqlite_errors("raising an alarm"):
        cur = conn.execute(
            "INSERT INTO alarms (kind, message, raised_ms) SELECT ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM alarms WHERE kind = ? AND cleared_ms IS NULL)",
            (kind, message, _now_ms(), kind),
        )
    return cur.rowcount == 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check(path: Path, check: str) -> str | None:
    """None when the file is a healthy database, else a one-line reason."""
    pragma = "quick_check" if check == "quick" else "integrity_check"
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        result = [str(r[0]) for r in rows]
        if result != ["ok"]:
            return f"{pragma}: {'; '.join(result[:3])}"
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"{pragma}: {exc}"
    finally:
        conn.close()
    return None


def _quarantine(path: Path) -> Path:
    """Rename the database and its WAL/SHM aside, keeping their pairing; never delete."""
    qdir = path.parent / "quarantine"
    qdir.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = qdir / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while target.exists():
        n += 1
        target = qdir / f"{path.stem}-{stamp}-{n}{path.suffix}"
    for suffix in ("-wal", "-shm", ""):  # main file last: a crash leaves no lone WAL
        src = Path(f"{path}{suffix}")
        if src.exists():
            move_file(src, Path(f"{target}{suffix}"))  # durable before the next one moves
    return target


def _salvage(old: Path, new: Path, verify: Callable[[bytes, bytes], bool]) -> int:
    """Copy every readable, verifying event (and its openings) into a fresh outbox."""
    rows: list[tuple[Any, ...]] = []
    openings: list[tuple[Any, ...]] = []
    try:
        src = sqlite3.connect(f"file:{old}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return 0
    try:
        rows = _read_in_chunks(src, f"SELECT {EVENT_COLUMNS} FROM events")
        # openings is WITHOUT ROWID: read it whole, or not at all.
        with contextlib.suppress(sqlite3.Error):
            openings = src.execute(
                "SELECT event_id, field, value, blinding FROM openings"
            ).fetchall()
    finally:
        src.close()
    rows.sort(key=lambda r: (bytes(r[1]), r[2]))
    good = [r for r in rows if _verifies(verify, r[1], r[10])]
    if not good:
        return 0
    good_ids = {bytes(r[3]) for r in good}
    try:
        conn = connect(new)
        migrate(Database(conn))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
            [(None, *r[1:]) for r in good],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO openings (event_id, field, value, blinding) VALUES (?, ?, ?, ?)",
            [o for o in openings if bytes(o[0]) in good_ids],
        )
        conn.execute("COMMIT")
        conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"salvaging {old} into {new}: {exc}") from exc
    return len(good)


def _read_in_chunks(src: sqlite3.Connection, select: str) -> list[tuple[Any, ...]]:
    """Read a table by rowid ranges, skipping ranges that hit corrupt pages.

    Range scans walk the table b-tree by rowid and need no index, so a damaged
    index or a few damaged pages cost only the rows they hold.
    """
    try:
        hi = int(src.execute("SELECT MAX(rowid) FROM events").fetchone()[0] or 0)
    except sqlite3.Error:
        hi = 1 << 20  # the root page is unreadable: probe a generous range anyway
    rows: list[tuple[Any, ...]] = []
    step = 64
    for lo in range(0, hi + 1, step):
        with contextlib.suppress(sqlite3.Error):
            rows += src.execute(
                f"{select} WHERE rowid >= ? AND rowid < ?", (lo, lo + step)
            ).fetchall()
    return rows


def _verifies(verify: Callable[[bytes, bytes], bool], kid: Any, envelope: Any) -> bool:
    try:
        return verify(bytes(kid), bytes(envelope))
    except CustodyError:
        return False
