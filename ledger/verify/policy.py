"""Published summary policies: the constants a verifier insists on (docs/zk-summaries.md §3 step 9).

A bundle names its policy version and carries the constants; the verifier accepts them only if
they equal the published policy of that version, so a ledger cannot quietly prove a weaker claim
(a looser tolerance, a higher recovery factor, shorter range proofs, a shorter window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from custody.errors import SchemaError

__all__ = ["PUBLISHED_POLICIES", "UNSOUND_POLICIES", "Policy", "tolerance_for"]


@dataclass(frozen=True, slots=True)
class Policy:
    version: int
    # Mass balance q·outputs <= p·inputs + opening stock (ZK.md claim 3); p/q is the maximum
    # recovery of product mass per unit of feed mass.
    recovery_p: int
    recovery_q: int
    balance_bits: int  # range of every balance proof, [0, 2^bits) in 0.1 kg units
    tolerance_bits: int  # range of the two receipt tolerance proofs
    tolerance_permille: int  # τ = ceil(W · permille / 1000)
    window: int  # site checkpoints whose balance each summary proves
    single_site_lots: bool  # may a lot with one contributing site be proven to a buyer?
    # An opening stock is proven to be in [0, 2^stock_bits) units: its published maximum.
    stock_bits: int = 28

    def __post_init__(self) -> None:
        for name in ("version", "recovery_p", "recovery_q", "balance_bits", "tolerance_bits",
                     "window", "stock_bits"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SchemaError(f"policy {name} must be a positive integer")
        if not all(1 <= b <= 64 for b in (self.balance_bits, self.tolerance_bits,
                                          self.stock_bits)):  # fmt: skip
            raise SchemaError("policy bit lengths must be 1..64")
        tol = self.tolerance_permille
        if not isinstance(tol, int) or isinstance(tol, bool) or not 0 <= tol <= 1000:
            raise SchemaError("policy tolerance must be an integer 0..1000 per mille")

    def to_map(self) -> dict[str, Any]:
        return {
            "v": self.version, "p": self.recovery_p, "q": self.recovery_q,
            "bits": self.balance_bits, "tbits": self.tolerance_bits,
            "tol": self.tolerance_permille, "window": self.window,
            "single": self.single_site_lots, "sbits": self.stock_bits,
        }  # fmt: skip

    @classmethod
    def from_map(cls, raw: Any) -> Policy:
        keys = {"v", "p", "q", "bits", "tbits", "tol", "window", "single", "sbits"}
        if not isinstance(raw, dict) or set(raw) != keys:
            raise SchemaError("policy fields")
        if not isinstance(raw["single"], bool):
            raise SchemaError("policy single must be a boolean")
        return cls(
            raw["v"], raw["p"], raw["q"], raw["bits"], raw["tbits"], raw["tol"], raw["window"],
            raw["single"], raw["sbits"],
        )  # fmt: skip


PUBLISHED_POLICIES: dict[int, Policy] = {
    # v2: at most 1 t of cobalt hydroxide per 4 t of feed received (a conservative bound for
    # the copperbelt's hydroxide plants, to be set per programme), 48-bit balances (ZK.md),
    # receipt within 0.5% (two OIML R76 class III weighbridges plus bag moisture), the last 12
    # checkpoints of each site, single-site lots allowed (most lots come from one mine), and
    # an opening stock of at most 2^28 units (26,843 t, above a large mine's yearly output).
    2: Policy(
        2,
        recovery_p=1,
        recovery_q=4,
        balance_bits=48,
        tolerance_bits=40,
        tolerance_permille=5,
        window=12,
        single_site_lots=True,
        stock_bits=28,
    ),
}

# Versions whose statement did not mean what the verifier printed; bundles of these are
# refused with the reason, whatever their proofs say.
UNSOUND_POLICIES: dict[int, str] = {
    1: "the ledger chose the opening stocks and signed the registry itself, and key chains "
    "could be cut short, so its mass balance and origin claims could be forged by the ledger",
}


def tolerance_for(total: int, policy: Policy) -> int:
    """τ in mass units: W · permille / 1000, rounded up."""
    return -(-total * policy.tolerance_permille // 1000)
