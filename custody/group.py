"""The prime-order group behind commitments: edwards25519's ℓ-subgroup via PyNaCl.

Everything that touches points or scalars goes through ``Group`` so that
ristretto255 can replace edwards25519 later (ZK.md "Construction"). Hygiene
rules enforced here (ZK.md; zk-design-research.md §3.2):

- every point from outside is validated with ``crypto_core_ed25519_is_valid_point``
  (on curve, canonical, in the main subgroup, not small order) before use;
- points are compared by their canonical bytes;
- scalars are canonical little-endian integers < ℓ; non-canonical ones are rejected;
- zero is handled explicitly (libsodium refuses to multiply by 0 and never
  returns the identity), so ``v·H`` with v = 0 is skipped, not computed;
- secret scalar arithmetic uses libsodium's constant-time ``scalar_*`` calls.

``self_test`` must pass before any commitment is made: it refuses a libsodium
that accepts a known point outside the subgroup (CVE-2025-69277).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from custody.errors import CommitmentError, CryptoSelfTestError

__all__ = ["ED25519", "Group", "Point", "Scalar"]

# ℓ, the order of the prime subgroup (RFC 8032 §5.1).
ORDER = 2**252 + 27742317777372353535851937790883648493
POINT_BYTES = 32
SCALAR_BYTES = 32

# Domain tag for the second generator H (zk-design-research.md §3.3; documented
# in docs/protocol.md so other implementations can rebuild H).
H_DOMAIN_TAG = b"cobalt-custody/v1/pedersen/H"


@dataclass(frozen=True, slots=True)
class Point:
    """A validated element of the prime-order subgroup, by canonical encoding."""

    encoded: bytes

    def hex(self) -> str:
        return self.encoded.hex()


@dataclass(frozen=True, slots=True)
class Scalar:
    """A canonical scalar modulo ℓ (32 bytes little-endian, value < ℓ)."""

    encoded: bytes

    @property
    def is_zero(self) -> bool:
        return self.encoded == bytes(SCALAR_BYTES)

    def to_int(self) -> int:
        return int.from_bytes(self.encoded, "little")


class Group:
    """edwards25519's prime-order subgroup, through libsodium."""

    name = "edwards25519"
    order = ORDER

    def __init__(self) -> None:
        self.G = Point(sodium.crypto_scalarmult_ed25519_base_noclamp(_one()))
        seed = hashlib.sha256(H_DOMAIN_TAG).digest()
        self.H = Point(sodium.crypto_core_ed25519_from_uniform(seed))
        self._h_multiples: list[list[Point]] | None = None
        if self.H == self.G or not sodium.crypto_core_ed25519_is_valid_point(self.H.encoded):
            raise CryptoSelfTestError("the derived generator H is not a valid subgroup point")

    # --- decoding and validation -------------------------------------------------
    def point(self, encoded: bytes) -> Point:
        """Validate bytes received from outside as a subgroup point (not the identity)."""
        if not isinstance(encoded, bytes) or len(encoded) != POINT_BYTES:
            raise CommitmentError("a group element must be 32 bytes")
        if not sodium.crypto_core_ed25519_is_valid_point(encoded):
            raise CommitmentError("not a canonical point of the prime-order subgroup")
        return Point(encoded)

    def scalar(self, encoded: bytes) -> Scalar:
        """Validate a canonical scalar (< ℓ); reject non-canonical encodings."""
        if not isinstance(encoded, bytes) or len(encoded) != SCALAR_BYTES:
            raise CommitmentError("a scalar must be 32 bytes")
        if int.from_bytes(encoded, "little") >= ORDER:
            raise CommitmentError("non-canonical scalar (>= group order)")
        return Scalar(encoded)

    def scalar_from_int(self, value: int) -> Scalar:
        if not 0 <= value < ORDER:
            raise CommitmentError("scalar value out of range")
        return Scalar(value.to_bytes(SCALAR_BYTES, "little"))

    def random_scalar(self) -> Scalar:
        """A uniform non-zero scalar: reduce 64 random bytes (wide reduction)."""
        while True:
            s = Scalar(sodium.crypto_core_ed25519_scalar_reduce(nacl.utils.random(64)))
            if not s.is_zero:
                return s

    # --- arithmetic --------------------------------------------------------------
    def add(self, a: Point | None, b: Point | None) -> Point | None:
        """a + b, with ``None`` standing for the identity (libsodium rejects the identity)."""
        if a is None:
            return b
        if b is None:
            return a
        return _or_identity(sodium.crypto_core_ed25519_add(a.encoded, b.encoded))

    def sub(self, a: Point | None, b: Point | None) -> Point | None:
        """a - b, with ``None`` standing for the identity."""
        if b is None:
            return a
        if a is None:
            return self.neg(b)
        return _or_identity(sodium.crypto_core_ed25519_sub(a.encoded, b.encoded))

    def neg(self, a: Point) -> Point:
        # -P = (ℓ-1)·P; a non-zero multiple stays in the subgroup.
        return Point(sodium.crypto_scalarmult_ed25519_noclamp(_minus_one(), a.encoded))

    def mul(self, k: Scalar, p: Point) -> Point | None:
        if k.is_zero:
            return None
        return Point(sodium.crypto_scalarmult_ed25519_noclamp(k.encoded, p.encoded))

    def mul_h_small(self, value: int) -> Point | None:
        """``value·H`` for 0 <= value < 2^32 from a table of byte-digit multiples of H.

        The gateway commits to every mass it weighs; a generic variable-base
        multiplication (with libsodium's subgroup check of H each time) was the
        largest cost per event. Here v·H = Σ d_i·(256^i·H) with at most four
        table points and three additions, all of them multiples of H in
        (0, 2^32) and so never the identity. Not constant-time in ``value``: it
        is for public-on-the-device masses (the operator's screen and the
        local outbox show them in clear), never for keys or blindings.
        """
        if not 0 <= value < 2**32:
            raise CommitmentError("mul_h_small takes 0 <= value < 2^32")
        table = self._h_table()
        acc: Point | None = None
        for window in range(4):
            digit = (value >> (8 * window)) & 0xFF
            if digit:
                acc = self.add(acc, table[window][digit - 1])
        return acc

    def _h_table(self) -> list[list[Point]]:
        # Built once per process on first use (1020 additions, ~25 ms); read-only after.
        if self._h_multiples is None:
            table: list[list[Point]] = []
            base: Point = self.H
            for _ in range(4):
                row = [base]
                for _ in range(254):
                    row.append(Point(sodium.crypto_core_ed25519_add(row[-1].encoded, base.encoded)))
                table.append(row)
                base = Point(sodium.crypto_core_ed25519_add(row[-1].encoded, base.encoded))
            self._h_multiples = table
        return self._h_multiples

    def mul_base(self, k: Scalar) -> Point | None:
        if k.is_zero:
            return None
        return Point(sodium.crypto_scalarmult_ed25519_base_noclamp(k.encoded))

    def scalar_add(self, a: Scalar, b: Scalar) -> Scalar:
        return Scalar(sodium.crypto_core_ed25519_scalar_add(a.encoded, b.encoded))

    def scalar_sub(self, a: Scalar, b: Scalar) -> Scalar:
        return Scalar(sodium.crypto_core_ed25519_scalar_sub(a.encoded, b.encoded))

    def scalar_mul(self, a: Scalar, b: Scalar) -> Scalar:
        return Scalar(sodium.crypto_core_ed25519_scalar_mul(a.encoded, b.encoded))

    def scalar_neg(self, a: Scalar) -> Scalar:
        return Scalar(sodium.crypto_core_ed25519_scalar_negate(a.encoded))

    def scalar_from_wide(self, wide: bytes) -> Scalar:
        """64 bytes (a hash output) reduced mod ℓ: the wide reduction of zk-design-research §2.3."""
        if len(wide) != 64:
            raise CommitmentError("wide reduction takes 64 bytes")
        return Scalar(sodium.crypto_core_ed25519_scalar_reduce(wide))

    # --- start-up self-test ------------------------------------------------------
    def self_test(self) -> None:
        """Refuse a libsodium that accepts a point outside the subgroup (CVE-2025-69277).

        Q + (0, -1): (0, -1) has order 2, so the sum has a torsion component;
        a patched ``is_valid_point`` rejects it (zk-design-research.md §3.1).
        """
        # Canonical encoding of (0, -1): y = p - 1, sign bit 0.
        p = 2**255 - 19
        torsion = (p - 1).to_bytes(32, "little")
        q = self.H.encoded
        try:
            mixed = sodium.crypto_core_ed25519_add(q, torsion)
        except nacl.exceptions.RuntimeError as exc:  # pragma: no cover - libsodium refused
            raise CryptoSelfTestError(f"libsodium point addition failed: {exc}") from exc
        if sodium.crypto_core_ed25519_is_valid_point(mixed):
            raise CryptoSelfTestError(
                "libsodium accepts a point outside the prime-order subgroup "
                "(CVE-2025-69277); upgrade PyNaCl to >= 1.6.2"
            )
        if not sodium.crypto_core_ed25519_is_valid_point(q):
            raise CryptoSelfTestError("libsodium rejects a valid subgroup point")


# The identity (0, 1) in canonical encoding: y = 1, sign bit 0.
_IDENTITY = (1).to_bytes(POINT_BYTES, "little")


def _or_identity(encoded: bytes) -> Point | None:
    # Sums of subgroup points stay in the subgroup; only the identity needs care.
    return None if encoded == _IDENTITY else Point(encoded)


def _one() -> bytes:
    return (1).to_bytes(SCALAR_BYTES, "little")


def _minus_one() -> bytes:
    return (ORDER - 1).to_bytes(SCALAR_BYTES, "little")


ED25519 = Group()
