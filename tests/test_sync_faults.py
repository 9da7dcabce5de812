"""Faults mid-drain, injected for real: SIGKILL of the gateway, SIGKILL of the ledger,
and a gateway whose certificate is not its own. After each: nothing lost, nothing
logged twice, chains intact, both databases pass their integrity check."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.settings import load_config
from agent.uplink import broker_config, build_uplink, sync_once
from custody.envelope import ChainVerifier
from custody.errors import SyncError
from custody.event import EventType
from ledger.intake import Intake
from ledger.service import LedgerService
from ledger.store import LedgerStore
from sync.mqtt import BrokerConfig
from tests.brokers import MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.support import REPO
from tests.test_sync_e2e import DEVICE, configure_gateway

DEADLINE_S = 120.0
FAKE_ACKS = 3  # forged acks the gateway must have received and judged


def capture(gateway: Gateway, n: int) -> None:
    with gateway.recorder() as rec:
        futures = [rec.submit(EventType.SEAL_SCAN, {"seal": f"F-{i}"}) for i in range(n)]
        for f in futures:
            f.result()


def outbox_counts(gateway: Gateway) -> dict[str, int]:
    conn = sqlite3.connect(gateway.data_dir / "outbox.sqlite", timeout=10)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall())
    finally:
        conn.close()


def assert_exactly_once(gateway: Gateway, store_path: Path, total: int) -> None:
    store = LedgerStore(store_path)
    try:
        logged = store.events(DEVICE)
        assert [e.seq for e in logged] == list(range(1, total + 1))
        key = load_device_key(gateway.data_dir / "device.key")
        assert ChainVerifier(key.public_key).feed_all(e.envelope for e in logged) == total
        assert store.integrity_ok()
    finally:
        store.close()
    assert outbox_counts(gateway) == {"acked": total}
    conn = sqlite3.connect(gateway.data_dir / "outbox.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def enrolled_store(gateway: Gateway, path: Path) -> LedgerStore:
    store = LedgerStore(path)
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    return store


def start_ledger_thread(
    gateway: Gateway, store: LedgerStore, broker: MosquittoBroker, pki: TestPKI
) -> tuple[threading.Event, threading.Thread]:
    config = BrokerConfig(
        url=f"mqtts://{broker.host}:{broker.tls_port}", client_id="ledger",
        ca_file=pki.ca_file, cert_file=pki.ledger.cert, key_file=pki.ledger.key,
    )  # fmt: skip
    stop = threading.Event()
    service = LedgerService(Intake(store, gateway.ledger), config)
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_gateway_sigkilled_mid_drain_then_restarted(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI, tmp_path: Path
) -> None:
    store = enrolled_store(gateway, tmp_path / "ledger.sqlite")
    stop, thread = start_ledger_thread(gateway, store, broker, test_pki)
    try:
        configure_gateway(gateway, broker, test_pki)
        capture(gateway, 4000)
        sync = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "sync", "--once", "--data-dir",
             str(gateway.data_dir)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + DEADLINE_S
        while outbox_counts(gateway).get("acked", 0) < 500:
            assert time.monotonic() < deadline and sync.poll() is None
            time.sleep(0.02)
        os.kill(sync.pid, signal.SIGKILL)  # mid-drain: some acked, some sent, most pending
        sync.wait(10)
        mid = outbox_counts(gateway)
        assert mid.get("pending", 0) + mid.get("sent", 0) > 0
        _stats, counts = sync_once(gateway.data_dir, timeout_s=DEADLINE_S)
        assert counts["pending"] == counts["sent"] == 0
    finally:
        stop.set()
        thread.join(10)
        store.close()
    assert_exactly_once(gateway, tmp_path / "ledger.sqlite", 4001)


def start_ledger_process(
    cmd: list[str], broker: MosquittoBroker, nth: int, *, wait: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``custody-ledger run``; with ``wait``, until the broker has its subscription."""
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + DEADLINE_S
    while wait and broker.log_text().count("Sending SUBACK to ledger\n") < nth:
        assert time.monotonic() < deadline and proc.poll() is None, broker.log_text()[-2000:]
        time.sleep(0.05)
    return proc


def test_ledger_sigkilled_mid_drain_then_restarted(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI, ledger_dir: Path
) -> None:
    enrolled_store(gateway, ledger_dir / "ledger.sqlite").close()
    configure_gateway(gateway, broker, test_pki)
    capture(gateway, 4000)
    ledger_cmd = [
        sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), "run",
        "--broker", f"mqtts://{broker.host}:{broker.tls_port}",
        "--ca-file", str(test_pki.ca_file), "--cert-file", str(test_pki.ledger.cert),
        "--key-file", str(test_pki.ledger.key), "--http", "127.0.0.1:0",
    ]  # fmt: skip
    ledger = start_ledger_process(ledger_cmd, broker, 1)
    killed = threading.Event()
    restarted: list[subprocess.Popen[bytes]] = []

    def kill_ledger_once(acked: int) -> None:
        if acked >= 500 and not killed.is_set():
            killed.set()
            os.kill(ledger.pid, signal.SIGKILL)
            ledger.wait(10)
            restarted.append(subprocess.Popen(ledger_cmd, cwd=REPO, stderr=subprocess.DEVNULL))

    try:
        stats, counts = sync_once(gateway.data_dir, timeout_s=DEADLINE_S, progress=kill_ledger_once)
        assert killed.is_set()
        assert counts["pending"] == counts["sent"] == 0, stats
    finally:
        for proc in [ledger, *restarted]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
    assert_exactly_once(gateway, ledger_dir / "ledger.sqlite", 4001)


def test_a_gateway_with_another_devices_certificate_is_refused(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI, tmp_path: Path
) -> None:
    configure_gateway(gateway, broker, test_pki)
    other = test_pki.device("gw-someone-else")
    cfg = gateway.data_dir / "config.toml"
    device = test_pki.device(DEVICE)
    cfg.write_text(
        cfg.read_text()
        .replace(str(device.cert), str(other.cert))
        .replace(str(device.key), str(other.key))
    )
    capture(gateway, 3)
    with pytest.raises(SyncError, match="refused"):
        sync_once(gateway.data_dir, timeout_s=30)
    assert outbox_counts(gateway).get("acked", 0) == 0  # nothing released


def test_a_fake_ack_on_the_acks_topic_releases_nothing(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI
) -> None:
    """Someone with publish rights on the acks topic (here: a ledger certificate) but not the
    ledger's signing key sends acks; the gateway counts and ignores them."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from custody.envelope import event_id_of
    from custody.keys import LedgerKeyPair
    from sync.ack import Ack, sign_ack
    from sync.topics import acks_topic

    configure_gateway(gateway, broker, test_pki)
    capture(gateway, 5)
    key = load_device_key(gateway.data_dir / "device.key")
    conn = sqlite3.connect(gateway.data_dir / "outbox.sqlite")
    head = conn.execute("SELECT envelope FROM events WHERE seq = 6").fetchone()[0]
    conn.close()
    fake = sign_ack(
        LedgerKeyPair.generate("impostor"),
        Ack(DEVICE, key.kid, 6, event_id_of(head), 6, bytes(32), 0),
    )
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="ledger/faker",
        protocol=paho.MQTTv5,
    )
    client.tls_set_context(test_pki.client_context(test_pki.ledger))
    client.connect(broker.host, broker.tls_port)
    client.loop_start()
    stop = threading.Event()

    def keep_faking() -> None:
        while not stop.wait(0.2):
            client.publish(acks_topic(DEVICE), fake, qos=1)

    faker = threading.Thread(target=keep_faking, daemon=True)
    faker.start()
    paths = DataDir(gateway.data_dir)
    outbox = Outbox.open(paths.outbox, check=None, create=False)
    try:
        broker_cfg = broker_config(load_config(paths.config), gateway.data_dir, None)
        uplink = build_uplink(gateway.data_dir, outbox, broker_cfg)
        # The gateway's own uplink, run until it has received and judged several fakes (it
        # cannot drain: no ledger answers), not for a fixed time.
        judged = threading.Event()

        def until_fakes_judged(acked: int) -> None:
            if uplink.stats.bad_acks + uplink.stats.acks >= FAKE_ACKS:
                judged.set()

        stats = uplink.run(judged, timeout_s=DEADLINE_S, progress=until_fakes_judged)
        counts = outbox.counts_by_state()
    finally:
        outbox.close()
        stop.set()
        faker.join(5)
        client.loop_stop()
        client.disconnect()
    assert judged.is_set(), stats
    assert stats.bad_acks >= 1 and stats.acked == 0
    assert counts["acked"] == 0 and counts["sent"] + counts["pending"] == 6
