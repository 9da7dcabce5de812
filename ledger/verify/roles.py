"""Which key may sign what, and which record plays which role in a lot summary.

Shared by the prover (``ledger.summary``) and the verifier (``ledger.verify.bundle``), so the
two cannot drift apart. Everything here is judged by log index and chain position, never by
a device's clock (docs/zk-summaries.md §2):

- **Keys.** A key exists from the log index of the authority's ``enrol`` entry, or of the
  ``key_rotation`` record of a valid key that announced it (same device and site). Its
  chain ends at its rotation's seq, or at the ``last_seq`` of the authority's ``retire``
  entry. A record is valid when its key existed at a smaller log index, its seq is within
  the chain's end, and its device and site are the key's.
- **Completeness.** Every key of a contributing site that existed before the site's window
  ends is shown: its latest checkpoint before the window (its base, if it has one), every
  checkpoint after, and a *fence* that proves nothing of its chain is missing up to the
  window's end: its first checkpoint logged after the window's end, or its key_rotation
  directly after its last checkpoint shown, or the authority's retirement naming that
  checkpoint as the chain's last.
- **Window.** The window of a site ends at the first checkpoint of the contributing key
  that covers the contribution (``upto`` ≥ its seq), searched over the whole chain shown,
  base included: a contribution covered by the base is refused, so a window cannot be
  moved past a deficit.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from custody.envelope import Envelope
from custody.errors import ProofError
from custody.event import EventType
from custody.keys import kid_for
from ledger.verify.registry import RegistryState, Retirement

__all__ = [
    "BalanceCheck",
    "Derived",
    "KeyBook",
    "KeyState",
    "Logged",
    "derive",
]


@dataclass(frozen=True, slots=True)
class KeyState:
    kid: bytes
    device_id: str
    site_id: str
    public_key: bytes
    introduced: int  # log index of its enrol entry or of the rotation that announced it
    by_rotation: bool
    retired: Retirement | None = None

    @property
    def name(self) -> str:
        return f"{self.device_id} (key {self.kid.hex()})"


@dataclass(frozen=True, slots=True)
class Logged:
    """A verified record at its log index, with the key that signed it."""

    index: int
    env: Envelope
    key: KeyState

    @property
    def body(self) -> Mapping[str, Any]:
        return self.env.payload.body

    @property
    def type(self) -> EventType:
        return self.env.payload.type

    @property
    def seq(self) -> int:
        return self.env.payload.seq


class KeyBook:
    """The keys the registry enrolled, and those announced by rotations, as records arrive
    in log-index order (``admit``)."""

    def __init__(self, registry: RegistryState) -> None:
        self.registry = registry
        self.keys: dict[bytes, KeyState] = {
            kid: KeyState(
                kid,
                e.device_id,
                e.site_id,
                e.public_key,
                e.index,
                False,
                registry.retirements.get(kid),
            )
            for kid, e in registry.enrolments.items()
        }
        self.rotated_at: dict[bytes, int] = {}  # kid -> seq of its key_rotation record
        self._last_index = -1

    def key(self, kid: bytes) -> KeyState | None:
        return self.keys.get(kid)

    def admit(self, index: int, env: Envelope) -> Logged:
        """Check that ``env`` may stand at ``index``; raise ``ProofError`` saying why not."""
        if index <= self._last_index:
            raise ProofError("records must be admitted in log-index order")
        self._last_index = index
        key = self.keys.get(env.kid)
        if key is None:
            raise ProofError("signed by a key that neither the registry nor a rotation enrolled")
        p = env.payload
        if p.device_id != key.device_id or p.site_id != key.site_id:
            raise ProofError(
                f"device or site ({p.device_id} at {p.site_id}) is not the key's enrolment "
                f"({key.device_id} at {key.site_id})"
            )
        if index <= key.introduced:
            raise ProofError(
                f"logged at {index}, before its key existed (log index {key.introduced})"
            )
        if key.retired is not None and p.seq > key.retired.last_seq:
            raise ProofError(
                f"seq {p.seq} is after its key's last seq {key.retired.last_seq}, as the "
                f"registry retired it (entry at log index {key.retired.index})"
            )
        rotated = self.rotated_at.get(env.kid)
        if rotated is not None and p.seq > rotated:
            raise ProofError(f"seq {p.seq} is after its key's rotation at seq {rotated}")
        logged = Logged(index, env, key)
        if p.type is EventType.KEY_ROTATION:
            new_key: bytes = p.body["new_key"]
            new_kid = kid_for(new_key)
            if new_kid in self.keys:
                raise ProofError(f"announces key {new_kid.hex()}, which is enrolled already")
            self.rotated_at[env.kid] = p.seq
            self.keys[new_kid] = KeyState(new_kid, key.device_id, key.site_id, new_key, index,
                                          True, self.registry.retirements.get(new_kid))  # fmt: skip
        return logged


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    site: str
    index: int  # the site checkpoint this balance is taken at
    checkpoints: tuple[Logged, ...]  # each key's latest checkpoint at or before ``index``


@dataclass
class Derived:
    contributions: list[Logged] = field(default_factory=list)
    receipt: Logged | None = None
    stocks: dict[str, Logged] = field(default_factory=dict)  # site -> its opening stock record
    checks: list[BalanceCheck] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)  # site -> log index its window ends at


def derive(
    lot: str,
    refiner: str,
    sites: Sequence[str],
    windows: Mapping[str, int],
    window: int,
    book: KeyBook,
    records: Sequence[Logged],
) -> Derived:
    """Which record plays which role; ``ProofError`` names what does not fit."""
    out = Derived()
    site_set = set(sites)
    checkpoints: dict[str, list[Logged]] = {s: [] for s in sites}
    rotations: dict[bytes, Logged] = {}
    pinned = {book.registry.stocks[s][0]: s for s in sites if s in book.registry.stocks}
    for rec in records:
        site, kind = rec.key.site_id, rec.type
        where = f"record {rec.index}"
        if kind is EventType.LOT_CONTRIBUTION:
            if rec.body.get("lot") != lot or site not in site_set:
                raise ProofError(f"{where}: a contribution that is not this lot's")
            out.contributions.append(rec)
        elif kind is EventType.WEIGHING:
            if (rec.body.get("lot"), rec.body.get("direction"), site) != (lot, "in", refiner):
                raise ProofError(f"{where}: a weighing that is not this lot's receipt")
            if "net" not in rec.body.get("mass", {}):
                raise ProofError(f"{where}: a receipt must be a two-pass weighing with a net mass")
            if out.receipt is not None:
                raise ProofError("more than one receipt of the lot")
            out.receipt = rec
        elif kind is EventType.CHECKPOINT:
            if site not in site_set:
                raise ProofError(f"{where}: a checkpoint of a site that does not contribute")
            checkpoints[site].append(rec)
        elif kind is EventType.KEY_ROTATION:
            if site not in site_set and site != refiner:
                raise ProofError(f"{where}: a key rotation at a site with no role here")
            rotations[rec.key.kid] = rec
        elif kind is EventType.OPENING_STOCK:
            owner = pinned.get(rec.env.event_id)
            if owner is None or owner != site:
                raise ProofError(f"{where}: an opening stock the registry did not pin for {site}")
            out.stocks[site] = rec
        else:
            raise ProofError(f"{where}: a {kind.value} record has no role here")
    if out.receipt is None:
        raise ProofError(f"no receipt of lot {lot} by refiner {refiner}")
    if {c.key.site_id for c in out.contributions} != site_set:
        raise ProofError("the contributions' sites are not the statement's sites")
    for site in sites:
        contribs = [c for c in out.contributions if c.key.site_id == site]
        out.checks.extend(
            _site(site, windows[site], window, book, checkpoints[site], rotations, contribs, out)
        )
    return out


def _site(
    site: str,
    start: int,
    window: int,
    book: KeyBook,
    checkpoints: list[Logged],
    rotations: Mapping[bytes, Logged],
    contribs: list[Logged],
    out: Derived,
) -> list[BalanceCheck]:
    """Chains, window, completeness and fences of one contributing site."""
    chains: dict[bytes, list[Logged]] = {}
    for cp in sorted(checkpoints, key=lambda c: c.index):
        chains.setdefault(cp.key.kid, []).append(cp)
    for chain in chains.values():
        _contiguous(site, chain)
    _not_voided(site, chains, contribs)
    # The window ends at the checkpoint covering the site's contributions (the last one).
    end = max(_covering(site, chains.get(c.key.kid, []), c, start).index for c in contribs)
    out.ends[site] = end
    _site_stock_check(site, out.stocks.get(site), start)
    # Every key of the site that existed before the window's end is shown, fenced.
    required = {k.kid: k for k in book.keys.values() if k.site_id == site and k.introduced < end}
    for kid in chains:
        if kid not in required:
            raise ProofError(
                f"site {site}: checkpoints of key {kid.hex()}, which did not exist before the "
                "window's end"
            )
    bases: dict[bytes, Logged] = {}
    for kid, key in sorted(required.items()):
        chain = chains.get(kid, [])
        before = [c for c in chain if c.index < start]
        if len(before) > 1:
            raise ProofError(f"site {site}: {key.name} has more than one checkpoint before the "
                             "window")  # fmt: skip
        if before:
            bases[kid] = before[0]
        elif chain and chain[0].body["epoch"] != 1:
            raise ProofError(
                f"site {site}: {key.name}'s first checkpoint shown is epoch "
                f"{chain[0].body['epoch']}, after the window's start, without its base"
            )
        _fence(site, key, chain, end, rotations.get(kid))
    in_window = sorted((c for c in checkpoints if start <= c.index <= end), key=lambda c: c.index)
    if not in_window or in_window[0].index != start:
        raise ProofError(f"site {site}: the window does not start at a checkpoint (log index "
                         f"{start})")  # fmt: skip
    if len(in_window) > window or (bases and len(in_window) < window):
        raise ProofError(f"site {site}: the window holds {len(in_window)} checkpoints, "
                         f"the policy {window}")  # fmt: skip
    latest = dict(bases)
    checks = []
    for cp in in_window:
        latest[cp.key.kid] = cp
        checks.append(BalanceCheck(site, cp.index, tuple(latest[k] for k in sorted(latest))))
    return checks


def _not_voided(site: str, chains: Mapping[bytes, list[Logged]], contribs: list[Logged]) -> None:
    """A contribution its gateway voided is listed by a later checkpoint of its chain; the
    chain is shown through its fence, so a void logged before the fence cannot be hidden."""
    for contrib in contribs:
        for cp in chains.get(contrib.key.kid, []):
            if contrib.env.event_id in cp.body.get("voided", ()):
                raise ProofError(
                    f"site {site}: contribution {contrib.index} was voided by its gateway "
                    f"(listed by the checkpoint at log index {cp.index})"
                )


def _site_stock_check(site: str, stock: Logged | None, start: int) -> None:
    """A site's opening stock counts only if it was logged before any window that uses it."""
    if stock is not None and stock.index >= start:
        raise ProofError(
            f"site {site}: its opening stock was logged at {stock.index}, not before the "
            f"window's start at {start}"
        )


def _covering(site: str, chain: Sequence[Logged], contrib: Logged, start: int) -> Logged:
    """The first checkpoint of the contributing key that covers the contribution, searched
    over the whole chain shown (base included), which must lie inside the window."""
    cover = next((c for c in chain if c.body["upto"] >= contrib.seq), None)
    if cover is None:
        raise ProofError(
            f"site {site}: contribution {contrib.index} is not under a checkpoint shown"
        )
    if cover.index < start:
        raise ProofError(
            f"site {site}: contribution {contrib.index} is covered by the checkpoint at log "
            f"index {cover.index}, before the window's start at {start}: the window must "
            "end at that checkpoint"
        )
    return cover


def _contiguous(site: str, chain: Sequence[Logged]) -> None:
    for prev, cur in itertools.pairwise(chain):
        if (
            cur.body["epoch"] != prev.body["epoch"] + 1
            or cur.body.get("prev_checkpoint") != prev.env.event_id
        ):
            raise ProofError(f"site {site}: checkpoints of {cur.key.name} are not contiguous "
                             f"(log index {prev.index} then {cur.index})")  # fmt: skip
        if cur.body["upto"] < prev.body["upto"]:
            raise ProofError(f"site {site}: {cur.key.name}'s checkpoint at {cur.index} covers "
                             "less than the one before it")  # fmt: skip


def _fence(
    site: str, key: KeyState, chain: Sequence[Logged], end: int, rotation: Logged | None
) -> None:
    """Prove the key's chain is shown in full up to the window's end (module docstring)."""
    last = chain[-1] if chain else None
    after = [c for c in chain if c.index > end]
    if len(after) > 1:
        raise ProofError(f"site {site}: {key.name} shows checkpoints beyond its fence")
    if after:
        return  # its first checkpoint after the window's end (contiguity shows all before it)
    if rotation is not None:
        follows_last = rotation.env.payload.prev == last.env.event_id if last else rotation.seq == 1
        if follows_last:
            return
        raise ProofError(
            f"site {site}: {key.name}'s key_rotation at log index {rotation.index} does not "
            "directly follow its last checkpoint shown"
        )
    retired = key.retired
    if retired is not None:
        named = last.env.event_id if last else None
        if retired.last_checkpoint == named:
            return
        raise ProofError(
            f"site {site}: {key.name} was retired with a last checkpoint other than the "
            "last one shown"
        )
    shown = f"after epoch {last.body['epoch']} (log index {last.index})" if last else "at all"
    raise ProofError(
        f"site {site}: the chain of {key.name} is cut short: nothing shown {shown} proves it "
        f"complete up to the window's end (log index {end}); its first checkpoint logged "
        "after that, its key_rotation or its retirement must be shown"
    )
