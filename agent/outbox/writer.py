"""The one writer of the outbox: assigns seq/prev, signs, and group-commits.

Theory of operation. Producers (workflow threads, the CLI) prepare a ``Draft``
(body with mass commitments and the sealed opening already computed, which is
the expensive part and runs in parallel) and ``submit`` it. One writer thread
takes a batch of drafts from a bounded queue and, in ONE transaction:

1. ``BEGIN IMMEDIATE`` (takes SQLite's write lock, so a second process writing
   the same outbox, e.g. the handheld console beside the service, serialises
   here and seqs stay unique and gapless);
2. reads the chain head (highest seq and its event id) from the database;
3. checks the disk budget and free space (refusing the whole batch at the limit);
4. assigns seq/prev, signs each payload, inserts the event and its openings;
5. ``COMMIT``: with WAL + ``synchronous=FULL`` the batch is fsynced here.

Only then are the producers' futures resolved. A failed batch is rolled back
as a whole and every producer in it gets the error: nobody is ever told a
capture was taken unless it is on disk.

The queue holds at most ``QUEUE_MAX`` drafts; when full, ``submit`` blocks the
producer up to ``submit_timeout`` and then raises ``CaptureError`` (back-
pressure, never an unbounded buffer, never a silent drop).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.outbox.store import StoredEvent, connect, raise_alarm, translate_sqlite_errors
from custody.commitment import Opening
from custody.envelope import EventSigner
from custody.errors import (
    BudgetExceededError,
    CaptureError,
    CustodyError,
    InvalidCaptureError,
    SchemaError,
    StorageError,
)
from custody.event import BODY_SCHEMAS, GENESIS_PREV, DeviceTime, EventType, Payload, next_seq

__all__ = ["ChainMovedError", "DiskBudget", "Draft", "OutboxWriter", "WriterStats"]

QUEUE_MAX = 4096
# Rows carry their id explicitly so a whole batch goes in with one executemany:
# inside BEGIN IMMEDIATE nobody else inserts, and MAX(id)+1 is exactly the rowid
# SQLite would choose itself (https://sqlite.org/autoinc.html, no AUTOINCREMENT).
_INSERT_EVENT = (
    "INSERT INTO events (id, kid, seq, event_id, prev, type, device_time_ms, time_quality, boot, "
    "manual, envelope, state, state_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
)
_INSERT_OPENING = "INSERT INTO openings (event_id, field, value, blinding) VALUES (?, ?, ?, ?)"


class ChainMovedError(CaptureError):
    """A record prepared to follow one chain head found another: nothing was recorded; the
    caller prepares it again."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A capture ready to be sequenced and signed."""

    type: EventType
    body: Mapping[str, Any]
    time: DeviceTime
    openings: Mapping[str, Opening] = field(default_factory=dict)
    # The chain head this record must directly follow (a checkpoint's sums were computed up
    # to it); ``ChainMovedError`` when another process wrote a record in between.
    after: int | None = None

    @property
    def manual(self) -> bool:
        return self.body.get("manual") is True


@dataclass(frozen=True, slots=True)
class DiskBudget:
    """The outbox's disk limits (settings ``outbox.*``)."""

    limit_bytes: int
    alarm_bytes: int
    min_free_bytes: int

    def check(self, used: int, free: int) -> bool:
        """Raise at the limit; return True when the alarm threshold is passed."""
        if used >= self.limit_bytes:
            raise BudgetExceededError(
                f"the outbox uses {used / 2**20:.1f} MiB of its {self.limit_bytes / 2**20:.0f} MiB "
                "budget: new captures are refused until the ledger acknowledges the backlog "
                "(nothing already captured was dropped)"
            )
        if free < self.min_free_bytes:
            raise BudgetExceededError(
                f"only {free / 2**20:.1f} MiB free on the outbox's filesystem "
                f"(minimum {self.min_free_bytes / 2**20:.0f} MiB): new captures are refused"
            )
        return used >= self.alarm_bytes


@dataclass
class WriterStats:
    batches: int = 0
    events: int = 0
    failed_batches: int = 0
    refused_budget: int = 0
    max_batch: int = 0
    unrecorded_alarms: int = 0


@dataclass
class _Request:
    draft: Draft
    future: Future[StoredEvent]


class OutboxWriter:
    """Group-commits drafts into the outbox from one thread."""

    def __init__(
        self,
        path: Path,
        signer: EventSigner,
        *,
        device_id: str,
        site_id: str,
        boot: int,
        budget: DiskBudget,
        batch_max: int = 256,
    ) -> None:
        self.path = path
        self.signer = signer
        self.device_id = device_id
        self.site_id = site_id
        self.boot = boot
        self.budget = budget
        self.batch_max = batch_max
        self.stats = WriterStats()
        self._alarms_due: list[tuple[str, str]] = []
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        with translate_sqlite_errors(f"opening {path} for writing"):
            self._conn = connect(path)

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> OutboxWriter:
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Drain what was submitted, then stop the thread and close the connection."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._conn.close()

    # --- producers -------------------------------------------------------------------------
    def submit(self, draft: Draft, *, submit_timeout: float = 30.0) -> Future[StoredEvent]:
        """Queue a draft; the future resolves once it is durable (or fails)."""
        if self._failed is not None:
            raise StorageError(f"the outbox writer stopped: {self._failed}") from self._failed
        if self._thread is None:
            raise StorageError("the outbox writer is not running")
        try:
            BODY_SCHEMAS[draft.type].validate(dict(draft.body), draft.type)
        except SchemaError as exc:
            raise InvalidCaptureError(f"capture refused: {exc}") from exc
        fut: Future[StoredEvent] = Future()
        try:
            self._queue.put(_Request(draft, fut), timeout=submit_timeout)
        except queue.Full as exc:
            raise CaptureError(
                f"the outbox writer is {QUEUE_MAX} captures behind; capture refused"
            ) from exc
        return fut

    def record(self, draft: Draft, timeout: float | None = 60.0) -> StoredEvent:
        """Submit and wait until durable."""
        return self.submit(draft).result(timeout)

    # --- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                results = self._commit(batch)
            except CustodyError as exc:
                self.stats.failed_batches += 1
                if isinstance(exc, BudgetExceededError):
                    self.stats.refused_budget += len(batch)
                    self._alarms_due.append(("disk_budget", str(exc)))
                for req in batch:
                    req.future.set_exception(exc)
                self._flush_alarms()
                continue
            except BaseException as exc:  # an unexpected bug: fail loudly, stop writing
                self._failed = exc
                for req in batch:
                    req.future.set_exception(StorageError(f"outbox writer crashed: {exc!r}"))
                self._fail_queued(exc)
                raise
            for req, outcome in zip(batch, results, strict=True):
                if isinstance(outcome, CustodyError):
                    req.future.set_exception(outcome)
                else:
                    req.future.set_result(outcome)
            self._flush_alarms()

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(StorageError(f"outbox writer crashed: {exc!r}"))

    def _commit(self, batch: list[_Request]) -> list[StoredEvent | CustodyError]:
        conn = self._conn
        with translate_sqlite_errors("recording captures"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = self._write(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self.stats.batches += 1
        self.stats.events += sum(1 for r in results if not isinstance(r, CustodyError))
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        return results

    def _write(
        self, conn: sqlite3.Connection, batch: list[_Request]
    ) -> list[StoredEvent | CustodyError]:
        used = sum(_size(f"{self.path}{s}") for s in ("", "-wal"))
        st = os.statvfs(self.path.parent)
        if self.budget.check(used, st.f_bavail * st.f_frsize):
            self._alarms_due.append(
                ("disk_budget", f"the outbox uses {used / 2**20:.1f} MiB, past its alarm threshold")
            )
        kid = self.signer.kid
        row = conn.execute(
            "SELECT seq, event_id FROM events WHERE kid = ? ORDER BY seq DESC LIMIT 1", (kid,)
        ).fetchone()
        seq, prev = (0, GENESIS_PREV) if row is None else (int(row[0]), bytes(row[1]))
        next_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0])
        now_ms = time.time_ns() // 1_000_000
        results: list[StoredEvent | CustodyError] = []
        event_rows: list[tuple[Any, ...]] = []
        opening_rows: list[tuple[bytes, str, int, bytes]] = []
        for req in batch:
            d = req.draft
            if d.after is not None and d.after != seq:
                results.append(ChainMovedError(
                    f"the chain moved from seq {d.after} to {seq} while the record was prepared"
                ))  # fmt: skip
                continue
            following = next_seq(seq, d.type)
            try:
                payload = Payload(
                    self.device_id, self.site_id, following, prev, d.time, self.boot, d.type,
                    d.body,
                )  # fmt: skip
                env = self.signer.sign(payload)
            except CustodyError as exc:
                # Refuse this capture alone (e.g. an envelope over the size limit);
                # it takes no seq, and the rest of the batch is recorded.
                results.append(exc)
                continue
            seq = following
            values = (
                next_id, kid, seq, env.event_id, prev, str(d.type), d.time.ms,
                str(d.time.quality), self.boot, int(d.manual), env.cose, now_ms,
            )  # fmt: skip
            event_rows.append(values)
            opening_rows.extend(
                (env.event_id, n, o.value, o.blinding.encoded) for n, o in d.openings.items()
            )
            results.append(StoredEvent.from_row((*values[:11], "pending", now_ms, None)))
            next_id += 1
            prev = env.event_id
        # One statement per table per batch: fewer round trips into SQLite (each
        # one releases and re-takes the GIL, which the producers contend for).
        conn.executemany(_INSERT_EVENT, event_rows)
        if opening_rows:
            conn.executemany(_INSERT_OPENING, opening_rows)
        return results

    def _flush_alarms(self) -> None:
        """Record alarms raised during a batch, outside its transaction."""
        due, self._alarms_due = self._alarms_due, []
        for kind, message in due:
            try:
                raise_alarm(self._conn, kind, message)
            except CustodyError:  # e.g. the disk is full: the producers already got the error
                self.stats.unrecorded_alarms += 1


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
