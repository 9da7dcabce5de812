"""The SQLite ledger store's reads fail with the typed storage errors (STYLE.md §5), as its
writes and every PostgreSQL operation do (tests/test_store_pg.py): real faults, no mocks. A
corrupt page is a CorruptDatabaseError; a full database a DiskFullError, with nothing of the
failed write kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from custody.errors import CorruptDatabaseError, DiskFullError, StorageError
from custody.keys import DeviceKey
from ledger.store import LedgerStore
from tests.test_registry_log_store import DEVICE, SITE, append_events, event


def _filled(path: Path) -> DeviceKey:
    key = DeviceKey.generate()
    store = LedgerStore(path)
    try:
        store.enroll(DEVICE, SITE, key.public_key, key.kid)
        append_events(store, [event(key, seq) for seq in range(1, 21)])
    finally:
        store.close()  # the last connection checkpoints the WAL into the file
    return key


def _overwrite_page_of(path: Path, table: str) -> None:
    """Garbage over the root page of ``table``: what a bad sector or a torn copy leaves."""
    conn = sqlite3.connect(path)
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    finally:
        conn.close()
    assert not path.with_name(path.name + "-wal").exists()
    with path.open("r+b") as f:
        f.seek((int(root) - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_a_read_of_a_corrupted_sqlite_store_is_a_typed_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    _filled(path)
    _overwrite_page_of(path, "events")
    store = LedgerStore(path)  # the header, schema and log state are intact: it opens
    try:
        assert store.log_size() == 20
        with pytest.raises(CorruptDatabaseError, match="reading events") as raised:
            store.events()
        assert isinstance(raised.value, StorageError)
        assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)  # translated once
        with pytest.raises(CorruptDatabaseError, match="reading leaf hashes"):
            store.leaf_hashes(0, 20)
        with pytest.raises(CorruptDatabaseError, match="checking integrity"):
            store.integrity_ok()  # PRAGMA integrity_check itself stops at the bad page
    finally:
        store.close()


def test_a_read_of_a_store_that_is_no_database_is_a_typed_storage_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(CorruptDatabaseError, match="cannot open the ledger store"):
        LedgerStore(path)


def test_a_read_after_close_is_a_storage_error(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.log_size()


def test_a_write_past_the_databases_size_limit_is_a_disk_full_error(tmp_path: Path) -> None:
    key = _filled(tmp_path / "ledger.sqlite")
    store = LedgerStore(tmp_path / "ledger.sqlite")
    try:
        pages = int(store.conn.execute("PRAGMA page_count").fetchone()[0])
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL
        with pytest.raises(DiskFullError, match="recording a dead letter"):
            store.record_dead_letter(DEVICE, "t", bytes(64 * 1024), "unreadable", keep=10)
        with pytest.raises(DiskFullError, match="appending events"):
            append_events(store, [event(key, seq) for seq in range(21, 200)])
        assert store.log_size() == 20 and store.dead_letter_count() == 0  # nothing half-kept
        assert store.integrity_ok()
    finally:
        store.close()
