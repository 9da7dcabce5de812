"""The transparency log's signed checkpoints and proofs (RFC 9162 hashing).

A checkpoint is a COSE_Sign1 by the ledger's Ed25519 key over the
deterministic-CBOR map ``{"v": 1, "ledger": id, "size": n, "root": h, "t": ms}``
(content type ``CHECKPOINT_CONTENT_TYPE``). Anyone holding the ledger's
public key can check that a root and size were committed to by the ledger;
inclusion and consistency proofs (``custody.merkle``) then tie single events
and older checkpoints to it. A proof must be checked against the size and
root of the *same* signed checkpoint (custody.merkle's documented limitation).
"""

from __future__ import annotations

import time
from typing import Any

from nacl.signing import SigningKey

from custody import cbor, cose
from custody.keys import LedgerKeyPair, kid_for
from custody.merkle import MerkleReader, consistency_proof, inclusion_proof
from ledger.verify.checkpoint import (
    CHECKPOINT_CONTENT_TYPE,
    Checkpoint,
    verify_checkpoint,
)

__all__ = [
    "CHECKPOINT_CONTENT_TYPE",
    "Checkpoint",
    "issue_checkpoint",
    "prove_consistency",
    "prove_inclusion",
    "sign_checkpoint",
    "verify_checkpoint",
]


def issue_checkpoint(store: Any, keys: LedgerKeyPair) -> tuple[Checkpoint, bytes]:
    """Sign a checkpoint of the current log and store it, in one transaction."""
    with store.transaction():
        log = store.log_range()
        data = sign_checkpoint(keys, log.size, log.root())
        cp = verify_checkpoint(data, keys.public)
        store.add_checkpoint(cp.size, cp.time_ms, cp.root, data)
    return cp, data


def sign_checkpoint(keys: LedgerKeyPair, size: int, root: bytes) -> bytes:
    cp = Checkpoint(keys.ledger_id, size, root, time.time_ns() // 1_000_000)
    protected = {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: CHECKPOINT_CONTENT_TYPE,
        cose.HDR_KID: kid_for(keys.public.signing_key),
    }
    return cose.sign1(SigningKey(keys.signing_seed), protected, cbor.encode(cp.to_map()))


def prove_inclusion(store: Any, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return inclusion_proof(MerkleReader(store.leaf_hashes), index, size)


def prove_consistency(store: Any, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 §2.1.4 consistency proof between two tree sizes."""
    return consistency_proof(MerkleReader(store.leaf_hashes), size1, size2)
