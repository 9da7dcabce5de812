"""The uplink's place in the service when no broker is configured.

A gateway without ``sync.broker`` captures and signs as usual, but nothing leaves it:
records pile up in the outbox until someone sets the broker. That is a valid state (a
new site before enrolment, a bench), never a silent one: this worker says so once in the
log at start and keeps ``/healthz`` at ``degraded`` with the reason for as long as it
lasts, so a supervisor's check or a monitoring rule sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from agent.service.workers import Sample, WorkerHealth

__all__ = ["REASON", "SyncNotConfigured"]

REASON = (
    "sync not configured (sync.broker is empty): records are kept in the outbox and "
    "nothing is sent to the ledger; set sync.broker, sync.ca_file, sync.cert_file and "
    "sync.key_file (docs/operations.md)"
)


class SyncNotConfigured:
    """Stands where the sync worker would: alive, doing nothing, reporting why."""

    name = "sync"

    def __init__(self, log: Callable[..., None]) -> None:
        self._log = log
        self._running = False

    @property
    def alive(self) -> bool:
        return self._running

    def health(self) -> WorkerHealth:
        if not self._running:
            return WorkerHealth("starting")
        return WorkerHealth("degraded", {"configured": False, "reason": REASON})

    def metrics(self) -> Iterable[Sample]:
        yield Sample("custody_sync_connected", {}, 0.0)

    def run(self, stop: threading.Event) -> None:
        self._log("warning", "sync.not_configured", reason=REASON)
        self._running = True
        try:
            stop.wait()
        finally:
            self._running = False
