"""Weighbridge visits: two-pass planning (pure) and the persisted visit book.

Theory of operation
-------------------
A visit is one vehicle's passage: pass ``in`` (first weighing) and pass
``out`` (second), or a single pass against the vehicle's stored tare
(DOMAIN.md "Weighbridges"). ``plan`` decides, from a capture and what is
known about the vehicle, which pass this is and which masses it carries:

* an open visit for the vehicle -> pass ``out``: gross = the heavier of the
  two readings, tare = the lighter, net = gross - tare; direction ``in``
  (material received) when the vehicle arrived heavier, ``out`` when it left
  heavier; ``inbound`` = the pass-in event id. The visit is complete.
* no open visit, a stored tare below the reading and stored tares enabled ->
  pass ``single`` with that tare and ``tare_event`` = where it was measured.
* otherwise pass ``in``: the bridge's gross reading, and a visit stays open.
* no vehicle id at all -> pass ``single`` with the gross reading only.

``VisitBook`` keeps open visits, stored tares and the current occupancy
(vehicle id and seal codes read so far, and whether it was captured) in a
small SQLite file next to the outbox (``weighbridge.sqlite``). It is a
projection of the outbox, never a second truth: every weighbridge weighing is
applied to it in one transaction together with the outbox row id it came
from, and at start ``catch_up`` applies any weighing that became durable in the
outbox but not here (a power cut between the two commits).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.workflows.visitbook import (
    BOOK_FILE,
    MAX_PENDING_SEALS,
    OpenVisit,
    Pending,
    StoredTare,
    VisitBook,
)

__all__ = [
    "BOOK_FILE", "MAX_PENDING_SEALS", "OpenVisit", "Pending", "Plan", "StoredTare", "VisitBook",
    "plan",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    stage: str  # in | out | single
    masses: dict[str, int]
    complete: bool
    direction: str | None = None
    inbound: OpenVisit | None = None
    tare: StoredTare | None = None


def plan(
    units: int,
    vehicle: str | None,
    visit: OpenVisit | None,
    tare: StoredTare | None,
    *,
    use_stored_tare: bool,
    single_direction: str,
) -> Plan:
    """Which pass a capture of ``units`` is, and the masses it records (module doc)."""
    if vehicle is None:
        return Plan("single", {"gross": units}, True)
    if visit is not None:
        gross, tare_units = max(units, visit.units), min(units, visit.units)
        direction = None if units == visit.units else "in" if visit.units > units else "out"
        masses = {"gross": gross, "tare": tare_units, "net": gross - tare_units}
        return Plan("out", masses, True, direction, inbound=visit)
    if use_stored_tare and tare is not None and tare.units < units:
        masses = {"gross": units, "tare": tare.units, "net": units - tare.units}
        return Plan("single", masses, True, single_direction, tare=tare)
    return Plan("in", {"gross": units}, False)
