"""The ledger store on PostgreSQL (ARCHITECTURE.md "Scale beyond one machine").

Three layers, each against a real server (tests/postgres.py):

- the intake behaviours of tests/test_intake.py on both stores (SQLite and
  PostgreSQL): exactly once, dedupe, out-of-order waiting, forks and bad
  signatures refused, the log root is RFC 9162 over the event ids; plus what
  only PostgreSQL has (append-only triggers, schema creation by workers that
  start together, the sequencer lock, error translation);
- two ``Intake`` instances on two connections fed interleaved batches of many
  devices from two threads: no log position assigned twice, no event logged
  twice, a gapless log with each device in seq order;
- the scale test: 20 gateways x 1,000 records draining through real TLS
  Mosquitto to two ledger workers (two ``LedgerService``s) sharing
  ``$share/ledger/...`` on one PostgreSQL; about 30 s on a 2-core machine.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from agent import enrol
from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.recorder import Recorder
from agent.uplink import sync_once
from custody.commitment import commit_masses, seal_openings
from custody.envelope import ChainVerifier, EventSigner, verify_envelope
from custody.errors import StorageError
from custody.event import DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey, LedgerKeyPair
from custody.merkle import leaf_hash, root
from ledger.dialect_pg import PostgresDialect
from ledger.dialect_sqlite import SqliteDialect
from ledger.intake import Intake, IntakeResult
from ledger.keys import PUBLIC_FILE, load_ledger_keypair
from ledger.schema import SCHEMA_VERSION
from ledger.service import LedgerService
from ledger.store import LedgerStore, NewEvent, Store
from ledger.stores import open_store
from sync.ack import verify_ack
from sync.batch import encode_batch
from sync.mqtt import BrokerConfig
from tests.brokers import MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.support import wait_until
from tests.test_intake import DEVICE, ack_of, envelopes, fill

DEADLINE_S = 60.0


def postgres(dsn: str) -> LedgerStore:
    """The one store class on PostgreSQL (``open_store`` does this for a URL)."""
    return LedgerStore(PostgresDialect(dsn))


def sql(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    """A query on a connection of its own (as an operator or another worker would)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def check_log(store: Store, chains: dict[str, int]) -> list[bytes]:
    """The log is gapless 0..N-1, each event once, each device in seq order 1..n; its ids."""
    logged = store.events()
    assert [e.log_index for e in logged] == list(range(len(logged)))
    ids = [e.event_id for e in logged]
    assert len(set(ids)) == len(ids) == sum(chains.values())
    for device_id, n in chains.items():
        assert [e.seq for e in logged if e.device_id == device_id] == list(range(1, n + 1))
    assert store.log_size() == len(logged)
    assert store.log_range().root() == root(ids)  # RFC 9162 over the event ids
    assert store.integrity_ok()
    return ids


# --- (a) intake behaviours on both stores ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = LedgerStore(tmp_path / "ledger.sqlite")
    else:
        opened = postgres(request.getfixturevalue("pg_dsn"))
    yield opened
    opened.close()


@pytest.fixture
def ledger(store: Store, gateway: Gateway) -> Intake:
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    return Intake(store, gateway.ledger)


def test_a_batch_is_logged_exactly_once_under_the_rfc9162_root(
    ledger: Intake, recorder: Recorder
) -> None:
    fill(recorder, 20)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    assert (result.logged, result.rejected, result.duplicates) == (21, 0, 0)
    ack = ack_of(ledger, recorder, result.acks[0])
    ids = check_log(ledger.store, {DEVICE: 21})
    assert (ack.seq, ack.event_id, ack.log_size, ack.root) == (21, ids[-1], 21, root(ids))
    assert ledger.store.leaf_hashes(0, 100) == [leaf_hash(i) for i in ids]
    weighing = next(e for e in ledger.store.events() if e.type == "weighing")
    # Filtered in the store's query: the same records, in log order, of those types only.
    everything = ledger.store.events()
    wanted = ("weighing", "boot")
    assert ledger.store.events(types=wanted) == [e for e in everything if e.type in wanted]
    assert ledger.store.events(DEVICE, types=[]) == []
    kept = recorder.outbox.openings(weighing.event_id)
    assert ledger.store.masses(weighing.event_id) == {k: v for k, (v, _) in kept.items()}


def test_resends_are_deduplicated(ledger: Intake, recorder: Recorder) -> None:
    fill(recorder, 5)
    payload = encode_batch(DEVICE, envelopes(recorder))
    ledger.ingest(DEVICE, payload)
    again = ledger.ingest(DEVICE, payload)
    assert (again.logged, again.duplicates, again.rejected) == (0, 6, 0)
    assert ack_of(ledger, recorder, again.acks[0]).seq == 6
    check_log(ledger.store, {DEVICE: 6})


def test_out_of_order_records_wait_for_their_predecessor(
    ledger: Intake, recorder: Recorder
) -> None:
    fill(recorder, 9)
    envs = envelopes(recorder)
    late = ledger.ingest(DEVICE, encode_batch(DEVICE, envs[5:]))
    ack = ack_of(ledger, recorder, late.acks[0])
    assert (late.logged, late.waiting, ack.seq, ack.resend_from) == (0, 5, 0, 1)
    assert ledger.store.waiting_count(recorder.key.kid) == 5
    early = ledger.ingest(DEVICE, encode_batch(DEVICE, envs[:5]))
    assert early.logged == 10 and ack_of(ledger, recorder, early.acks[0]).resend_from is None
    assert ledger.store.waiting_count(recorder.key.kid) == 0
    check_log(ledger.store, {DEVICE: 10})


def test_a_fork_is_rejected_and_nothing_is_replaced(ledger: Intake, recorder: Recorder) -> None:
    fill(recorder, 3)
    ledger.ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    before = ledger.store.events()
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
    assert ledger.store.events() == before
    assert ledger.store.rejections()[-1][:2] == (DEVICE, 2)


def test_bad_signatures_unknown_and_revoked_keys_are_rejected(
    ledger: Intake, recorder: Recorder
) -> None:
    env = bytearray(envelopes(recorder)[0])
    env[-5] ^= 0x01  # flip a signature bit
    forged = ledger.ingest(DEVICE, encode_batch(DEVICE, [bytes(env)]))
    assert forged.rejected == 1 and "does not verify" in next(iter(forged.reasons))
    assert [r.seq for r in ack_of(ledger, recorder, forged.acks[0]).rejected] == [1]
    stranger = DeviceKey.generate()
    signed = EventSigner(stranger).sign(
        Payload(
            DEVICE, "KOL-01", 1, bytes(32), DeviceTime(1, TimeSource.RTC, TimeQuality.UNSYNCED),
            1, EventType.SEAL_SCAN, {"seal": "X"},
        )
    )  # fmt: skip
    unknown = ledger.ingest(DEVICE, encode_batch(DEVICE, [signed.cose]))
    assert (unknown.logged, unknown.rejected, unknown.acks) == (0, 1, [])
    assert "unknown device key" in unknown.reasons
    other = ledger.ingest("gw-other", encode_batch("gw-other", envelopes(recorder)))
    assert other.logged == 0 and other.rejected == 1
    assert ledger.store.revoke(DEVICE) == 1
    revoked = ledger.ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    assert revoked.logged == 0 and "device key revoked" in revoked.reasons
    assert ledger.store.log_size() == 0 and ledger.store.events() == []
    assert len(ledger.store.rejections()) == 4
    assert ledger.store.device_keys()[0].revoked


def test_a_malformed_batch_is_recorded_and_nothing_logged(ledger: Intake) -> None:
    result = ledger.ingest(DEVICE, b"\x07garbage")
    assert (result.logged, result.rejected, result.acks) == (0, 1, [])
    assert ledger.store.rejections()[-1][2].startswith("batch:")
    assert ledger.store.log_size() == 0 and ledger.store.integrity_ok()


def test_a_run_of_parked_records_longer_than_the_recursion_limit_follows_its_predecessor(
    store: Store, ledger_dir: Path
) -> None:
    # Batches that overtook their predecessor (on other workers) wait; the predecessor's
    # transaction then logs all of them. Intake once recursed per successor and failed here.
    keys = load_ledger_keypair(ledger_dir)
    chain = make_chain("gw-1", 1500, keys)
    store.enroll("gw-1", "KOL-01", chain.key.public_key, chain.key.kid)
    intake = Intake(store, keys)
    for start in range(1, 1500, 500):
        batch = encode_batch("gw-1", chain.envelopes[start : start + 500])
        assert intake.ingest("gw-1", batch).waiting == len(chain.envelopes[start : start + 500])
    assert store.waiting_count(chain.key.kid) == 1499 > sys.getrecursionlimit()
    first = intake.ingest("gw-1", encode_batch("gw-1", chain.envelopes[:1]))
    assert (first.logged, first.rejected) == (1500, 0)
    assert store.waiting_count(chain.key.kid) == 0
    check_log(store, {"gw-1": 1500})


def test_enrolling_a_key_twice_is_a_storage_error(store: Store) -> None:
    key = DeviceKey.generate()
    store.enroll("gw-1", "KOL-01", key.public_key, key.kid)
    with pytest.raises(StorageError, match="already enrolled"):
        store.enroll("gw-1", "KOL-01", key.public_key, key.kid)
    assert [k.kid for k in store.device_keys()] == [key.kid]
    assert store.key(key.kid) is not None and store.key(b"\x00" * 8) is None


# --- PostgreSQL only ---------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_the_location(tmp_path: Path, pg_dsn: str) -> None:
    sqlite_store = open_store(tmp_path / "ledger.sqlite")
    pg_store = open_store(pg_dsn)
    try:
        assert isinstance(sqlite_store.dialect, SqliteDialect)
        assert isinstance(pg_store.dialect, PostgresDialect)
        by_name = open_store(str(tmp_path / "other.sqlite"))
        assert isinstance(by_name.dialect, SqliteDialect)
        by_name.close()
    finally:
        sqlite_store.close()
        pg_store.close()


def test_logged_events_cannot_be_changed_deleted_or_truncated(
    pg_dsn: str, gateway: Gateway, recorder: Recorder
) -> None:
    store = postgres(pg_dsn)
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    Intake(store, gateway.ledger).ingest(DEVICE, encode_batch(DEVICE, envelopes(recorder)))
    for statement, message in [
        ("UPDATE events SET seq = 7", "immutable"),
        ("DELETE FROM events", "never deleted"),
        ("TRUNCATE events CASCADE", "never deleted"),
    ]:
        with pytest.raises(psycopg.errors.RaiseException, match=message):
            sql(pg_dsn, statement)
    assert store.log_size() == 1 and store.integrity_ok()
    # integrity_ok() notices a head that disagrees with the log, and a damaged range.
    sql(pg_dsn, "UPDATE heads SET seq = 2")
    assert not store.integrity_ok()
    sql(pg_dsn, "UPDATE heads SET seq = 1")
    sql(pg_dsn, "UPDATE log_state SET range_ = '\\x00'::bytea")
    assert not store.integrity_ok()
    store.close()


def test_workers_starting_together_create_the_schema_once(pg_dsn: str) -> None:
    opened: list[LedgerStore] = []
    errors: list[BaseException] = []
    go = threading.Barrier(6)

    def open_one() -> None:
        go.wait()
        try:
            opened.append(postgres(pg_dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    try:
        assert errors == [] and len(opened) == 6
        # One row per schema version, each written once.
        assert sql(pg_dsn, "SELECT version FROM ledger_schema ORDER BY version") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]
        assert sql(pg_dsn, "SELECT id, size FROM log_state") == [(1, 0)]
        assert all(s.log_size() == 0 and s.integrity_ok() for s in opened)
    finally:
        for s in opened:
            s.close()


def test_the_sequencer_lock_admits_one_writer_and_the_next_sees_its_log(
    pg_dsn: str, gateway: Gateway, recorder: Recorder
) -> None:
    a, b = postgres(pg_dsn), postgres(pg_dsn)
    try:
        key = load_device_key(gateway.data_dir / "device.key")
        a.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
        b_pid = b.dialect.conn.info.backend_pid
        seen_by_b: list[int] = []
        entered = threading.Event()

        def second_writer() -> None:
            with b.transaction():
                entered.set()
                seen_by_b.append(b.log_range().size)

        with a.transaction():
            log = a.log_range()
            thread = threading.Thread(target=second_writer)
            thread.start()
            waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
            wait_until(
                lambda: sql(pg_dsn, waiting, b_pid) == [("Lock",)],
                "the second writer to block on the sequencer lock",
            )
            assert not entered.is_set()
            env = verify_envelope(envelopes(recorder)[0], key.public_key)
            a.append_events(log, [NewEvent(
                env.event_id, env.kid, 1, DEVICE, "boot", env.payload.time.ms, env.cose, {},
                leaf_hash(env.event_id),
            )])  # fmt: skip
            a.save_log(log)
        thread.join(DEADLINE_S)
        assert entered.is_set() and seen_by_b == [1]  # the range read after the lock is current
    finally:
        a.close()
        b.close()


def test_psycopg_errors_become_storage_errors(pg_dsn: str) -> None:
    from tests.brokers import free_port

    with pytest.raises(StorageError, match="cannot open"):
        postgres(f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2")
    store = postgres(pg_dsn)
    with pytest.raises(StorageError, match="PostgreSQL"), store.transaction() as conn:
        conn.execute("SELECT * FROM no_such_table")
    assert store.log_size() == 0  # the failed transaction was rolled back; the store still works
    other = psycopg.connect(pg_dsn, autocommit=True)
    other.execute(
        "SELECT pg_terminate_backend(%s)", (store.dialect.conn.info.backend_pid,)
    )  # the server goes away under the store
    other.close()
    with pytest.raises(StorageError):
        store.log_size()
    store.close()
    sql(pg_dsn, "INSERT INTO ledger_schema (version) VALUES (99)")  # a newer program's store
    with pytest.raises(StorageError, match="schema version 99"):
        postgres(pg_dsn)


# --- (b) two intake workers on one database ------------------------------------------------


@dataclass
class Chain:
    device_id: str
    key: DeviceKey
    envelopes: list[bytes] = field(default_factory=list)


def make_chain(device_id: str, n: int, ledger_keys: LedgerKeyPair) -> Chain:
    chain = Chain(device_id, DeviceKey.generate())
    signer = EventSigner(chain.key)
    prev = bytes(32)
    for seq in range(1, n + 1):
        if seq % 10 == 0:
            points, openings = commit_masses({"bag": 15_000 + seq})
            type_ = EventType.WEIGHING
            body: dict[str, object] = {
                "mass": {k: p.encoded for k, p in points.items()},
                "sealed": seal_openings(openings, ledger_keys.public.sealing_key),
            }
        else:
            type_, body = EventType.SEAL_SCAN, {"seal": f"{device_id}-{seq}"}
        when = DeviceTime(1_700_000_000_000 + seq, TimeSource.RTC, TimeQuality.UNSYNCED)
        env = signer.sign(Payload(device_id, "KOL-01", seq, prev, when, 1, type_, body))
        chain.envelopes.append(env.cose)
        prev = env.event_id
    return chain


def test_two_intake_workers_never_assign_a_position_twice(pg_dsn: str, ledger_dir: Path) -> None:
    rng = random.Random(4)  # reproducible shuffles
    keys = load_ledger_keypair(ledger_dir)
    chains = [make_chain(f"gw-race-{i:02d}", 80, keys) for i in range(12)]
    setup = postgres(pg_dsn)
    for c in chains:
        setup.enroll(c.device_id, "KOL-01", c.key.public_key, c.key.kid)
    # Each device's chain cut into batches of 1..12; all batches interleaved across devices,
    # dealt to two workers at random, a fifth of them delivered twice (at-least-once).
    batches: list[tuple[str, bytes, bytes]] = []
    for c in chains:
        i = 0
        while i < len(c.envelopes):
            step = rng.randint(1, 12)
            batches.append(
                (c.device_id, c.key.kid, encode_batch(c.device_id, c.envelopes[i : i + step]))
            )
            i += step
    deliveries = batches + rng.sample(batches, len(batches) // 5)
    rng.shuffle(deliveries)
    queues: list[list[tuple[str, bytes, bytes]]] = [[], []]
    for d in deliveries:
        queues[rng.randrange(2)].append(d)

    stores = [postgres(pg_dsn), postgres(pg_dsn)]
    results: list[list[tuple[str, bytes, IntakeResult]]] = [[], []]
    go = threading.Barrier(2)

    def worker(n: int) -> None:
        intake = Intake(stores[n], keys)
        go.wait()
        for device_id, kid, payload in queues[n]:
            results[n].append((device_id, kid, intake.ingest(device_id, payload)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S * 2)
        assert not any(t.is_alive() for t in threads)
        everything = results[0] + results[1]
        assert len(everything) == len(deliveries)
        total = sum(len(c.envelopes) for c in chains)
        assert sum(r.logged for _, _, r in everything) == total
        assert sum(r.rejected for _, _, r in everything) == 0
        assert all(sum(r.logged for _, _, r in results[n]) > 0 for n in (0, 1))
        ids = check_log(setup, {c.device_id: len(c.envelopes) for c in chains})
        assert sql(pg_dsn, "SELECT count(*) FROM waiting") == [(0,)]
        # Every ack spoke of a log that is a prefix of the final one: each transaction
        # appended to the current compact range, never to a stale copy.
        logged = {(e.kid, e.seq): e.event_id for e in setup.events()}
        for device_id, kid, r in everything:
            for data in r.acks:
                ack = verify_ack(data, keys.public, device_id=device_id, device_kid=kid)
                assert ack.root == root(ids[: ack.log_size])
                assert ack.seq == 0 or logged[(kid, ack.seq)] == ack.event_id
    finally:
        for s in [*stores, setup]:
            s.close()


# --- (c) the scale test with real MQTT -----------------------------------------------------

SCALE_GATEWAYS = 20
SCALE_RECORDS = 1000
SCALE_DEADLINE_S = 240.0


def configure(data_dir: Path, broker: MosquittoBroker, pki: TestPKI, device_id: str) -> None:
    """sync.* as tests/test_sync_e2e.py's configure_gateway, with this gateway's certificate."""
    device = pki.device(device_id)
    cfg = data_dir / "config.toml"
    text = cfg.read_text()
    for old, new in [
        ('broker = ""', f'broker = "mqtts://{broker.host}:{broker.tls_port}"'),
        ('ca_file = ""', f'ca_file = "{pki.ca_file}"'),
        ('cert_file = ""', f'cert_file = "{device.cert}"'),
        ('key_file = ""', f'key_file = "{device.key}"'),
        # A batch the ledger drops over its per-device budget, or that reaches the broker
        # before both workers subscribe, is resent after the ack timeout: 5 s, not 60.
        ("ack_timeout_s = 60", "ack_timeout_s = 5"),
    ]:
        assert old in text
        text = text.replace(old, new)
    cfg.write_text(text)


class CountingIntake(Intake):
    """Also counts records parked for a missing predecessor (out-of-order across workers)."""

    def ingest(
        self, device_id: str, payload: bytes, *, correlation: bytes | None = None
    ) -> IntakeResult:
        result = super().ingest(device_id, payload, correlation=correlation)
        self.counters["waited"] += result.waiting
        return result


def capture(data_dir: Path, n: int) -> None:
    with Recorder(data_dir) as rec:
        futures = [
            rec.submit(EventType.WEIGHING, {"lot": "LOT-1"}, masses={"bag": 15_000 + i})
            if i % 10 == 0
            else rec.submit(EventType.SEAL_SCAN, {"seal": f"SEAL-{i:06d}"})
            for i in range(n)
        ]
        for f in futures:
            f.result()


@pytest.mark.slow
def test_twenty_gateways_two_ledger_workers_one_postgres(
    tmp_path: Path,
    pg_dsn: str,
    ledger_dir: Path,
    broker: MosquittoBroker,
    test_pki: TestPKI,
) -> None:
    started = time.monotonic()
    keys = load_ledger_keypair(ledger_dir)
    device_ids = [f"gw-scale-{i:02d}" for i in range(SCALE_GATEWAYS)]
    setup = postgres(pg_dsn)
    dirs: dict[str, Path] = {}
    for device_id in device_ids:
        dirs[device_id] = tmp_path / device_id
        record = enrol.initialise(
            dirs[device_id], site_id="KOL-01", device_id=device_id,
            ledger_key_file=ledger_dir / PUBLIC_FILE,
        )  # fmt: skip
        configure(dirs[device_id], broker, test_pki, device_id)
        setup.enroll(device_id, "KOL-01", record.public_key, record.kid)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: capture(d, SCALE_RECORDS), dirs.values()))
    captured = time.monotonic()

    workers: list[tuple[LedgerStore, LedgerService, threading.Thread]] = []
    stop = threading.Event()
    for n in (1, 2):
        store = postgres(pg_dsn)
        config = BrokerConfig(
            url=f"mqtts://{broker.host}:{broker.tls_port}", client_id=f"ledger/{n}",
            ca_file=test_pki.ca_file, cert_file=test_pki.ledger.cert,
            key_file=test_pki.ledger.key,
        )  # fmt: skip
        service = LedgerService(CountingIntake(store, keys), config)
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()
        workers.append((store, service, thread))
    try:
        wait_until(
            lambda: all(s.counters["connects"] >= 1 for _, s, _ in workers),
            "both ledger workers to subscribe",
        )
        with ThreadPoolExecutor(SCALE_GATEWAYS) as pool:
            drained = list(
                pool.map(lambda d: sync_once(d, timeout_s=SCALE_DEADLINE_S), dirs.values())
            )
        synced = time.monotonic()
    finally:
        stop.set()
        for _, _, thread in workers:
            thread.join(10)
        for store, _, _ in workers:
            store.close()

    per_gateway = SCALE_RECORDS + 1  # + the boot record
    for (stats, counts), device_id in zip(drained, device_ids, strict=True):
        assert counts == {"pending": 0, "sent": 0, "acked": per_gateway, "rejected": 0}, (
            device_id, stats,
        )  # fmt: skip
        assert stats.bad_acks == 0 and stats.rejected == 0
    try:
        check_log(setup, dict.fromkeys(device_ids, per_gateway))
        assert setup.rejections() == []
        assert sql(pg_dsn, "SELECT count(*) FROM waiting") == [(0,)]
        for device_id in device_ids:
            key = load_device_key(dirs[device_id] / "device.key")
            logged = setup.events(device_id)
            assert ChainVerifier(key.public_key).feed_all(e.envelope for e in logged) == per_gateway
            outbox = Outbox.open(dirs[device_id] / "outbox.sqlite", check=None)
            try:
                assert outbox.counts_by_state()["acked"] == per_gateway
            finally:
                outbox.close()
    finally:
        setup.close()
    counters = [s.counters for _, s, _ in workers]
    assert all(c["batches"] > 0 and c["logged"] > 0 for c in counters), counters
    assert sum(c["logged"] for c in counters) == SCALE_GATEWAYS * per_gateway
    print(
        f"\nscale: {SCALE_GATEWAYS} x {SCALE_RECORDS}: capture {captured - started:.1f} s, "
        f"sync {synced - captured:.1f} s; workers {[dict(c) for c in counters]}; "
        f"parked {[s.intake.counters['waited'] for _, s, _ in workers]}; "
        f"requeued {sum(s.requeued for s, _ in drained)}"
    )
