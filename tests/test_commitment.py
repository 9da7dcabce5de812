"""The group (edwards25519 ℓ-subgroup via libsodium) and Pedersen commitments.

Independent check: a small pure-Python edwards25519 (RFC 8032 §5.1 curve
equation and addition law, affine coordinates) recomputes commitments and
classifies the hostile points, so the rejections below are shown to be for the
stated reason (small order, torsion, non-canonical) and not merely "garbage".
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import cbor
from custody.commitment import (
    MASS_UNIT_G,
    MAX_MASS_UNITS,
    MAX_SUM_UNITS,
    Opening,
    commit,
    commit_masses,
    open_sealed,
    seal_openings,
    verify_opening,
)
from custody.errors import CommitmentError, CryptoSelfTestError, InvalidMassError
from custody.group import ED25519, H_DOMAIN_TAG, ORDER, Group
from custody.keys import LedgerKeyPair

# --- a tiny independent edwards25519 -------------------------------------------------------

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)
Point2 = tuple[int, int]


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


def ed_add(a: Point2, b: Point2) -> Point2:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * _inv(1 + t) % P, (y1 * y2 + x1 * x2) * _inv(1 - t) % P)


def ed_mul(k: int, a: Point2) -> Point2:
    result = IDENTITY
    while k:
        if k & 1:
            result = ed_add(result, a)
        a = ed_add(a, a)
        k >>= 1
    return result


def on_curve(a: Point2) -> bool:
    x, y = a
    return (-x * x + y * y - 1 - D * x * x * y * y) % P == 0


def ed_decode(data: bytes, *, allow_non_canonical: bool = False) -> Point2 | None:
    """Decode per RFC 8032 §5.1.3; ``None`` if not on the curve."""
    n = int.from_bytes(data, "little")
    sign, y = n >> 255, n & (2**255 - 1)
    if y >= P and not allow_non_canonical:
        return None
    y %= P
    x2 = (y * y - 1) * _inv(D * y * y + 1) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y)


def ed_encode(a: Point2) -> bytes:
    x, y = a
    return (y | (x & 1) << 255).to_bytes(32, "little")


BASE = ed_decode(bytes.fromhex("58" + "66" * 31))
assert BASE is not None


# --- group and H -----------------------------------------------------------------------------

# Pinned: H = crypto_core_ed25519_from_uniform(SHA-256(b"cobalt-custody/v1/pedersen/H")).
# Published in docs/protocol.md; changing it invalidates every commitment ever made.
H_HEX = "f5d5a1b2c73b4ef6e817b208d50b1fcf0017bc07648367689b87019752aad3f8"


def test_self_test_passes() -> None:
    ED25519.self_test()
    Group().self_test()


def test_self_test_refuses_a_library_that_accepts_torsion(monkeypatch: pytest.MonkeyPatch) -> None:
    # A libsodium with CVE-2025-69277 accepts Q + (0, -1); simulate one that
    # accepts every point and one that accepts nothing.
    monkeypatch.setattr(sodium, "crypto_core_ed25519_is_valid_point", lambda p: True)
    with pytest.raises(CryptoSelfTestError, match="CVE-2025-69277"):
        ED25519.self_test()
    monkeypatch.setattr(sodium, "crypto_core_ed25519_is_valid_point", lambda p: False)
    with pytest.raises(CryptoSelfTestError, match="rejects a valid"):
        ED25519.self_test()


def test_h_is_pinned_and_matches_its_definition() -> None:
    assert H_DOMAIN_TAG == b"cobalt-custody/v1/pedersen/H"
    derived = sodium.crypto_core_ed25519_from_uniform(
        hashlib.sha256(b"cobalt-custody/v1/pedersen/H").digest()
    )
    assert derived.hex() == H_HEX
    assert ED25519.H.encoded.hex() == H_HEX
    assert Group().H == ED25519.H


def test_h_is_a_prime_order_point_unrelated_to_g() -> None:
    h = ed_decode(bytes.fromhex(H_HEX))
    assert h is not None
    assert on_curve(h)
    assert ed_mul(ORDER, h) == IDENTITY
    assert h != IDENTITY
    assert ED25519.H.encoded not in (ED25519.G.encoded, ED25519.neg(ED25519.G).encoded)


def test_g_is_the_rfc8032_base_point() -> None:
    assert ED25519.G.encoded == bytes.fromhex("58" + "66" * 31)
    assert ED25519.G.encoded == ed_encode(BASE)
    assert ed_mul(ORDER, BASE) == IDENTITY


# --- point validation ----------------------------------------------------------------------

SMALL_ORDER = {
    "identity": "01" + "00" * 31,
    "(0,-1), order 2": "ec" + "ff" * 30 + "7f",
    "order 4, y=0": "00" * 32,
    "order 4, y=0, sign": "00" * 31 + "80",
    "order 8 (a)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (b)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 (a), sign": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8 (b), sign": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}


@pytest.mark.parametrize("encoded", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_small_order_points_rejected(encoded: str) -> None:
    point = ed_decode(bytes.fromhex(encoded))
    assert point is not None
    assert on_curve(point)
    assert ed_mul(8, point) == IDENTITY  # genuinely small order
    with pytest.raises(CommitmentError):
        ED25519.point(bytes.fromhex(encoded))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_rejected(length: int) -> None:
    with pytest.raises(CommitmentError, match="32 bytes"):
        ED25519.point(ED25519.H.encoded[:1] * length)


def test_non_bytes_rejected() -> None:
    with pytest.raises(CommitmentError):
        ED25519.point(H_HEX)


def test_h_plus_order_two_torsion_rejected() -> None:
    """zk-design-research.md §3.1: Q + (0, -1) is on the curve, outside the subgroup."""
    torsion = (P - 1).to_bytes(32, "little")
    mixed = sodium.crypto_core_ed25519_add(ED25519.H.encoded, torsion)
    h = ed_decode(ED25519.H.encoded)
    assert h is not None
    expected = ed_add(h, (0, P - 1))
    assert mixed == ed_encode(expected)  # libsodium and the pure-Python sum agree
    assert on_curve(expected)
    assert ed_mul(ORDER, expected) != IDENTITY  # not in the prime-order subgroup
    with pytest.raises(CommitmentError):
        ED25519.point(mixed)


@pytest.mark.parametrize("y", [P, P + 1, P + 3, 2**255 - 1])
def test_non_canonical_y_rejected(y: int) -> None:
    encoded = y.to_bytes(32, "little")
    assert ed_decode(encoded) is None  # non-canonical by RFC 8032 §5.1.3
    assert ed_decode(encoded, allow_non_canonical=True) is not None  # yet on the curve
    with pytest.raises(CommitmentError):
        ED25519.point(encoded)


def test_off_curve_rejected() -> None:
    encoded = (2).to_bytes(32, "little")  # y = 2 has no x on edwards25519
    assert ed_decode(encoded) is None
    with pytest.raises(CommitmentError):
        ED25519.point(encoded)


def test_valid_points_accepted() -> None:
    for point in (ED25519.G, ED25519.H, commit(Opening(5, ED25519.random_scalar()))):
        assert ED25519.point(point.encoded) == point


# --- scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [ORDER, ORDER + 1, 2 * ORDER, 2**256 - 1], ids=hex)
def test_non_canonical_scalar_rejected(value: int) -> None:
    with pytest.raises(CommitmentError, match="non-canonical"):
        ED25519.scalar(value.to_bytes(32, "little"))


@pytest.mark.parametrize("value", [0, 1, ORDER - 1])
def test_canonical_scalar_accepted(value: int) -> None:
    assert ED25519.scalar(value.to_bytes(32, "little")).to_int() == value


def test_scalar_length_and_range_checked() -> None:
    with pytest.raises(CommitmentError):
        ED25519.scalar(bytes(31))
    with pytest.raises(CommitmentError):
        ED25519.scalar(bytes(33))
    for bad in (-1, ORDER):
        with pytest.raises(CommitmentError):
            ED25519.scalar_from_int(bad)


def test_random_scalars_are_canonical_nonzero_and_distinct() -> None:
    scalars = [ED25519.random_scalar() for _ in range(50)]
    assert len({s.encoded for s in scalars}) == 50
    assert all(0 < s.to_int() < ORDER for s in scalars)


# --- commitments ---------------------------------------------------------------------------


def test_commit_zero_value_is_r_times_g() -> None:
    r = ED25519.random_scalar()
    c = commit(Opening(0, r))
    assert c == ED25519.mul_base(r)
    assert c.encoded == ed_encode(ed_mul(r.to_int(), BASE))
    assert verify_opening(c, Opening(0, r))
    assert not verify_opening(c, Opening(1, r))


@given(st.integers(0, MAX_MASS_UNITS), st.integers(1, ORDER - 1))
@settings(max_examples=15, deadline=None)
def test_commit_matches_independent_arithmetic(value: int, blinding: int) -> None:
    h = ed_decode(ED25519.H.encoded)
    assert h is not None
    expected = ed_add(ed_mul(value, h), ed_mul(blinding, BASE))
    c = commit(Opening(value, ED25519.scalar_from_int(blinding)))
    assert c.encoded == ed_encode(expected)


def test_homomorphism() -> None:
    a, b = 123_456, 654_321
    ra, rb = ED25519.random_scalar(), ED25519.random_scalar()
    ca, cb = commit(Opening(a, ra)), commit(Opening(b, rb))
    total = ED25519.add(ca, cb)
    assert total is not None
    assert verify_opening(total, Opening(a + b, ED25519.scalar_add(ra, rb)))
    assert not verify_opening(total, Opening(a + b + 1, ED25519.scalar_add(ra, rb)))
    diff = ED25519.sub(cb, ca)
    assert diff is not None
    assert verify_opening(diff, Opening(b - a, ED25519.scalar_sub(rb, ra)))
    assert ED25519.sub(ca, ca) is None  # the identity, represented explicitly
    assert ED25519.add(None, ca) == ca


def test_commitments_hide_the_value() -> None:
    c1 = commit(Opening(1000, ED25519.random_scalar()))
    c2 = commit(Opening(1000, ED25519.random_scalar()))
    assert c1 != c2


@pytest.mark.parametrize("value", [-1, MAX_SUM_UNITS + 1, 2**64])
def test_opening_value_bounds(value: int) -> None:
    with pytest.raises(InvalidMassError):
        Opening(value, ED25519.random_scalar())
    assert Opening(MAX_SUM_UNITS, ED25519.random_scalar()).value == MAX_SUM_UNITS


def test_weighings_stay_within_the_per_weighing_bound_but_sums_may_exceed_it() -> None:
    with pytest.raises(InvalidMassError):
        commit_masses({"gross": MAX_MASS_UNITS + 1})
    points, openings = commit_masses({"in": MAX_MASS_UNITS + 5, "out": 0})
    assert verify_opening(points["in"], openings["in"])  # beyond the small-value table
    assert openings["in"].value == MAX_MASS_UNITS + 5
    with pytest.raises(InvalidMassError):
        commit_masses({"gross": 1, "in": 1})  # a weighing and a sum never share an event


def test_mass_unit_is_a_tenth_of_a_kilogram() -> None:
    assert MASS_UNIT_G == 100


def test_commit_masses_derives_net() -> None:
    gross, tare = 342_180, 141_120  # 34.218 t and 14.112 t in 0.1 kg units
    points, openings = commit_masses({"gross": gross, "tare": tare})
    assert set(points) == set(openings) == {"gross", "tare", "net"}
    assert openings["net"].value == gross - tare
    assert points["net"] == ED25519.sub(points["gross"], points["tare"])
    for name in points:
        assert verify_opening(points[name], openings[name])
        assert ED25519.point(points[name].encoded) == points[name]


def test_commit_masses_without_tare_has_no_net() -> None:
    points, openings = commit_masses({"bag": 10_250})
    assert set(points) == {"bag"}
    assert verify_opening(points["bag"], openings["bag"])


def test_commit_masses_equal_gross_and_tare_gives_zero_net() -> None:
    points, openings = commit_masses({"gross": 5000, "tare": 5000})
    assert openings["net"].value == 0
    assert verify_opening(points["net"], openings["net"])


@pytest.mark.parametrize(
    "values",
    [
        {"gross": 100, "tare": 101},
        {"net": 5},
        {"gross": 1, "net": 1},
        {"weight": 1},
        {"gross": -1},
        {"bag": MAX_MASS_UNITS + 1},
    ],
)
def test_commit_masses_refuses_bad_input(values: dict[str, int]) -> None:
    with pytest.raises(InvalidMassError):
        commit_masses(values)


# --- sealed openings -------------------------------------------------------------------------

LEDGER = LedgerKeyPair.generate("ledger-test")


def _open(sealed: bytes, ledger: LedgerKeyPair = LEDGER) -> dict[str, Opening]:
    return open_sealed(sealed, ledger.public.sealing_key, ledger.sealing_secret)


def test_seal_open_round_trip() -> None:
    points, openings = commit_masses({"gross": 342_180, "tare": 141_120})
    sealed = seal_openings(openings, LEDGER.public.sealing_key)
    opened = _open(sealed)
    assert opened == openings
    for name, opening in opened.items():
        assert verify_opening(points[name], opening)


def test_sealing_is_randomised() -> None:
    _, openings = commit_masses({"bag": 1})
    a = seal_openings(openings, LEDGER.public.sealing_key)
    b = seal_openings(openings, LEDGER.public.sealing_key)
    assert a != b
    assert _open(a) == _open(b) == openings


def test_open_with_wrong_key_rejected() -> None:
    _, openings = commit_masses({"bag": 1})
    sealed = seal_openings(openings, LEDGER.public.sealing_key)
    with pytest.raises(CommitmentError):
        _open(sealed, LedgerKeyPair.generate("other"))


def test_tampered_sealed_box_rejected() -> None:
    _, openings = commit_masses({"gross": 2, "tare": 1})
    sealed = seal_openings(openings, LEDGER.public.sealing_key)
    for index in (0, 31, 32, len(sealed) // 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(CommitmentError):
            _open(bytes(tampered))
    with pytest.raises(CommitmentError):
        _open(sealed[:-1])


def _seal_raw(plaintext: bytes) -> bytes:
    return sodium.crypto_box_seal(plaintext, LEDGER.public.sealing_key)


R = ED25519.random_scalar().encoded


@pytest.mark.parametrize(
    "plaintext",
    [
        cbor.encode({"gross": [1, ORDER.to_bytes(32, "little")]}),  # blinding >= ℓ
        cbor.encode({"gross": [1, R[:31]]}),  # short blinding
        cbor.encode({"gross": [True, R]}),  # bool value
        cbor.encode({"gross": [-1, R]}),  # negative value
        cbor.encode({"gross": [MAX_MASS_UNITS + 1, R]}),  # too large
        cbor.encode({"weight": [1, R]}),  # unknown field
        cbor.encode({"gross": [1, R, 0]}),  # not a pair
        cbor.encode({}),  # empty
        cbor.encode([1, R]),  # not a map
        cbor.encode({"gross": [1, R]})[:-1],  # truncated CBOR
        cbor.encode({"gross": [1, R]}) + b"\x00",  # trailing byte
        b"",
    ],
)
def test_malformed_sealed_plaintext_rejected(plaintext: bytes) -> None:
    with pytest.raises(CommitmentError):
        _open(_seal_raw(plaintext))


def test_non_canonical_sealed_plaintext_rejected() -> None:
    # §4.2.1 order puts "tare" (head 0x64) before "gross" (head 0x65); swap them.
    canonical = cbor.encode({"gross": [2, R], "tare": [1, R]})
    assert canonical.index(b"tare") < canonical.index(b"gross")
    reordered = (
        b"\xa2"
        + cbor.encode("gross")
        + cbor.encode([2, R])
        + cbor.encode("tare")
        + cbor.encode([1, R])
    )
    assert _open(_seal_raw(canonical))["gross"].value == 2
    with pytest.raises(CommitmentError, match="canonical"):
        _open(_seal_raw(reordered))


@given(st.integers(min_value=0, max_value=2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_table_multiples_of_h_equal_generic_multiplication(value: int) -> None:
    expected = ED25519.mul(ED25519.scalar_from_int(value), ED25519.H) if value else None
    assert ED25519.mul_h_small(value) == expected


@pytest.mark.parametrize("value", [-1, 2**32])
def test_table_multiples_of_h_refuse_out_of_range(value: int) -> None:
    with pytest.raises(CommitmentError):
        ED25519.mul_h_small(value)
