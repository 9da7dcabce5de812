"""``custody-ledger summary``: prove a lot's claim in one bundle (docs/zk-summaries.md §4).

The ledger assembles the lot from its contributions and the refiner's receipt, chooses each
contributing site's balance window, gathers what makes the bundle complete (the registry
authority's entries up to one logged after every record, and for every key of a contributing
site its base, its window and its fence), signs a log checkpoint, opens the commitments it
needs with its sealing key, and proves everything under one Fiat–Shamir transcript. Which
record plays which role, and which commitment each proof is about, come from
``ledger.verify`` (the verifier's own code), so prover and verifier cannot disagree.

A claim that is false cannot be proven: a receipt outside the tolerance or a site whose outputs
exceeded its inputs × p/q plus opening stock at a checkpoint raises ``SummaryError`` naming it,
and so does a bundle that could not be shown complete (the error says what to wait for or do).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.commitment import Opening, open_sealed
from custody.envelope import Envelope, event_id_of, peek_payload
from custody.errors import CustodyError, ProofError
from custody.event import EventType, Payload
from custody.group import ED25519, Group, Scalar
from custody.keys import LedgerKeyPair
from custody.zk.rangeproof import RangeProof, RangeProver
from custody.zk.sigma import SchnorrProof, SchnorrProver, SubProver, prove_all
from ledger.disclosure import LotDisclosure, Register
from ledger.log import issue_checkpoint, prove_inclusion
from ledger.registry import pinned_authority
from ledger.store import LoggedEvent, LoggedRegistryEntry, Store
from ledger.verify.bundle import (
    Bundle,
    LoggedRecord,
    Statement,
    SummaryProof,
    public_points,
    summary_transcript,
)
from ledger.verify.policy import PUBLISHED_POLICIES, Policy, tolerance_for
from ledger.verify.registry import LoggedEntry, RegistryState, decode_entry, replay
from ledger.verify.roles import Derived, KeyBook, KeyState, Logged, derive

__all__ = [
    "CURRENT_POLICY",
    "Selection",
    "SummaryError",
    "SummaryResult",
    "build_summary",
    "prove",
    "select",
]

CURRENT_POLICY = PUBLISHED_POLICIES[max(PUBLISHED_POLICIES)]
# The record kinds a summary can use; nothing else of the log is read or decoded.
_KINDS = (
    EventType.LOT_CONTRIBUTION, EventType.WEIGHING, EventType.CHECKPOINT,
    EventType.KEY_ROTATION, EventType.OPENING_STOCK,
)  # fmt: skip


class SummaryError(CustodyError):
    """The lot cannot be proven as asked; the message says why (and what to do)."""


@dataclass(frozen=True, slots=True)
class SummaryResult:
    bundle: bytes
    statement: Statement
    records: int
    balance_checks: int
    notes: tuple[str, ...] = ()  # what the operator should know (e.g. a stock left out)


@dataclass
class Selection:
    """What a bundle for the lot shows, before anything is signed or proven."""

    lot: str
    refiner: str
    sites: tuple[str, ...]
    windows: dict[str, int]
    registry: RegistryState
    entries: list[LoggedRegistryEntry]  # the authority's entries 1..n, as logged
    records: dict[int, Logged]  # by log index
    contributions: list[Logged]
    receipt: Logged
    notes: list[str] = field(default_factory=list)


def build_summary(
    store: Store,
    keys: LedgerKeyPair,
    data_dir: Path,
    lot: str,
    *,
    audience: str = "buyer",
    policy: Policy = CURRENT_POLICY,
    group: Group = ED25519,
) -> SummaryResult:
    """Assemble, check against the disclosure policy, prove, record; return the bundle bytes."""
    selection = select(store, data_dir, lot, policy)
    return prove(store, keys, data_dir, selection, audience=audience, policy=policy, group=group)


def select(store: Store, data_dir: Path, lot: str, policy: Policy) -> Selection:
    """The records and registry entries a complete bundle for ``lot`` must show."""
    authority = pinned_authority(data_dir)
    logged_entries = store.registry_entries()
    if not logged_entries:
        raise SummaryError(
            "the ledger has logged no registry entries: keys are enrolled by the registry "
            "authority (custody-registry enrol) and added with `custody-ledger registry add`"
        )
    registry = replay(
        LoggedEntry(e.log_index, decode_entry(e.entry, authority)) for e in logged_entries
    )
    book = KeyBook(registry)
    usable = _admitted(store, book, lot)
    voided = _voided(usable)
    contributions = [
        r for r in usable
        if r.type is EventType.LOT_CONTRIBUTION and r.body["lot"] == lot
        and r.env.event_id not in voided
    ]  # fmt: skip
    if not contributions:
        raise SummaryError(f"lot {lot} has no contributions (run `custody-agent lot close {lot}`)")
    sites = tuple(sorted({c.key.site_id for c in contributions}))
    receipts = [
        r for r in usable
        if r.type is EventType.WEIGHING and r.key.site_id not in sites
        and "net" in r.body.get("mass", {})
    ]  # fmt: skip
    if len(receipts) != 1:
        raise SummaryError(
            f"lot {lot} needs exactly one two-pass receipt weighing by the refiner "
            f"(direction in, lot {lot}, with a net mass); found {len(receipts)}"
        )
    receipt = receipts[0]
    windows: dict[str, int] = {}
    notes: list[str] = []
    chosen: dict[int, Logged] = {r.index: r for r in (*contributions, receipt)}
    for site in sites:
        start, picked = _site_records(site, book, registry, usable, contributions, policy, notes)
        windows[site] = start
        chosen.update((r.index, r) for r in picked)
    # Keys introduced by rotation need their rotation record, and so on back to an enrolment.
    for rec in list(chosen.values()):
        chosen.update((r.index, r) for r in _introductions(rec.key, usable))
    last = max(chosen)
    if registry.last_index < last:
        raise SummaryError(
            f"the registry authority's newest entry is logged at {registry.last_index}, before "
            f"the lot's records (up to {last}): a buyer could not tell that no entry is missing. "
            "Ask the authority for a heartbeat (`custody-registry heartbeat`), add it with "
            "`custody-ledger registry add`, and build the summary again"
        )
    return Selection(lot, receipt.key.site_id, sites, windows, registry, logged_entries,
                     chosen, contributions, receipt, notes)  # fmt: skip


def prove(
    store: Store,
    keys: LedgerKeyPair,
    data_dir: Path,
    selection: Selection,
    *,
    audience: str = "buyer",
    policy: Policy = CURRENT_POLICY,
    group: Group = ED25519,
) -> SummaryResult:
    """Check the selection against the disclosure policy, sign, prove, record."""
    sel = selection
    openings = {c.env.event_id: _open(keys, c.body) for c in sel.contributions}
    total = sum(o["total"].value for o in openings.values())
    statement = Statement(
        sel.lot, sel.refiner, total, tolerance_for(total, policy), sel.sites, policy,
        os.urandom(16), audience, sel.windows,
    )  # fmt: skip
    register = Register(data_dir)
    disclosure = LotDisclosure(
        total, sel.sites, tuple(sorted(c.env.event_id.hex() for c in sel.contributions))
    )
    register.check(sel.lot, disclosure, audience, policy)

    checkpoint, log_bytes = issue_checkpoint(store, keys)
    ordered = sorted(sel.records.values(), key=lambda r: r.index)
    records = tuple(
        LoggedRecord(r.index, r.env.cose, tuple(prove_inclusion(store, r.index, checkpoint.size)))
        for r in ordered
    )
    entries = tuple(
        LoggedRecord(e.log_index, e.entry,
                     tuple(prove_inclusion(store, e.log_index, checkpoint.size)))
        for e in sel.entries
    )  # fmt: skip
    # The verifier's own derivation, on a key book that saw exactly the bundle's records.
    shown = KeyBook(sel.registry)

    def derivation() -> Derived:
        admitted = [shown.admit(r.index, r.env) for r in ordered]
        return derive(sel.lot, sel.refiner, sel.sites, sel.windows, policy.window, shown, admitted)

    derived = _step(derivation)
    points = _step(lambda: public_points(statement, derived, group))
    provers = _provers(keys, statement, derived, openings, group)
    tr = summary_transcript(statement, log_bytes, entries, records, points, group)
    challenge, responses = prove_all(tr, provers)
    schnorr, ranges = responses[0], responses[1:]
    assert isinstance(schnorr, SchnorrProof)
    proofs = [r for r in ranges if isinstance(r, RangeProof)]
    assert len(proofs) == len(ranges)
    n_stocks = len(derived.stocks)
    stock_proofs, balance_proofs = proofs[2 : 2 + n_stocks], proofs[2 + n_stocks :]
    proof = SummaryProof(
        challenge, schnorr, (proofs[0], proofs[1]), tuple(stock_proofs), tuple(balance_proofs)
    )
    bundle = Bundle(statement, log_bytes, entries, records, proof).to_bytes()
    register.record(sel.lot, disclosure, audience, statement.summary_id)
    return SummaryResult(bundle, statement, len(records), len(derived.checks), tuple(sel.notes))


def _admitted(store: Store, book: KeyBook, lot: str) -> list[Logged]:
    """Records of the kinds a summary uses that a verifier would accept, in log order.

    Weighings are kept only when they are this lot's receipt candidates (bags and trucks are
    never shown). A record the registry does not back (a key enrolled before the authority
    signed its enrolment, a record after its key's last seq) is left out: no bundle could
    use it."""
    out = []
    for event in store.events(types=_KINDS):
        payload = _payload(event)
        if payload.type is EventType.WEIGHING and (
            payload.body.get("lot") != lot or payload.body.get("direction") != "in"
        ):
            continue
        env = Envelope(event.envelope, event_id_of(event.envelope), event.kid, payload)
        try:
            out.append(book.admit(event.log_index, env))
        except ProofError:
            continue
    return out


def _site_records(
    site: str, book: KeyBook, registry: RegistryState, usable: Sequence[Logged],
    contributions: Sequence[Logged], policy: Policy, notes: list[str],
) -> tuple[int, list[Logged]]:  # fmt: skip
    """The site's window start and what the bundle must show for it (bases, window, fences,
    key rotations, its opening stock)."""
    checkpoints = [r for r in usable if r.type is EventType.CHECKPOINT and r.key.site_id == site]
    chains: dict[bytes, list[Logged]] = {}
    for cp in checkpoints:
        chains.setdefault(cp.key.kid, []).append(cp)
    end = -1
    for c in contributions:
        if c.key.site_id != site:
            continue
        cover = next((cp for cp in chains.get(c.key.kid, []) if cp.body["upto"] >= c.seq), None)
        if cover is None:
            raise SummaryError(
                f"site {site}: the contribution at seq {c.seq} is not yet under a logged "
                "checkpoint (sync the gateway)"
            )
        end = max(end, cover.index)
    upto_end = [cp for cp in checkpoints if cp.index <= end]
    window = upto_end[-policy.window :]
    start = window[0].index
    for c in contributions:
        if c.key.site_id == site:
            cover = next(cp for cp in chains[c.key.kid] if cp.body["upto"] >= c.seq)
            if cover.index < start:
                raise SummaryError(
                    f"site {site}: its contributions to the lot lie further apart than the "
                    f"policy's window of {policy.window} checkpoints"
                )
    picked: list[Logged] = list(window)
    rotations = {r.key.kid: r for r in usable if r.type is EventType.KEY_ROTATION}
    for key in book.keys.values():
        if key.site_id != site or key.introduced >= end:
            continue
        chain = chains.get(key.kid, [])
        base = [cp for cp in chain if cp.index < start][-1:]
        fence = [cp for cp in chain if cp.index > end][:1]
        picked.extend(base + fence)
        if not fence:
            upto_end_here = [cp for cp in chain if cp.index <= end]
            last = upto_end_here[-1] if upto_end_here else None
            rotation = rotations.get(key.kid)
            if rotation is not None:
                picked.append(rotation)
            elif key.retired is None or key.retired.last_checkpoint != (
                last.env.event_id if last else None
            ):
                raise SummaryError(
                    f"site {site}: {key.name} has no checkpoint logged after the window's end "
                    f"(log index {end}) yet, so the bundle could not show its chain complete; "
                    "sync that gateway (it checkpoints on its schedule), or, if it is out of "
                    "service, ask the registry authority to retire it at its last checkpoint"
                )
    pinned = registry.stocks.get(site)
    if pinned is not None:
        stock = next((r for r in usable if r.env.event_id == pinned[0]), None)
        if stock is not None and stock.index < start:
            picked.append(stock)
        elif stock is None:
            notes.append(
                f"site {site}: its pinned opening stock (record {pinned[0].hex()}) is not in "
                "the log yet (sync the gateway that declared it); the balance starts from zero"
            )
        else:
            notes.append(
                f"site {site}: its opening stock was logged at {stock.index}, after this "
                f"lot's window starts ({start}), so it cannot count; the balance starts from zero"
            )
    return start, picked


def _voided(usable: Sequence[Logged]) -> set[bytes]:
    """Contributions their gateways voided (listed by later checkpoints): never summed."""
    return {v for r in usable if r.type is EventType.CHECKPOINT for v in r.body.get("voided", ())}


def _introductions(key: KeyState, usable: Sequence[Logged]) -> list[Logged]:
    """The rotation records that introduced ``key``, back to an enrolled key."""
    out: list[Logged] = []
    current = key
    while current.by_rotation:
        rotation = next(r for r in usable if r.index == current.introduced)
        out.append(rotation)
        current = rotation.key
    return out


def _provers(
    keys: LedgerKeyPair, statement: Statement, derived: Derived,
    contrib_openings: dict[bytes, dict[str, Opening]], group: Group,
) -> list[SubProver]:  # fmt: skip
    assert derived.receipt is not None
    g, pol = group, statement.policy
    rho = _zero(g)
    for o in contrib_openings.values():
        rho = g.scalar_add(rho, o["total"].blinding)
    provers: list[SubProver] = [SchnorrProver("total", rho, g)]

    recv = _open(keys, derived.receipt.body)["net"]
    w, tau = statement.total, statement.tolerance
    low, high = w + tau - recv.value, recv.value - w + tau
    if not (0 <= low < 2**pol.tolerance_bits and 0 <= high < 2**pol.tolerance_bits):
        raise SummaryError(
            f"the refiner received {recv.value} units, outside {w} ± {tau}: the lot's "
            "tolerance claim is false"
        )
    provers.append(RangeProver("tol_low", low, g.scalar_neg(recv.blinding), pol.tolerance_bits, g))
    provers.append(RangeProver("tol_high", high, recv.blinding, pol.tolerance_bits, g))

    stocks: dict[str, Opening] = {}
    for i, (site, rec) in enumerate(sorted(derived.stocks.items())):
        stock = _open(keys, rec.body)["stock"]
        if not _in_range(stock.value, pol.stock_bits):
            raise SummaryError(
                f"site {site}: its declared opening stock is above the policy's maximum of "
                f"{2**pol.stock_bits - 1} units"
            )
        stocks[site] = stock
        provers.append(RangeProver(f"stock{i}", stock.value, stock.blinding, pol.stock_bits, g))

    p, q = g.scalar_from_int(pol.recovery_p), g.scalar_from_int(pol.recovery_q)
    cache: dict[bytes, dict[str, Opening]] = {}
    for i, check in enumerate(derived.checks):
        stock = stocks.get(check.site, Opening(0, _zero(g)))
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
        if not _in_range(value, pol.balance_bits):
            raise SummaryError(
                f"site {check.site}: at log index {check.index} outputs exceed inputs × "
                f"{pol.recovery_p}/{pol.recovery_q} plus opening stock: the mass balance "
                "claim is false"
            )
        provers.append(RangeProver(f"balance{i}", value, blinding, pol.balance_bits, g))
    return provers


def _in_range(value: int, bits: int) -> bool:
    return 0 <= value < (1 << bits)


def _step(fn: Any) -> Any:
    """The verifier's derivation refusing what the builder assembled is a builder bug or a
    log the verifier could not accept: either way, say it as the summary's error."""
    try:
        return fn()
    except ProofError as exc:
        raise SummaryError(f"the bundle would not verify: {exc}") from exc


def _zero(g: Group) -> Scalar:
    return g.scalar_from_int(0)


def _payload(event: LoggedEvent) -> Payload:
    # Logged envelopes were strictly verified at intake; decode without re-verifying.
    return peek_payload(event.envelope)


def _open(keys: LedgerKeyPair, body: Mapping[str, Any]) -> dict[str, Opening]:
    """The sealed openings of a logged record (checked against its commitments at intake)."""
    return open_sealed(body["sealed"], keys.public.sealing_key, keys.sealing_secret)
