"""The one failure that may hold the intake: the store unreachable. A real PostgreSQL is stopped
under a running ``LedgerService`` (real Mosquitto): the batch that arrives meanwhile is neither
acknowledged nor dead-lettered, /healthz says ``failing`` (HTTP 503), and once the server is back
the service reconnects, logs the batch exactly once and acks it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from custody.keys import DeviceKey, LedgerKeyPair
from ledger.dialect_pg import PostgresDialect
from ledger.intake import Intake
from ledger.service import IntakeSettings, LedgerService
from ledger.store import LedgerStore
from sync.ack import verify_ack
from sync.batch import encode_batch
from sync.mqtt import BrokerConfig
from sync.topics import acks_topic, events_topic
from tests.brokers import MosquittoBroker
from tests.postgres import PostgresError, ThrowawayCluster, pg_bindir
from tests.support import wait_until
from tests.test_intake_hostile import signed

DEVICE = "gw-kol-01"
DEADLINE_S = 60.0


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    try:
        pg_bindir()
    except PostgresError as exc:  # pragma: no cover - the Debian package is not installed
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {exc}")
    c = ThrowawayCluster().start()
    try:
        yield c
    finally:
        c.stop()
        c.remove()


def health(address: tuple[str, int]) -> tuple[int, dict[str, object]]:
    url = f"http://{address[0]}:{address[1]}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_intake_waits_out_a_store_outage_and_loses_nothing(
    tmp_path: Path, cluster: ThrowawayCluster
) -> None:
    ledger = LedgerKeyPair.generate("outage-ledger")
    key = DeviceKey.generate()
    store = LedgerStore(PostgresDialect(cluster.admin_dsn))
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    with MosquittoBroker(tmp_path / "broker") as broker:
        url = f"mqtt://{broker.host}:{broker.plain_port}"
        service = LedgerService(
            Intake(store, ledger), BrokerConfig(url=url, client_id="ledger"),
            settings=IntakeSettings(http=("127.0.0.1", 0)),
        )  # fmt: skip
        assert service.http is not None
        address = service.http.address
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()
        acks: list[bytes] = []
        device = paho.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=paho.MQTTv5)
        device.on_message = lambda c, u, m: acks.append(bytes(m.payload))
        device.connect(broker.host, broker.plain_port)
        device.loop_start()
        try:
            device.subscribe(acks_topic(DEVICE), qos=1)
            wait_until(lambda: "$share/ledger/" in broker.log_text(), "the subscription")
            assert health(address)[0] == 200
            cluster.stop()
            device.publish(
                events_topic(DEVICE), encode_batch(DEVICE, [signed(key, 1, bytes(32))]), qos=1
            ).wait_for_publish(10)
            wait_until(lambda: health(address)[0] == 503, "/healthz to say failing")
            _, body = health(address)
            assert body["status"] == "failing" and body["store_up"] is False
            # The service keeps probing the store; nothing is acked meanwhile.
            wait_until(lambda: service.counters["store_probes_failed"] >= 2, "two failed probes")
            assert acks == []
            assert thread.is_alive()
            cluster.start()
            wait_until(lambda: bool(acks), "the ack after the store is back")
            ack = verify_ack(acks[0], ledger.public, device_id=DEVICE, device_kid=key.kid)
            assert (ack.seq, ack.rejected) == (1, ())
            wait_until(lambda: health(address)[0] == 200, "/healthz ok again")
        finally:
            device.disconnect()
            device.loop_stop()
            stop.set()
            thread.join(15)
    assert [e.seq for e in store.events(DEVICE)] == [1]
    assert store.dead_letters() == []
    assert service.counters["dead_letters"] == 0
    store.close()
