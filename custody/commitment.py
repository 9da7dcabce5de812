"""Pedersen commitments to masses and their openings sealed to the ledger.

``C = v·H + r·G`` (ZK.md "Construction"): v an integer mass in fixed units
(``MASS_UNIT_G`` grams per unit), r a uniform non-zero scalar. The value sits on
the nothing-up-my-sleeve generator H and the blinding on the base point G, so
proofs later use fast fixed-base multiplications (zk-design-research.md §3.5).

The gateway signs only C. The opening ``(v, r)`` of every mass in an event is
sealed in one ``crypto_box_seal`` to the ledger's X25519 key; the clear value
also stays in the local outbox for the operator's screen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions

from custody import cbor
from custody.errors import CommitmentError, DecodeError, InvalidMassError
from custody.group import ED25519, Group, Point, Scalar

__all__ = [
    "MASS_FIELDS",
    "MASS_UNIT_G",
    "MAX_MASS_UNITS",
    "MAX_SUM_UNITS",
    "SUM_FIELDS",
    "WEIGHING_FIELDS",
    "Opening",
    "commit",
    "commit_masses",
    "open_sealed",
    "seal_openings",
    "verify_opening",
    "verify_openings",
]

# One mass unit is 100 g (0.1 kg): below any custody scale's division (DOMAIN.md:
# weighbridges 10-20 kg, bag scales ~0.1-0.5 kg) and leaves 48-bit balance proofs
# 28 Mt of head-room (ZK.md "integer units, e.g. 0.1 kg").
MASS_UNIT_G = 100
# Per-weighing bound: 2^32 units = 429,496 t, far above any single weighing.
MAX_MASS_UNITS = 2**32 - 1
# Cumulative sums (checkpoints), lot totals and opening stocks: the 48-bit range of the
# balance proofs (ZK.md), 28 Mt, decades of a large site.
MAX_SUM_UNITS = 2**48 - 1
WEIGHING_FIELDS = ("gross", "tare", "net", "bag")
# Masses bounded by the balance proofs' range rather than one weighing's: checkpoint running
# sums (in/out), a lot contribution's total and a site's opening stock (docs/zk-summaries.md).
SUM_FIELDS = ("in", "out", "total", "stock")
MASS_FIELDS = WEIGHING_FIELDS + SUM_FIELDS


@dataclass(frozen=True, slots=True)
class Opening:
    """The secret that opens a commitment: the value and its blinding."""

    value: int
    blinding: Scalar

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_SUM_UNITS:
            raise InvalidMassError(f"mass {self.value} units is outside 0..{MAX_SUM_UNITS}")


def commit(opening: Opening, group: Group = ED25519) -> Point:
    """``v·H + r·G``; v = 0 is handled explicitly (libsodium refuses 0·H)."""
    r_g = group.mul_base(opening.blinding)
    if opening.value < 2**32:
        v_h = group.mul_h_small(opening.value)  # None for v = 0: libsodium refuses 0·H
    else:  # cumulative sums only; a generic multiplication
        v_h = group.mul(group.scalar_from_int(opening.value), group.H)
    c = group.add(v_h, r_g)
    if c is None:  # only if r ≡ -v·log_G(H): never with a uniform r
        raise CommitmentError("commitment is the identity; draw a new blinding")
    return c


def verify_opening(commitment: Point, opening: Opening, group: Group = ED25519) -> bool:
    """True when ``opening`` opens ``commitment`` (compared by canonical bytes)."""
    return commit(opening, group).encoded == commitment.encoded


def verify_openings(pairs: Sequence[tuple[bytes, Opening]], group: Group = ED25519) -> list[int]:
    """Check many (encoded commitment, opening) pairs; the indices of those that fail.

    Every pair is checked exactly: ``v·H + r·G`` is recomputed (a fixed-base
    multiplication for r·G and the small-value table for v·H) and compared with
    the commitment's bytes. No separate point validation is needed: libsodium
    returns the canonical encoding of a prime-order-subgroup point, so bytes
    equal to it ARE that point (canonical, on the curve, in the subgroup, not
    small order); anything else fails the comparison. Validation was a third of
    the old per-commitment cost (``crypto_core_ed25519_is_valid_point`` includes
    a multiplication by ℓ).

    Why not one random linear combination per batch. The textbook batch check
    is Σ z_i·C_i == (Σ z_i·v_i)·H + (Σ z_i·r_i)·G with ledger-chosen random z_i.
    Its weights are what make it sound: with an UNWEIGHTED sum a malicious
    device could send, for two records, openings (v_1 + d, r_1 + e) and
    (v_2 - d, r_2 - e): each is wrong, the errors cancel in the sum, the check
    passes and the ledger stores clear masses that differ from what the signed
    commitments (which buyers' proofs use) say, shifting d units between lots.
    Random z_i, drawn after the batch is received, defeat that: for a nonzero
    error vector the combination vanishes with probability at most 1/|z range|
    (2^-128 for 128-bit weights in a group of prime order ℓ > 2^252). But the
    left side needs one variable-base multiplication z_i·C_i per commitment,
    and libsodium offers no multi-scalar multiplication: measured on the
    ledger's machine (``python -m bench intake``, ``opening_alternatives_us``)
    that is about twice the exact check per commitment. Cheaper sound variants
    do not help either: random signs ±1 cost one addition per commitment but
    catch a cancelling pair only with probability 1/2 per round, and small
    weights or subset sums need as many additions per bit of soundness. The
    exact check is therefore both the cheapest sound one here and names the
    bad record without a fallback pass; what batches is the surrounding work
    (one call per batch, the net relation below from scalars, the store's
    inserts). With a library offering multi-scalar multiplication (Pippenger),
    the weighted combination becomes the cheaper one; this is where it goes.
    """
    failed: list[int] = []
    for index, (encoded, opening) in enumerate(pairs):
        try:
            computed = commit(opening, group).encoded
        except CommitmentError:  # an opening to the identity opens no valid commitment
            failed.append(index)
            continue
        if computed != encoded:
            failed.append(index)
    return failed


def commit_masses(
    values: Mapping[str, int], group: Group = ED25519
) -> tuple[dict[str, Point], dict[str, Opening]]:
    """Commit to ``gross``/``tare``/``bag`` values (or to sums and stocks: ``in``/``out``/
    ``total``/``stock``); derive ``net`` homomorphically.

    When both gross and tare are given, ``net`` is ``C_gross - C_tare`` with
    blinding ``r_gross - r_tare``: a verifier can check the relation from the
    signed points alone, and it costs one point subtraction, not a commitment.
    """
    fields = set(values)
    if not (fields <= {"gross", "tare", "bag"} or fields <= set(SUM_FIELDS)):
        raise InvalidMassError(
            "mass fields must be among gross, tare, bag (or in, out, total, stock); "
            f"got {sorted(values)}"
        )
    for name in fields & set(WEIGHING_FIELDS):
        if not 0 <= values[name] <= MAX_MASS_UNITS:
            raise InvalidMassError(f"{name} {values[name]} units is outside 0..{MAX_MASS_UNITS}")
    openings = {name: Opening(v, group.random_scalar()) for name, v in values.items()}
    points = {name: commit(o, group) for name, o in openings.items()}
    if "gross" in values and "tare" in values:
        net_value = values["gross"] - values["tare"]
        if net_value < 0:
            raise InvalidMassError(
                f"tare ({values['tare']} units) exceeds gross ({values['gross']} units)"
            )
        net_blinding = group.scalar_sub(openings["gross"].blinding, openings["tare"].blinding)
        net_point = group.sub(points["gross"], points["tare"])
        if net_point is None or net_blinding.is_zero:  # pragma: no cover - probability ~2^-252
            raise CommitmentError("net commitment degenerated to the identity; retry")
        openings["net"] = Opening(net_value, net_blinding)
        points["net"] = net_point
    return points, openings


def seal_openings(openings: Mapping[str, Opening], ledger_seal_key: bytes) -> bytes:
    """Seal ``{field: [v, r]}`` to the ledger's X25519 key (``crypto_box_seal``)."""
    plaintext = cbor.encode({name: [o.value, o.blinding.encoded] for name, o in openings.items()})
    try:
        return sodium.crypto_box_seal(plaintext, ledger_seal_key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError) as exc:
        raise CommitmentError(f"cannot seal to the ledger key: {exc}") from exc


def open_sealed(
    sealed: bytes, seal_public: bytes, seal_secret: bytes, group: Group = ED25519
) -> dict[str, Opening]:
    """The ledger's side: open a sealed box and validate every opening."""
    try:
        plaintext = sodium.crypto_box_seal_open(sealed, seal_public, seal_secret)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError) as exc:
        raise CommitmentError("sealed opening does not open with the ledger key") from exc
    try:
        raw = cbor.decode(plaintext)
    except DecodeError as exc:
        raise CommitmentError(f"sealed opening is not canonical CBOR: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise CommitmentError("sealed opening must be a non-empty map")
    result: dict[str, Opening] = {}
    for name, pair in raw.items():
        if name not in MASS_FIELDS or not isinstance(pair, list) or len(pair) != 2:
            raise CommitmentError(f"malformed opening for {name!r}")
        value, blinding = pair
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommitmentError(f"opening value for {name!r} is not an integer")
        if name in WEIGHING_FIELDS and value > MAX_MASS_UNITS:
            raise CommitmentError(f"opening value for {name!r} exceeds one weighing's bound")
        try:
            result[name] = Opening(value, group.scalar(blinding))
        except InvalidMassError as exc:
            raise CommitmentError(str(exc)) from exc
    return result
