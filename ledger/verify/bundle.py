"""Lot summary bundles: the format, the shared derivation, and the offline verifier.

A bundle is deterministic CBOR (docs/zk-summaries.md)::

    {"v": 1, "kind": "cobalt-custody/lot-summary",
     "statement": {"lot", "refiner", "total", "tau", "sites", "policy", "id", "audience",
                   "windows": {site: first log index of the site's window}},
     "registry": COSE registry snapshot, "log": COSE log checkpoint,
     "hashes": [32-byte Merkle nodes used by the inclusion proofs, each once],
     "records": [{"i": log index, "env": COSE envelope, "path": [positions in "hashes"]}],
     "proof": {"e": 16 bytes, "total": 32 bytes, "tolerance": [2 range proofs],
               "balance": [range proofs, by site then log index]}}

Prover (``ledger.summary``) and verifier share ``derive`` (which records play which role and
which commitment every proof is about) and ``summary_transcript`` (the one Fiat–Shamir
transcript), so the two cannot drift apart. Everything here needs only ``custody`` and
``ledger.verify``; the verifier runs offline.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from custody import cbor, cose
from custody.envelope import Envelope, verify_envelope
from custody.errors import CommitmentError, CustodyError, ProofError, SchemaError
from custody.event import EventType, validate_identifier
from custody.group import ED25519, Group, Point
from custody.keys import LedgerPublicKeys
from custody.merkle import leaf_hash, verify_inclusion
from custody.zk.rangeproof import RangeProof, RangeVerifier
from custody.zk.sigma import SchnorrProof, SchnorrVerifier, SubVerifier, verify_all
from custody.zk.transcript import CHALLENGE_BYTES, Transcript
from ledger.verify.checkpoint import Checkpoint, verify_checkpoint
from ledger.verify.policy import PUBLISHED_POLICIES, Policy, tolerance_for
from ledger.verify.registry import Registry, RegistryEntry, decode_registry

__all__ = [
    "BUNDLE_KIND",
    "Bundle",
    "Claim",
    "Derived",
    "LoggedRecord",
    "Statement",
    "SummaryProof",
    "derive",
    "summary_transcript",
    "verify_bundle",
]

T = TypeVar("T")
BUNDLE_KIND = "cobalt-custody/lot-summary"
TRANSCRIPT_DOMAIN = "cobalt-custody/lot-summary/v1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_RECORDS = 100_000


# --- format ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    lot: str
    refiner: str
    total: int  # W, in 0.1 kg units
    tolerance: int  # τ
    sites: tuple[str, ...]  # contributing sites, sorted
    policy: Policy
    summary_id: bytes
    audience: str
    windows: Mapping[str, int]  # site -> log index where its balance window starts

    def to_map(self) -> dict[str, Any]:
        return {
            "lot": self.lot, "refiner": self.refiner, "total": self.total, "tau": self.tolerance,
            "sites": list(self.sites), "policy": self.policy.to_map(), "id": self.summary_id,
            "audience": self.audience, "windows": dict(self.windows),
        }  # fmt: skip

    @classmethod
    def from_map(cls, raw: Any) -> Statement:
        keys = {"lot", "refiner", "total", "tau", "sites", "policy", "id", "audience", "windows"}
        if not isinstance(raw, dict) or set(raw) != keys:
            raise SchemaError("statement fields")
        sites = raw["sites"]
        if not isinstance(sites, list) or not sites:
            raise SchemaError("statement sites must be a non-empty list")
        # Identifiers first: sorting a list that holds arrays or numbers would raise TypeError.
        for s in sites:
            validate_identifier(s, "site")
        if sites != sorted(set(sites)):
            raise SchemaError("statement sites must be a sorted list without duplicates")
        windows = raw["windows"]
        if not isinstance(windows, dict) or set(windows) != set(sites):
            raise SchemaError("statement windows must name exactly the contributing sites")
        for name in ("total", "tau"):
            if not _uint(raw[name]):
                raise SchemaError(f"statement {name} must be a non-negative integer")
        if not all(_uint(v) for v in windows.values()):
            raise SchemaError("statement windows must be log indexes")
        if not isinstance(raw["id"], bytes) or len(raw["id"]) != 16:
            raise SchemaError("statement id must be 16 bytes")
        if not isinstance(raw["audience"], str) or raw["audience"] not in AUDIENCES:
            raise SchemaError(f"statement audience must be one of {sorted(AUDIENCES)}")
        return cls(
            validate_identifier(raw["lot"], "lot"), validate_identifier(raw["refiner"], "refiner"),
            raw["total"], raw["tau"], tuple(sites), Policy.from_map(raw["policy"]), raw["id"],
            raw["audience"], dict(windows),
        )  # fmt: skip


AUDIENCES = frozenset({"buyer", "regulator", "auditor"})


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    index: int
    envelope: bytes
    path: tuple[bytes, ...]  # the RFC 9162 inclusion proof under the bundle's log checkpoint

    def to_map(self, pool: dict[bytes, int]) -> dict[str, Any]:
        # Inclusion proofs of neighbouring records share most upper nodes: each node is sent
        # once in the bundle's "hashes" and referenced by position (a third of the bytes).
        return {"i": self.index, "env": self.envelope, "path": [pool[h] for h in self.path]}

    @classmethod
    def from_map(cls, raw: Any, pool: Sequence[bytes], used: set[int]) -> LoggedRecord:
        if not isinstance(raw, dict) or set(raw) != {"i", "env", "path"}:
            raise SchemaError("record fields")
        if not _uint(raw["i"]) or not isinstance(raw["env"], bytes):
            raise SchemaError("record index or envelope")
        path = raw["path"]
        if not isinstance(path, list) or len(path) > 64:
            raise SchemaError("record inclusion path")
        if not all(_uint(k) and k < len(pool) for k in path):
            raise SchemaError("record inclusion path refers to no hash")
        used.update(path)
        return cls(raw["i"], raw["env"], tuple(pool[k] for k in path))


@dataclass(frozen=True, slots=True)
class SummaryProof:
    challenge: int
    total: SchnorrProof
    tolerance: tuple[RangeProof, RangeProof]
    balance: tuple[RangeProof, ...]

    def to_map(self) -> dict[str, Any]:
        return {
            "e": self.challenge.to_bytes(CHALLENGE_BYTES, "little"),
            "total": self.total.to_bytes(),
            "tolerance": [p.to_bytes() for p in self.tolerance],
            "balance": [p.to_bytes() for p in self.balance],
        }

    @classmethod
    def from_map(cls, raw: Any, policy: Policy, group: Group) -> SummaryProof:
        if not isinstance(raw, dict) or set(raw) != {"e", "total", "tolerance", "balance"}:
            raise SchemaError("proof fields")
        e = raw["e"]
        if not isinstance(e, bytes) or len(e) != CHALLENGE_BYTES:
            raise SchemaError("proof challenge must be 16 bytes")
        tol, bal = raw["tolerance"], raw["balance"]
        if not isinstance(tol, list) or len(tol) != 2 or not isinstance(bal, list):
            raise SchemaError("proof tolerance/balance lists")
        if not all(isinstance(p, bytes) for p in (*tol, *bal)) or not isinstance(
            raw["total"], bytes
        ):
            raise SchemaError("proofs must be byte strings")
        return cls(
            int.from_bytes(e, "little"),
            SchnorrProof.from_bytes(raw["total"], group),
            (
                RangeProof.from_bytes(tol[0], group, bits=policy.tolerance_bits),
                RangeProof.from_bytes(tol[1], group, bits=policy.tolerance_bits),
            ),
            tuple(RangeProof.from_bytes(p, group, bits=policy.balance_bits) for p in bal),
        )


@dataclass(frozen=True, slots=True)
class Bundle:
    statement: Statement
    registry: bytes
    log: bytes
    records: tuple[LoggedRecord, ...]
    proof: SummaryProof

    def to_bytes(self) -> bytes:
        pool: dict[bytes, int] = {}
        for rec in self.records:
            for h in rec.path:
                pool.setdefault(h, len(pool))
        return cbor.encode({
            "v": 1, "kind": BUNDLE_KIND, "statement": self.statement.to_map(),
            "registry": self.registry, "log": self.log, "hashes": list(pool),
            "records": [r.to_map(pool) for r in self.records], "proof": self.proof.to_map(),
        })  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, group: Group = ED25519) -> Bundle:
        """Strict decode: canonical CBOR, exactly the known fields, valid points and scalars."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise ProofError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
        try:
            raw = cbor.decode(data)
            keys = {"v", "kind", "statement", "registry", "log", "hashes", "records", "proof"}
            if not isinstance(raw, dict) or set(raw) != keys:
                raise SchemaError("bundle fields")
            if raw["v"] != 1 or raw["kind"] != BUNDLE_KIND:
                raise SchemaError("not a version 1 lot summary bundle")
            statement = Statement.from_map(raw["statement"])
            if not isinstance(raw["registry"], bytes) or not isinstance(raw["log"], bytes):
                raise SchemaError("registry and log must be byte strings")
            pool = raw["hashes"]
            if not isinstance(pool, list) or not all(
                isinstance(h, bytes) and len(h) == 32 for h in pool
            ):
                raise SchemaError("bundle hashes must be 32-byte nodes")
            if len(set(pool)) != len(pool):
                raise SchemaError("bundle hashes must not repeat")
            records = raw["records"]
            if not isinstance(records, list) or not 0 < len(records) <= MAX_RECORDS:
                raise SchemaError("bundle records")
            used: set[int] = set()
            decoded = tuple(LoggedRecord.from_map(r, pool, used) for r in records)
            if len(used) != len(pool):
                raise SchemaError("bundle hashes that no inclusion proof uses")
            indexes = [r.index for r in decoded]
            if indexes != sorted(set(indexes)):
                raise SchemaError("records must be sorted by log index, without duplicates")
            proof = SummaryProof.from_map(raw["proof"], statement.policy, group)
        except (CustodyError, ValueError) as exc:
            raise ProofError(f"decoding: {exc}") from exc
        return cls(statement, raw["registry"], raw["log"], decoded, proof)


# --- the shared derivation ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logged:
    """A verified envelope at its log index, with the registry entry of its key."""

    index: int
    env: Envelope
    entry: RegistryEntry

    @property
    def body(self) -> Mapping[str, Any]:
        return self.env.payload.body

    @property
    def device(self) -> str:
        return self.entry.device_id

    @property
    def chain(self) -> bytes:
        """Checkpoints chain per device key (a re-keyed gateway starts a new chain)."""
        return self.entry.kid


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    site: str
    index: int  # the site checkpoint this balance is taken at
    checkpoints: tuple[Logged, ...]  # each device's latest checkpoint at or before ``index``


@dataclass
class Derived:
    contributions: list[Logged] = field(default_factory=list)
    receipt: Logged | None = None
    checks: list[BalanceCheck] = field(default_factory=list)


def derive(statement: Statement, records: Sequence[Logged]) -> Derived:
    """Which record plays which role; raises ``ProofError`` naming what does not fit."""
    out = Derived()
    by_site: dict[str, list[Logged]] = {s: [] for s in statement.sites}
    for rec in records:
        site, kind = rec.entry.site_id, rec.env.payload.type
        if kind is EventType.LOT_CONTRIBUTION:
            if rec.body.get("lot") != statement.lot or site not in by_site:
                raise ProofError(f"record {rec.index}: a contribution that is not this lot's")
            out.contributions.append(rec)
        elif kind is EventType.WEIGHING:
            if (rec.body.get("lot"), rec.body.get("direction"), site) != (
                statement.lot, "in", statement.refiner,
            ):  # fmt: skip
                raise ProofError(f"record {rec.index}: a weighing that is not this lot's receipt")
            if out.receipt is not None:
                raise ProofError("more than one receipt of the lot")
            out.receipt = rec
        elif kind is EventType.CHECKPOINT:
            if site not in by_site:
                raise ProofError(f"record {rec.index}: a checkpoint of a non-contributing site")
            by_site[site].append(rec)
        else:
            raise ProofError(f"record {rec.index}: a {kind.value} record has no role here")
    if out.receipt is None:
        raise ProofError(f"no receipt of lot {statement.lot} by refiner {statement.refiner}")
    contributing = {c.entry.site_id for c in out.contributions}
    if contributing != set(statement.sites):
        raise ProofError("the contributions' sites are not the statement's sites")
    for site in statement.sites:
        contribs = [c for c in out.contributions if c.entry.site_id == site]
        out.checks.extend(_site_checks(statement, site, by_site[site], contribs))
    return out


def _site_checks(
    statement: Statement, site: str, checkpoints: list[Logged], contribs: list[Logged]
) -> list[BalanceCheck]:
    """Chains, window and end anchor of one site (docs/zk-summaries.md §2)."""
    start = statement.windows[site]
    per_chain: dict[bytes, list[Logged]] = {}
    for cp in checkpoints:
        per_chain.setdefault(cp.chain, []).append(cp)
    bases: dict[bytes, Logged] = {}
    for kid, chain in per_chain.items():
        name = f"{chain[0].device} (key {kid.hex()[:16]})"
        chain.sort(key=lambda c: c.index)
        for prev, cur in itertools.pairwise(chain):
            if (
                cur.body["epoch"] != prev.body["epoch"] + 1
                or cur.body.get("prev_checkpoint") != prev.env.event_id
            ):
                raise ProofError(f"site {site}: checkpoints of {name} are not contiguous")
        if chain[0].index < start:
            bases[kid] = chain[0]
            if len(chain) > 1 and chain[1].index < start:
                raise ProofError(
                    f"site {site}: {name} has more than one checkpoint before the window"
                )
        elif chain[0].body["epoch"] != 1:
            raise ProofError(f"site {site}: {name}'s first checkpoint in the window has no base")
    in_window = sorted((c for c in checkpoints if c.index >= start), key=lambda c: c.index)
    if not in_window:
        raise ProofError(f"site {site}: no checkpoint in the balance window")
    if len(in_window) > statement.policy.window or (
        bases and len(in_window) < statement.policy.window
    ):
        raise ProofError(f"site {site}: the window holds {len(in_window)} checkpoints, "
                         f"the policy {statement.policy.window}")  # fmt: skip
    # End anchor: the window ends at the checkpoint that covers the site's last contribution.
    end = in_window[-1].index
    covering = []
    for contrib in contribs:
        chain = per_chain.get(contrib.chain, [])
        cover = [c for c in chain if c.body["upto"] >= contrib.env.seq and c.index >= start]
        if not cover:
            raise ProofError(
                f"site {site}: contribution {contrib.index} is not under a checked checkpoint"
            )
        covering.append(min(c.index for c in cover))
    if max(covering) != end:
        raise ProofError(f"site {site}: the window does not end at the contribution's checkpoint")
    latest = dict(bases)
    checks = []
    for cp in in_window:
        latest[cp.chain] = cp
        checks.append(BalanceCheck(site, cp.index, tuple(latest[d] for d in sorted(latest))))
    return checks


# --- commitments every proof is about ---------------------------------------------------


def mass_point(rec: Logged, name: str, group: Group = ED25519) -> Point:
    try:
        return group.point(rec.body["mass"][name])
    except (KeyError, TypeError, CommitmentError) as exc:
        raise ProofError(f"record {rec.index}: mass {name!r}: {exc}") from exc


def counted_field(rec: Logged) -> str:
    """The mass a weighing counts: net for a two-pass weighing, else bag, else gross."""
    mass = rec.body["mass"]
    for name in ("net", "bag", "gross"):
        if name in mass:
            return name
    raise ProofError(f"record {rec.index}: no countable mass")


@dataclass(frozen=True, slots=True)
class PublicPoints:
    contrib_sum: Point | None
    receipt: Point
    tol_low: Point | None  # (W + τ)·H − C_recv
    tol_high: Point | None  # C_recv − (W − τ)·H
    balances: tuple[Point | None, ...]


def public_points(
    statement: Statement, derived: Derived, stocks: Mapping[str, Point], group: Group = ED25519
) -> PublicPoints:
    g, pol = group, statement.policy
    total: Point | None = None
    for c in derived.contributions:
        total = g.add(total, mass_point(c, "total", g))
    assert derived.receipt is not None
    recv = mass_point(derived.receipt, counted_field(derived.receipt), g)
    w, tau = statement.total, statement.tolerance
    low = g.sub(_times_h(g, w + tau), recv)
    high = g.sub(recv, _times_h(g, w - tau)) if w >= tau else g.add(recv, _times_h(g, tau - w))
    p, q = g.scalar_from_int(pol.recovery_p), g.scalar_from_int(pol.recovery_q)
    balances = []
    for check in derived.checks:
        if check.site not in stocks:
            raise ProofError(f"site {check.site} has no opening stock in the registry")
        ins: Point | None = None
        outs: Point | None = None
        for cp in check.checkpoints:
            ins = g.add(ins, mass_point(cp, "in", g))
            outs = g.add(outs, mass_point(cp, "out", g))
        # C_B = p·ΣC_in + q·(C_S − ΣC_out) commits to p·I + q·(S − O) >= 0, i.e.
        # q·O <= p·I + q·S: outputs never above inputs × p/q plus the opening stock.
        stock_left = g.sub(stocks[check.site], outs)
        p_in = None if ins is None else g.mul(p, ins)
        q_rest = None if stock_left is None else g.mul(q, stock_left)
        balances.append(g.add(p_in, q_rest))
    return PublicPoints(total, recv, low, high, tuple(balances))


def _times_h(g: Group, value: int) -> Point | None:
    return g.mul(g.scalar_from_int(value), g.H) if value else None


def summary_transcript(
    statement: Statement, registry: bytes, log: bytes, records: Sequence[LoggedRecord],
    points: PublicPoints, group: Group = ED25519,
) -> Transcript:  # fmt: skip
    """The statement, the signed context, every record and every commitment, in a fixed order."""
    tr = Transcript(TRANSCRIPT_DOMAIN, group)
    tr.message("statement", cbor.encode(statement.to_map()))
    tr.message("registry", registry)
    tr.message("log", log)
    for rec in records:
        tr.integer("record/index", rec.index)
        tr.message("record/envelope", rec.envelope)
    tr.point("contrib_sum", points.contrib_sum)
    tr.point("receipt", points.receipt)
    tr.point("tol_low", points.tol_low)
    tr.point("tol_high", points.tol_high)
    tr.points("balances", list(points.balances))
    return tr


# --- verification -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """What a buyer may rely on once ``verify_bundle`` returns."""

    lot: str
    refiner: str
    total: int
    tolerance: int
    sites: tuple[str, ...]
    balance_checks: int
    log_size: int
    policy_version: int

    def describe(self) -> str:
        kg = _kg(self.total)
        return (
            f"lot {self.lot}: {kg} kg from {len(self.sites)} registered site(s) "
            f"({', '.join(self.sites)}), received by {self.refiner} "
            f"within {_kg(self.tolerance)} kg; "
            f"mass balance held at {self.balance_checks} site checkpoint(s); "
            f"every record is in the ledger's signed log of {self.log_size} entries "
            f"(policy v{self.policy_version})"
        )


def _kg(units: int) -> str:
    return f"{units // 10}.{units % 10}"


def verify_bundle(
    data: bytes,
    ledger: LedgerPublicKeys,
    *,
    registry_key: LedgerPublicKeys | None = None,
    policies: Mapping[int, Policy] = PUBLISHED_POLICIES,
    group: Group = ED25519,
) -> Claim:
    """Every check of docs/zk-summaries.md §3 in order; ``ProofError`` names the first failure."""
    bundle = Bundle.from_bytes(data, group)
    st = bundle.statement
    registry = _step(
        "registry signature", lambda: decode_registry(bundle.registry, registry_key or ledger)
    )
    log: Checkpoint = _step(
        "log checkpoint signature", lambda: verify_checkpoint(bundle.log, ledger)
    )
    # The claim is stated as this ledger's: the signed checkpoint must say so too, or a key
    # pinned under one name would vouch for a log that calls itself another.
    if log.ledger_id != ledger.ledger_id:
        raise ProofError(
            f"log checkpoint: signed as ledger {log.ledger_id!r}, "
            f"but the pinned key is ledger {ledger.ledger_id!r}"
        )
    records = [_verify_record(rec, registry, log) for rec in bundle.records]
    derived = _step("record roles", lambda: derive(st, records))
    stocks = _step("opening stocks", lambda: _stocks(registry, st.sites, group))
    points = _step("commitments", lambda: public_points(st, derived, stocks, group))
    if len(bundle.proof.balance) != len(points.balances):
        raise ProofError(
            f"proofs: {len(bundle.proof.balance)} balance proofs for {len(points.balances)} checks"
        )
    tr = summary_transcript(st, bundle.registry, bundle.log, bundle.records, points, group)
    w_minus_total = g_sub_total(group, points.contrib_sum, st.total)
    pol = st.policy
    verifiers: list[SubVerifier] = [
        SchnorrVerifier("total", w_minus_total, bundle.proof.total, group),
        RangeVerifier(
            "tol_low", points.tol_low, bundle.proof.tolerance[0], pol.tolerance_bits, group
        ),
        RangeVerifier(
            "tol_high", points.tol_high, bundle.proof.tolerance[1], pol.tolerance_bits, group
        ),
        *(
            RangeVerifier(f"balance{i}", c, p, pol.balance_bits, group)
            for i, (c, p) in enumerate(zip(points.balances, bundle.proof.balance, strict=True))
        ),
    ]
    _step("zero-knowledge proofs", lambda: verify_all(tr, verifiers, bundle.proof.challenge))
    published = policies.get(pol.version)
    if published != pol:
        raise ProofError(f"policy: the bundle's constants are not published policy v{pol.version}")
    if st.tolerance != tolerance_for(st.total, pol):
        raise ProofError("policy: the tolerance is not the policy's for this total")
    if len(st.sites) == 1 and st.audience != "auditor" and not pol.single_site_lots:
        raise ProofError("policy: single-site lots may not be proven to this audience")
    return Claim(st.lot, st.refiner, st.total, st.tolerance, st.sites, len(points.balances),
                 log.size, pol.version)  # fmt: skip


def g_sub_total(group: Group, contrib_sum: Point | None, total: int) -> Point | None:
    """Σ C_contrib − W·H: the point whose discrete log on G the Schnorr proof knows."""
    return group.sub(contrib_sum, _times_h(group, total))


def _verify_record(rec: LoggedRecord, registry: Registry, log: Checkpoint) -> Logged:
    where = f"record at log index {rec.index}"
    try:
        msg = cose.decode_sign1(rec.envelope)
        kid = msg.protected.get(cose.HDR_KID)
        entry = next((e for e in registry.entries if e.kid == kid), None)
        if entry is None:
            raise ProofError(f"{where}: signed by a key that is not in the registry")
        env = verify_envelope(rec.envelope, entry.public_key)
        if env.payload.device_id != entry.device_id or env.payload.site_id != entry.site_id:
            raise ProofError(f"{where}: device or site differs from the key's enrolment")
        made = env.payload.time.ms
        if entry.revoked_ms is not None and made >= entry.revoked_ms:
            raise ProofError(f"{where}: made after its key was revoked")
        if entry.valid_from_ms is not None and made < entry.valid_from_ms:
            raise ProofError(f"{where}: made before its key's validity started")
        if rec.index >= log.size:
            raise ProofError(f"{where}: beyond the signed log of {log.size} entries")
        verify_inclusion(leaf_hash(env.event_id), rec.index, log.size, rec.path, log.root)
    except ProofError:
        raise
    except CustodyError as exc:
        raise ProofError(f"{where}: {exc}") from exc
    return Logged(rec.index, env, entry)


def _stocks(registry: Registry, sites: Sequence[str], group: Group) -> dict[str, Point]:
    out: dict[str, Point] = {}
    for site in sites:
        encoded = registry.opening_stocks.get(site)
        if encoded is None:
            raise ProofError(f"site {site} has no opening stock in the registry")
        out[site] = group.point(encoded)  # validated: subgroup, canonical, not the identity
    return out


def _step(name: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ProofError as exc:
        raise ProofError(f"{name}: {exc}") from exc
    except CustodyError as exc:
        raise ProofError(f"{name}: {exc}") from exc


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
