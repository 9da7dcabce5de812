"""Range proofs by digit decomposition, one CDS OR-proof per digit (zk-design-research.md §2.4).

Statement: ``C`` commits to a value ``v`` with ``0 <= v < 2^n`` (``C = v·H + r·G``).

Digits. ``v`` is written in base 4 (two bits per digit), with one binary top digit when ``n`` is
odd: digit ``j`` has radix ``b_j`` (4, or 2 for that top digit) and weight ``w_j`` (``w_0 = 1``,
``w_{j+1} = w_j·b_j``). Base 4 rather than bits: a 1-of-4 OR-proof costs one commitment, three
challenge shares and four responses for two bits (208 bytes) where two 1-of-2 proofs cost 224;
verification costs the same (two multiplications per bit either way). The measured sizes are in
``bench zk``.

Prover: commits to each digit, ``C_j = d_j·H + s_j·G``, with blindings such that
``Σ w_j·s_j = r`` (``s_0`` is fixed by the others: weight 1, so no inversion). Then
``Σ w_j·C_j = C``, and ``C_0`` is not sent: the verifier recomputes it as
``C − Σ_{j>=1} w_j·C_j`` (Horner, additions only), which also binds the digits to ``C``.

Per digit, a Cramer–Damgård–Schoenmakers OR-proof (CRYPTO '94) that ``C_j − k·H = s_j·G`` for
one ``k < b_j``: the other branches are simulated with random challenge shares and responses,
the true one is a Schnorr proof; the shares XOR to the summary's one 128-bit challenge ``e``
(any sharing where ``e`` and all shares but one fix the last keeps special soundness; XOR keeps
shares 16 bytes). Sent per digit: ``b_j − 1`` shares and ``b_j`` responses, plus ``C_j`` for
``j >= 1``: a 48-bit proof is 1 + 23·32 + 24·(3·16 + 4·32) = 4,961 bytes.

Transcript (the Phantom Challenge lesson): every ``C_j`` and every branch's first message of
every digit are absorbed, in digit order, before the challenge; the verifier recomputes the first
messages ``A_k = z_k·G − e_k·(C_j − k·H)`` and must derive the same challenge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from custody.errors import CommitmentError, ProofError
from custody.group import POINT_BYTES, SCALAR_BYTES, Group, Point, Scalar
from custody.zk.transcript import CHALLENGE_BYTES, Transcript

__all__ = ["DEFAULT_BITS", "MAX_BITS", "RangeProof", "RangeProver", "RangeVerifier", "radices"]

DEFAULT_BITS = 48  # balances < 2^48 units (ZK.md; zk-design-research.md §5.2)
MAX_BITS = 64
_E_MASK = (1 << (8 * CHALLENGE_BYTES)) - 1


@cache
def radices(bits: int) -> tuple[int, ...]:
    """The digits' radices, least significant first: base 4, a binary top digit if bits is odd."""
    return (4,) * (bits // 2) + ((2,) if bits % 2 else ())


def _weights(bits: int) -> list[int]:
    weights, w = [], 1
    for b in radices(bits):
        weights.append(w)
        w *= b
    return weights


@dataclass(frozen=True, slots=True)
class Digit:
    shares: tuple[int, ...]  # challenge shares of branches 0 .. b-2 (the last is implied)
    responses: tuple[Scalar, ...]  # one per branch


@dataclass(frozen=True, slots=True)
class RangeProof:
    bits: int
    commitments: tuple[Point, ...]  # C_1 .. C_{m-1}
    digits: tuple[Digit, ...]

    def to_bytes(self) -> bytes:
        """``n (1 byte) ‖ C_1..C_{m-1} ‖ (shares ‖ responses) per digit``."""
        out = bytearray([self.bits])
        for c in self.commitments:
            out += c.encoded
        for d in self.digits:
            for e in d.shares:
                out += e.to_bytes(CHALLENGE_BYTES, "little")
            for z in d.responses:
                out += z.encoded
        return bytes(out)

    @classmethod
    def size(cls, bits: int) -> int:
        r = radices(bits)
        per_digit = sum((b - 1) * CHALLENGE_BYTES + b * SCALAR_BYTES for b in r)
        return 1 + (len(r) - 1) * POINT_BYTES + per_digit

    @classmethod
    def from_bytes(cls, data: bytes, group: Group, *, bits: int) -> RangeProof:
        """Strict decode: exact length for ``bits``, valid points, canonical scalars."""
        _check_bits(bits)
        if not isinstance(data, bytes) or not data or data[0] != bits:
            raise ProofError(f"range proof is not a {bits}-bit proof")
        if len(data) != cls.size(bits):
            raise ProofError(f"a {bits}-bit range proof is {cls.size(bits)} bytes, not {len(data)}")
        r = radices(bits)
        try:
            pos = 1
            commitments = []
            for _ in range(len(r) - 1):
                commitments.append(group.point(data[pos : pos + POINT_BYTES]))
                pos += POINT_BYTES
            digits = []
            for b in r:
                shares = []
                for _ in range(b - 1):
                    shares.append(int.from_bytes(data[pos : pos + CHALLENGE_BYTES], "little"))
                    pos += CHALLENGE_BYTES
                responses = []
                for _ in range(b):
                    responses.append(group.scalar(data[pos : pos + SCALAR_BYTES]))
                    pos += SCALAR_BYTES
                digits.append(Digit(tuple(shares), tuple(responses)))
        except CommitmentError as exc:
            raise ProofError(f"range proof: {exc}") from exc
        return cls(bits, tuple(commitments), tuple(digits))


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ProofError(f"range proof bit length must be 1..{MAX_BITS}")


def _h_multiples(g: Group) -> list[Point | None]:
    """[0·H, 1·H, 2·H, 3·H] (0·H is the identity, None)."""
    two = g.add(g.H, g.H)
    return [None, g.H, two, g.add(two, g.H)]


class RangeProver:
    """Proves that ``C = value·H + blinding·G`` commits to ``0 <= value < 2^bits``."""

    def __init__(self, label: str, value: int, blinding: Scalar, bits: int, group: Group) -> None:
        _check_bits(bits)
        if not 0 <= value < (1 << bits):
            # An honest prover never gets here; a ledger asked to prove a false balance must fail
            # loudly rather than emit a proof that cannot verify.
            raise ProofError(f"{label}: value is outside [0, 2^{bits})")
        self.label, self.value, self.blinding, self.bits, self.group = (
            label, value, blinding, bits, group,
        )  # fmt: skip
        # Per digit: (digit, nonce, simulated shares by branch, simulated responses, blinding).
        self._state: list[tuple[int, Scalar, dict[int, int], dict[int, Scalar], Scalar]] | None
        self._state = None
        self._commitments: list[Point] = []

    def commit(self, tr: Transcript) -> None:
        g, r, w = self.group, radices(self.bits), _weights(self.bits)
        hs = _h_multiples(g)
        blindings = [g.random_scalar() for _ in r]
        acc = g.scalar_from_int(0)
        for j in range(1, len(r)):
            acc = g.scalar_add(acc, g.scalar_mul(g.scalar_from_int(w[j]), blindings[j]))
        blindings[0] = g.scalar_sub(self.blinding, acc)  # Σ w_j·s_j = r
        state = []
        commitments: list[Point] = []
        for j, b in enumerate(r):
            digit = (self.value // w[j]) % b
            s_j = blindings[j]
            c_j = g.add(hs[digit], g.mul_base(s_j))
            if c_j is None:  # probability ~2^-252; a fresh blinding set avoids it
                raise ProofError("degenerate digit commitment; retry")
            k = tr.nonce(f"{self.label}/d{j}", s_j.encoded + bytes([digit]))
            shares: dict[int, int] = {}
            responses: dict[int, Scalar] = {}
            firsts: list[Point | None] = []
            for branch in range(b):
                if branch == digit:
                    firsts.append(g.mul_base(k))
                    continue
                shares[branch] = int.from_bytes(os.urandom(CHALLENGE_BYTES), "little")
                responses[branch] = g.random_scalar()
                y = g.sub(c_j, hs[branch])
                firsts.append(_replay_branch(g, responses[branch], shares[branch], y))
            if j:
                commitments.append(c_j)
                tr.point(f"{self.label}/C{j}", c_j)
            for branch, a in enumerate(firsts):
                tr.point(f"{self.label}/A{branch}_{j}", a)
            state.append((digit, k, shares, responses, s_j))
        self._state, self._commitments = state, commitments

    def respond(self, e: int) -> RangeProof:
        if self._state is None:
            raise ProofError("respond before commit")
        g, r = self.group, radices(self.bits)
        digits = []
        for (digit, k, shares, responses, s_j), b in zip(self._state, r, strict=True):
            real_share = e
            for share in shares.values():
                real_share ^= share
            all_shares = {**shares, digit: real_share}
            z_real = g.scalar_add(k, g.scalar_mul(g.scalar_from_int(real_share), s_j))
            all_responses = {**responses, digit: z_real}
            digits.append(
                Digit(
                    tuple(all_shares[i] for i in range(b - 1)),
                    tuple(all_responses[i] for i in range(b)),
                )
            )
        self._state = None  # nonces answer one challenge only
        return RangeProof(self.bits, tuple(self._commitments), tuple(digits))


class RangeVerifier:
    """Replays a range proof for commitment ``C`` (recomputed by the verifier, never trusted)."""

    def __init__(
        self, label: str, commitment: Point | None, proof: RangeProof, bits: int, group: Group
    ) -> None:
        _check_bits(bits)
        r = radices(bits)
        if (
            proof.bits != bits
            or len(proof.commitments) != len(r) - 1
            or len(proof.digits) != len(r)
            or any(
                len(d.shares) != b - 1 or len(d.responses) != b
                for d, b in zip(proof.digits, r, strict=True)
            )
        ):
            raise ProofError(f"{label}: not a {bits}-bit range proof")
        self.label, self.commitment, self.proof, self.bits, self.group = (
            label, commitment, proof, bits, group,
        )  # fmt: skip

    def replay(self, tr: Transcript, e: int) -> None:
        g, p, r = self.group, self.proof, radices(self.bits)
        hs = _h_multiples(g)
        # C_0 = C − Σ_{j>=1} w_j·C_j. Horner from the top digit: S = C_{m-1}, then
        # S = b_j·S + C_j down to j = 1; Σ_{j>=1} w_j·C_j = b_0·S. Multiplying by 2 or 4 is
        # one or two doublings (additions only).
        high: Point | None = None
        for j in range(len(r) - 1, 0, -1):
            high = g.add(_times_small(g, high, r[j]), p.commitments[j - 1])
        c0 = g.sub(self.commitment, _times_small(g, high, r[0]))
        if c0 is None:
            raise ProofError(f"{self.label}: digit 0 commitment is the identity")
        commitments = [c0, *p.commitments]
        for j, (c_j, digit, b) in enumerate(zip(commitments, p.digits, r, strict=True)):
            last = e
            for share in digit.shares:
                if share > _E_MASK:
                    raise ProofError(f"{self.label}: challenge share out of range")
                last ^= share
            shares = (*digit.shares, last)
            if j:
                tr.point(f"{self.label}/C{j}", c_j)
            for branch in range(b):
                y = g.sub(c_j, hs[branch])
                a = _replay_branch(g, digit.responses[branch], shares[branch], y)
                tr.point(f"{self.label}/A{branch}_{j}", a)


def _times_small(g: Group, p: Point | None, k: int) -> Point | None:
    """k·P for k in {1, 2, 4}, by doubling."""
    while k > 1:
        p = g.add(p, p)
        k //= 2
    return p


def _replay_branch(g: Group, z: Scalar, e: int, y: Point | None) -> Point | None:
    """A = z·G − e·Y: the first message a branch must have had for response z to challenge e."""
    ey = None if y is None or e == 0 else g.mul(g.scalar_from_int(e), y)
    return g.sub(g.mul_base(z), ey)
