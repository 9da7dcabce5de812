"""Lot summary bundles: the format, the public points, and the offline verifier.

A bundle is deterministic CBOR (docs/zk-summaries.md §4)::

    {"v": 2, "kind": "cobalt-custody/lot-summary",
     "statement": {"lot", "refiner", "total", "tau", "sites", "policy", "id", "audience",
                   "windows": {site: log index of the first checkpoint of its window}},
     "log": COSE log checkpoint,
     "hashes": [32-byte Merkle nodes used by the inclusion proofs, each once],
     "registry": [{"i": log index, "entry": COSE registry entry, "path": [positions]}],
     "records": [{"i": log index, "env": COSE envelope, "path": [positions in "hashes"]}],
     "proof": {"e": 16 bytes, "total": 32 bytes, "tolerance": [2 range proofs],
               "stocks": [range proofs, by site], "balance": [range proofs, by site then index]}}

Prover (``ledger.summary``) and verifier share ``ledger.verify.roles`` (which record plays
which role), ``public_points`` (which commitment every proof is about) and
``summary_transcript`` (the one Fiat–Shamir transcript), so the two cannot drift apart.
Everything here needs only ``custody`` and ``ledger.verify``; the verifier runs offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from custody import cbor, cose
from custody.envelope import verify_envelope
from custody.errors import CommitmentError, CustodyError, ProofError, SchemaError
from custody.event import validate_identifier
from custody.group import ED25519, Group, Point
from custody.keys import LedgerPublicKeys
from custody.mass import format_kg
from custody.merkle import leaf_hash, verify_inclusion
from custody.zk.rangeproof import RangeProof, RangeVerifier
from custody.zk.sigma import SchnorrProof, SchnorrVerifier, SubVerifier, verify_all
from custody.zk.transcript import CHALLENGE_BYTES, Transcript
from ledger.verify.authority import AuthorityKey
from ledger.verify.checkpoint import Checkpoint, verify_checkpoint
from ledger.verify.policy import PUBLISHED_POLICIES, UNSOUND_POLICIES, Policy, tolerance_for
from ledger.verify.registry import LoggedEntry, RegistryState, decode_entry, replay
from ledger.verify.roles import Derived, KeyBook, Logged, derive

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_VERSION",
    "Bundle",
    "Claim",
    "LoggedRecord",
    "PublicPoints",
    "Statement",
    "SummaryProof",
    "public_points",
    "summary_transcript",
    "verify_bundle",
]

T = TypeVar("T")
BUNDLE_KIND = "cobalt-custody/lot-summary"
BUNDLE_VERSION = 2
TRANSCRIPT_DOMAIN = "cobalt-custody/lot-summary/v2"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_RECORDS = 100_000
MAX_ENTRIES = 100_000


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
    """A logged document (a device record, or a registry entry) with its inclusion proof."""

    index: int
    data: bytes  # the COSE bytes
    path: tuple[bytes, ...]  # the RFC 9162 inclusion proof under the bundle's log checkpoint

    def to_map(self, pool: dict[bytes, int], name: str) -> dict[str, Any]:
        # Inclusion proofs of neighbouring records share most upper nodes: each node is sent
        # once in the bundle's "hashes" and referenced by position (a third of the bytes).
        return {"i": self.index, name: self.data, "path": [pool[h] for h in self.path]}

    @classmethod
    def from_map(cls, raw: Any, name: str, pool: Sequence[bytes], used: set[int]) -> LoggedRecord:
        if not isinstance(raw, dict) or set(raw) != {"i", name, "path"}:
            raise SchemaError(f"{name} item fields")
        if not _uint(raw["i"]) or not isinstance(raw[name], bytes):
            raise SchemaError(f"{name} item index or bytes")
        path = raw["path"]
        if not isinstance(path, list) or len(path) > 64:
            raise SchemaError(f"{name} item inclusion path")
        if not all(_uint(k) and k < len(pool) for k in path):
            raise SchemaError(f"{name} item inclusion path refers to no hash")
        used.update(path)
        return cls(raw["i"], raw[name], tuple(pool[k] for k in path))


@dataclass(frozen=True, slots=True)
class SummaryProof:
    challenge: int
    total: SchnorrProof
    tolerance: tuple[RangeProof, RangeProof]
    stocks: tuple[RangeProof, ...]
    balance: tuple[RangeProof, ...]

    def to_map(self) -> dict[str, Any]:
        return {
            "e": self.challenge.to_bytes(CHALLENGE_BYTES, "little"),
            "total": self.total.to_bytes(),
            "tolerance": [p.to_bytes() for p in self.tolerance],
            "stocks": [p.to_bytes() for p in self.stocks],
            "balance": [p.to_bytes() for p in self.balance],
        }

    @classmethod
    def from_map(cls, raw: Any, policy: Policy, group: Group) -> SummaryProof:
        if not isinstance(raw, dict) or set(raw) != {"e", "total", "tolerance", "stocks",
                                                     "balance"}:  # fmt: skip
            raise SchemaError("proof fields")
        e = raw["e"]
        if not isinstance(e, bytes) or len(e) != CHALLENGE_BYTES:
            raise SchemaError("proof challenge must be 16 bytes")
        tol, stocks, bal = raw["tolerance"], raw["stocks"], raw["balance"]
        if not isinstance(tol, list) or len(tol) != 2:
            raise SchemaError("proof tolerance must be a list of two proofs")
        if not isinstance(stocks, list) or not isinstance(bal, list):
            raise SchemaError("proof stocks and balance must be lists")
        if not all(isinstance(p, bytes) for p in (*tol, *stocks, *bal, raw["total"])):
            raise SchemaError("proofs must be byte strings")
        return cls(
            int.from_bytes(e, "little"),
            SchnorrProof.from_bytes(raw["total"], group),
            (
                RangeProof.from_bytes(tol[0], group, bits=policy.tolerance_bits),
                RangeProof.from_bytes(tol[1], group, bits=policy.tolerance_bits),
            ),
            tuple(RangeProof.from_bytes(p, group, bits=policy.stock_bits) for p in stocks),
            tuple(RangeProof.from_bytes(p, group, bits=policy.balance_bits) for p in bal),
        )


@dataclass(frozen=True, slots=True)
class Bundle:
    statement: Statement
    log: bytes
    registry: tuple[LoggedRecord, ...]  # the authority's entries 1..n, in seq order
    records: tuple[LoggedRecord, ...]  # device records, by log index
    proof: SummaryProof

    def to_bytes(self) -> bytes:
        pool: dict[bytes, int] = {}
        for rec in (*self.registry, *self.records):
            for h in rec.path:
                pool.setdefault(h, len(pool))
        return cbor.encode({
            "v": BUNDLE_VERSION, "kind": BUNDLE_KIND, "statement": self.statement.to_map(),
            "log": self.log, "hashes": list(pool),
            "registry": [r.to_map(pool, "entry") for r in self.registry],
            "records": [r.to_map(pool, "env") for r in self.records],
            "proof": self.proof.to_map(),
        })  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, group: Group = ED25519) -> Bundle:
        """Strict decode: canonical CBOR, exactly the known fields, valid points and scalars."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise ProofError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
        try:
            raw = cbor.decode(data)
            if isinstance(raw, dict) and raw.get("kind") == BUNDLE_KIND:
                version = raw.get("v")
                if isinstance(version, int) and version in UNSOUND_POLICIES:
                    raise ProofError(
                        f"a version {version} bundle: policy v{version} is refused because "
                        f"{UNSOUND_POLICIES[version]}; ask the ledger for a version "
                        f"{BUNDLE_VERSION} bundle"
                    )
            keys = {"v", "kind", "statement", "log", "hashes", "registry", "records", "proof"}
            if not isinstance(raw, dict) or set(raw) != keys:
                raise SchemaError("bundle fields")
            if raw["v"] != BUNDLE_VERSION or raw["kind"] != BUNDLE_KIND:
                raise SchemaError(f"not a version {BUNDLE_VERSION} lot summary bundle")
            statement = Statement.from_map(raw["statement"])
            if not isinstance(raw["log"], bytes):
                raise SchemaError("log must be a byte string")
            pool = raw["hashes"]
            if not isinstance(pool, list) or not all(
                isinstance(h, bytes) and len(h) == 32 for h in pool
            ):
                raise SchemaError("bundle hashes must be 32-byte nodes")
            if len(set(pool)) != len(pool):
                raise SchemaError("bundle hashes must not repeat")
            entries, records = raw["registry"], raw["records"]
            if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ENTRIES:
                raise SchemaError("bundle registry")
            if not isinstance(records, list) or not 0 < len(records) <= MAX_RECORDS:
                raise SchemaError("bundle records")
            used: set[int] = set()
            registry = tuple(LoggedRecord.from_map(r, "entry", pool, used) for r in entries)
            decoded = tuple(LoggedRecord.from_map(r, "env", pool, used) for r in records)
            if len(used) != len(pool):
                raise SchemaError("bundle hashes that no inclusion proof uses")
            indexes = [r.index for r in decoded]
            if indexes != sorted(set(indexes)):
                raise SchemaError("records must be sorted by log index, without duplicates")
            if set(indexes) & {r.index for r in registry}:
                raise SchemaError("a log index holds either a record or a registry entry")
            proof = SummaryProof.from_map(raw["proof"], statement.policy, group)
        except ProofError:
            raise
        except (CustodyError, ValueError) as exc:
            raise ProofError(f"decoding: {exc}") from exc
        return cls(statement, raw["log"], registry, decoded, proof)


# --- commitments every proof is about ---------------------------------------------------


def mass_point(rec: Logged, name: str, group: Group = ED25519) -> Point:
    try:
        return group.point(rec.body["mass"][name])
    except (KeyError, TypeError, CommitmentError) as exc:
        raise ProofError(f"record {rec.index}: mass {name!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PublicPoints:
    contrib_sum: Point | None
    receipt: Point
    tol_low: Point | None  # (W + τ)·H − C_recv
    tol_high: Point | None  # C_recv − (W − τ)·H
    stocks: tuple[Point, ...]  # C_S of each site with an opening stock, in site order
    balances: tuple[Point | None, ...]


def public_points(statement: Statement, derived: Derived, group: Group = ED25519) -> PublicPoints:
    g, pol = group, statement.policy
    total: Point | None = None
    for c in derived.contributions:
        total = g.add(total, mass_point(c, "total", g))
    assert derived.receipt is not None
    recv = mass_point(derived.receipt, "net", g)
    w, tau = statement.total, statement.tolerance
    low = g.sub(_times_h(g, w + tau), recv)
    high = g.sub(recv, _times_h(g, w - tau)) if w >= tau else g.add(recv, _times_h(g, tau - w))
    stocks = {site: mass_point(rec, "stock", g) for site, rec in sorted(derived.stocks.items())}
    p, q = g.scalar_from_int(pol.recovery_p), g.scalar_from_int(pol.recovery_q)
    balances = []
    for check in derived.checks:
        ins: Point | None = None
        outs: Point | None = None
        for cp in check.checkpoints:
            ins = g.add(ins, mass_point(cp, "in", g))
            outs = g.add(outs, mass_point(cp, "out", g))
        # C_B = p·ΣC_in + q·(C_S − ΣC_out) commits to p·I + q·(S − O) >= 0, i.e.
        # q·O <= p·I + q·S: outputs never above inputs × p/q plus the opening stock
        # (none declared: S = 0).
        stock_left = g.sub(stocks.get(check.site), outs)
        p_in = None if ins is None else g.mul(p, ins)
        q_rest = None if stock_left is None else g.mul(q, stock_left)
        balances.append(g.add(p_in, q_rest))
    return PublicPoints(total, recv, low, high, tuple(stocks.values()), tuple(balances))


def _times_h(g: Group, value: int) -> Point | None:
    return g.mul(g.scalar_from_int(value), g.H) if value else None


def summary_transcript(
    statement: Statement, log: bytes, registry: Sequence[LoggedRecord],
    records: Sequence[LoggedRecord], points: PublicPoints, group: Group = ED25519,
) -> Transcript:  # fmt: skip
    """The statement, the signed context, every entry, record and commitment, in order."""
    tr = Transcript(TRANSCRIPT_DOMAIN, group)
    tr.message("statement", cbor.encode(statement.to_map()))
    tr.message("log", log)
    for entry in registry:
        tr.integer("registry/index", entry.index)
        tr.message("registry/entry", entry.data)
    for rec in records:
        tr.integer("record/index", rec.index)
        tr.message("record/envelope", rec.data)
    tr.point("contrib_sum", points.contrib_sum)
    tr.point("receipt", points.receipt)
    tr.point("tol_low", points.tol_low)
    tr.point("tol_high", points.tol_high)
    tr.points("stocks", list(points.stocks))
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
    stock_sites: tuple[str, ...]  # sites whose balance starts from a declared opening stock
    log_size: int
    policy_version: int
    authority_id: str
    authority_fingerprint: str

    def describe(self) -> str:
        stocks = ", ".join(self.stock_sites) if self.stock_sites else "none"
        return (
            f"lot {self.lot}: {format_kg(self.total)} kg from {len(self.sites)} registered site(s) "
            f"({', '.join(self.sites)}), received by {self.refiner} "
            f"within {format_kg(self.tolerance)} kg; "
            f"mass balance held at each of {self.balance_checks} site checkpoint(s), "
            f"taken on the sites' schedule and at lot close, not between them "
            f"(declared opening stocks: {stocks}); "
            f"every key of those sites is accounted for in the registry of "
            f"{self.authority_id}; every record is in the ledger's signed log of "
            f"{self.log_size} entries (policy v{self.policy_version})"
        )


def verify_bundle(
    data: bytes,
    ledger: LedgerPublicKeys,
    authority: AuthorityKey,
    *,
    policies: Mapping[int, Policy] = PUBLISHED_POLICIES,
    group: Group = ED25519,
) -> Claim:
    """Every check of docs/zk-summaries.md §3 in order; ``ProofError`` names the first failure."""
    group.self_test()  # a libsodium that accepts torsion points would make proofs meaningless
    bundle = Bundle.from_bytes(data, group)
    st = bundle.statement
    log = _signed_log(bundle, ledger, authority)
    registry = _step("registry", lambda: _registry(bundle.registry, authority, log))
    book = KeyBook(registry)
    records = _step("records", lambda: [_record(rec, book, log) for rec in bundle.records])
    last = max(r.index for r in records)
    if registry.last_index < last:
        raise ProofError(
            f"registry: its newest entry shown is logged at {registry.last_index}, before the "
            f"record at {last}; entries logged in between could be missing (the registry "
            "must be shown up to an entry logged after every record)"
        )
    pol = st.policy
    derived = _step(
        "record roles",
        lambda: derive(st.lot, st.refiner, st.sites, st.windows, pol.window, book, records),
    )
    points = _step("commitments", lambda: public_points(st, derived, group))
    verifiers = _sub_verifiers(st, points, bundle.proof, group)
    tr = summary_transcript(st, bundle.log, bundle.registry, bundle.records, points, group)
    _step("zero-knowledge proofs", lambda: verify_all(tr, verifiers, bundle.proof.challenge))
    _check_policy(st, policies)
    return Claim(
        st.lot, st.refiner, st.total, st.tolerance, st.sites, len(points.balances),
        tuple(sorted(derived.stocks)), log.size, pol.version, authority.authority_id,
        authority.fingerprint,
    )  # fmt: skip


def _signed_log(bundle: Bundle, ledger: LedgerPublicKeys, authority: AuthorityKey) -> Checkpoint:
    """The bundle's log checkpoint, signed by the pinned ledger under its own name."""
    if authority.signing_key == ledger.signing_key:
        raise ProofError(
            "registry: the pinned registry authority key is the ledger's own signing key; "
            "a ledger cannot be its own registry authority"
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
    return log


def _sub_verifiers(
    st: Statement, points: PublicPoints, proof: SummaryProof, group: Group
) -> list[SubVerifier]:
    """One verifier per proven relation, in the transcript's order (docs/zk-summaries.md §4)."""
    pol = st.policy
    if len(proof.balance) != len(points.balances) or len(proof.stocks) != len(points.stocks):
        raise ProofError(
            f"proofs: {len(proof.balance)} balance and {len(proof.stocks)} stock "
            f"proofs for {len(points.balances)} checks and {len(points.stocks)} stocks"
        )
    return [
        SchnorrVerifier(
            "total", g_sub_total(group, points.contrib_sum, st.total), proof.total, group
        ),
        RangeVerifier("tol_low", points.tol_low, proof.tolerance[0], pol.tolerance_bits, group),
        RangeVerifier("tol_high", points.tol_high, proof.tolerance[1], pol.tolerance_bits, group),
        *(
            RangeVerifier(f"stock{i}", c, p, pol.stock_bits, group)
            for i, (c, p) in enumerate(zip(points.stocks, proof.stocks, strict=True))
        ),
        *(
            RangeVerifier(f"balance{i}", c, p, pol.balance_bits, group)
            for i, (c, p) in enumerate(zip(points.balances, proof.balance, strict=True))
        ),
    ]


def _check_policy(st: Statement, policies: Mapping[int, Policy]) -> None:
    """The statement's constants are a published policy's, and the policy allows the claim."""
    pol = st.policy
    if policies.get(pol.version) != pol:
        raise ProofError(f"policy: the bundle's constants are not published policy v{pol.version}")
    if st.tolerance != tolerance_for(st.total, pol):
        raise ProofError("policy: the tolerance is not the policy's for this total")
    if len(st.sites) == 1 and st.audience != "auditor" and not pol.single_site_lots:
        raise ProofError("policy: single-site lots may not be proven to this audience")


def g_sub_total(group: Group, contrib_sum: Point | None, total: int) -> Point | None:
    """Σ C_contrib − W·H: the point whose discrete log on G the Schnorr proof knows."""
    return group.sub(contrib_sum, _times_h(group, total))


def _registry(
    shown: Sequence[LoggedRecord], authority: AuthorityKey, log: Checkpoint
) -> RegistryState:
    entries = []
    for item in shown:
        where = f"entry at log index {item.index}"
        try:
            entry = decode_entry(item.data, authority)
        except CustodyError as exc:
            raise ProofError(
                f"{where}: not a valid entry of the pinned registry authority "
                f"{authority.authority_id} ({exc})"
            ) from exc
        _included(item, entry.entry_id, log, where)
        entries.append(LoggedEntry(item.index, entry))
    return replay(entries)


def _record(rec: LoggedRecord, book: KeyBook, log: Checkpoint) -> Logged:
    where = f"record at log index {rec.index}"
    try:
        msg = cose.decode_sign1(rec.data)
        kid = msg.protected.get(cose.HDR_KID)
        key = book.key(kid) if isinstance(kid, bytes) else None
        if key is None:
            raise ProofError("signed by a key that neither the registry nor a rotation enrolled")
        env = verify_envelope(rec.data, key.public_key)
    except CustodyError as exc:
        raise ProofError(f"{where}: {exc}") from exc
    _included(rec, env.event_id, log, where)
    try:
        return book.admit(rec.index, env)
    except ProofError as exc:
        raise ProofError(f"{where}: {exc}") from exc


def _included(item: LoggedRecord, leaf_input: bytes, log: Checkpoint, where: str) -> None:
    if item.index >= log.size:
        raise ProofError(f"{where}: beyond the signed log of {log.size} entries")
    try:
        verify_inclusion(leaf_hash(leaf_input), item.index, log.size, item.path, log.root)
    except CustodyError as exc:
        raise ProofError(f"{where}: not in the signed log ({exc})") from exc


def _step(name: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ProofError as exc:
        raise ProofError(f"{name}: {exc}") from exc
    except CustodyError as exc:
        raise ProofError(f"{name}: {exc}") from exc


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
