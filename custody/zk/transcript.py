"""One Fiat–Shamir transcript for every proof of a summary (ZK.md "Construction").

The rules it enforces (zk-design-research.md §2.3, "strong Fiat–Shamir"):

1. Everything is absorbed: a domain tag and version, the group and both generators (at
   construction), then the whole public statement and every prover message in order. A
   challenge is derived only from what was absorbed before it.
2. Unambiguous encoding: every item is ``kind (1 byte) ‖ len(label) (2) ‖ label ‖ len(data) (4)
   ‖ data``, so no two different sequences of items hash the same way (no bare concatenation).
3. Each challenge is itself absorbed, so a later challenge depends on it (and on every response
   absorbed after it: the 2025 "Phantom Challenge" bug was a batching randomizer derived before a
   prover-chosen OR share was absorbed).
4. Challenges are 128-bit integers (the soundness error of one challenge is 2^-128); scalars
   derived from the transcript use the 64-byte wide reduction mod ℓ.
5. Nonces are hedged: ``H("nonce" ‖ transcript state ‖ label ‖ witness ‖ 32 fresh random
   bytes)``, so a failing RNG does not leak a witness and a nonce never repeats across
   statements; deriving a nonce does not change the transcript.

The hash is SHA-512 (the state is a running ``hashlib.sha512``; a challenge hashes a copy).
"""

from __future__ import annotations

import hashlib
import os

from custody.group import ED25519, Group, Point, Scalar

__all__ = ["CHALLENGE_BYTES", "PROTOCOL_TAG", "Transcript"]

PROTOCOL_TAG = b"cobalt-custody/zk/v1"
CHALLENGE_BYTES = 16  # 128-bit challenges
# An identity element has no libsodium encoding as a valid point; it is absorbed as this tag.
_IDENTITY = b"\x00" * 32


class Transcript:
    """A running Fiat–Shamir transcript; prover and verifier build identical ones."""

    def __init__(self, domain: str, group: Group = ED25519) -> None:
        self.group = group
        self._state = hashlib.sha512()
        self._absorb(b"P", "protocol", PROTOCOL_TAG)
        self._absorb(b"D", "domain", domain.encode())
        self._absorb(b"g", "group", group.name.encode())
        self.point("G", group.G)
        self.point("H", group.H)

    def _absorb(self, kind: bytes, label: str, data: bytes) -> None:
        name = label.encode()
        if len(name) > 0xFFFF or len(data) > 0xFFFFFFFF:
            raise ValueError("transcript item too long")
        self._state.update(kind + len(name).to_bytes(2, "big") + name)
        self._state.update(len(data).to_bytes(4, "big") + data)

    # --- absorbing ------------------------------------------------------------------
    def message(self, label: str, data: bytes) -> None:
        self._absorb(b"m", label, data)

    def text(self, label: str, value: str) -> None:
        self._absorb(b"t", label, value.encode())

    def integer(self, label: str, value: int) -> None:
        """A signed integer, minimal big-endian two's complement (length-prefixed)."""
        size = max(1, (value.bit_length() + 8) // 8)
        self._absorb(b"i", label, value.to_bytes(size, "big", signed=True))

    def point(self, label: str, p: Point | None) -> None:
        self._absorb(b"p", label, _IDENTITY if p is None else p.encoded)

    def points(self, label: str, ps: list[Point | None]) -> None:
        self._absorb(b"P", label, b"".join(_IDENTITY if p is None else p.encoded for p in ps))

    def scalar(self, label: str, s: Scalar) -> None:
        self._absorb(b"s", label, s.encoded)

    # --- deriving -------------------------------------------------------------------
    def challenge(self, label: str) -> int:
        """A 128-bit challenge from everything absorbed so far; it is absorbed in turn."""
        fork = self._state.copy()
        fork.update(b"C" + label.encode())
        value = fork.digest()[:CHALLENGE_BYTES]
        self._absorb(b"c", label, value)
        return int.from_bytes(value, "little")

    def nonce(self, label: str, witness: bytes) -> Scalar:
        """A hedged secret nonce; the transcript is unchanged (rule 5 above)."""
        h = hashlib.sha512(b"nonce")
        h.update(self._state.copy().digest())
        h.update(len(label).to_bytes(2, "big") + label.encode())
        h.update(len(witness).to_bytes(4, "big") + witness)
        h.update(os.urandom(32))
        k = self.group.scalar_from_wide(h.digest())
        return k if not k.is_zero else self.nonce(label, witness)

    def fork_digest(self) -> bytes:
        """The current state's digest (for tests and for binding a proof to its transcript)."""
        return self._state.copy().digest()
