"""Sites' declared opening stocks, committed for the mass balance proofs.

Each contributing site's balance starts from an opening stock ``S`` (ZK.md: "declared opening
stock at site genesis"). The ledger publishes only a commitment ``C_S = S·H + r_S·G`` in the
signed registry; ``r_S`` is derived from the ledger's signing seed, the site and the value, so
no extra secret has to be stored and the same declaration always gives the same commitment.

Declarations live in ``sites.json`` in the ledger's data dir (``custody-ledger site stock``);
a site without one has a declared stock of zero. A declaration is made once: changing it later
would let the ledger re-base a site's balance, so it is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from custody.commitment import MAX_SUM_UNITS, Opening, commit
from custody.errors import ConfigError
from custody.event import validate_identifier
from custody.files import replace_file
from custody.group import ED25519, Group
from custody.keys import LedgerKeyPair

__all__ = ["SITES_FILE", "declare_stock", "declared_stocks", "stock_commitments", "stock_opening"]

SITES_FILE = "sites.json"
_DOMAIN = b"cobalt-custody/v1/opening-stock"


def declared_stocks(data_dir: Path) -> dict[str, int]:
    path = data_dir / SITES_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        stocks = {
            validate_identifier(s, "site"): int(v["opening_stock_units"]) for s, v in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(str(path), "-", f"not a valid sites file: {exc}") from exc
    for site, value in stocks.items():
        if not 0 <= value <= MAX_SUM_UNITS:
            raise ConfigError(str(path), site, "opening stock out of range")
    return stocks


def declare_stock(data_dir: Path, site: str, units: int) -> None:
    validate_identifier(site, "site")
    if not 0 <= units <= MAX_SUM_UNITS:
        raise ConfigError("command line", "units", "opening stock out of range")
    stocks = declared_stocks(data_dir)
    if site in stocks and stocks[site] != units:
        raise ConfigError(
            str(data_dir / SITES_FILE), site,
            f"opening stock already declared as {stocks[site]} units; it cannot change",
        )  # fmt: skip
    stocks[site] = units
    data = {s: {"opening_stock_units": v} for s, v in sorted(stocks.items())}
    replace_file(data_dir / SITES_FILE, (json.dumps(data, indent=2) + "\n").encode())


def stock_opening(keys: LedgerKeyPair, site: str, units: int, group: Group = ED25519) -> Opening:
    h = hashlib.sha512(_DOMAIN)
    for part in (keys.signing_seed, site.encode(), units.to_bytes(8, "big")):
        h.update(len(part).to_bytes(2, "big") + part)
    return Opening(units, group.scalar_from_wide(h.digest()))


def stock_commitments(
    keys: LedgerKeyPair, data_dir: Path, sites: set[str], group: Group = ED25519
) -> dict[str, bytes]:
    """``site -> C_S`` for every given site (declared stock, or zero)."""
    declared = declared_stocks(data_dir)
    return {
        s: commit(stock_opening(keys, s, declared.get(s, 0), group), group).encoded
        for s in sorted(sites)
    }
