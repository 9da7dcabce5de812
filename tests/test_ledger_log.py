"""Signed checkpoints and proofs from the ledger's log, checked independently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from custody import cbor, cose
from custody.errors import DecodeError, SchemaError, SignatureError
from custody.keys import LedgerKeyPair
from custody.merkle import leaf_hash, root, verify_consistency, verify_inclusion
from ledger.intake import Intake
from ledger.keys import load_ledger_keypair
from ledger.log import sign_checkpoint, verify_checkpoint
from ledger.store import LedgerStore
from sync.batch import encode_batch
from tests.conftest import Gateway
from tests.support import REPO

DEVICE = "gw-kol-01"


@pytest.fixture
def logged(gateway: Gateway, ledger_dir: Path) -> list[bytes]:
    """30 events of the gateway logged into the ledger at ``ledger_dir``."""
    store = LedgerStore(ledger_dir / "ledger.sqlite")
    with gateway.recorder() as rec:
        store.enroll(DEVICE, "KOL-01", rec.key.public_key, rec.key.kid)
        for i in range(29):
            rec.seal_scan(f"S-{i}")
        envs = [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]
    intake = Intake(store, load_ledger_keypair(ledger_dir))
    intake.ingest(DEVICE, encode_batch(DEVICE, envs[:10]))
    intake.ingest(DEVICE, encode_batch(DEVICE, envs[10:]))
    ids = [e.event_id for e in store.events()]
    store.close()
    return ids


def ledger_cli(ledger_dir: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), "log", *args],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def test_checkpoint_is_signed_over_the_log_root(logged: list[bytes], ledger_dir: Path) -> None:
    out = ledger_cli(ledger_dir, "checkpoint", "--out", str(ledger_dir / "cp.cose"))
    keys = load_ledger_keypair(ledger_dir)
    cp = verify_checkpoint((ledger_dir / "cp.cose").read_bytes(), keys.public)
    assert cp.size == len(logged) == out["size"] == 30
    assert cp.root == root(logged) == bytes.fromhex(str(out["root"]))
    with pytest.raises(SignatureError):
        verify_checkpoint(sign_checkpoint(LedgerKeyPair.generate("x"), 1, bytes(32)), keys.public)
    with pytest.raises(DecodeError):
        verify_checkpoint(b"\x00" * 2000, keys.public)


@pytest.mark.parametrize(("index", "size"), [(0, 30), (17, 30), (29, 30), (3, 10)])
def test_inclusion_proofs_verify(
    logged: list[bytes], ledger_dir: Path, index: int, size: int
) -> None:
    out = ledger_cli(ledger_dir, "prove-inclusion", str(index), "--size", str(size))
    proof = [bytes.fromhex(h) for h in out["proof"]]  # type: ignore[attr-defined]
    assert bytes.fromhex(str(out["leaf_hash"])) == leaf_hash(logged[index])
    verify_inclusion(leaf_hash(logged[index]), index, size, proof, root(logged[:size]))


def test_consistency_between_the_two_batches(logged: list[bytes], ledger_dir: Path) -> None:
    out = ledger_cli(ledger_dir, "prove-consistency", "10", "30")
    proof = [bytes.fromhex(h) for h in out["proof"]]  # type: ignore[attr-defined]
    verify_consistency(10, 30, proof, root(logged[:10]), root(logged))


def test_out_of_range_requests_are_refused(logged: list[bytes], ledger_dir: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), "log",
         "prove-inclusion", "30"],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 3 and "not below tree size" in bad.stderr


def _resigned(keys: LedgerKeyPair, document: bytes, **changes: object) -> bytes:
    """``document`` with payload fields replaced, signed again under its own header."""
    msg = cose.decode_sign1(document)
    payload = {**cbor.decode(msg.payload), **changes}
    return cose.sign1(
        SigningKey(keys.signing_seed), {}, cbor.encode(payload), protected_bytes=msg.protected_bytes
    )


# One encoding per value, even under a valid signature: CBOR true compares equal to 1 in
# Python, and a time or ledger id of the wrong type must not pass as one.
@pytest.mark.parametrize(
    "change", [{"v": True}, {"t": True}, {"t": -1}, {"ledger": 3}, {"size": False}]
)
def test_a_checkpoint_with_a_field_of_another_type_is_refused(change: dict[str, object]) -> None:
    keys = LedgerKeyPair.generate("ledger-test")
    good = sign_checkpoint(keys, 3, bytes(32))
    assert verify_checkpoint(good, keys.public).size == 3
    with pytest.raises(SchemaError):
        verify_checkpoint(_resigned(keys, good, **change), keys.public)
