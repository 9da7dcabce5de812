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
from custody.keys import DeviceKey, LedgerKeyPair, kid_for
from custody.merkle import leaf_hash, root, verify_consistency, verify_inclusion
from ledger.intake import Intake
from ledger.keys import load_ledger_keypair
from ledger.log import sign_checkpoint, verify_checkpoint
from ledger.registry import sign_registry
from ledger.store import LedgerStore
from ledger.verify.registry import Registry, RegistryEntry, decode_registry
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


def test_registry_snapshot_is_signed_and_strict(
    logged: list[bytes], ledger_dir: Path, gateway: Gateway
) -> None:
    from custody import cbor, cose
    from custody.errors import SchemaError
    from ledger.verify.registry import decode_registry

    out = ledger_dir / "registry.cose"
    subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), "registry", "export",
         "--out", str(out)],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    keys = load_ledger_keypair(ledger_dir)
    registry = decode_registry(out.read_bytes(), keys.public)
    with gateway.recorder() as rec:
        entry = registry.by_kid(rec.key.kid)
        assert entry is not None and entry.public_key == rec.key.public_key
    assert (entry.device_id, entry.site_id, entry.revoked_ms) == (DEVICE, "KOL-01", None)
    assert entry.valid_at(entry.enrolled_ms) and not entry.valid_at(entry.enrolled_ms - 1)
    with pytest.raises(SignatureError):
        decode_registry(out.read_bytes(), LedgerKeyPair.generate("other").public)
    # A snapshot whose entry claims a kid that is not its key's is refused even when signed.
    msg = cose.decode_sign1(out.read_bytes())
    payload = cbor.decode(msg.payload)
    payload["devices"][0]["kid"] = bytes(8)
    forged = cose.sign1(
        SigningKey(keys.signing_seed), {},
        cbor.encode(payload), protected_bytes=msg.protected_bytes,
    )  # fmt: skip
    with pytest.raises(SchemaError, match="kid"):
        decode_registry(forged, keys.public)


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


def _registry(keys: LedgerKeyPair, public_key: bytes) -> bytes:
    entry = RegistryEntry("gw-1", "KOL-01", kid_for(public_key), public_key, 1_767_000_000_000)
    return sign_registry(keys, Registry(keys.ledger_id, 1_767_225_600_000, (entry,)))


@pytest.mark.parametrize("change", [{"v": True}, {"t": False}, {"ledger": 7}])
def test_a_registry_with_a_field_of_another_type_is_refused(change: dict[str, object]) -> None:
    keys = LedgerKeyPair.generate("ledger-test")
    good = _registry(keys, DeviceKey.generate().public_key)
    assert decode_registry(good, keys.public).ledger_id == "ledger-test"
    with pytest.raises(SchemaError):
        decode_registry(_resigned(keys, good, **change), keys.public)


def test_a_registry_entry_with_an_unusable_key_is_a_schema_error() -> None:
    # The identity point: kid and key agree, but it is of small order (standards.md §2.3).
    keys = LedgerKeyPair.generate("ledger-test")
    with pytest.raises(SchemaError, match="not a valid Ed25519 public key"):
        decode_registry(_registry(keys, bytes([1]) + bytes(31)), keys.public)
