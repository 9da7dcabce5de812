"""Fork alarms, key validity starts, schema migration and the check-worker pool,
on SQLite and on PostgreSQL (a throwaway cluster, tests/postgres.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.identity import load_device_key
from agent.recorder import Recorder
from custody.commitment import commit_masses, seal_openings
from custody.envelope import EventSigner, event_id_of
from custody.event import DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey
from ledger.dialect_pg import PostgresDialect
from ledger.intake import Intake
from ledger.schema import MIGRATIONS, SCHEMA_VERSION
from ledger.store import LedgerStore, Store
from sync.ack import Ack, verify_ack
from sync.batch import encode_batch
from tests.conftest import Gateway

DEVICE = "gw-kol-01"
SITE = "KOL-01"
HOUR_MS = 3_600_000


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, ledger_dir: Path) -> str:
    """Where the store lives: the SQLite file in the ledger dir, or a fresh PG database."""
    if request.param == "sqlite":
        return str(ledger_dir / "ledger.sqlite")
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    opened: Store = (
        LedgerStore(PostgresDialect(location))
        if location.startswith("postgresql")
        else LedgerStore(Path(location))
    )
    yield opened
    opened.close()


@pytest.fixture
def device_key(gateway: Gateway) -> DeviceKey:
    return load_device_key(gateway.data_dir / "device.key")


@pytest.fixture
def ledger(store: Store, gateway: Gateway, device_key: DeviceKey) -> Iterator[Intake]:
    store.enroll(DEVICE, SITE, device_key.public_key, device_key.kid)
    intake = Intake(store, gateway.ledger)
    yield intake
    intake.close()


def envelopes(rec: Recorder) -> list[bytes]:
    return [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]


def signed(key: DeviceKey, seq: int, prev: bytes, seal: str) -> bytes:
    payload = Payload(
        DEVICE, SITE, seq, prev, DeviceTime(1, TimeSource.RTC, TimeQuality.UNSYNCED), 1,
        EventType.SEAL_SCAN, {"seal": seal},
    )  # fmt: skip
    return EventSigner(key).sign(payload).cose


def ack_of(intake: Intake, kid: bytes, data: bytes) -> Ack:
    return verify_ack(data, intake.keys.public, device_id=DEVICE, device_kid=kid)


def ledger_cli(ledger_dir: Path, location: str, *args: str) -> subprocess.CompletedProcess[str]:
    db = ["--db", location] if location.startswith("postgresql") else []
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), *db, *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


# --- forks ------------------------------------------------------------------------------------
def test_a_fork_is_a_durable_alarm_logged_counted_and_listed(
    ledger: Intake,
    recorder: Recorder,
    ledger_dir: Path,
    location: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(3):
        recorder.seal_scan(f"SEAL-{i}")
    chain = envelopes(recorder)
    ledger.ingest(DEVICE, encode_batch(DEVICE, chain))
    # Same key, a different event at seq 2 (a cloned SD card).
    forged = signed(recorder.key, 2, event_id_of(chain[0]), "FORKED")
    with caplog.at_level(logging.ERROR, logger="ledger.intake"):
        result = ledger.ingest(DEVICE, encode_batch(DEVICE, [forged]))
    assert (result.forks, result.rejected, ledger.counters["forks"]) == (1, 1, 1)
    assert ack_of(ledger, recorder.key.kid, result.acks[0]).rejected[0].seq == 2
    (record,) = [r for r in caplog.records if getattr(r, "alarm", None) == "fork"]
    assert record.levelno == logging.ERROR
    assert (record.device_id, record.seq, record.forked_event_id) == (  # type: ignore[attr-defined]
        DEVICE, 2, event_id_of(forged).hex(),
    )  # fmt: skip
    (alarm,) = ledger.store.forks()
    assert (alarm.device_id, alarm.kid, alarm.seq, alarm.count) == (
        DEVICE, recorder.key.kid, 2, 1,
    )  # fmt: skip
    assert (alarm.kept_event_id, alarm.forked_event_id) == (
        event_id_of(chain[1]), event_id_of(forged),
    )  # fmt: skip
    # The same forked record again: one alarm, seen twice, first sighting kept.
    ledger.ingest(DEVICE, encode_batch(DEVICE, [forged]))
    (again,) = ledger.store.forks()
    assert (again.count, again.first_seen_ms) == (2, alarm.first_seen_ms)
    assert ledger.counters["forks"] == 2
    assert [e.event_id for e in ledger.store.events()] == [event_id_of(e) for e in chain]
    # Operators see it: `alarms --json` and the fork count in `devices`.
    shown = ledger_cli(ledger_dir, location, "alarms", "--json")
    assert shown.returncode == 0, shown.stderr
    (listed,) = json.loads(shown.stdout)
    assert (listed["alarm"], listed["seq"], listed["forked_event_id"], listed["count"]) == (
        "fork", 2, event_id_of(forged).hex(), 2,
    )  # fmt: skip
    devices = json.loads(ledger_cli(ledger_dir, location, "devices", "--json").stdout)
    assert [d["forks"] for d in devices] == [1]
    assert "FORK gw-kol-01" in ledger_cli(ledger_dir, location, "alarms").stdout


def test_two_different_records_waiting_at_one_seq_are_a_fork(
    ledger: Intake, recorder: Recorder
) -> None:
    for i in range(5):
        recorder.seal_scan(f"SEAL-{i}")
    chain = envelopes(recorder)  # seq 1..6
    parked = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[4:5]))  # seq 5 waits
    assert parked.waiting == 1
    other = signed(recorder.key, 5, event_id_of(chain[3]), "OTHER")
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [other]))
    assert (result.forks, result.waiting) == (1, 0)
    (alarm,) = ledger.store.forks()
    assert (alarm.seq, alarm.kept_event_id, alarm.forked_event_id) == (
        5, event_id_of(chain[4]), event_id_of(other),
    )  # fmt: skip
    # The first one stays parked and is logged when its predecessors come.
    done = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[:4] + chain[5:]))
    assert done.logged == 6
    assert [e.event_id for e in ledger.store.events()] == [event_id_of(e) for e in chain]


def test_no_alarm_without_a_fork(ledger: Intake, recorder: Recorder) -> None:
    recorder.seal_scan("SEAL-1")
    payload = encode_batch(DEVICE, envelopes(recorder))
    ledger.ingest(DEVICE, payload)
    assert ledger.ingest(DEVICE, payload).duplicates == 2  # resends are not forks
    assert ledger.store.forks() == []
    assert ledger.counters["forks"] == 0


# --- not-yet-valid keys ---------------------------------------------------------------------
def test_a_key_is_refused_before_its_validity_starts(
    store: Store, gateway: Gateway, device_key: DeviceKey, recorder: Recorder
) -> None:
    now = [1_700_000_000_000]
    store.enroll(DEVICE, SITE, device_key.public_key, device_key.kid, now[0] + HOUR_MS)
    intake = Intake(store, gateway.ledger, clock_ms=lambda: now[0])
    recorder.seal_scan("SEAL-1")
    payload = encode_batch(DEVICE, envelopes(recorder))
    early = intake.ingest(DEVICE, payload)
    assert (early.logged, early.rejected) == (0, 2)
    assert early.reasons == {"key not yet valid": 2}
    assert intake.counters["rejected: key not yet valid"] == 2
    assert store.log_size() == 0
    assert [r[2] for r in store.rejections()] == ["key not yet valid"] * 2
    # The device is told, per record, so it keeps them (state rejected), never deletes.
    ack = ack_of(intake, device_key.kid, early.acks[0])
    assert (ack.seq, [r.reason for r in ack.rejected]) == (0, ["key not yet valid"] * 2)
    now[0] += HOUR_MS  # validity starts: the same records are now accepted
    assert intake.ingest(DEVICE, payload).logged == 2


def test_enroll_valid_from_on_the_command_line(
    gateway: Gateway, ledger_dir: Path, location: str, tmp_path: Path
) -> None:
    from ledger.authority import Authority, create_authority
    from ledger.keys import load_ledger_keypair
    from ledger.registry import pin_authority

    key = load_device_key(gateway.data_dir / "device.key")
    authority = create_authority(tmp_path / "registry", "consortium-registry")
    pin_authority(ledger_dir, authority, load_ledger_keypair(ledger_dir).public)
    entry = Authority(tmp_path / "registry").enrol(DEVICE, SITE, key.public_key)[0]
    bad = ledger_cli(ledger_dir, location, "enroll", str(entry), "--valid-from", "soon")
    assert bad.returncode == 3 and "ISO 8601" in bad.stderr
    done = ledger_cli(
        ledger_dir, location, "enroll", str(entry), "--valid-from", "2031-05-01T06:00:00+02:00"
    )
    assert done.returncode == 0, done.stderr
    (listed,) = json.loads(ledger_cli(ledger_dir, location, "devices", "--json").stdout)
    utc = dt.datetime(2031, 5, 1, 4, 0, tzinfo=dt.UTC)
    assert listed["valid_from_ms"] == int(utc.timestamp()) * 1000
    assert (
        "valid from 2031-05-01T04:00:00+00:00" in ledger_cli(ledger_dir, location, "devices").stdout
    )


# --- migrations -----------------------------------------------------------------------------
def test_a_version_1_sqlite_store_is_migrated(tmp_path: Path, device_key: DeviceKey) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[0].sqlite} PRAGMA user_version = 1; COMMIT;")
    conn.execute(
        "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms)"
        " VALUES (?, ?, ?, ?, 1234)",
        (device_key.kid, DEVICE, SITE, device_key.public_key),
    )
    conn.close()
    store = LedgerStore(path)
    try:
        key = store.key(device_key.kid)
        assert key is not None
        assert key.valid_from_ms == 1234  # valid since its enrolment, as before
        assert store.forks() == []
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 4
        assert store.dead_letters() == [] and store.rejection_rows() == 0
    finally:
        store.close()
    LedgerStore(path).close()  # opening again is a no-op


def test_a_version_1_postgres_store_is_migrated(pg_dsn: str, device_key: DeviceKey) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(MIGRATIONS[0].postgresql)
        conn.execute("INSERT INTO ledger_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms)"
            " VALUES (%s, %s, %s, %s, 1234)",
            (device_key.kid, DEVICE, SITE, device_key.public_key),
        )
    store = LedgerStore(PostgresDialect(pg_dsn))
    try:
        key = store.key(device_key.kid)
        assert key is not None
        assert key.valid_from_ms == 1234
        assert store.forks() == []
        assert store.log_size() == 0 and store.integrity_ok()
        assert store.dead_letters() == [] and store.rejection_rows() == 0
    finally:
        store.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version FROM ledger_schema ORDER BY version").fetchall()
    assert rows == [(1,), (2,), (3,), (4,)]


# --- the check-worker pool --------------------------------------------------------------------
def test_checks_in_a_worker_pool_log_the_same_and_name_the_bad_record(
    store: Store, gateway: Gateway, device_key: DeviceKey, recorder: Recorder
) -> None:
    store.enroll(DEVICE, SITE, device_key.public_key, device_key.kid)
    for i in range(40):
        if i % 4:
            recorder.weighing(bag=9_800 + i, lot="LOT-1")
        else:
            recorder.weighing(gross=380_000 + i, tare=150_000, vehicle="TRK-1")
    chain = envelopes(recorder)  # seq 1..41
    # Seq 42: gross and tare open, but the sealed net opening is not gross - tare's.
    points, openings = commit_masses({"gross": 400_000, "tare": 150_000})
    _, other = commit_masses({"gross": 400_000, "tare": 149_000})
    openings["net"] = other["net"]
    body = {
        "mass": {n: p.encoded for n, p in points.items()},
        "sealed": seal_openings(openings, gateway.ledger.public.sealing_key),
    }
    bad = Payload(
        DEVICE, SITE, 42, event_id_of(chain[-1]),
        DeviceTime(1, TimeSource.RTC, TimeQuality.UNSYNCED), 1, EventType.WEIGHING, body,
    )  # fmt: skip
    batch = [*chain, EventSigner(recorder.key).sign(bad).cose]
    intake = Intake(store, gateway.ledger, workers=2, parallel_min=1)
    try:
        result = intake.ingest(DEVICE, encode_batch(DEVICE, batch))
    finally:
        intake.close()
    assert (result.logged, result.rejected) == (41, 1)
    ack = ack_of(intake, device_key.kid, result.acks[0])
    assert [(r.seq, r.reason) for r in ack.rejected] == [
        (42, "mass: net commitment does not open to the sealed value")
    ]
    assert [e.seq for e in store.events()] == list(range(1, 42))
    weighing = store.events()[1]
    kept = recorder.outbox.openings(weighing.event_id)
    assert store.masses(weighing.event_id) == {k: v for k, (v, _) in kept.items()}
    assert store.integrity_ok()
