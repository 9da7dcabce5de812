"""``custody-ledger summary``: prove a lot's claim in one bundle (docs/zk-summaries.md §2).

The ledger assembles the lot from its contributions and the refiner's receipt, chooses each
contributing site's balance window, signs a log checkpoint and a registry snapshot, opens the
commitments it needs with its sealing key, and proves everything under one Fiat–Shamir
transcript. Which record plays which role, and which commitment each proof is about, come from
``ledger.verify.bundle`` (the verifier's own code), so prover and verifier cannot disagree.

A claim that is false cannot be proven: a receipt outside the tolerance or a site whose outputs
exceeded its inputs × p/q at a checkpoint raises ``SummaryError`` naming it, instead of
producing a bundle that would fail verification.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody import cbor, cose
from custody.commitment import Opening, open_sealed
from custody.envelope import Envelope, event_id_of
from custody.errors import CustodyError
from custody.event import EventType, Payload
from custody.group import ED25519, Group, Scalar
from custody.keys import LedgerKeyPair
from custody.zk.rangeproof import RangeProof, RangeProver
from custody.zk.sigma import SchnorrProof, SchnorrProver, SubProver, prove_all
from ledger.disclosure import LotDisclosure, Register
from ledger.log import issue_checkpoint, prove_inclusion
from ledger.registry import sign_registry, snapshot
from ledger.sites import declared_stocks, stock_commitments, stock_opening
from ledger.store import LoggedEvent, Store
from ledger.verify.bundle import (
    Bundle,
    Derived,
    Logged,
    LoggedRecord,
    Statement,
    SummaryProof,
    counted_field,
    derive,
    public_points,
    summary_transcript,
)
from ledger.verify.policy import PUBLISHED_POLICIES, Policy, tolerance_for
from ledger.verify.registry import Registry, RegistryEntry, decode_registry

__all__ = ["SummaryError", "SummaryResult", "build_summary"]


class SummaryError(CustodyError):
    """The lot cannot be proven as asked; the message says why (and what to do)."""


@dataclass(frozen=True, slots=True)
class SummaryResult:
    bundle: bytes
    statement: Statement
    records: int
    balance_checks: int


@dataclass(frozen=True, slots=True)
class _Event:
    logged: LoggedEvent
    payload: Payload

    @property
    def body(self) -> Mapping[str, Any]:
        return self.payload.body


def build_summary(
    store: Store,
    keys: LedgerKeyPair,
    data_dir: Path,
    lot: str,
    *,
    audience: str = "buyer",
    policy: Policy = PUBLISHED_POLICIES[1],
    group: Group = ED25519,
) -> SummaryResult:
    """Assemble, check against the disclosure policy, prove, record; return the bundle bytes."""
    site_of = {k.kid: k.site_id for k in store.device_keys()}
    # Only the record kinds a summary uses are read and decoded, not the whole log.
    kinds = (EventType.LOT_CONTRIBUTION, EventType.WEIGHING, EventType.CHECKPOINT)
    relevant = [_Event(e, _payload(e.envelope)) for e in store.events(types=kinds)]
    contributions = [
        e for e in relevant
        if e.payload.type is EventType.LOT_CONTRIBUTION and e.body["lot"] == lot
    ]  # fmt: skip
    if not contributions:
        raise SummaryError(f"lot {lot} has no contributions (run `custody-agent lot close {lot}`)")
    sites = tuple(sorted({site_of[c.logged.kid] for c in contributions}))
    receipts = [
        e for e in relevant
        if e.payload.type is EventType.WEIGHING and e.body.get("lot") == lot
        and e.body.get("direction") == "in" and "mass" in e.body
        and site_of[e.logged.kid] not in sites
    ]  # fmt: skip
    if len(receipts) != 1:
        raise SummaryError(
            f"lot {lot} needs exactly one receipt weighing by the refiner "
            f"(direction in, lot {lot}); found {len(receipts)}"
        )
    receipt = receipts[0]
    refiner = site_of[receipt.logged.kid]

    windows: dict[str, int] = {}
    chosen: list[_Event] = [*contributions, receipt]
    for site in sites:
        start, picked = _window(site, site_of, relevant, contributions, policy)
        windows[site] = start
        chosen.extend(picked)

    openings = {c.logged.event_id: _open(keys, c.body) for c in contributions}
    total = sum(o["total"].value for o in openings.values())
    statement = Statement(
        lot, refiner, total, tolerance_for(total, policy), sites, policy, os.urandom(16),
        audience, windows,
    )  # fmt: skip
    register = Register(data_dir)
    disclosure = LotDisclosure(
        total, sites, tuple(sorted(c.logged.event_id.hex() for c in contributions))
    )
    register.check(lot, disclosure, audience, policy)

    all_sites = set(site_of.values())
    stocks = stock_commitments(keys, data_dir, all_sites, group)
    registry_bytes = sign_registry(keys, snapshot(store, keys.ledger_id, stocks))
    registry = decode_registry(registry_bytes, keys.public)
    checkpoint, log_bytes = issue_checkpoint(store, keys)
    chosen.sort(key=lambda e: e.logged.log_index)
    records = tuple(
        LoggedRecord(
            e.logged.log_index,
            e.logged.envelope,
            tuple(prove_inclusion(store, e.logged.log_index, checkpoint.size)),
        )
        for e in chosen
    )
    logged = [
        Logged(
            e.logged.log_index,
            Envelope(e.logged.envelope, event_id_of(e.logged.envelope), e.logged.kid, e.payload),
            _entry(registry, e.logged.kid),
        )
        for e in chosen
    ]
    derived = derive(statement, logged)
    points = public_points(
        statement, derived, {s: group.point(c) for s, c in stocks.items()}, group
    )
    provers = _provers(keys, data_dir, statement, derived, openings, group)
    tr = summary_transcript(statement, registry_bytes, log_bytes, records, points, group)
    challenge, responses = prove_all(tr, provers)
    schnorr = responses[0]
    ranges = [r for r in responses[1:] if isinstance(r, RangeProof)]
    assert isinstance(schnorr, SchnorrProof)
    assert len(ranges) == len(responses) - 1
    proof = SummaryProof(challenge, schnorr, (ranges[0], ranges[1]), tuple(ranges[2:]))
    bundle = Bundle(statement, registry_bytes, log_bytes, records, proof).to_bytes()
    register.record(lot, disclosure, audience, statement.summary_id)
    return SummaryResult(bundle, statement, len(records), len(derived.checks))


def _window(
    site: str, site_of: dict[bytes, str], relevant: Sequence[_Event],
    contributions: Sequence[_Event], policy: Policy,
) -> tuple[int, list[_Event]]:  # fmt: skip
    """The site's balance window and the checkpoints the bundle must carry for it."""
    checkpoints = sorted(
        (e for e in relevant
         if e.payload.type is EventType.CHECKPOINT and site_of[e.logged.kid] == site),
        key=lambda e: e.logged.log_index,
    )  # fmt: skip
    end = -1
    for c in contributions:
        if site_of[c.logged.kid] != site:
            continue
        covering = [
            e.logged.log_index for e in checkpoints
            if e.logged.kid == c.logged.kid and e.payload.body["upto"] >= c.logged.seq
        ]  # fmt: skip
        if not covering:
            raise SummaryError(
                f"site {site}: the contribution at seq {c.logged.seq} is not yet under a logged "
                "checkpoint (sync the gateway)"
            )
        end = max(end, min(covering))
    upto_end = [e for e in checkpoints if e.logged.log_index <= end]
    window = upto_end[-policy.window :]
    start = window[0].logged.log_index
    bases: dict[bytes, _Event] = {}
    for e in upto_end:
        if e.logged.log_index < start:
            bases[e.logged.kid] = e  # the latest before the window, per chain
    return start, [*bases.values(), *window]


def _provers(
    keys: LedgerKeyPair, data_dir: Path, statement: Statement, derived: Derived,
    contrib_openings: dict[bytes, dict[str, Opening]], group: Group,
) -> list[SubProver]:  # fmt: skip
    assert derived.receipt is not None
    g, pol = group, statement.policy
    rho = _zero(g)
    for o in contrib_openings.values():
        rho = g.scalar_add(rho, o["total"].blinding)
    provers: list[SubProver] = [SchnorrProver("total", rho, g)]

    recv = _open(keys, derived.receipt.body)[counted_field(derived.receipt)]
    w, tau = statement.total, statement.tolerance
    low, high = w + tau - recv.value, recv.value - w + tau
    if not (0 <= low < 2**pol.tolerance_bits and 0 <= high < 2**pol.tolerance_bits):
        raise SummaryError(
            f"the refiner received {recv.value} units, outside {w} ± {tau}: the lot's "
            "tolerance claim is false"
        )
    provers.append(RangeProver("tol_low", low, g.scalar_neg(recv.blinding), pol.tolerance_bits, g))
    provers.append(RangeProver("tol_high", high, recv.blinding, pol.tolerance_bits, g))

    declared = declared_stocks(data_dir)
    p, q = g.scalar_from_int(pol.recovery_p), g.scalar_from_int(pol.recovery_q)
    cache: dict[bytes, dict[str, Opening]] = {}
    for i, check in enumerate(derived.checks):
        stock = stock_opening(keys, check.site, declared.get(check.site, 0), g)
        v_in = v_out = 0
        r_in = r_out = _zero(g)
        for cp in check.checkpoints:
            o = cache.get(cp.env.event_id) or _open(keys, cp.body)
            cache[cp.env.event_id] = o
            v_in += o["in"].value
            v_out += o["out"].value
            r_in = g.scalar_add(r_in, o["in"].blinding)
            r_out = g.scalar_add(r_out, o["out"].blinding)
        value = pol.recovery_p * v_in + pol.recovery_q * (stock.value - v_out)
        blinding = g.scalar_add(
            g.scalar_mul(p, r_in), g.scalar_mul(q, g.scalar_sub(stock.blinding, r_out))
        )
        if not _balance_ok(value, pol.balance_bits):
            raise SummaryError(
                f"site {check.site}: at log index {check.index} outputs exceed inputs × "
                f"{pol.recovery_p}/{pol.recovery_q} plus opening stock: the mass balance "
                "claim is false"
            )
        provers.append(RangeProver(f"balance{i}", value, blinding, pol.balance_bits, g))
    return provers


def _balance_ok(value: int, bits: int) -> bool:
    return 0 <= value < (1 << bits)


def _zero(g: Group) -> Scalar:
    return g.scalar_from_int(0)


def _payload(envelope: bytes) -> Payload:
    # Logged envelopes were strictly verified at intake; decode without re-verifying.
    return Payload.from_map(cbor.decode(cose.decode_sign1(envelope).payload))


def _open(keys: LedgerKeyPair, body: Mapping[str, Any]) -> dict[str, Opening]:
    """The sealed openings of a logged record (checked against its commitments at intake)."""
    return open_sealed(body["sealed"], keys.public.sealing_key, keys.sealing_secret)


def _entry(registry: Registry, kid: bytes) -> RegistryEntry:
    entry = registry.by_kid(kid)
    if entry is None:  # pragma: no cover - every logged key is enrolled
        raise SummaryError(f"key {kid.hex()} is not in the registry")
    return entry
