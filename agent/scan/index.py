"""What the outbox says about bags, seals and lots: a projection, never a second truth.

Theory of operation. The scan console keeps no state of its own beyond the current lot:
every answer it gives (has this seal been seen, how many bags are in each lot today,
which record was the last, what was left half-done) comes from ``ScanIndex``, which is
built by replaying the outbox's events in insertion order and then caught up with the
events added since (by this console, by the gateway service writing the same outbox, or
by ``custody-agent record``) before every decision. ``apply`` is pure: the caller decodes
events (``observe_rows``) and feeds them in.

A bag recorded by the console is up to two signed events, written one after the other:

1. a ``weighing`` with a ``bag`` mass, ``lot`` and ``seals == [seal]`` (only when a weight
   was taken), then
2. an ``aggregation`` ``ADD`` of ``children == [seal]`` to ``lot``, the EPCIS
   AggregationEvent that puts the bag in the lot. This second event is the commit point:
   a bag exists, is counted and is "seen" once its aggregation is in the outbox.

A process killed between the two (SIGKILL, power cut) leaves a bag weighing with no
live aggregation. ``orphans`` lists such weighings (and any whose aggregation was voided
while the weighing was not, a void interrupted half-way) so the console can void them
at start: the operator never saw OK for that bag and scans it again.

Voids remove their target from every view; nothing is ever deleted from the outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent.outbox import Outbox
from custody.envelope import peek
from custody.errors import VerificationError

__all__ = ["PAGE", "Bag", "Mention", "Observed", "ScanIndex", "observe_rows"]

PAGE = 1000  # events decoded per query when replaying the outbox


@dataclass(frozen=True, slots=True)
class Observed:
    """One outbox event as the projection needs it (decoded, not re-verified)."""

    row: int  # the outbox's insertion order (events.id)
    event_id: bytes
    type: str
    time_ms: int
    body: Mapping[str, Any]
    masses: Mapping[str, int]  # clear opening values by field, in mass units


@dataclass(frozen=True, slots=True)
class Bag:
    seal: str
    lot: str
    time_ms: int
    event_id: bytes  # the aggregation that put the bag in the lot
    weighing: bytes | None = None  # the bag weighing paired with it
    mass: int | None = None  # mass units (custody.commitment.MASS_UNIT_G)
    manual_mass: bool = False


@dataclass(frozen=True, slots=True)
class Mention:
    """A live event naming a seal: where and when it was last seen on this device."""

    seal: str
    lot: str | None
    time_ms: int
    event_id: bytes
    type: str


@dataclass(frozen=True, slots=True)
class _BagWeighing:
    lot: str
    seal: str
    mass: int | None
    manual: bool


def is_bag_weighing(body: Mapping[str, Any]) -> bool:
    """A weighing the console writes: one bag's mass, its seal and lot, no vehicle pass."""
    seals = body.get("seals")
    return (
        isinstance(seals, list)
        and len(seals) == 1
        and isinstance(body.get("lot"), str)
        and set(body.get("mass", {})) == {"bag"}
        and "vehicle" not in body
        and "pass" not in body
    )


class ScanIndex:
    """Bags per lot, seals seen, the last bag and unfinished records, from outbox events."""

    def __init__(self) -> None:
        self.cursor = 0  # highest outbox row applied
        self.last_lot: str | None = None
        self._bags: dict[bytes, list[Bag]] = {}  # aggregation event id -> its bags
        self._mentions: dict[str, dict[bytes, Mention]] = {}
        self._weighings: dict[bytes, _BagWeighing] = {}  # live bag weighings
        self._pending: dict[tuple[str, str], bytes] = {}  # (lot, seal) -> unpaired weighing
        self._paired: dict[bytes, bytes] = {}  # weighing -> aggregation
        self._voided: set[bytes] = set()

    # --- feeding ---------------------------------------------------------------------
    def apply(self, ev: Observed) -> None:
        if ev.row <= self.cursor:
            return  # already applied (catch-up after replay may overlap)
        self.cursor = ev.row
        body = ev.body
        if ev.type == "void":
            self._void(body.get("target"))
        elif ev.type == "aggregation":
            self._aggregation(ev)
        elif ev.type == "weighing":
            self._weighing(ev)
        elif ev.type == "seal_scan" and isinstance(body.get("seal"), str):
            lot = body.get("lot")
            self._mention(ev, body["seal"], lot if isinstance(lot, str) else None)

    def _aggregation(self, ev: Observed) -> None:
        lot, children, action = ev.body.get("lot"), ev.body.get("children"), ev.body.get("action")
        if not isinstance(lot, str) or not isinstance(children, list):
            return
        if action == "DELETE":
            # A bag taken out of a lot: it leaves the lot's count and may be added again.
            for agg_id, bags in list(self._bags.items()):
                kept = [b for b in bags if not (b.lot == lot and b.seal in children)]
                if len(kept) != len(bags):
                    self._bags[agg_id] = kept
            for seal in children:
                for m in list(self._mentions.get(seal, {}).values()):
                    if m.type == "aggregation" and m.lot == lot:
                        del self._mentions[seal][m.event_id]
            return
        bags = []
        for seal in children:
            weighing = self._pending.pop((lot, seal), None)
            paired = self._weighings.get(weighing) if weighing is not None else None
            if weighing is not None:
                self._paired[weighing] = ev.event_id
            mass = paired.mass if paired else None
            manual = paired.manual if paired else False
            bags.append(Bag(seal, lot, ev.time_ms, ev.event_id, weighing, mass, manual))
            self._mention(ev, seal, lot)
        self._bags[ev.event_id] = bags
        self.last_lot = lot

    def _weighing(self, ev: Observed) -> None:
        body = ev.body
        seals = body.get("seals")
        lot = body.get("lot")
        if isinstance(seals, list):
            for seal in seals:
                self._mention(ev, seal, lot if isinstance(lot, str) else None)
        if is_bag_weighing(body) and isinstance(seals, list) and isinstance(lot, str):
            seal = str(seals[0])
            self._weighings[ev.event_id] = _BagWeighing(
                lot, seal, ev.masses.get("bag"), body.get("manual") is True
            )
            self._pending[(lot, seal)] = ev.event_id

    def _mention(self, ev: Observed, seal: str, lot: str | None) -> None:
        self._mentions.setdefault(seal, {})[ev.event_id] = Mention(
            seal, lot, ev.time_ms, ev.event_id, ev.type
        )

    def _void(self, target: object) -> None:
        if not isinstance(target, bytes):
            return
        self._voided.add(target)
        self._bags.pop(target, None)
        if self._weighings.pop(target, None) is not None:
            for key, w in list(self._pending.items()):
                if w == target:
                    del self._pending[key]
        for seal, mentions in list(self._mentions.items()):
            if mentions.pop(target, None) is not None and not mentions:
                del self._mentions[seal]

    # --- questions -------------------------------------------------------------------
    def seen(self, seal: str) -> Mention | None:
        """The latest live event on this device naming ``seal``, if any."""
        mentions = self._mentions.get(seal)
        if not mentions:
            return None
        return max(mentions.values(), key=lambda m: m.time_ms)

    def bags(self) -> Iterator[Bag]:
        for bags in self._bags.values():
            yield from bags

    def bag_records(self, event_id: bytes) -> list[Bag]:
        return list(self._bags.get(event_id, []))

    def last_bag(self) -> Bag | None:
        """The newest live bag (the aggregations are kept in outbox order)."""
        for bags in reversed(self._bags.values()):
            if bags:
                return bags[-1]
        return None

    def counts(self, day: object, day_of: Callable[[int], object]) -> dict[str, tuple[int, int]]:
        """Per lot: bags recorded on ``day`` and their total weighed mass (units)."""
        out: dict[str, tuple[int, int]] = {}
        for bag in self.bags():
            if day_of(bag.time_ms) == day:
                n, mass = out.get(bag.lot, (0, 0))
                out[bag.lot] = (n + 1, mass + (bag.mass or 0))
        return out

    def orphans(self) -> list[tuple[bytes, str, str]]:
        """Live bag weighings with no live aggregation: (event id, lot, seal)."""
        live_aggs = self._bags.keys()
        return [
            (w, bw.lot, bw.seal)
            for w, bw in self._weighings.items()
            if self._paired.get(w) not in live_aggs
        ]


def observe_rows(outbox: Outbox, after: int) -> Iterator[Observed]:
    """Decode the outbox's events with ``events.id > after``, oldest first, a page at a
    time (``PAGE`` rows: replaying a large outbox never holds it all in memory).

    The envelope was verified when it was signed and the database guards it from
    rewrites; ``custody-agent events verify`` re-verifies. Here it is only decoded.
    """
    while True:
        rows = outbox.rows_after(after, PAGE)
        for row, event_id, type_, time_ms, envelope in rows:
            after = int(row)
            try:
                payload = peek(envelope)
            except VerificationError:
                continue  # undecodable rows are reported by `events verify`, not guessed at
            body = payload.get("body", {}) if isinstance(payload, dict) else {}
            masses: dict[str, int] = {}
            if "mass" in body:
                masses = {f: v for f, (v, _) in outbox.openings(bytes(event_id)).items()}
            yield Observed(after, bytes(event_id), str(type_), int(time_ms), body, masses)
        if len(rows) < PAGE:
            return
