"""``custody-agent run`` with a real private Mosquitto (TLS, ACL) and a ledger intake.

Records captured by another process while the service runs reach the ledger
and are acked; with the broker down the service stays up and ``/healthz``
says ``degraded``; when the broker refuses our publishes (wrong certificate
for this device: a real fault, not an injected one) the sync worker raises
and the service exits non-zero so that systemd restarts it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.identity import load_device_key
from custody.exits import ExitCode
from ledger.intake import Intake
from ledger.service import LedgerService
from ledger.store import LedgerStore
from sync.mqtt import BrokerConfig
from tests.brokers import MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.support import run_cli
from tests.test_service import service, set_config, wait_until

DEVICE = "gw-kol-01"

# paho-mqtt 2.2 leaks its TLS socket when a reconnect fails while the broker is down
# (see tests/test_sync_e2e.py); the ledger's client in this process sees that.
PAHO_TLS_RECONNECT_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning",
    "ignore:unclosed <ssl.SSLSocket:ResourceWarning",
)


def configure(gateway: Gateway, broker: MosquittoBroker, pki: TestPKI, cert_of: str) -> None:
    creds = pki.device(cert_of)
    d = gateway.data_dir
    set_config(d, "service.http_port", "0")
    set_config(d, "sync.broker", f'"mqtts://{broker.host}:{broker.tls_port}"')
    set_config(d, "sync.ca_file", f'"{pki.ca_file}"')
    set_config(d, "sync.cert_file", f'"{creds.cert}"')
    set_config(d, "sync.key_file", f'"{creds.key}"')
    # Mosquitto drops shared-subscription messages while no ledger is connected; the
    # gateway resends after its ack timeout, kept short here.
    set_config(d, "sync.ack_timeout_s", "5")


@pytest.fixture
def ledger_store(
    tmp_path: Path, gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI
) -> Iterator[LedgerStore]:
    """A ledger intake service on the broker, in a thread of the test process."""
    store = LedgerStore(tmp_path / "ledger.sqlite")
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    config = BrokerConfig(
        url=f"mqtts://{broker.host}:{broker.tls_port}", client_id="ledger",
        ca_file=test_pki.ca_file, cert_file=test_pki.ledger.cert, key_file=test_pki.ledger.key,
    )  # fmt: skip
    ledger = LedgerService(Intake(store, gateway.ledger), config, checkpoint_interval_s=1)
    stop = threading.Event()
    thread = threading.Thread(target=ledger.run, args=(stop,), daemon=True)
    thread.start()
    yield store
    stop.set()
    thread.join(10)
    store.close()


@PAHO_TLS_RECONNECT_LEAK
def test_captures_are_acked_while_running_and_a_broker_outage_only_degrades(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI, ledger_store: LedgerStore
) -> None:
    configure(gateway, broker, test_pki, cert_of=DEVICE)
    d = str(gateway.data_dir)
    with service(gateway.data_dir) as svc:
        svc.wait_event("service.ready")
        for i in range(3):
            r = run_cli("--data-dir", d, "record", "seal", "--seal-id", f"SEAL-{i:04d}")
            assert r.returncode == 0, r.stderr

        def drained() -> bool:
            pending = svc.metric("custody_outbox_events", state="pending")
            sent = svc.metric("custody_outbox_events", state="sent")
            return pending == 0 and sent == 0

        wait_until(drained, "every record acked")
        acked = svc.metric("custody_outbox_events", state="acked")
        assert acked == 1 + 3 * 2  # service boot; 3x (record's boot, seal scan)
        assert ledger_store.log_size() == acked
        assert (svc.metric("custody_sync_last_ack_timestamp_seconds") or 0) > 0
        assert svc.metric("custody_sync_connected") == 1
        health = svc.health()
        assert health["status"] == "ok" and health["workers"]["sync"]["connected"] is True

        broker.stop()  # the site's uplink goes down
        wait_until(lambda: svc.health()["status"] == "degraded", "degraded health")
        sync = svc.health()["workers"]["sync"]
        assert sync["state"] == "degraded" and sync["alive"] is True, sync
        assert svc.metric("custody_sync_connected") == 0
        r = run_cli("--data-dir", d, "record", "seal", "--seal-id", "SEAL-OFFLINE")
        assert r.returncode == 0, r.stderr  # capture never waits for the link
        assert svc.metric("custody_outbox_events", state="pending") == 2
        assert svc.proc.poll() is None

        broker.restart()  # the link returns; the service reconnects by itself
        wait_until(drained, "the offline records acked after the outage")
        assert svc.metric("custody_outbox_events", state="acked") == acked + 2
        assert (svc.metric("custody_sync_reconnects_total") or 0) >= 1
        wait_until(lambda: svc.health()["status"] == "ok", "healthy again")
        assert svc.terminate() == 0
    assert ledger_store.log_size() == acked + 2
    verified = run_cli("--data-dir", d, "events", "verify")
    assert verified.returncode == 0, verified.stderr


def test_a_publish_the_broker_refuses_stops_the_service_non_zero(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI
) -> None:
    # The certificate of another device: the broker refuses our client id, the device id
    # (CONNACK 0x87; custody_identity.c). Retrying cannot help, so the sync worker raises and
    # the service must not limp on.
    configure(gateway, broker, test_pki, cert_of="gw-someone-else")
    with service(gateway.data_dir) as svc:
        rc = svc.wait_exit()
        assert rc == ExitCode.WORKER_FAILED, svc.log_text()
        failed = svc.wait_event("worker.failed")
        assert failed["worker"] == "sync" and failed["error"] == "SyncError"
        assert "refused" in failed["message"]
        assert svc.find("service.stopped")  # it drained before exiting
    counts = run_cli("--data-dir", str(gateway.data_dir), "status", "--json")
    assert '"acked": 0' in counts.stdout  # nothing was released


def test_sigterm_with_the_broker_down_still_drains_and_exits_zero(
    gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI
) -> None:
    configure(gateway, broker, test_pki, cert_of=DEVICE)
    broker.stop()
    with service(gateway.data_dir) as svc:
        svc.wait_event("service.ready")
        wait_until(lambda: svc.health()["workers"]["sync"]["state"] == "degraded", "degraded")
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit() == 0, svc.log_text()
        assert svc.find("worker.stopped", worker="sync")
