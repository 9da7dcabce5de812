"""AND-composition of sigma protocols under one transcript, and the Schnorr proof on G.

Every sub-proof of a summary implements the same two halves:

- a ``SubProver`` absorbs its first messages into the shared transcript (``commit``), and, once
  the single challenge ``e`` has been derived from everything, turns it into responses
  (``respond``);
- a ``SubVerifier`` recomputes those first messages from ``e`` and the responses and absorbs them
  in the same order (``replay``).

``prove_all`` and ``verify_all`` run the protocol: absorb all first messages, derive ONE
challenge (zk-design-research.md §5.4 point 6: "all of 2–4 under one transcript"), respond; the
verifier replays and accepts only if it derives the same challenge. Because the first messages
are recomputed rather than sent, a proof is the challenge plus responses (compact form).

Schnorr (knowledge of x with X = x·G, §2.2): first message A = k·G, response z = k + e·x;
replay A = z·G − e·X.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from custody.errors import CommitmentError, ProofError
from custody.group import SCALAR_BYTES, Group, Point, Scalar
from custody.zk.transcript import CHALLENGE_BYTES, Transcript

__all__ = [
    "SchnorrProof",
    "SchnorrProver",
    "SchnorrVerifier",
    "SubProver",
    "SubVerifier",
    "prove_all",
    "verify_all",
]

CHALLENGE_LABEL = "challenge"


class SubProver(Protocol):
    def commit(self, tr: Transcript) -> None: ...
    def respond(self, e: int) -> object: ...


class SubVerifier(Protocol):
    def replay(self, tr: Transcript, e: int) -> None: ...


def prove_all(tr: Transcript, provers: Sequence[SubProver]) -> tuple[int, list[object]]:
    """Absorb every first message, derive the one challenge, collect the responses."""
    for prover in provers:
        prover.commit(tr)
    e = tr.challenge(CHALLENGE_LABEL)
    return e, [prover.respond(e) for prover in provers]


def verify_all(tr: Transcript, verifiers: Sequence[SubVerifier], e: int) -> None:
    """Replay every sub-proof from ``e``; raise ``ProofError`` unless the challenge comes back."""
    if not 0 <= e < 2 ** (8 * CHALLENGE_BYTES):
        raise ProofError("challenge out of range")
    for verifier in verifiers:
        verifier.replay(tr, e)
    derived = tr.challenge(CHALLENGE_LABEL)
    if not hmac.compare_digest(
        derived.to_bytes(CHALLENGE_BYTES, "little"), e.to_bytes(CHALLENGE_BYTES, "little")
    ):
        raise ProofError("the proofs do not match their Fiat-Shamir challenge")


# --- Schnorr on G --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchnorrProof:
    z: Scalar

    def to_bytes(self) -> bytes:
        return self.z.encoded

    @classmethod
    def from_bytes(cls, data: bytes, group: Group) -> SchnorrProof:
        if len(data) != SCALAR_BYTES:
            raise ProofError("a Schnorr response must be 32 bytes")
        try:
            return cls(group.scalar(data))
        except CommitmentError as exc:
            raise ProofError(f"Schnorr response: {exc}") from exc


class SchnorrProver:
    """Proves knowledge of ``x`` with ``X = x·G`` (``X`` is part of the public statement)."""

    def __init__(self, label: str, x: Scalar, group: Group) -> None:
        self.label = label
        self.x = x
        self.group = group
        self._k: Scalar | None = None

    def commit(self, tr: Transcript) -> None:
        self._k = tr.nonce(self.label, self.x.encoded)
        tr.point(self.label + "/A", self.group.mul_base(self._k))

    def respond(self, e: int) -> SchnorrProof:
        if self._k is None:
            raise ProofError("respond before commit")
        g = self.group
        z = g.scalar_add(self._k, g.scalar_mul(g.scalar_from_int(e), self.x))
        self._k = None  # a nonce answers one challenge only
        return SchnorrProof(z)


class SchnorrVerifier:
    def __init__(self, label: str, X: Point | None, proof: SchnorrProof, group: Group) -> None:
        self.label = label
        self.X = X
        self.proof = proof
        self.group = group

    def replay(self, tr: Transcript, e: int) -> None:
        g = self.group
        eX = None if self.X is None else g.mul(g.scalar_from_int(e), self.X)
        tr.point(self.label + "/A", g.sub(g.mul_base(self.proof.z), eX))
