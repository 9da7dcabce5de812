"""Live records before backlog, through a real Mosquitto (TLS, ACL) and a real ledger intake.

A gateway comes back with a backlog; a record captured after the uplink
connected must reach the ledger before the backlog has finished, be logged
only after all of its predecessors (the chain), be released only by the
ledger's ack, and not be resent while it waits parked at the ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.uplink import build_uplink
from custody import cbor, cose
from custody.event import EventType
from ledger.intake import Intake, IntakeResult
from ledger.service import LedgerService
from ledger.store import LedgerStore
from sync.batch import decode_batch
from sync.mqtt import BrokerConfig
from sync.uplink import UplinkStats
from tests.brokers import MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.test_sync_e2e import DEVICE

BACKLOG = 2_000
# The operator's byte-rate cap stands in for a slow link: the chained batches of
# 2,000 weighings are ~400 kB, so at 25 kB/s the backlog takes 15 s or more of
# wall time however fast or loaded the machine, while one capture takes well
# under that. The assertions are on the order of arrival, never on durations.
RATE_CAP = 25_000


class RecordingIntake(Intake):
    """The real intake, noting the seqs of every batch in the order batches arrive."""

    arrivals: list[list[int]]

    def ingest(
        self, device_id: str, payload: bytes, *, correlation: bytes | None = None
    ) -> IntakeResult:
        seqs = [
            int(cbor.decode(cose.decode_sign1(env).payload)["seq"])
            for env in decode_batch(payload, device_id=device_id).envelopes
        ]
        self.arrivals.append(seqs)
        return super().ingest(device_id, payload, correlation=correlation)


@pytest.fixture
def ledger(
    tmp_path: Path, gateway: Gateway, broker: MosquittoBroker, test_pki: TestPKI
) -> Iterator[tuple[LedgerStore, RecordingIntake]]:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, "KOL-01", key.public_key, key.kid)
    intake = RecordingIntake(store, gateway.ledger)
    intake.arrivals = []
    config = BrokerConfig(
        url=f"mqtts://{broker.host}:{broker.tls_port}", client_id="ledger",
        ca_file=test_pki.ca_file, cert_file=test_pki.ledger.cert, key_file=test_pki.ledger.key,
    )  # fmt: skip
    service = LedgerService(intake, config)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    # Subscribed (the broker sent its SUBACK) before the gateway publishes.
    while "Sending SUBACK to ledger\n" not in broker.log_text():
        assert time.monotonic() < deadline, "the ledger did not subscribe"
        time.sleep(0.02)
    yield store, intake
    stop.set()
    thread.join(10)
    store.close()


def test_a_live_record_overtakes_the_backlog_without_being_released_early(
    gateway: Gateway,
    ledger: tuple[LedgerStore, RecordingIntake],
    broker: MosquittoBroker,
    test_pki: TestPKI,
) -> None:
    store, intake = ledger
    with gateway.recorder() as rec:  # seq 1 is its boot record
        futures = [
            rec.submit(EventType.WEIGHING, {"lot": "LOT-1"}, masses={"bag": 10_000 + i})
            for i in range(BACKLOG)
        ]
        for f in futures:
            f.result()
    backlog_last = BACKLOG + 1

    device = test_pki.device(DEVICE)
    config = BrokerConfig(
        url=f"mqtts://{broker.host}:{broker.tls_port}", client_id=DEVICE,
        ca_file=test_pki.ca_file, cert_file=device.cert, key_file=device.key,
    )  # fmt: skip
    outbox = Outbox.open(gateway.data_dir / "outbox.sqlite", check=None, create=False)
    try:
        uplink = build_uplink(
            gateway.data_dir, outbox, config,
            max_bytes_per_s=RATE_CAP, max_batch_bytes=16 * 1024, ack_timeout_s=5,
        )  # fmt: skip
        result: list[UplinkStats] = []
        runner = threading.Thread(
            target=lambda: result.append(
                uplink.run(threading.Event(), until_drained=True, timeout_s=300)
            )
        )
        runner.start()
        deadline = time.monotonic() + 60
        while not intake.arrivals:  # the uplink is connected and the backlog flowing
            assert time.monotonic() < deadline and runner.is_alive()
            time.sleep(0.02)

        with gateway.recorder() as rec:  # live: its boot record and a weighing
            live = rec.weighing(bag=12_345, lot="LOT-LIVE")
        assert live.seq == backlog_last + 2
        runner.join(300)
        assert not runner.is_alive()
    finally:
        outbox.close()

    stats = result[0]
    order = [seq for batch in intake.arrivals for seq in batch]
    # Arrival at the ledger: the live record came before the end of the backlog...
    assert order.index(live.seq) < order.index(backlog_last), intake.arrivals
    assert stats.live_batches >= 1
    # ...yet it is logged in chain order, each record exactly once...
    logged = store.events(DEVICE)
    assert [e.seq for e in logged] == list(range(1, live.seq + 1))
    # ...and was sent once: parked at the ledger, it was not resent by the ack
    # timeout (5 s here, shorter than the backlog) nor by the ledger's gap reports.
    assert order.count(live.seq) == 1
    assert stats.requeued == 0 and stats.events_sent == live.seq
    check = Outbox.open(gateway.data_dir / "outbox.sqlite", check=None)
    try:
        assert check.counts_by_state() == {
            "pending": 0, "sent": 0, "acked": live.seq, "rejected": 0,
        }  # fmt: skip
    finally:
        check.close()
