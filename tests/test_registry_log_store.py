"""Registry entries in the shared transparency log, in both stores (SQLite and PostgreSQL).

The registry authority's entries are leaves of the same RFC 9162 log as the device events,
``leaf_hash(entry_id)`` each, so the root, the leaves and the inclusion proofs must come out
as a reference computed with ``custody.merkle`` over the expected sequence of leaves. The
entries' own chain (seq 1..n) is gapless, their rows immutable, and a version-3 store keeps
its events when migrated. PostgreSQL runs on a throwaway cluster (tests/postgres.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from custody.errors import StorageError
from custody.keys import DeviceKey
from custody.merkle import CompactRange, leaf_hash, root, verify_inclusion
from ledger import store as ledger_store
from ledger.dialect_pg import PostgresDialect
from ledger.dialect_sqlite import statements
from ledger.log import prove_consistency, prove_inclusion
from ledger.schema import MIGRATIONS, SCHEMA_VERSION
from ledger.store import LedgerStore, LoggedRegistryEntry, NewEvent, Store

DEVICE = "gw-reg-01"
SITE = "KOL-01"


@dataclass
class Opened:
    store: Store
    kind: str
    dsn: str = ""

    def raw(self, query: str, *params: object) -> None:
        """A statement outside the store's methods (as an operator's shell would)."""
        if self.kind == "sqlite":
            self.store.dialect.conn.execute(query.replace("%s", "?"), params)
        else:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(query, params)


@pytest.fixture(params=["sqlite", "postgres"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    result: Opened
    if request.param == "sqlite":
        result = Opened(LedgerStore(tmp_path / "ledger.sqlite"), "sqlite")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        result = Opened(LedgerStore(PostgresDialect(dsn)), "postgres", dsn)
    yield result
    result.store.close()


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


def event(key: DeviceKey, seq: int) -> NewEvent:
    envelope = b"event of " + key.kid + seq.to_bytes(8, "big")
    event_id = hashlib.sha256(envelope).digest()
    return NewEvent(
        event_id, key.kid, seq, DEVICE, "seal_scan", 1_000 + seq, envelope, {}, leaf_hash(event_id)
    )


def entry(seq: int, prev: bytes, op: str = "enrol") -> tuple[bytes, bytes]:
    """(entry_id, entry bytes) of a stand-in registry entry: the store does not decode it."""
    data = b"registry entry " + seq.to_bytes(8, "big", signed=True) + prev + op.encode()
    return hashlib.sha256(data).digest(), data


def append_entry(store: Store, seq: int, op: str = "enrol") -> tuple[int, bytes]:
    """Append the next registry entry in its own transaction: (log index, entry id)."""
    with store.transaction():
        head_seq, head_id = store.registry_head()
        assert head_seq == seq - 1
        entry_id, data = entry(seq, head_id, op)
        log = store.log_range()
        index = store.append_registry_entry(log, seq, entry_id, data, op)
        store.save_log(log)
    return index, entry_id


def append_events(store: Store, events: list[NewEvent]) -> None:
    with store.transaction():
        log = store.log_range()
        store.append_events(log, events)
        store.save_log(log)


def test_events_and_registry_entries_interleave_under_one_rfc9162_root(
    opened: Opened, key: DeviceKey
) -> None:
    store = opened.store
    store.enroll(DEVICE, SITE, key.public_key, key.kid)
    expected: list[bytes] = []  # leaf data (event ids and entry ids) in log order
    kinds: list[str] = []
    seq_e = seq_r = 0
    # Runs of each kind, and both kinds in one transaction.
    for pattern in ["E", "R", "EE", "RR", "ERE", "R", "EEEE", "RER", "E"]:
        with store.transaction():
            log = store.log_range()
            for kind in pattern:
                if kind == "E":
                    seq_e += 1
                    e = event(key, seq_e)
                    store.append_events(log, [e])
                    expected.append(e.event_id)
                else:
                    seq_r += 1
                    entry_id, data = entry(seq_r, store.registry_head()[1])
                    assert store.append_registry_entry(log, seq_r, entry_id, data, "enrol") == len(
                        expected
                    )
                    expected.append(entry_id)
                kinds.append(kind)
            store.save_log(log)
    size = len(expected)
    assert store.log_size() == store.log_range().size == size
    assert store.log_range().root() == root(expected)
    assert store.leaf_hashes(0, size) == [leaf_hash(x) for x in expected]
    assert store.leaf_hashes(3, 9) == [leaf_hash(x) for x in expected[3:9]]
    assert store.integrity_ok()

    registry = store.registry_entries()
    assert [r.seq for r in registry] == list(range(1, seq_r + 1))
    assert [r.log_index for r in registry] == [i for i, k in enumerate(kinds) if k == "R"]
    assert all(expected[r.log_index] == r.entry_id for r in registry)
    assert all(hashlib.sha256(r.entry).digest() == r.entry_id for r in registry)
    assert store.registry_head() == (seq_r, registry[-1].entry_id)
    assert [e.log_index for e in store.events()] == [i for i, k in enumerate(kinds) if k == "E"]
    cut = registry[3].log_index
    assert store.registry_entries(upto_index=cut) == registry[:3]
    assert store.registry_entries(upto_index=0) == []

    # Inclusion proofs of both kinds, in the whole log and in an older tree.
    top = store.log_range().root()
    for index, data in enumerate(expected):
        proof = prove_inclusion(store, index, size)
        verify_inclusion(leaf_hash(data), index, size, proof, top)
    old = 11
    for index in (0, 1, 10):
        proof = prove_inclusion(store, index, old)
        verify_inclusion(leaf_hash(expected[index]), index, old, proof, root(expected[:old]))
    assert prove_consistency(store, old, size)  # reads leaves of both kinds without a gap


def test_the_registry_starts_empty(opened: Opened) -> None:
    assert opened.store.registry_head() == (0, bytes(32))
    assert opened.store.registry_entries() == []
    assert opened.store.registry_entries(upto_index=10) == []


@pytest.mark.parametrize("wrong", [1, 3, 0, -1])  # the head's own, a gap, before the start
def test_a_registry_seq_that_does_not_follow_the_head_is_refused(
    opened: Opened, wrong: int
) -> None:
    store = opened.store
    first, _ = append_entry(store, 1)
    before = (store.log_range(), store.registry_entries())
    entry_id, data = entry(wrong, bytes(32))
    with store.transaction():
        log = store.log_range()
        with pytest.raises(StorageError, match="does not follow the registry head"):
            store.append_registry_entry(log, wrong, entry_id, data, "enrol")
        assert log == before[0]  # the caller's range is untouched
    assert (store.log_range(), store.registry_entries()) == before
    assert first == 0 and append_entry(store, 2)[0] == 1


def test_a_registry_entry_whose_id_is_not_its_hash_is_refused(opened: Opened) -> None:
    store = opened.store
    entry_id, data = entry(1, bytes(32))
    with store.transaction():
        with pytest.raises(StorageError, match="SHA-256"):
            store.append_registry_entry(store.log_range(), 1, entry_id, data + b"x", "enrol")
    assert store.registry_entries() == []


def test_the_database_refuses_a_gap_or_a_taken_position_past_the_store(
    opened: Opened, key: DeviceKey
) -> None:
    store = opened.store
    store.enroll(DEVICE, SITE, key.public_key, key.kid)
    append_events(opened.store, [event(key, 1)])
    entry_id, data = entry(2, bytes(32))
    insert = (
        "INSERT INTO registry_log (seq, log_index, entry_id, entry, op, received_ms)"
        " VALUES (%s, %s, %s, %s, 'enrol', 0)"
    )
    errors = (sqlite3.IntegrityError, psycopg.Error)
    with pytest.raises(errors, match="follow the registry head"):
        opened.raw(insert, 2, 5, entry_id, data)  # seq 2 with no seq 1
    entry_id, data = entry(1, bytes(32))
    with pytest.raises(errors, match="an event holds that log index"):
        opened.raw(insert, 1, 0, entry_id, data)
    assert store.registry_entries() == []


def test_logged_registry_entries_are_immutable_and_undeletable(opened: Opened) -> None:
    store = opened.store
    append_entry(store, 1)
    append_entry(store, 2, "retire")
    kept = store.registry_entries()
    errors = (sqlite3.IntegrityError, psycopg.Error)
    with pytest.raises(errors, match="immutable"):
        opened.raw("UPDATE registry_log SET op = 'heartbeat' WHERE seq = 2")
    with pytest.raises(errors, match="immutable"):
        opened.raw("UPDATE registry_log SET entry = %s WHERE seq = 1", b"forged")
    with pytest.raises(errors, match="never deleted"):
        opened.raw("DELETE FROM registry_log WHERE seq = 2")
    if opened.kind == "postgres":
        with pytest.raises(psycopg.Error, match="never deleted"):
            opened.raw("TRUNCATE registry_log CASCADE")  # keys name their entries
    assert store.registry_entries() == kept
    assert [e.op for e in kept] == ["enrol", "retire"]


def test_a_key_enrolled_by_a_registry_entry_records_its_log_index(
    opened: Opened, key: DeviceKey
) -> None:
    store = opened.store
    other = DeviceKey.generate()
    store.enroll(DEVICE, SITE, other.public_key, other.kid)  # an operator's: no index
    append_events(store, [event(other, 1)])
    with store.transaction():
        log = store.log_range()
        entry_id, data = entry(1, bytes(32))
        index = store.append_registry_entry(log, 1, entry_id, data, "enrol")
        store.enroll(DEVICE, SITE, key.public_key, key.kid, 5, enrolled_index=index)
        # A failed enrolment inside the entry's transaction leaves the rest of it alone.
        with pytest.raises(StorageError, match="already enrolled"):
            store.enroll(DEVICE, SITE, key.public_key, key.kid, enrolled_index=index)
        store.save_log(log)
    assert index == 1
    got = store.key(key.kid)
    assert got is not None
    assert (got.enrolled_index, got.valid_from_ms, got.last_seq) == (1, 5, None)
    operator = store.key(other.kid)
    assert operator is not None and operator.enrolled_index is None
    assert {k.kid: k.enrolled_index for k in store.device_keys()} == {key.kid: 1, other.kid: None}
    assert store.log_size() == 2 and store.integrity_ok()


def test_an_enrolment_rolls_back_with_the_entry_that_made_it(
    opened: Opened, key: DeviceKey
) -> None:
    store = opened.store
    with pytest.raises(RuntimeError), store.transaction():
        log = store.log_range()
        entry_id, data = entry(1, bytes(32))
        index = store.append_registry_entry(log, 1, entry_id, data, "enrol")
        store.enroll(DEVICE, SITE, key.public_key, key.kid, enrolled_index=index)
        store.save_log(log)
        raise RuntimeError("the caller gives up")
    assert store.key(key.kid) is None
    assert store.registry_entries() == [] and store.log_size() == 0


def test_an_enrolled_index_must_name_a_logged_registry_entry(
    opened: Opened, key: DeviceKey
) -> None:
    with pytest.raises(StorageError):
        opened.store.enroll(DEVICE, SITE, key.public_key, key.kid, enrolled_index=7)
    assert opened.store.key(key.kid) is None


def test_retire_key_fixes_the_last_seq_and_revokes(opened: Opened, key: DeviceKey) -> None:
    store = opened.store
    store.enroll(DEVICE, SITE, key.public_key, key.kid)
    with store.transaction():
        store.retire_key(key.kid, 12)
    got = store.key(key.kid)
    assert got is not None and got.last_seq == 12 and got.revoked
    revoked_ms = got.revoked_ms
    with store.transaction():
        store.retire_key(key.kid, 20)  # never widened
        assert (k := store.key(key.kid)) is not None and k.last_seq == 12
        store.retire_key(key.kid, 4)  # lowered
    got = store.key(key.kid)
    assert got is not None and (got.last_seq, got.revoked_ms) == (4, revoked_ms)
    assert [k.last_seq for k in store.device_keys()] == [4]
    with pytest.raises(StorageError, match="not enrolled"), store.transaction():
        store.retire_key(bytes(8), 1)


def test_retire_key_of_an_unused_key_may_close_its_chain_at_zero(
    opened: Opened, key: DeviceKey
) -> None:
    opened.store.enroll(DEVICE, SITE, key.public_key, key.kid)
    with opened.store.transaction():
        opened.store.retire_key(key.kid, 0)
    got = opened.store.key(key.kid)
    assert got is not None and got.last_seq == 0


def test_rotate_key_stores_the_old_keys_last_seq(opened: Opened, key: DeviceKey) -> None:
    store = opened.store
    new, plain_old, plain_new = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    store.enroll(DEVICE, SITE, key.public_key, key.kid)
    store.enroll("gw-reg-02", SITE, plain_old.public_key, plain_old.kid)
    with store.transaction():
        store.rotate_key(
            DEVICE, SITE, key.kid, new.kid, new.public_key,
            valid_from_ms=100, retired_ms=101, last_seq=9,
        )  # fmt: skip
        store.rotate_key(  # without last_seq, as before: the column stays open
            "gw-reg-02", SITE, plain_old.kid, plain_new.kid, plain_new.public_key,
            valid_from_ms=100, retired_ms=101,
        )  # fmt: skip
    old = store.key(key.kid)
    assert old is not None and (old.last_seq, old.revoked_ms) == (9, 101)
    rotated_in = store.key(new.kid)
    assert rotated_in is not None
    assert (rotated_in.last_seq, rotated_in.enrolled_index, rotated_in.revoked) == (
        None, None, False,
    )  # fmt: skip
    untouched = store.key(plain_old.kid)
    assert untouched is not None and untouched.last_seq is None and untouched.revoked
    with store.transaction():  # a retirement later cannot reopen what the rotation closed
        store.retire_key(key.kid, 30)
    old = store.key(key.kid)
    assert old is not None and (old.last_seq, old.revoked_ms) == (9, 101)


# --- migration from schema version 3 ----------------------------------------------------------
def _v3_sqlite(path: Path, key: DeviceKey, events: list[NewEvent]) -> bytes:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[:3]:
        for statement in statements(migration.sqlite):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    old_root = _fill_v3(lambda q, p: conn.execute(q.replace("%s", "?"), p), key, events)
    conn.execute("COMMIT")
    conn.close()
    return old_root


def _fill_v3(
    run: Callable[[str, tuple[object, ...]], object], key: DeviceKey, events: list[NewEvent]
) -> bytes:
    """A key, its events and the log state, written with version 3's columns only."""
    run(
        "INSERT INTO device_keys (kid, device_id, site_id, public_key, enrolled_ms,"
        " valid_from_ms) VALUES (%s, %s, %s, %s, 1234, 1234)",
        (key.kid, DEVICE, SITE, key.public_key),
    )
    log = CompactRange()
    for e in events:
        run(
            "INSERT INTO events (log_index, event_id, kid, seq, device_id, type, device_time_ms,"
            " received_ms, envelope) VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s)",
            (log.size, e.event_id, e.kid, e.seq, e.device_id, e.type, e.device_time_ms,
             e.envelope),
        )  # fmt: skip
        log.append_hash(e.leaf_hash)
    run(
        "INSERT INTO heads (kid, seq, event_id) VALUES (%s, %s, %s)",
        (key.kid, events[-1].seq, events[-1].event_id),
    )
    run(
        "INSERT INTO log_state (id, size, root, range_) VALUES (1, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root,"
        " range_ = excluded.range_",
        (log.size, log.root(), log.to_bytes()),
    )
    return log.root()


def _check_migrated(store: Store, key: DeviceKey, events: list[NewEvent], old_root: bytes) -> None:
    assert [e.event_id for e in store.events()] == [e.event_id for e in events]
    assert store.log_size() == len(events) and store.log_range().root() == old_root
    got = store.key(key.kid)
    assert got is not None
    assert (got.valid_from_ms, got.last_seq, got.enrolled_index) == (1234, None, None)
    assert store.registry_head() == (0, bytes(32)) and store.registry_entries() == []
    assert store.integrity_ok()
    # The migrated store logs registry entries after its events.
    index, entry_id = append_entry(store, 1)
    assert index == len(events)
    expected = [e.event_id for e in events] + [entry_id]
    assert store.log_range().root() == root(expected)
    assert store.leaf_hashes(0, len(expected)) == [leaf_hash(x) for x in expected]
    assert store.integrity_ok()


def test_a_version_3_sqlite_store_is_migrated(tmp_path: Path, key: DeviceKey) -> None:
    events = [event(key, s) for s in (1, 2, 3)]
    path = tmp_path / "v3.sqlite"
    old_root = _v3_sqlite(path, key, events)
    store = LedgerStore(path)
    try:
        version = store.dialect.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 4
        _check_migrated(store, key, events, old_root)
    finally:
        store.close()
    reopened = LedgerStore(path)  # opening again is a no-op
    try:
        assert len(reopened.registry_entries()) == 1 and len(reopened.events()) == 3
    finally:
        reopened.close()


def test_a_version_3_postgres_store_is_migrated(pg_dsn: str, key: DeviceKey) -> None:
    events = [event(key, s) for s in (1, 2, 3)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.transaction():
        for migration in MIGRATIONS[:3]:
            conn.execute(migration.postgresql)
            conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (migration.version,))
        old_root = _fill_v3(conn.execute, key, events)
    store = LedgerStore(PostgresDialect(pg_dsn))
    try:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT version FROM ledger_schema ORDER BY version").fetchall()
        assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert SCHEMA_VERSION == 4
        _check_migrated(store, key, events, old_root)
    finally:
        store.close()


def test_postgres_integrity_sees_a_position_held_twice_or_a_registry_gap(
    pg_dsn: str, key: DeviceKey
) -> None:
    store = LedgerStore(PostgresDialect(pg_dsn))
    try:
        store.enroll(DEVICE, SITE, key.public_key, key.kid)
        append_entry(store, 1)
        append_events(store, [event(key, 1)])
        assert store.integrity_ok()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            # An event written past the sequencer at the registry entry's position.
            stray = event(key, 2)
            conn.execute(
                "INSERT INTO events (log_index, event_id, kid, seq, device_id, type,"
                " device_time_ms, received_ms, envelope) VALUES (0, %s, %s, 2, %s, 't', 0, 0, %s)",
                (stray.event_id, key.kid, DEVICE, stray.envelope),
            )
            conn.execute("UPDATE heads SET seq = 2, event_id = %s", (stray.event_id,))
        assert not store.integrity_ok()
    finally:
        store.close()


def test_logged_registry_entry_is_a_frozen_value() -> None:
    a = LoggedRegistryEntry(1, 0, bytes(32), b"x", "enrol")
    assert a == LoggedRegistryEntry(1, 0, bytes(32), b"x", "enrol")
    with pytest.raises(AttributeError):
        a.seq = 2  # type: ignore[misc]
    assert "LoggedRegistryEntry" in ledger_store.__all__


def test_only_the_thread_holding_the_sqlite_transaction_nests_in_it(tmp_path: Path) -> None:
    import threading

    store = LedgerStore(tmp_path / "ledger.sqlite")
    seen: list[StorageError] = []

    def other() -> None:
        try:
            with store.transaction():
                pass
        except StorageError as exc:  # anything else fails the thread and the assertion below
            seen.append(exc)

    try:
        with store.transaction():
            with store.transaction():  # this thread: a savepoint
                append_entry_in_open_transaction(store)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join(30)
        assert len(seen) == 1 and isinstance(seen[0], StorageError)
        assert len(store.registry_entries()) == 1
    finally:
        store.close()


def append_entry_in_open_transaction(store: Store) -> None:
    log = store.log_range()
    entry_id, data = entry(1, bytes(32))
    store.append_registry_entry(log, 1, entry_id, data, "heartbeat")
    store.save_log(log)
