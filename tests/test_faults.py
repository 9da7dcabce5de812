"""Bad input and broken storage: clear typed errors, counters/alarms, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from agent.audit import verify_outbox
from agent.outbox import Outbox
from agent.outbox.store import translate_sqlite_errors
from agent.recorder import Recorder
from custody.envelope import verify_envelope
from custody.errors import (
    BudgetExceededError,
    CorruptDatabaseError,
    DiskFullError,
    KeyPermissionError,
    StorageError,
)
from tests.conftest import Gateway
from tests.support import run_cli


def set_config(gateway: Gateway, section: str, **values: int) -> None:
    cfg = gateway.data_dir / "config.toml"
    text = cfg.read_text()
    for name, value in values.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{name} =")]
        at = lines.index(f"[{section}]") + 1
        lines.insert(at, f"{name} = {value}")
        text = "\n".join(lines) + "\n"
    cfg.write_text(text)


def record_some(gateway: Gateway, n: int) -> list[bytes]:
    with gateway.recorder() as rec:
        return [rec.weighing(gross=10_000 + i, vehicle=f"T{i}").event_id for i in range(n)]


# --- keys ---------------------------------------------------------------------------
def test_group_readable_key_is_refused(gateway: Gateway) -> None:
    key = gateway.data_dir / "device.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o640)
    with pytest.raises(KeyPermissionError, match="chmod 600"):
        gateway.recorder()
    result = run_cli("record", "seal", "--seal-id", "S1", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 4
    assert "chmod 600" in result.stderr and "Traceback" not in result.stderr


def test_malformed_key_file_is_a_key_error(gateway: Gateway) -> None:
    key = gateway.data_dir / "device.key"
    key.write_text("not hex at all\n")
    result = run_cli("events", "verify", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 4 and "malformed device key" in result.stderr


# --- corrupt databases ----------------------------------------------------------------
def corrupt_pages(path: Path) -> None:
    """Overwrite the middle of the file (b-tree pages) with garbage, keep the header."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(4096 * 2)
        f.write(os.urandom(max(size - 4096 * 3, 4096)))


def test_corrupt_database_is_quarantined_and_readable_events_salvaged(gateway: Gateway) -> None:
    record_some(gateway, 400)
    db = gateway.data_dir / "outbox.sqlite"
    original_size = db.stat().st_size
    with db.open("r+b") as f:  # one damaged 4 KiB page in the middle of the file
        f.seek((original_size // 4096 // 2) * 4096)
        f.write(os.urandom(4096))
    with gateway.recorder() as rec:
        report = rec.outbox.report
        assert report.quarantined is not None and report.quarantined.exists()
        assert "integrity_check" in (report.reason or "")
        # Renamed aside, never deleted.
        assert report.quarantined.stat().st_size == original_size
        assert "outbox_quarantined" in [a["kind"] for a in rec.outbox.active_alarms()]
        assert rec.outbox.integrity_ok()
        # Most events survive, each still verifies, and the chain continues after the
        # highest salvaged seq under the same key (no new key needed).
        assert 100 <= report.salvaged <= 401
        salvaged = list(rec.outbox.iter_chain(rec.key.kid))
        for e in salvaged:
            verify_envelope(e.envelope, rec.key.public_key)
        assert (gateway.data_dir / "device.key").exists()
        before_restart = [e.seq for e in salvaged if e.event_id != rec.boot_event.event_id]
        assert rec.boot_event.seq == max(before_restart) + 1


def test_not_a_database_is_quarantined_and_a_new_key_starts_a_new_chain(gateway: Gateway) -> None:
    record_some(gateway, 5)
    db = gateway.data_dir / "outbox.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database" * 100)
    old_key = (gateway.data_dir / "device.key").read_text()
    with gateway.recorder() as rec:
        assert rec.outbox.report.quarantined is not None
        assert rec.outbox.report.salvaged == 0
        kinds = {a["kind"] for a in rec.outbox.active_alarms()}
        assert {"outbox_quarantined", "device_key_replaced"} <= kinds
        # The old key is retired, not deleted; the new chain starts at seq 1.
        retired = list((gateway.data_dir / "quarantine").glob("device.key-*"))
        assert [p.read_text() for p in retired] == [old_key]
        assert rec.key.seed.hex() + "\n" != old_key
        e = rec.seal_scan("S")
        assert e.seq == 2 and verify_outbox(rec.outbox, rec.key).ok


def test_truncated_database_is_quarantined(gateway: Gateway) -> None:
    record_some(gateway, 300)
    db = gateway.data_dir / "outbox.sqlite"
    with gateway.recorder():
        pass  # checkpoint happens on close; make sure there is content in the main file
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with gateway.recorder() as rec:
        assert rec.outbox.report.quarantined is not None
        rec.seal_scan("S")
        assert rec.outbox.integrity_ok()


# --- disk budget and full disk ------------------------------------------------------------
def test_disk_budget_alarms_then_refuses_and_keeps_everything(gateway: Gateway) -> None:
    set_config(gateway, "outbox", budget_mb=16, alarm_percent=5, min_free_mb=0)
    kept: list[bytes] = []
    with gateway.recorder() as rec:
        big_note = "x" * 250
        with pytest.raises(BudgetExceededError, match="budget"):
            for i in range(200_000):
                kept.append(rec.weighing(gross=i + 1, note=big_note).event_id)
        assert any(a["kind"] == "disk_budget" for a in rec.outbox.active_alarms())
        assert rec.writer.stats.refused_budget >= 1
        # Nothing already captured was dropped.
        stored = {e.event_id for e in rec.outbox.events()}
        assert set(kept) <= stored
        assert verify_outbox(rec.outbox, rec.key).ok
        # Still refused while the budget is used up.
        with pytest.raises(BudgetExceededError):
            rec.seal_scan("S-AT-LIMIT")


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Path:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to create a small tmpfs for a real full disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_a_clear_error_and_loses_nothing(
    gateway: Gateway, tiny_filesystem: Path
) -> None:
    data_dir = tiny_filesystem / "gw"
    shutil.copytree(gateway.data_dir, data_dir)
    small = Gateway(data_dir, gateway.ledger)
    set_config(small, "outbox", min_free_mb=0)
    acknowledged: list[bytes] = []
    with pytest.raises(DiskFullError, match="disk is full"):
        with small.recorder() as rec:
            for i in range(100_000):
                acknowledged.append(rec.weighing(gross=i + 1, note="n" * 200).event_id)
    # Free a little room (as an operator would) and reopen: everything acknowledged is there.
    (data_dir / "ledger.json").write_text((data_dir / "ledger.json").read_text())
    outbox = Outbox.open(data_dir / "outbox.sqlite")
    try:
        assert outbox.report.quarantined is None
        stored = {e.event_id for e in outbox.events()}
        assert acknowledged and set(acknowledged) <= stored
        assert outbox.integrity_ok()
    finally:
        outbox.close()


# --- tampering -----------------------------------------------------------------------
def tamper(db: Path, sql: str, *args: object) -> None:
    """What an attacker with the SD card can do: drop our triggers and rewrite rows."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_signed_fields_immutable")
    conn.execute("DROP TRIGGER openings_immutable")
    conn.execute(sql, args)
    conn.close()


def test_tampered_envelope_is_detected_with_its_seq(gateway: Gateway) -> None:
    record_some(gateway, 10)
    db = gateway.data_dir / "outbox.sqlite"
    env = sqlite3.connect(db).execute("SELECT envelope FROM events WHERE seq = 7").fetchone()[0]
    flipped = bytearray(env)
    flipped[-10] ^= 0x01
    tamper(db, "UPDATE events SET envelope = ? WHERE seq = 7", bytes(flipped))
    result = run_cli("events", "verify", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 1
    assert "seq 7" in result.stderr and "Traceback" not in result.stderr


def test_inflated_clear_value_is_detected(gateway: Gateway) -> None:
    record_some(gateway, 4)
    db = gateway.data_dir / "outbox.sqlite"
    tamper(
        db,
        "UPDATE openings SET value = value + 1 WHERE event_id ="
        " (SELECT event_id FROM events WHERE seq = 3)",
    )
    result = run_cli("events", "verify", "--json", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["first_bad_seq"] == 3
    assert "does not open" in report["error"]


def test_deleted_event_breaks_the_chain_at_the_next_seq(gateway: Gateway) -> None:
    record_some(gateway, 6)
    db = gateway.data_dir / "outbox.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_unacked_never_deleted")
    conn.execute("DELETE FROM openings WHERE event_id = (SELECT event_id FROM events WHERE seq=4)")
    conn.execute("DELETE FROM events WHERE seq = 4")
    conn.close()
    result = run_cli("events", "verify", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 1 and "seq 5" in result.stderr


def test_recorder_survives_restart_after_errors(gateway: Gateway) -> None:
    with Recorder(gateway.data_dir) as rec:
        rec.seal_scan("S1")
    with Recorder(gateway.data_dir) as rec:
        assert verify_outbox(rec.outbox, rec.key).checked == 3


# --- the boundary translation of third-party errors -------------------------------------
@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (sqlite3.OperationalError("database or disk is full"), DiskFullError),
        (sqlite3.DatabaseError("database disk image is malformed"), CorruptDatabaseError),
        (sqlite3.DatabaseError("file is not a database"), StorageError),
        (sqlite3.OperationalError("database is locked"), StorageError),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StorageError),
        (OSError(28, "No space left on device"), StorageError),
    ],
)
def test_sqlite_and_os_errors_are_translated_once(raised: Exception, expected: type) -> None:
    with pytest.raises(expected) as err, translate_sqlite_errors("testing"):
        raise raised
    assert isinstance(err.value, StorageError)
    assert err.value.__cause__ is raised
    assert str(err.value).startswith("testing")


def test_real_sqlite_error_codes_map_by_code(tmp_path: Path) -> None:
    not_a_db = tmp_path / "x.sqlite"
    not_a_db.write_bytes(b"garbage" * 1000)
    with pytest.raises(CorruptDatabaseError), translate_sqlite_errors("reading"):
        sqlite3.connect(not_a_db).execute("SELECT * FROM sqlite_master").fetchall()
