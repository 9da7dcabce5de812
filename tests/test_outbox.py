"""The outbox and the capture path: chain assignment, durability rules, boot counter."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from agent.audit import verify_outbox
from agent.clock import FixedClock
from agent.outbox import Outbox, RecordState
from agent.outbox.lifecycle import TRANSITIONS, check_transition
from agent.recorder import Recorder
from custody.commitment import open_sealed, verify_opening
from custody.envelope import ChainVerifier, verify_envelope
from custody.errors import CaptureError, InvalidCaptureError, InvalidMassError, StorageError
from custody.event import DeviceTime, EventType, TimeQuality, TimeSource
from custody.group import ED25519
from custody.mass import kg_to_units, units_to_kg
from tests.conftest import Gateway


def chain_of(rec: Recorder) -> list[int]:
    return [e.seq for e in rec.outbox.iter_chain(rec.key.kid)]


def test_first_event_is_a_signed_boot_event(recorder: Recorder) -> None:
    (boot,) = recorder.outbox.events()
    env = verify_envelope(boot.envelope, recorder.key.public_key)
    assert env.payload.type is EventType.BOOT and env.payload.seq == 1
    assert env.payload.prev == bytes(32)
    assert env.payload.boot == recorder.boot == 1
    assert boot.state is RecordState.PENDING


def test_weighing_commits_masses_and_seals_openings_to_the_ledger(
    recorder: Recorder, gateway: Gateway
) -> None:
    e = recorder.weighing(gross=kg_to_units("31250.5"), tare=kg_to_units(12000), vehicle="TRK-7")
    env = verify_envelope(e.envelope, recorder.key.public_key)
    body = env.payload.body
    # Clear masses never appear in the signed payload.
    assert (312505).to_bytes(4, "big") not in e.envelope
    assert set(body["mass"]) == {"gross", "tare", "net"}
    ledger = gateway.ledger
    opened = open_sealed(body["sealed"], ledger.public.sealing_key, ledger.sealing_secret)
    assert {n: o.value for n, o in opened.items()} == {
        "gross": 312505, "tare": 120000, "net": 192505,
    }  # fmt: skip
    for name, opening in opened.items():
        assert verify_opening(ED25519.point(body["mass"][name]), opening)
    kept = recorder.outbox.openings(e.event_id)
    assert {n: v for n, (v, _) in kept.items()} == {n: o.value for n, o in opened.items()}


def test_manual_entries_are_flagged_in_the_signed_body(recorder: Recorder) -> None:
    e = recorder.seal_scan("SEAL-0001", manual=True, lot="LOT-1")
    payload = verify_envelope(e.envelope, recorder.key.public_key).payload
    assert payload.is_manual and payload.body["manual"] is True and e.manual
    auto = recorder.seal_scan("SEAL-0002")
    assert not verify_envelope(auto.envelope, recorder.key.public_key).payload.is_manual


def test_concurrent_producers_get_unique_gapless_seqs(recorder: Recorder) -> None:
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            for i in range(n):
                recorder.weighing(bag=1000 + i)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(60,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert chain_of(recorder) == list(range(1, 242))
    assert verify_outbox(recorder.outbox, recorder.key).ok
    assert recorder.writer.stats.max_batch >= 1


def test_two_processes_share_one_outbox(gateway: Gateway) -> None:
    """The service and the handheld console may write one outbox."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom pathlib import Path\nfrom agent.recorder import Recorder\n"
        "r = Recorder(Path(sys.argv[1]))\n"
        "[r.seal_scan(f'P-{i}') for i in range(150)]\nr.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(gateway.data_dir)]) for _ in range(2)
    ]
    with gateway.recorder() as rec:
        for i in range(150):
            rec.seal_scan(f"T-{i}")
        for p in procs:
            assert p.wait(timeout=120) == 0
        # 3 boots + 450 scans, one chain, no gaps, all verify.
        assert chain_of(rec) == list(range(1, 454))
        assert verify_outbox(rec.outbox, rec.key).ok


def test_boot_counter_increments_on_every_start(gateway: Gateway) -> None:
    boots = []
    for _ in range(3):
        with gateway.recorder() as rec:
            boots.append(rec.boot)
    assert boots == [1, 2, 3]
    with gateway.recorder() as rec:
        boot_events = rec.outbox.events()
        assert [e.boot for e in boot_events if e.type == "boot"] == [1, 2, 3, 4]


def test_clock_far_in_the_past_is_recorded_with_quality_none(gateway: Gateway) -> None:
    from agent.clock import SystemClock

    # A 1970 clock after a power cut: the capture happens, marked untrustworthy.
    class PowerCutClock(SystemClock):
        def now(self) -> DeviceTime:
            return DeviceTime(5_000, TimeSource.NONE, TimeQuality.NONE)

    with Recorder(gateway.data_dir, clock=PowerCutClock(0)) as rec:
        e = rec.weighing(gross=5000)
        p = verify_envelope(e.envelope, rec.key.public_key).payload
        assert p.time.quality is TimeQuality.NONE and p.time.ms == 5_000


def test_system_clock_marks_times_before_earliest_valid_as_none() -> None:
    from agent.clock import SystemClock

    future_floor = SystemClock(earliest_valid_ms=2**62)
    assert future_floor.now().quality is TimeQuality.NONE
    assert SystemClock(earliest_valid_ms=0).now().quality is not TimeQuality.NONE


def test_void_is_a_new_event_pointing_at_the_mistake(recorder: Recorder) -> None:
    wrong = recorder.seal_scan("SEAL-WRONG", lot="LOT-1")
    void = recorder.void(wrong.event_id, "scanned into the wrong lot")
    p = verify_envelope(void.envelope, recorder.key.public_key).payload
    assert p.type is EventType.VOID and p.body["target"] == wrong.event_id
    # The mistaken record is still there, unchanged.
    assert recorder.outbox.find(wrong.event_id.hex()) == wrong
    with pytest.raises(CaptureError):
        recorder.void(bytes(32), "nothing")


def test_signed_rows_cannot_be_rewritten_or_deleted_unacked(recorder: Recorder) -> None:
    e = recorder.seal_scan("SEAL-1")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        recorder.outbox.conn.execute(
            "UPDATE events SET envelope = x'00' WHERE event_id = ?", (e.event_id,)
        )
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        recorder.outbox.conn.execute("DELETE FROM events WHERE event_id = ?", (e.event_id,))


def test_tables_are_strict_wal_and_fully_synchronous(recorder: Recorder) -> None:
    conn = recorder.outbox.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    assert sql.rstrip().endswith("STRICT")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO events (kid, seq, event_id, prev, type, device_time_ms, time_quality,"
            " boot, envelope, state_ms) VALUES (x'00', 'one', x'01', x'00', 't', 0, 'q', 0, x'', 0)"
        )


def test_lifecycle_table_walk() -> None:
    for old, allowed in TRANSITIONS.items():
        for new in RecordState:
            if new in allowed:
                check_transition(old, new)
            else:
                with pytest.raises(StorageError):
                    check_transition(old, new)
    assert TRANSITIONS[RecordState.ACKED] == frozenset()  # acked is final
    assert TRANSITIONS[RecordState.REJECTED] == frozenset()  # rejected is kept, final


def test_invalid_bodies_are_refused_before_anything_is_recorded(recorder: Recorder) -> None:
    before = chain_of(recorder)
    with pytest.raises(InvalidCaptureError, match="printable"):
        recorder.seal_scan("bad\x00seal")
    with pytest.raises(InvalidCaptureError, match="unknown field"):
        recorder.record(EventType.SEAL_SCAN, {"seal": "S", "colour": "red"})
    assert chain_of(recorder) == before


@pytest.mark.parametrize(
    ("kg", "units"), [("0", 0), ("0.1", 1), ("31250.5", 312505), ("100000", 1_000_000)]
)
def test_kg_to_units(kg: str, units: int) -> None:
    assert kg_to_units(kg) == units and units_to_kg(units) == __import__("decimal").Decimal(kg)


@pytest.mark.parametrize("kg", ["-1", "0.05", "abc", "NaN", "inf", "1e12"])
def test_kg_to_units_refuses(kg: str) -> None:
    with pytest.raises(InvalidMassError):
        kg_to_units(kg)


def test_tare_above_gross_is_refused(recorder: Recorder) -> None:
    with pytest.raises(InvalidMassError):
        recorder.weighing(gross=100, tare=200)


def test_mass_capture_without_ledger_key_is_refused_clearly(gateway: Gateway) -> None:
    (gateway.data_dir / "ledger.json").unlink()
    with gateway.recorder() as rec:
        with pytest.raises(CaptureError, match="ledger"):
            rec.weighing(gross=100)
        rec.seal_scan("SEAL-OK")  # non-mass captures still work


def test_fixed_clock_and_chain_verifier_agree(gateway: Gateway) -> None:
    t = DeviceTime(1_790_000_000_000, TimeSource.GPS, TimeQuality.SYNCED)
    with Recorder(gateway.data_dir, clock=FixedClock(t)) as rec:
        for i in range(5):
            rec.seal_scan(f"S-{i}")
        cv = ChainVerifier(rec.key.public_key)
        cv.feed_all(e.envelope for e in rec.outbox.iter_chain(rec.key.kid))
        assert cv.count == 6 and cv.head is not None and cv.head.payload.time == t


def test_outbox_open_requires_init(tmp_path: Path) -> None:
    from custody.errors import NotInitialisedError

    with pytest.raises(NotInitialisedError):
        Outbox.open(tmp_path / "outbox.sqlite", create=False)


def test_one_refused_capture_does_not_take_its_batch_down(recorder: Recorder) -> None:
    huge = {"lot": "LOT-1", "children": [f"{i:0128d}" for i in range(1000)], "action": "ADD"}
    futures = [recorder.submit(EventType.SEAL_SCAN, {"seal": f"S-{i}"}) for i in range(20)]
    oversized = recorder.submit(EventType.AGGREGATION, huge)
    futures += [recorder.submit(EventType.SEAL_SCAN, {"seal": f"T-{i}"}) for i in range(20)]
    with pytest.raises(CaptureError, match="over the"):
        oversized.result(timeout=60)
    recorded = [f.result(timeout=60) for f in futures]
    assert [e.seq for e in recorded] == list(range(2, 42))  # no seq taken by the refusal
    assert verify_outbox(recorder.outbox, recorder.key).ok
