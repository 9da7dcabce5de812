"""The disclosure policy, enforced: which aggregates the ledger proves, and to whom.

Written policy (docs/zk-summaries.md §7): opening or proving two overlapping aggregates reveals
their difference. The ledger therefore proves only lot totals (with tolerance and balance
claims, never a per-site figure), and keeps a register of every summary it issued, in
``disclosures.json`` in its data dir:

- a lot is proven with ONE set of contributions: a later summary of the same lot must have the
  same total, sites and contribution records, whoever asks (otherwise two totals of "the same"
  lot would reveal what changed between them);
- a single-site lot reveals that site's share of the lot: it is proven to a buyer or regulator
  only when the policy allows single-site lots (auditors may always receive it);
- every issued summary is recorded (lot, audience, summary id, time) for the site's review.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, CustodyError
from custody.files import replace_file
from ledger.verify.policy import Policy

__all__ = ["DISCLOSURES_FILE", "DisclosureRefused", "Register"]

DISCLOSURES_FILE = "disclosures.json"


class DisclosureRefused(CustodyError):
    """The disclosure policy forbids this summary; the message says which rule."""


@dataclass(frozen=True, slots=True)
class LotDisclosure:
    total: int
    sites: tuple[str, ...]
    contributions: tuple[str, ...]  # event ids (hex)


class Register:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DISCLOSURES_FILE
        self._raw = self._load()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"lots": {}, "issued": []}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw.get("lots"), dict) or not isinstance(raw.get("issued"), list):
                raise ValueError("missing lots/issued")
            return dict(raw)
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(
                str(self.path), "-", f"not a valid disclosure register: {exc}"
            ) from exc

    def check(self, lot: str, disclosure: LotDisclosure, audience: str, policy: Policy) -> None:
        """Raise ``DisclosureRefused`` unless the policy allows this summary."""
        if len(disclosure.sites) == 1 and audience != "auditor" and not policy.single_site_lots:
            raise DisclosureRefused(
                f"lot {lot} has a single contributing site; policy v{policy.version} proves "
                f"single-site lots to auditors only"
            )
        before = self._raw["lots"].get(lot)
        if before is not None and (
            before["total"] != disclosure.total
            or tuple(before["sites"]) != disclosure.sites
            or tuple(before["contributions"]) != disclosure.contributions
        ):
            raise DisclosureRefused(
                f"lot {lot} was already proven with a total of {before['total']} units from "
                f"{', '.join(before['sites'])}; proving a different total or contribution set "
                "would reveal the difference"
            )

    def record(self, lot: str, disclosure: LotDisclosure, audience: str, summary_id: bytes) -> None:
        self._raw["lots"][lot] = {
            "total": disclosure.total, "sites": list(disclosure.sites),
            "contributions": list(disclosure.contributions),
        }  # fmt: skip
        self._raw["issued"].append({
            "lot": lot, "audience": audience, "summary_id": summary_id.hex(),
            "time_ms": time.time_ns() // 1_000_000,
        })  # fmt: skip
        text = json.dumps(self._raw, indent=2, sort_keys=True) + "\n"
        replace_file(self.path, text.encode())

    def issued(self) -> list[dict[str, Any]]:
        return list(self._raw["issued"])
