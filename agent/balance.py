"""What a gateway commits to for mass balance: running sums and lot contributions.

docs/zk-summaries.md §1. A checkpoint commits to the cumulative **inputs** and **outputs** of
this key's chain for every event with ``seq <= upto``:

- input: a weighing with ``direction = "in"``, counting its net (two-pass), else bag, else gross;
- output: a bag weighing with ``direction = "out"`` (the product leaving in sealed bags); a truck
  dispatch weighing (``out`` without a bag mass) is a cross-check of those bags and never counted
  twice;
- a void takes its target out of the sums from the void on.

Sums are computed from the outbox (the local truth, with the openings the gateway keeps), each
checkpoint continuing from the previous one, so a checkpoint costs the events since the last.
A lot contribution commits to the sum of the chain's non-voided output bags of that lot (so
every contributed bag is inside the output sums the balance proofs use).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.outbox import Outbox, StoredEvent
from custody.envelope import peek_payload
from custody.event import EventType, Payload
from custody.mass import counted_field

__all__ = [
    "CheckpointState",
    "counted",
    "last_checkpoint",
    "lot_bags",
    "lot_closed",
    "next_sums",
    "voided_contributions",
]


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """The latest checkpoint of a chain (epoch 0 and zero sums before the first)."""

    epoch: int
    event_id: bytes | None
    upto: int
    inputs: int
    outputs: int
    seq: int = 0  # the checkpoint's own seq


def payload_of(event: StoredEvent) -> Payload:
    """The signed payload of one of our own stored events."""
    return peek_payload(event.envelope)


def counted(body: Mapping[str, Any], openings: Mapping[str, tuple[int, bytes]]) -> tuple[str, int]:
    """``("in" | "out", units)`` for a weighing that counts (``custody.mass.counted_field``),
    else ``("", 0)``."""
    which = counted_field(body)
    if which is None:
        return "", 0
    direction, name = which
    return direction, openings[name][0]


def last_checkpoint(outbox: Outbox, kid: bytes) -> CheckpointState:
    found = outbox.of_type(kid, EventType.CHECKPOINT.value, newest_first=True, limit=1)
    if not found:
        return CheckpointState(0, None, 0, 0, 0)
    latest = found[0]
    body = payload_of(latest).body
    openings = outbox.openings(latest.event_id)
    return CheckpointState(
        body["epoch"], latest.event_id, body["upto"], openings["in"][0], openings["out"][0],
        latest.seq,
    )  # fmt: skip


def next_sums(outbox: Outbox, kid: bytes, state: CheckpointState, upto: int) -> tuple[int, int]:
    """Inputs and outputs through ``upto``, continuing from ``state``."""
    inputs, outputs = state.inputs, state.outputs
    events = outbox.chain_between(kid, state.upto, upto)
    payloads = [(e, payload_of(e)) for e in events]
    voided = _voided(p for _, p in payloads)  # targets voided inside this range
    for event, p in payloads:
        if p.type is EventType.WEIGHING and event.event_id not in voided:
            kind, units = counted(p.body, outbox.openings(event.event_id))
            if kind == "in":
                inputs += units
            elif kind == "out":
                outputs += units
        elif p.type is EventType.VOID:
            target = outbox.find(p.body["target"].hex())
            # Already inside the previous sums: take it out now.
            if target is not None and target.kid == kid and target.seq <= state.upto:
                tp = payload_of(target)
                if tp.type is EventType.WEIGHING:
                    kind, units = counted(tp.body, outbox.openings(target.event_id))
                    if kind == "in":
                        inputs -= units
                    elif kind == "out":
                        outputs -= units
    return inputs, outputs


def _voided(payloads: Iterable[Payload]) -> set[bytes]:
    return {p.body["target"] for p in payloads if p.type is EventType.VOID}


def lot_bags(outbox: Outbox, kid: bytes, lot: str) -> tuple[int, int]:
    """(total units, number of bags) of the chain's non-voided bag weighings of ``lot``."""
    chain = [(e, payload_of(e)) for e in outbox.iter_chain(kid)]
    voided = _voided(p for _, p in chain)
    total = count = 0
    for event, p in chain:
        body = p.body
        if (
            p.type is EventType.WEIGHING
            and body.get("lot") == lot
            and body.get("direction") == "out"  # an output, so inside the checkpoint sums
            and "bag" in body.get("mass", {})
            and event.event_id not in voided
        ):
            total += outbox.openings(event.event_id)["bag"][0]
            count += 1
    return total, count


def lot_closed(outbox: Outbox, kid: bytes, lot: str) -> bool:
    return any(
        payload_of(e).body["lot"] == lot
        for e in outbox.of_type(kid, EventType.LOT_CONTRIBUTION.value)
    )


def voided_contributions(outbox: Outbox, kid: bytes, after_seq: int, upto_seq: int) -> list[bytes]:
    """Event ids of this chain's lot contributions voided by its records in (after, upto]:
    what the next checkpoint lists, sorted."""
    out: set[bytes] = set()
    for event in outbox.chain_between(kid, after_seq, upto_seq):
        p = payload_of(event)
        if p.type is not EventType.VOID:
            continue
        target = outbox.find(p.body["target"].hex())
        if target is not None and target.kid == kid and target.type == EventType.LOT_CONTRIBUTION:
            out.add(target.event_id)
    return sorted(out)
