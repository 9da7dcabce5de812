"""The durable outbox: the only SQLite writer on the gateway, and the source of truth."""

from agent.outbox.lifecycle import RecordState
from agent.outbox.store import OpenReport, Outbox, StoredEvent
from agent.outbox.writer import DiskBudget, Draft, OutboxWriter

__all__ = [
    "DiskBudget",
    "Draft",
    "OpenReport",
    "Outbox",
    "OutboxWriter",
    "RecordState",
    "StoredEvent",
]
