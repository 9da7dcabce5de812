"""The lifecycle of an outbox record, declared as a table (STYLE.md §4).

    pending ──publish──▶ sent ──ledger-signed ack──▶ acked
       │  ▲                │
       │  └──resend────────┘ (timeout or reconnect)
       └──────────┬────────┘
                  ▼
              rejected   (ledger-signed NACK with a reason; kept, never deleted)

A broker PUBACK does not move a record (ARCHITECTURE.md): only a verified
ledger ack does. ``acked`` and ``rejected`` are final. An illegal move raises.
"""

from __future__ import annotations

from enum import StrEnum

from custody.errors import StorageError

__all__ = ["TRANSITIONS", "UNACKED", "RecordState", "check_transition"]


class RecordState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACKED = "acked"
    REJECTED = "rejected"


TRANSITIONS: dict[RecordState, frozenset[RecordState]] = {
    RecordState.PENDING: frozenset({RecordState.SENT, RecordState.ACKED, RecordState.REJECTED}),
    RecordState.SENT: frozenset({RecordState.PENDING, RecordState.ACKED, RecordState.REJECTED}),
    RecordState.ACKED: frozenset(),
    RecordState.REJECTED: frozenset(),
}


# Records the ledger has not settled: the ones a sync still has to deliver.
UNACKED: tuple[RecordState, ...] = tuple(s for s, moves in TRANSITIONS.items() if moves)


def check_transition(old: RecordState, new: RecordState) -> None:
    if new not in TRANSITIONS[old]:
        raise StorageError(f"illegal outbox transition {old} -> {new}")
