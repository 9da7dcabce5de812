"""Range proofs by bit decomposition, one CDS OR-proof per bit (zk-design-research.md §2.4).

Statement: ``C`` commits to a value ``v`` with ``0 <= v < 2^n`` (``C = v·H + r·G``).

Prover: writes ``v = Σ b_i·2^i`` and commits to each bit, ``C_i = b_i·H + r_i·G``, with the bit
blindings chosen so that ``Σ 2^i·r_i = r`` (``r_0`` is fixed by the others: weight 2^0 = 1, so
no inversion is needed). Then ``Σ 2^i·C_i = C`` and ``C_0`` need not be sent: the verifier
recomputes it as ``C − Σ_{i>=1} 2^i·C_i`` (Horner), which also binds the bits to ``C``.

Per bit, a Cramer–Damgård–Schoenmakers OR-proof (CRYPTO '94) that ``C_i = r_i·G`` (bit 0) or
``C_i − H = r_i·G`` (bit 1): the false branch is simulated with a random challenge share and
response, the true branch is a Schnorr proof; the shares satisfy ``e_0 XOR e_1 = e`` for the one
128-bit challenge of the whole summary (any sharing in which one share and ``e`` fix the other
keeps special soundness; XOR keeps shares 16 bytes). Sent per bit: ``e_0`` (16 bytes), ``z_0``
and ``z_1`` (32 each), plus ``C_i`` for i >= 1: 48-bit proof = 47·32 + 48·80 = 5,344 bytes.

Transcript (the Phantom Challenge lesson): every ``C_i`` and both first messages of every bit
are absorbed, in bit order, before the challenge; the verifier recomputes the first messages
``A_0 = z_0·G − e_0·C_i`` and ``A_1 = z_1·G − e_1·(C_i − H)`` and must derive the same challenge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from custody.errors import CommitmentError, ProofError
from custody.group import POINT_BYTES, SCALAR_BYTES, Group, Point, Scalar
from custody.zk.transcript import CHALLENGE_BYTES, Transcript

__all__ = ["DEFAULT_BITS", "MAX_BITS", "RangeProof", "RangeProver", "RangeVerifier"]

DEFAULT_BITS = 48  # balances < 2^48 units (ZK.md; zk-design-research.md §5.2)
MAX_BITS = 64
_E_MASK = (1 << (8 * CHALLENGE_BYTES)) - 1
_BIT_BYTES = CHALLENGE_BYTES + 2 * SCALAR_BYTES


@dataclass(frozen=True, slots=True)
class RangeProof:
    bits: int
    commitments: tuple[Point, ...]  # C_1 .. C_{n-1}
    e0: tuple[int, ...]  # per bit, 128-bit share of the challenge for branch 0
    z0: tuple[Scalar, ...]
    z1: tuple[Scalar, ...]

    def to_bytes(self) -> bytes:
        """``n (1 byte) ‖ C_1..C_{n-1} ‖ (e_0 ‖ z_0 ‖ z_1) per bit``."""
        out = bytearray([self.bits])
        for c in self.commitments:
            out += c.encoded
        for e0, z0, z1 in zip(self.e0, self.z0, self.z1, strict=True):
            out += e0.to_bytes(CHALLENGE_BYTES, "little") + z0.encoded + z1.encoded
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, group: Group, *, bits: int) -> RangeProof:
        """Strict decode: exact length for ``bits``, valid points, canonical scalars."""
        if not isinstance(data, bytes) or not data or data[0] != bits:
            raise ProofError(f"range proof is not a {bits}-bit proof")
        n = bits
        want = 1 + (n - 1) * POINT_BYTES + n * _BIT_BYTES
        if len(data) != want:
            raise ProofError(f"a {n}-bit range proof is {want} bytes, not {len(data)}")
        try:
            pos = 1
            commitments = []
            for _ in range(n - 1):
                commitments.append(group.point(data[pos : pos + POINT_BYTES]))
                pos += POINT_BYTES
            e0, z0, z1 = [], [], []
            for _ in range(n):
                e0.append(int.from_bytes(data[pos : pos + CHALLENGE_BYTES], "little"))
                pos += CHALLENGE_BYTES
                z0.append(group.scalar(data[pos : pos + SCALAR_BYTES]))
                pos += SCALAR_BYTES
                z1.append(group.scalar(data[pos : pos + SCALAR_BYTES]))
                pos += SCALAR_BYTES
        except CommitmentError as exc:
            raise ProofError(f"range proof: {exc}") from exc
        return cls(n, tuple(commitments), tuple(e0), tuple(z0), tuple(z1))


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ProofError(f"range proof bit length must be 1..{MAX_BITS}")


class RangeProver:
    """Proves that ``C = value·H + blinding·G`` commits to ``0 <= value < 2^bits``."""

    def __init__(self, label: str, value: int, blinding: Scalar, bits: int, group: Group) -> None:
        _check_bits(bits)
        if not 0 <= value < 2**bits:
            # An honest prover never gets here; a ledger asked to prove a false balance must fail
            # loudly rather than emit a proof that cannot verify.
            raise ProofError(f"{label}: value is outside [0, 2^{bits})")
        self.label, self.value, self.blinding, self.bits, self.group = (
            label, value, blinding, bits, group,
        )  # fmt: skip
        self._state: list[tuple[int, Scalar, Scalar, int, Scalar]] | None = None
        self._commitments: list[Point] = []

    def commit(self, tr: Transcript) -> None:
        g, n = self.group, self.bits
        blindings = [g.random_scalar() for _ in range(n)]
        # r_0 = r − Σ_{i>=1} 2^i·r_i, so that Σ 2^i·C_i = C.
        acc = g.scalar_from_int(0)
        for i in range(1, n):
            acc = g.scalar_add(acc, g.scalar_mul(g.scalar_from_int(1 << i), blindings[i]))
        blindings[0] = g.scalar_sub(self.blinding, acc)
        state: list[tuple[int, Scalar, Scalar, int, Scalar]] = []
        commitments: list[Point] = []
        for i in range(n):
            bit = (self.value >> i) & 1
            r_i = blindings[i]
            c_i = g.add(g.H if bit else None, g.mul_base(r_i))
            if c_i is None:  # probability ~2^-252; a fresh blinding set avoids it
                raise ProofError("degenerate bit commitment; retry")
            # Simulated branch (1 − bit): random share and response, A = z·G − e·Y.
            e_sim = int.from_bytes(os.urandom(CHALLENGE_BYTES), "little")
            z_sim = g.random_scalar()
            y_sim = g.sub(c_i, g.H) if bit == 0 else c_i
            a_sim = _replay_branch(g, z_sim, e_sim, y_sim)
            k = tr.nonce(f"{self.label}/bit{i}", r_i.encoded + bytes([bit]))
            a_real = g.mul_base(k)
            a0, a1 = (a_real, a_sim) if bit == 0 else (a_sim, a_real)
            if i:
                commitments.append(c_i)
                tr.point(f"{self.label}/C{i}", c_i)
            tr.point(f"{self.label}/A0_{i}", a0)
            tr.point(f"{self.label}/A1_{i}", a1)
            state.append((bit, k, z_sim, e_sim, r_i))
        self._state, self._commitments = state, commitments

    def respond(self, e: int) -> RangeProof:
        if self._state is None:
            raise ProofError("respond before commit")
        g = self.group
        e0s: list[int] = []
        z0s: list[Scalar] = []
        z1s: list[Scalar] = []
        for bit, k, z_sim, e_sim, r_i in self._state:
            e_real = e ^ e_sim
            z_real = g.scalar_add(k, g.scalar_mul(g.scalar_from_int(e_real), r_i))
            if bit == 0:
                e0s.append(e_real)
                z0s.append(z_real)
                z1s.append(z_sim)
            else:
                e0s.append(e_sim)
                z0s.append(z_sim)
                z1s.append(z_real)
        self._state = None  # nonces answer one challenge only
        return RangeProof(self.bits, tuple(self._commitments), tuple(e0s), tuple(z0s), tuple(z1s))


class RangeVerifier:
    """Replays a range proof for commitment ``C`` (recomputed by the verifier, never trusted)."""

    def __init__(
        self, label: str, commitment: Point | None, proof: RangeProof, bits: int, group: Group
    ) -> None:
        _check_bits(bits)
        if proof.bits != bits or len(proof.commitments) != bits - 1 or len(proof.e0) != bits:
            raise ProofError(f"{label}: not a {bits}-bit range proof")
        self.label, self.commitment, self.proof, self.bits, self.group = (
            label, commitment, proof, bits, group,
        )  # fmt: skip

    def replay(self, tr: Transcript, e: int) -> None:
        g, p = self.group, self.proof
        # C_0 = C − Σ_{i>=1} 2^i·C_i, Horner from the top bit: S = (((C_{n-1})·2 + C_{n-2})·2 ...
        high: Point | None = None
        for c in reversed(p.commitments):
            high = g.add(g.add(high, high), c)
        c0 = g.sub(self.commitment, g.add(high, high))
        if c0 is None:
            raise ProofError(f"{self.label}: bit 0 commitment is the identity")
        commitments = [c0, *p.commitments]
        for i, c_i in enumerate(commitments):
            e0 = p.e0[i]
            if e0 > _E_MASK:
                raise ProofError(f"{self.label}: challenge share out of range")
            a0 = _replay_branch(g, p.z0[i], e0, c_i)
            a1 = _replay_branch(g, p.z1[i], e ^ e0, g.sub(c_i, g.H))
            if i:
                tr.point(f"{self.label}/C{i}", c_i)
            tr.point(f"{self.label}/A0_{i}", a0)
            tr.point(f"{self.label}/A1_{i}", a1)


def _replay_branch(g: Group, z: Scalar, e: int, y: Point | None) -> Point | None:
    """A = z·G − e·Y: the first message a branch must have had for response z to challenge e."""
    ey = None if y is None or e == 0 else g.mul(g.scalar_from_int(e), y)
    return g.sub(g.mul_base(z), ey)
