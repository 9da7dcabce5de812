"""Delivery state of outbox records: what to send, what was sent, what the ledger acked.

The sync worker drives records through the lifecycle table in
``agent.outbox.lifecycle`` with these calls, each one transaction:

- ``next_to_send``: the oldest records of a key that are ``pending``, in seq order,
  up to a count and byte budget, optionally within a seq range: the uplink asks
  for its live lane (seq >= the head when it connected) and for the backlog
  (below it) separately, so live records need not wait behind the backlog
  (``sync.uplink``, "Live records before backlog");
- ``mark_sent``: ``pending -> sent`` once the batch is handed to the broker
  (a broker PUBACK changes nothing else: it is not the ledger's word);
- ``apply_ack``: a *verified* ledger ack for (seq, event id) acknowledges the
  whole prefix up to seq, because every event is chained to its predecessor.
  The event id must be ours at that seq, or nothing is released and a
  ``VerificationError`` says why. Rejections (seq, id, reason) mark those
  records ``rejected``; they are kept and surfaced, never deleted;
- ``requeue_sent``: ``sent -> pending`` after an ack timeout or a reconnect, or
  for a seq range when the ledger names a gap;
- ``head_seq``: the highest seq recorded under a key.

Which states a call moves records from is derived from ``TRANSITIONS``, so the
SQL cannot drift from the table.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.outbox.lifecycle import TRANSITIONS, RecordState
from agent.outbox.store import EVENT_COLUMNS, Outbox, StoredEvent, translate_sqlite_errors
from custody.errors import ChainError, VerificationError

__all__ = ["AckOutcome", "apply_ack", "head_seq", "mark_sent", "next_to_send", "requeue_sent"]


def _sources(target: RecordState) -> tuple[str, ...]:
    """States from which the lifecycle table allows a move to ``target``."""
    return tuple(str(s) for s, allowed in TRANSITIONS.items() if target in allowed)


def _in(states: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in states) + ")"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    acked: int  # records newly moved to acked
    rejected: int  # records newly moved to rejected
    acked_through: int  # the seq the ack covers


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def next_to_send(
    outbox: Outbox,
    kid: bytes,
    *,
    max_events: int = 500,
    max_bytes: int = 256 * 1024,
    from_seq: int = 1,
    before_seq: int | None = None,
) -> list[StoredEvent]:
    """The oldest pending records of ``kid`` with ``from_seq <= seq < before_seq``, in seq
    order, within both budgets."""
    sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE kid = ? AND state = 'pending' AND seq >= ?"
    args: list[object] = [kid, from_seq]
    if before_seq is not None:
        sql += " AND seq < ?"
        args.append(before_seq)
    with translate_sqlite_errors("choosing records to send"):
        rows = outbox.conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, max_events)).fetchall()
    out: list[StoredEvent] = []
    used = 0
    for row in rows:
        event = StoredEvent.from_row(row)
        if out and used + len(event.envelope) > max_bytes:
            break
        out.append(event)
        used += len(event.envelope)
    return out


def mark_sent(outbox: Outbox, kid: bytes, seqs: Iterable[int], now_ms: int | None = None) -> int:
    """``pending -> sent`` for these seqs; returns how many moved."""
    seq_list = list(seqs)
    if not seq_list:
        return 0
    sources = _in(_sources(RecordState.SENT))
    with translate_sqlite_errors("marking records sent"):
        cur = outbox.conn.executemany(
            f"UPDATE events SET state = 'sent', state_ms = ? "
            f"WHERE kid = ? AND seq = ? AND state IN {sources}",
            [(now_ms or _now_ms(), kid, s) for s in seq_list],
        )
    return cur.rowcount


def requeue_sent(
    outbox: Outbox,
    kid: bytes,
    *,
    sent_before_ms: int | None = None,
    now_ms: int | None = None,
    from_seq: int = 1,
    before_seq: int | None = None,
) -> int:
    """``sent -> pending`` (all of them, those sent before a time, or a seq range)."""
    sources = _in(_sources(RecordState.PENDING))
    sql = (
        f"UPDATE events SET state = 'pending', state_ms = ? WHERE kid = ? AND state IN {sources}"
        " AND seq >= ?"
    )
    args: list[object] = [now_ms or _now_ms(), kid, from_seq]
    if sent_before_ms is not None:
        sql += " AND state_ms < ?"
        args.append(sent_before_ms)
    if before_seq is not None:
        sql += " AND seq < ?"
        args.append(before_seq)
    with translate_sqlite_errors("re-queueing sent records"):
        return outbox.conn.execute(sql, args).rowcount


def head_seq(outbox: Outbox, kid: bytes) -> int:
    """The highest seq recorded under ``kid`` (0 when none)."""
    with translate_sqlite_errors("reading the chain head"):
        row = outbox.conn.execute("SELECT MAX(seq) FROM events WHERE kid = ?", (kid,)).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def apply_ack(
    outbox: Outbox,
    kid: bytes,
    *,
    seq: int,
    event_id: bytes,
    rejected: Iterable[tuple[int, bytes, str]] = (),
    now_ms: int | None = None,
) -> AckOutcome:
    """Release the prefix up to ``seq`` and mark rejections, in one transaction.

    The caller has already verified the ack's ledger signature; this checks it
    against our own chain: the event id at ``seq`` (and at each rejected seq)
    must be ours, or nothing changes.
    """
    now = now_ms or _now_ms()
    conn = outbox.conn
    to_acked = _in(_sources(RecordState.ACKED))
    to_rejected = _in(_sources(RecordState.REJECTED))
    with translate_sqlite_errors("applying a ledger ack"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if seq > 0:
                _check_ours(conn, kid, seq, event_id)
            rejections = list(rejected)
            for r_seq, r_id, _ in rejections:
                _check_ours(conn, kid, r_seq, r_id)
            rejected_count = 0
            for r_seq, _, reason in rejections:
                rejected_count += conn.execute(
                    f"UPDATE events SET state = 'rejected', state_ms = ?, reject_reason = ? "
                    f"WHERE kid = ? AND seq = ? AND state IN {to_rejected}",
                    (now, reason, kid, r_seq),
                ).rowcount
            acked = 0
            if seq > 0:
                acked = conn.execute(
                    f"UPDATE events SET state = 'acked', state_ms = ? "
                    f"WHERE kid = ? AND seq <= ? AND state IN {to_acked}",
                    (now, kid, seq),
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return AckOutcome(acked, rejected_count, seq)


def _check_ours(conn: sqlite3.Connection, kid: bytes, seq: int, event_id: bytes) -> None:
    row = conn.execute(
        "SELECT event_id FROM events WHERE kid = ? AND seq = ?", (kid, seq)
    ).fetchone()
    if row is None:
        raise ChainError(f"the ledger acknowledged seq {seq}, which this gateway never recorded")
    if bytes(row[0]) != event_id:
        raise VerificationError(
            f"the ledger's event id for seq {seq} is not ours: ack refused, nothing released"
        )
