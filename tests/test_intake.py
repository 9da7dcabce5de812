"""Ledger intake without a broker: exactly once, in order, and every bad input refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.identity import load_device_key
from agent.outbox.delivery import apply_ack, mark_sent
from agent.recorder import Recorder
from custody import cbor, cose
from custody.commitment import commit_masses, seal_openings
from custody.envelope import EventSigner, event_id_of
from custody.event import DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey
from custody.merkle import root
from ledger.intake import Intake
from ledger.store import LedgerStore
from sync.ack import Ack, verify_ack
from sync.batch import encode_batch
from tests.conftest import Gateway
from tests.support import run_cli

DEVICE = "gw-kol-01"


@pytest.fixture
def ledger(gateway: Gateway, tmp_path: Path) -> Intake:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    return Intake(store, gateway.ledger)


def envelopes(rec: Recorder) -> list[bytes]:
    return [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]


def ack_of(intake: Intake, rec: Recorder, data: bytes) -> Ack:
    return verify_ack(data, intake.keys.public, device_id=DEVICE, device_kid=rec.key.kid)


def fill(rec: Recorder, n: int) -> None:
    for i in range(n):
        if i % 2:
            rec.weighing(gross=300_000 + i, tare=100_000, vehicle="TRK-1")
        else:
            rec.seal_scan(f"SEAL-{i:04d}", lot="LOT-1")


def test_a_batch_is_logged_once_in_order_and_acked(ledger: Intake, recorder: Recorder) -> None:
    fill(recorder, 20)
    envs = envelopes(recorder)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, envs))
    assert (result.logged, result.rejected, result.duplicates) == (21, 0, 0)
    ack = ack_of(ledger, recorder, result.acks[0])
    assert (ack.seq, ack.log_size, ack.rejected, ack.resend_from) == (21, 21, (), None)
    logged = ledger.store.events()
    assert [e.seq for e in logged] == list(range(1, 22))
    assert ack.root == root(e.event_id for e in logged)  # RFC 9162 over event ids
    # The ack releases the device's records, after the device checks it.
    mark_sent(recorder.outbox, recorder.key.kid, range(1, 22))
    assert (
        apply_ack(recorder.outbox, recorder.key.kid, seq=ack.seq, event_id=ack.event_id).acked == 21
    )
    # Masses were opened from the sealed boxes and match the device's clear values.
    weighing = next(e for e in logged if e.type == "weighing")
    kept = recorder.outbox.openings(weighing.event_id)
    assert ledger.store.masses(weighing.event_id) == {k: v for k, (v, _) in kept.items()}
    assert ledger.store.integrity_ok()


def test_resends_are_deduplicated(ledger: Intake, recorder: Recorder) -> None:
    fill(recorder, 5)
    payload = encode_batch(DEVICE, envelopes(recorder))
    ledger.ingest(DEVICE, payload)
    again = ledger.ingest(DEVICE, payload)
    assert (again.logged, again.duplicates, again.rejected) == (0, 6, 0)
    assert ledger.store.log_size() == 6
    assert ack_of(ledger, recorder, again.acks[0]).seq == 6


def test_out_of_order_records_wait_for_their_predecessor(
    ledger: Intake, recorder: Recorder
) -> None:
    fill(recorder, 9)
    envs = envelopes(recorder)
    late = ledger.ingest(DEVICE, encode_batch(DEVICE, envs[5:]))
    ack = ack_of(ledger, recorder, late.acks[0])
    assert (late.logged, late.waiting, ack.seq, ack.resend_from) == (0, 5, 0, 1)
    early = ledger.ingest(DEVICE, encode_batch(DEVICE, envs[:5]))
    assert early.logged == 10
    assert [e.seq for e in ledger.store.events()] == list(range(1, 11))
    assert ack_of(ledger, recorder, early.acks[0]).resend_from is None


def test_a_fork_is_rejected_and_nothing_is_replaced(
    ledger: Intake, recorder: Recorder, gateway: Gateway
) -> None:
    fill(recorder, 3)
    ledger.ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    # Same key, a different event claiming seq 2 (e.g. a cloned SD card).
    first = next(iter(recorder.outbox.iter_chain(recorder.key.kid)))
    payload = Payload(
        DEVICE, "KOL-01", 2, first.event_id, DeviceTime(1, TimeSource.RTC, TimeQuality.UNSYNCED),
        1, EventType.SEAL_SCAN, {"seal": "FORKED"},
    )  # fmt: skip
    forged = EventSigner(recorder.key).sign(payload)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [forged.cose]))
    assert result.rejected == 1 and "fork" in next(iter(result.reasons))
    ack = ack_of(ledger, recorder, result.acks[0])
    assert [r.seq for r in ack.rejected] == [2] and "fork" in ack.rejected[0].reason
    assert ledger.store.log_size() == 4


def _signed_by(key: DeviceKey, seq: int, prev: bytes, body: dict[str, object]) -> bytes:
    payload = Payload(
        DEVICE, "KOL-01", seq, prev, DeviceTime(1, TimeSource.RTC, TimeQuality.UNSYNCED), 1,
        EventType.SEAL_SCAN if "seal" in body else EventType.WEIGHING, body,
    )  # fmt: skip
    return EventSigner(key).sign(payload).cose


def test_unknown_and_revoked_keys_are_rejected(ledger: Intake, recorder: Recorder) -> None:
    stranger = DeviceKey.generate()
    result = ledger.ingest(
        DEVICE, encode_batch(DEVICE, [_signed_by(stranger, 1, bytes(32), {"seal": "X"})])
    )
    assert (result.logged, result.rejected, result.acks) == (0, 1, [])
    assert "unknown device key" in result.reasons
    ledger.store.revoke(DEVICE)
    revoked = ledger.ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    assert revoked.logged == 0 and "device key revoked" in revoked.reasons


def test_forged_signature_and_wrong_topic_are_rejected(ledger: Intake, recorder: Recorder) -> None:
    env = bytearray(envelopes(recorder)[0])
    env[-5] ^= 0x01  # flip a signature bit
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [bytes(env)]))
    assert result.rejected == 1 and "does not verify" in next(iter(result.reasons))
    ack = ack_of(ledger, recorder, result.acks[0])
    assert [r.seq for r in ack.rejected] == [1]  # the device learns which record
    other = ledger.ingest("gw-other", encode_batch("gw-other", envelopes(recorder)))
    assert other.logged == 0 and other.rejected == 1
    assert ledger.store.log_size() == 0


def test_a_commitment_that_does_not_open_is_rejected(
    ledger: Intake, recorder: Recorder, gateway: Gateway
) -> None:
    points, _openings = commit_masses({"gross": 1000})
    _, other = commit_masses({"gross": 2000})  # seal a different value than committed
    body = {
        "mass": {n: p.encoded for n, p in points.items()},
        "sealed": seal_openings(other, gateway.ledger.public.sealing_key),
    }
    boot = envelopes(recorder)[0]
    head_id = event_id_of(boot)
    bad = _signed_by(recorder.key, 2, head_id, body)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [boot, bad]))
    assert (result.logged, result.rejected) == (1, 1)
    assert "mass" in result.reasons


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"\x07garbage", b"\x00" + cbor.encode({"v": 1}), b"\x01" + b"\x78\x9c" * 10],
)
def test_malformed_batches_are_rejected_and_nothing_is_stored(
    ledger: Intake, payload: bytes
) -> None:
    result = ledger.ingest(DEVICE, payload)
    assert (result.logged, result.rejected, result.acks) == (0, 1, [])
    assert ledger.store.log_size() == 0
    assert ledger.store.rejections()[-1][2].startswith("batch:")


def test_non_cose_envelope_inside_a_valid_batch(ledger: Intake) -> None:
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [cbor.encode([1, 2, 3])]))
    assert result.rejected == 1 and "undecodable envelope" in result.reasons
    assert cose.COSE_SIGN1_TAG == 18


def test_a_fake_ack_is_refused_by_the_device(ledger: Intake, recorder: Recorder) -> None:
    from custody.errors import SignatureError
    from custody.keys import LedgerKeyPair
    from sync.ack import sign_ack

    fake = sign_ack(
        LedgerKeyPair.generate("impostor"),
        Ack(DEVICE, recorder.key.kid, 1, event_id_of(envelopes(recorder)[0]), 1, bytes(32), 0),
    )
    with pytest.raises(SignatureError):
        verify_ack(fake, ledger.keys.public, device_id=DEVICE, device_kid=recorder.key.kid)


def test_ledger_cli_enrolls_lists_and_revokes(tmp_path: Path, gateway: Gateway) -> None:
    import json
    import subprocess
    import sys

    def ledger_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(tmp_path / "L"), *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def registry_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger.authority_cli", *args, "--dir", str(tmp_path / "R")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert registry_cli("init", "--name", "consortium").returncode == 0
    assert ledger_cli("init", "--authority", str(tmp_path / "R" / "authority-public.json")
                      ).returncode == 0  # fmt: skip
    record = tmp_path / "enrol.json"
    shown = run_cli("keys", "show", "--json", "--data-dir", str(gateway.data_dir))
    record.write_text(shown.stdout)
    entry = registry_cli("enrol", str(record)).stdout.splitlines()[0]
    done = ledger_cli("enroll", entry)
    assert done.returncode == 0, done.stderr
    again = ledger_cli("enroll", entry)
    assert again.returncode == 0 and "already logged" in again.stdout
    twice = registry_cli("enrol", str(record))
    assert twice.returncode == 3 and "already enrolled" in twice.stderr
    listed = json.loads(ledger_cli("devices", "--json").stdout)
    assert [(d["device_id"], d["revoked_ms"]) for d in listed] == [(DEVICE, None)]
    revoked = ledger_cli("revoke", DEVICE)
    assert revoked.returncode == 0 and "custody-registry retire" in revoked.stdout
    assert json.loads(ledger_cli("devices", "--json").stdout)[0]["revoked_ms"] is not None
    assert ledger_cli("revoke", "nobody").returncode == 3
    record.write_text('{"device_id": "x", "site_id": "y", "public_key": "00"}')
    bad = registry_cli("enrol", str(record))
    assert bad.returncode == 3 and "not a valid enrolment record" in bad.stderr


def test_non_canonical_payload_rejection_reason_fits_an_ack(
    ledger: Intake, recorder: Recorder
) -> None:
    # A payload with unsorted keys, correctly signed: rejected for canonicality
    # (the reason mentions RFC 8949 §4.2.1, which an ack must carry in ASCII).
    unsorted = cbor2_dumps_unsorted({"v": 1, "dev": DEVICE, "seq": 1})
    data = cose.sign1(recorder.key.signing_key, {}, unsorted, protected_bytes=_protected(recorder))
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [data]))
    assert result.rejected == 1
    ack = ack_of(ledger, recorder, result.acks[0])
    assert ack.rejected and ack.rejected[0].reason.isascii()


def cbor2_dumps_unsorted(value: dict[str, object]) -> bytes:
    import cbor2

    return cbor2.dumps(dict(reversed(list(value.items()))))


def _protected(rec: Recorder) -> bytes:
    return EventSigner(rec.key)._protected
