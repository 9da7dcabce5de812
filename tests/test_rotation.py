"""Key rotation: a key_rotation record under the old key is the only way a new key gets in.

Intake level (ledger.intake with a real store): the announced key is enrolled in the same
transaction as the rotation's append and the old key retired; a never-announced key stays
rejected; a rotation to another device's key is refused; old-key resends are duplicates.
Gateway level: the files (old key kept, never deleted) and crash recovery at both points.
End to end over a TLS Mosquitto and ``custody-ledger run``: rotation mid-stream with an
unsynced old tail, every record acked, both keys at the ledger.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent import rotation
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.recorder import Recorder
from custody.envelope import EventSigner
from custody.event import SEQ_STRIDE, DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey
from ledger.intake import Intake
from ledger.store import LedgerStore
from sync.batch import encode_batch
from tests.conftest import Gateway
from tests.support import run_cli
from tests.test_enrolment import (
    Central,
    LedgerProcess,
    central,
    enrol_gateway,
    ledger_cli,
    ok,
    record_weighings,
    sync,
)

__all__ = ["central"]  # the fixture, re-used

DEVICE = "gw-kol-01"


def _envelopes(outbox: Outbox, kid: bytes) -> list[bytes]:
    return [e.envelope for e in outbox.iter_chain(kid)]


@pytest.fixture
def ledger(tmp_path: Path, gateway: Gateway) -> tuple[LedgerStore, Intake]:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    key = DeviceKey(bytes.fromhex((gateway.data_dir / "device.key").read_text().strip()))
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    return store, Intake(store, gateway.ledger)


def _ingest(intake: Intake, envelopes: list[bytes]) -> tuple[int, int, list[str]]:
    result = intake.ingest(DEVICE, encode_batch(DEVICE, envelopes))
    return result.logged, result.duplicates, sorted(result.reasons)


def test_rotation_enrols_the_new_key_and_retires_the_old(
    gateway: Gateway, ledger: tuple[LedgerStore, Intake]
) -> None:
    store, intake = ledger
    with gateway.recorder() as rec:
        old = rec.key
        rec.seal_scan("SEAL-1")
        rotated = rec.rotate_key()
        new = rec.key
        rec.seal_scan("SEAL-2")
        rec.seal_scan("SEAL-3")
        new_chain = _envelopes(rec.outbox, new.kid)
        old_chain = _envelopes(rec.outbox, old.kid)
    assert new.kid != old.kid
    assert [e.seq for e in Outbox.open(gateway.data_dir / "outbox.sqlite").iter_chain(new.kid)] == [
        1,
        2,
    ]
    # The new key's records before the rotation is logged: unknown key, nothing logged.
    assert _ingest(intake, new_chain) == (0, 0, ["unknown device key"])
    assert store.key(new.kid) is None
    assert _ingest(intake, old_chain) == (len(old_chain), 0, [])
    assert store.head(old.kid) == (rotated.seq, rotated.event_id)
    enrolled = store.key(new.kid)
    assert enrolled is not None
    assert (enrolled.device_id, enrolled.site_id, enrolled.public_key) == (
        DEVICE,
        "KOL-01",
        new.public_key,
    )
    retired = store.key(old.kid)
    assert retired is not None
    assert retired.revoked_ms == rotated.device_time_ms + 1
    assert _ingest(intake, new_chain) == (2, 0, [])
    # A resend of the old chain (a lost ack) is harmless, although the key is retired now.
    assert _ingest(intake, old_chain) == (0, len(old_chain), [])


def test_old_key_cannot_sign_after_the_rotation(
    gateway: Gateway, ledger: tuple[LedgerStore, Intake]
) -> None:
    _, intake = ledger
    with gateway.recorder() as rec:
        old = rec.key
        rotated = rec.rotate_key()
        old_chain = _envelopes(rec.outbox, old.kid)
    # Someone holding a copy of the old key continues its chain after the rotation.
    forged = EventSigner(old).sign(
        Payload(DEVICE, "KOL-01", rotated.seq + 1, rotated.event_id,
                DeviceTime(rotated.device_time_ms + 5, TimeSource.NTP, TimeQuality.SYNCED), 1,
                EventType.SEAL_SCAN, {"seal": "FAKE"})
    )  # fmt: skip
    assert _ingest(intake, old_chain) == (len(old_chain), 0, [])
    assert _ingest(intake, [forged.cose]) == (0, 0, ["device key revoked"])


def test_never_announced_key_is_rejected(
    gateway: Gateway, ledger: tuple[LedgerStore, Intake]
) -> None:
    store, intake = ledger
    stranger = DeviceKey.generate()
    env = EventSigner(stranger).sign(
        Payload(DEVICE, "KOL-01", 1, bytes(32),
                DeviceTime(1_800_000_000_000, TimeSource.NTP, TimeQuality.SYNCED), 1,
                EventType.SEAL_SCAN, {"seal": "X"})
    )  # fmt: skip
    assert _ingest(intake, [env.cose]) == (0, 0, ["unknown device key"])
    assert store.key(stranger.kid) is None
    assert any("unknown device key" in r[2] for r in store.rejections())


def test_rotation_to_another_devices_key_is_refused(
    gateway: Gateway, ledger: tuple[LedgerStore, Intake]
) -> None:
    store, intake = ledger
    other = DeviceKey.generate()
    store.enroll("gw-other", "KOL-02", other.public_key, other.kid)
    with gateway.recorder() as rec:
        head = rec.boot_event
        env = rec.signer.sign(
            Payload(DEVICE, "KOL-01", head.seq + 1, head.event_id,
                    DeviceTime(head.device_time_ms + 1, TimeSource.NTP, TimeQuality.SYNCED), 1,
                    EventType.KEY_ROTATION, {"new_key": other.public_key})
        )  # fmt: skip
        old_kid = rec.key.kid
    logged, _, reasons = _ingest(intake, [head.envelope, env.cose])
    assert (logged, reasons) == (1, ["rotation"])
    assert store.key(other.kid) is not None
    assert store.key(other.kid).device_id == "gw-other"  # type: ignore[union-attr]
    assert store.key(old_kid).revoked_ms is None  # type: ignore[union-attr]


def test_rotate_keeps_the_old_key_and_refuses_under_a_running_service(gateway: Gateway) -> None:
    paths = DataDir(gateway.data_dir)
    with gateway.recorder() as rec:
        old = rec.key
        rec.rotate_key()
    kept = rotation.retired_key_path(paths, old.kid)
    assert kept.read_text() == f"{old.seed.hex()}\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert not rotation.pending_key_path(paths).exists()
    # A live pid in service.json: the service holds the key; refuse.
    (gateway.data_dir / "service.json").write_text(json.dumps({"pid": os.getpid()}))
    result = run_cli("--data-dir", str(gateway.data_dir), "keys", "rotate")
    assert result.returncode == 6
    assert "stop it first" in result.stderr


def test_crash_after_the_rotation_event_is_finished_at_next_start(gateway: Gateway) -> None:
    paths = DataDir(gateway.data_dir)
    rec = gateway.recorder()
    old = rec.key
    new = rotation.prepare(paths)
    rec.record(EventType.KEY_ROTATION, {"new_key": new.public_key})
    rec.close()  # the crash: device.key still the old key, device.key.new beside it
    with Recorder(gateway.data_dir) as again:
        assert again.key.kid == new.kid
        assert again.boot_event.kid == new.kid  # nothing more under the old key
        assert again.boot_event.seq == 1
    assert rotation.retired_key_path(paths, old.kid).exists()


def test_crash_before_the_rotation_event_keeps_the_old_key(gateway: Gateway) -> None:
    paths = DataDir(gateway.data_dir)
    with gateway.recorder() as rec:
        old = rec.key
    rotation.prepare(paths)  # the crash: a new key that nothing announced
    with Recorder(gateway.data_dir) as again:
        assert again.key.kid == old.kid
    assert not rotation.pending_key_path(paths).exists()


def test_rotation_mid_stream_over_the_broker(tmp_path: Path, central: Central) -> None:
    gw = enrol_gateway(tmp_path, central, DEVICE)
    record_weighings(gw, 2)
    with LedgerProcess(central):
        first = sync(gw)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["acked"] == 4
        record_weighings(gw, 2, start_kg=41_000)  # the old key's unsynced tail
        rotated = json.loads(ok(run_cli("--data-dir", str(gw), "keys", "rotate", "--json")))
        record_weighings(gw, 2, start_kg=42_000)  # the new chain
        result = sync(gw)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # old tail + rotate's boot, closing checkpoint and rotation; 4 new
    assert summary["acked"] == 4 + 3 + 4
    assert summary["outbox"]["pending"] + summary["outbox"]["sent"] == 0
    assert summary["rejected"] == 0
    keys = {r["kid"]: r for r in central.devices()}
    assert set(keys) == {rotated["old_kid"], rotated["new_kid"]}
    # The rotation follows the old chain's closing checkpoint, whose seq is padded to 2^20.
    assert keys[rotated["old_kid"]]["head_seq"] == rotated["rotation_seq"] == SEQ_STRIDE + 1
    assert keys[rotated["old_kid"]]["revoked_ms"] is not None
    assert keys[rotated["new_kid"]]["head_seq"] == 4
    assert keys[rotated["new_kid"]]["revoked_ms"] is None
    assert {r["device_id"] for r in keys.values()} == {DEVICE}
    listing = ok(ledger_cli("--data-dir", central.data, "devices"))
    assert rotated["new_kid"] in listing
    verified = ok(run_cli("--data-dir", str(gw), "events", "verify", "--json"))
    assert json.loads(verified)["ok"]


def test_rotation_on_postgresql(gateway: Gateway, pg_dsn: str) -> None:
    from ledger.dialect_pg import PostgresDialect

    store = LedgerStore(PostgresDialect(pg_dsn))
    try:
        with gateway.recorder() as rec:
            old = rec.key
            store.enroll(DEVICE, "KOL-01", old.public_key, old.kid)
            rotated = rec.rotate_key()
            new = rec.key
            rec.seal_scan("SEAL-9")
            old_chain = _envelopes(rec.outbox, old.kid)
            new_chain = _envelopes(rec.outbox, new.kid)
        intake = Intake(store, gateway.ledger)
        assert _ingest(intake, old_chain) == (len(old_chain), 0, [])
        retired, enrolled = store.key(old.kid), store.key(new.kid)
        assert retired is not None
        assert retired.revoked_ms == rotated.device_time_ms + 1
        assert enrolled is not None
        assert enrolled.device_id == DEVICE
        assert _ingest(intake, new_chain) == (1, 0, [])
    finally:
        store.close()
