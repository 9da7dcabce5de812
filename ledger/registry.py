"""Signing a snapshot of the device registry (decoding lives in ``ledger.verify``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from nacl.signing import SigningKey

from custody import cbor, cose
from custody.keys import LedgerKeyPair, kid_for
from ledger.store import Store
from ledger.verify.registry import REGISTRY_CONTENT_TYPE, Registry, RegistryEntry

__all__ = ["sign_registry", "snapshot"]


def snapshot(store: Store, ledger_id: str, stocks: Mapping[str, bytes] | None = None) -> Registry:
    """The registry now; ``stocks`` are the sites' opening-stock commitments (``ledger.sites``)."""
    entries = tuple(
        RegistryEntry(
            k.device_id,
            k.site_id,
            k.kid,
            k.public_key,
            k.enrolled_ms,
            k.revoked_ms,
            k.valid_from_ms,
        )
        for k in store.device_keys()
    )
    return Registry(ledger_id, time.time_ns() // 1_000_000, entries, dict(stocks or {}))


def sign_registry(keys: LedgerKeyPair, registry: Registry) -> bytes:
    protected = {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: REGISTRY_CONTENT_TYPE,
        cose.HDR_KID: kid_for(keys.public.signing_key),
    }
    return cose.sign1(SigningKey(keys.signing_seed), protected, cbor.encode(registry.to_map()))
