"""custody.zk: transcript, Schnorr and bit-decomposition range proofs.

Completeness on random values (Hypothesis), soundness against tampering (every byte of a small
proof flipped), transcript omissions, and the point/scalar hygiene of zk-design-research §3.2.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.errors import ProofError
from custody.group import ED25519, ORDER, Point, Scalar
from custody.zk.rangeproof import RangeProof, RangeProver, RangeVerifier
from custody.zk.sigma import SchnorrProof, SchnorrProver, SchnorrVerifier, prove_all, verify_all
from custody.zk.transcript import Transcript

g = ED25519


def commit(value: int, blinding: Scalar) -> Point | None:
    vh = g.mul(g.scalar_from_int(value), g.H) if value else None
    return g.add(vh, g.mul_base(blinding))


def statement(c: Point | None, domain: str = "test") -> Transcript:
    tr = Transcript(domain)
    tr.point("C", c)
    return tr


def prove_range(
    value: int, bits: int, blinding: Scalar | None = None
) -> tuple[Point | None, int, RangeProof]:
    r = blinding or g.random_scalar()
    c = commit(value, r)
    e, (proof,) = prove_all(statement(c), [RangeProver("v", value, r, bits, g)])
    assert isinstance(proof, RangeProof)
    return c, e, proof


def verify_range(
    c: Point | None, e: int, proof: RangeProof, bits: int, domain: str = "test"
) -> None:
    verify_all(statement(c, domain), [RangeVerifier("v", c, proof, bits, g)], e)


# --- completeness ------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=1, max_value=64).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=2**n - 1))
    )
)
def test_honest_range_proofs_verify(case: tuple[int, int]) -> None:
    bits, value = case
    c, e, proof = prove_range(value, bits)
    decoded = RangeProof.from_bytes(proof.to_bytes(), g, bits=bits)
    verify_range(c, e, decoded, bits)


@pytest.mark.parametrize("value", [0, 1, 2**48 - 1])
def test_edge_values_verify_at_48_bits(value: int) -> None:
    c, e, proof = prove_range(value, 48)
    verify_range(c, e, proof, 48)
    assert len(proof.to_bytes()) == RangeProof.size(48) == 1 + 23 * 32 + 24 * (3 * 16 + 4 * 32)


def test_schnorr_and_ranges_share_one_challenge() -> None:
    x = g.random_scalar()
    big_x = g.mul_base(x)
    r = g.random_scalar()
    c = commit(7, r)
    tr = statement(c)
    tr.point("X", big_x)
    e, (rp, sp) = prove_all(tr, [RangeProver("v", 7, r, 8, g), SchnorrProver("x", x, g)])
    assert isinstance(rp, RangeProof) and isinstance(sp, SchnorrProof)
    tr = statement(c)
    tr.point("X", big_x)
    verify_all(tr, [RangeVerifier("v", c, rp, 8, g), SchnorrVerifier("x", big_x, sp, g)], e)
    # The Schnorr proof alone (same challenge, without the range proof in the transcript) fails.
    tr = statement(c)
    tr.point("X", big_x)
    with pytest.raises(ProofError):
        verify_all(tr, [SchnorrVerifier("x", big_x, sp, g)], e)


# --- soundness -----------------------------------------------------------------------


def test_prover_refuses_a_value_out_of_range() -> None:
    with pytest.raises(ProofError, match="outside"):
        RangeProver("v", 256, g.random_scalar(), 8, g)
    with pytest.raises(ProofError, match="outside"):
        RangeProver("v", -1, g.random_scalar(), 8, g)


def test_a_negative_value_cannot_pass_as_a_small_one() -> None:
    """-1 ≡ ℓ-1: a prover that lies about the bits of C cannot make the challenge come back."""
    r = g.random_scalar()
    c = commit(ORDER - 1, r)  # commits to -1
    forger = RangeProver("v", 1, r, 8, g)  # proves the bits of +1 against C
    e, (proof,) = prove_all(statement(c), [forger])
    assert isinstance(proof, RangeProof)
    with pytest.raises(ProofError):
        verify_range(c, e, proof, 8)


def test_every_flipped_byte_of_a_small_proof_is_caught() -> None:
    bits = 4
    c, e, proof = prove_range(11, bits)
    data = proof.to_bytes()
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(ProofError):
                verify_range(c, e, RangeProof.from_bytes(bytes(bad), g, bits=bits), bits)


def test_wrong_challenge_commitment_or_domain_is_caught() -> None:
    c, e, proof = prove_range(1000, 16)
    with pytest.raises(ProofError):
        verify_range(c, e ^ 1, proof, 16)
    with pytest.raises(ProofError):
        verify_range(g.add(c, g.G), e, proof, 16)
    with pytest.raises(ProofError):
        verify_range(c, e, proof, 16, domain="another lot")


def test_a_proof_replayed_for_another_commitment_of_the_same_value_fails() -> None:
    _c1, e, proof = prove_range(500, 16)
    c2 = commit(500, g.random_scalar())
    with pytest.raises(ProofError):
        verify_range(c2, e, proof, 16)


class OmittingRangeProver(RangeProver):
    """A prover whose transcript leaves out one first message (the Frozen Heart pattern)."""

    def __init__(self, *args: object, skip: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.skip = skip

    def commit(self, tr: Transcript) -> None:
        real_point = tr.point

        def point(label: str, p: Point | None) -> None:
            if not label.endswith(self.skip):
                real_point(label, p)

        tr.point = point  # type: ignore[method-assign]
        try:
            super().commit(tr)
        finally:
            tr.point = real_point  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "skip", ["/C1", "/A0_0", "/A1_0", "/A3_0", "/A0_2", "/A1_2", "/A3_2", "/C2", "/A1_3"]
)
def test_a_prover_that_omits_a_transcript_element_is_caught(skip: str) -> None:
    r = g.random_scalar()
    c = commit(100, r)
    e, (proof,) = prove_all(statement(c), [OmittingRangeProver("v", 100, r, 7, g, skip=skip)])
    assert isinstance(proof, RangeProof)
    with pytest.raises(ProofError):
        verify_range(c, e, proof, 7)


def test_schnorr_forged_without_the_witness_fails() -> None:
    x = g.random_scalar()
    big_x = g.mul_base(x)
    tr = Transcript("t")
    tr.point("X", big_x)
    wrong = g.random_scalar()
    e, (sp,) = prove_all(tr, [SchnorrProver("x", wrong, g)])
    assert isinstance(sp, SchnorrProof)
    tr = Transcript("t")
    tr.point("X", big_x)
    with pytest.raises(ProofError):
        verify_all(tr, [SchnorrVerifier("x", big_x, sp, g)], e)


# --- point and scalar hygiene --------------------------------------------------------

P_FIELD = 2**255 - 19
TORSION = (P_FIELD - 1).to_bytes(32, "little")  # (0, -1), order 2
IDENTITY = (1).to_bytes(32, "little")
NON_CANONICAL_Y = (P_FIELD + 1).to_bytes(32, "little")  # y = 1 + p: a non-canonical identity


def _with_first_commitment(proof: RangeProof, encoded: bytes) -> bytes:
    data = bytearray(proof.to_bytes())
    data[1:33] = encoded
    return bytes(data)


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(TORSION, id="order-2 point"),
        pytest.param(IDENTITY, id="identity"),
        pytest.param(NON_CANONICAL_Y, id="non-canonical encoding"),
        pytest.param(b"\xff" * 32, id="not on the curve"),
    ],
)
def test_known_bad_points_in_a_proof_are_rejected(encoded: bytes) -> None:
    _c, _e, proof = prove_range(3, 4)
    with pytest.raises(ProofError):
        RangeProof.from_bytes(_with_first_commitment(proof, encoded), g, bits=4)


def test_a_point_outside_the_subgroup_is_rejected() -> None:
    import nacl.bindings as sodium

    mixed = sodium.crypto_core_ed25519_add(g.H.encoded, TORSION)
    _c, _e, proof = prove_range(3, 4)
    with pytest.raises(ProofError, match="subgroup"):
        RangeProof.from_bytes(_with_first_commitment(proof, mixed), g, bits=4)


def test_non_canonical_scalars_are_rejected() -> None:
    _c, _e, proof = prove_range(3, 4)
    data = bytearray(proof.to_bytes())
    z0_at = 1 + 1 * 32 + 3 * 16  # 4 bits = 2 base-4 digits: C_1, then digit 0's shares
    original = int.from_bytes(data[z0_at : z0_at + 32], "little")
    data[z0_at : z0_at + 32] = (original + ORDER).to_bytes(32, "little")
    with pytest.raises(ProofError, match="non-canonical"):
        RangeProof.from_bytes(bytes(data), g, bits=4)
    with pytest.raises(ProofError, match="non-canonical"):
        SchnorrProof.from_bytes(ORDER.to_bytes(32, "little"), g)


def test_truncated_extended_or_mislabelled_proofs_are_rejected() -> None:
    _c, _e, proof = prove_range(3, 8)
    data = proof.to_bytes()
    for bad in (data[:-1], data + b"\x00", b"\x07" + data[1:], b""):
        with pytest.raises(ProofError):
            RangeProof.from_bytes(bad, g, bits=8)


def test_transcript_encoding_is_unambiguous() -> None:
    def digest(*items: tuple[str, bytes]) -> bytes:
        tr = Transcript("t")
        for label, data in items:
            tr.message(label, data)
        return tr.fork_digest()

    assert digest(("a", b"bc")) != digest(("ab", b"c"))
    assert digest(("a", b"b"), ("c", b"")) != digest(("a", b"bc"))
    t1, t2 = Transcript("t"), Transcript("t")
    t1.integer("n", 1)
    t2.integer("n", -1)
    assert t1.fork_digest() != t2.fork_digest()
    assert Transcript("a").fork_digest() != Transcript("b").fork_digest()


def test_challenges_chain_and_nonces_are_hedged() -> None:
    tr = Transcript("t")
    first = tr.challenge("e")
    second = tr.challenge("e")
    assert first != second  # each challenge is absorbed before the next
    before = tr.fork_digest()
    k1, k2 = tr.nonce("k", b"witness"), tr.nonce("k", b"witness")
    assert k1 != k2  # fresh randomness in every nonce
    assert tr.fork_digest() == before  # deriving a nonce does not change the transcript
