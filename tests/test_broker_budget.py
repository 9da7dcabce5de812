"""The broker's per-device publish budget (deploy/mosquitto/custody_identity.c, custody.conf
"Limits"), against a real Mosquitto on the production configuration.

Theory of operation. Mosquitto 2.0 PUBACKs QoS 1 publishes at once and enforces no Receive
Maximum, so one device pipelining publishes could fill the queue that the ledger's session shares
with the whole fleet. The identity plugin keeps a token bucket per certificate identity and
refuses a PUBLISH over it with PUBACK 0x87, without distributing it and without disconnecting.
The tests flood with a device certificate as fast as the broker answers and count: what was
refused, what the ledger-like consumer got (live, or queued while it was away), and that an
honest device next to the flooder, and an honest gateway draining a backlog with the real
``custody-agent sync --once``, are never refused. Reconnecting does not refill the bucket, and
the table of buckets is bounded. A last test shows the gateway's side: with a tiny budget its
batches are refused, kept and sent again until the ledger has acked them all.

Bounds are computed from the budget the broker was given (MESSAGES_PER_S and MESSAGE_BURST, read
from custody.conf) and the flood's measured duration, from its first publish to its last PUBACK,
which spans everything the broker counted; they hold on a loaded machine, since a slower flood
only gets fewer messages through.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.recorder import Recorder
from agent.uplink import sync_once
from custody.event import EventType
from tests.brokers import CONF_TEMPLATE, MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.test_broker_acl import (
    DEADLINE_S,
    GRACE_S,
    SHARED_EVENTS,
    OpenClient,
    events,
    open_client,
)
from tests.test_enrolment import Central, LedgerProcess, central, enrol_gateway, sync
from tests.test_sync_e2e import DEVICE, PAHO_TLS_RECONNECT_LEAK, Ledger, ledger

__all__ = ["central", "ledger", "open_client"]  # fixtures, re-used


def _conf_value(name: str) -> float:
    found = re.search(rf"^plugin_opt_{name} (\S+)$", CONF_TEMPLATE.read_text(), re.MULTILINE)
    assert found, f"custody.conf sets no plugin_opt_{name}"
    return float(found.group(1))


# The production budget (custody.conf), which the test brokers run with.
MESSAGES_PER_S = _conf_value("publish_messages_per_s")
MESSAGE_BURST = _conf_value("publish_message_burst")
BYTES_PER_S = _conf_value("publish_bytes_per_s")
BYTE_BURST = _conf_value("publish_byte_burst")

NOT_AUTHORIZED = 0x87  # the only refusal code Mosquitto 2.0.11 gives a plugin
# The flood: 1-KB batches on the flooder's own events topic, through a window of FLOOD_WINDOW
# unacknowledged publishes, 50 times the Receive Maximum (20) the broker announces.
FLOOD_S = 3.0
FLOOD_WINDOW = 1000
FLOOD_PAYLOAD_BYTES = 1000
HONEST_BATCHES = 30
# Mosquitto's own default max_queued_messages: a flat-out flood passes it in a fraction of a
# second, the budget in about eight.
MOSQUITTO_DEFAULT_QUEUE = 1000
OVER_BUDGET = "is over its publish budget"


def admitted_at_most(seconds: float) -> int:
    """What the budget lets one identity publish in ``seconds`` from a full bucket."""
    return int(MESSAGE_BURST + MESSAGES_PER_S * seconds) + 1


class Flooder:
    """A paho client with a device certificate publishing numbered 1-KB batches as fast as the
    broker answers them, at most FLOOD_WINDOW unanswered; counts PUBACKs by reason code."""

    def __init__(self, broker: MosquittoBroker, context: ssl.SSLContext, device_id: str) -> None:
        self.topic = events(device_id)
        self.published = 0  # written by the flood thread only
        self.codes: Counter[int] = Counter()  # written by paho's network thread only
        self.disconnects: list[ReasonCode] = []
        self.started = self.finished = 0.0  # first publish, last PUBACK (monotonic)
        self._answered = threading.Condition()
        self._stop = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.tls_set_context(context)
        client.max_inflight_messages_set(FLOOD_WINDOW)
        client.on_publish = self._on_publish
        client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.append(reason)
        client.connect(broker.host, broker.tls_port, keepalive=30)
        client.loop_start()
        self._client = client
        self._thread = threading.Thread(target=self._flood, name="flooder", daemon=True)

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._answered:  # our lock only, held for a counter update
            self.codes[reason.value] += 1
            self.finished = time.monotonic()
            self._answered.notify_all()

    @property
    def accepted(self) -> int:
        return sum(n for code, n in self.codes.items() if code < 0x80)

    @property
    def refused(self) -> int:
        return sum(n for code, n in self.codes.items() if code >= 0x80)

    def _outstanding(self) -> int:
        return self.published - self.codes.total()

    def _flood(self) -> None:
        self.started = time.monotonic()
        while not self._stop.is_set():
            with self._answered:
                if not self._answered.wait_for(
                    lambda: self._outstanding() < FLOOD_WINDOW, timeout=0.1
                ):
                    continue
            # Outside our lock: publish() takes paho's locks, which its thread holds while it
            # calls _on_publish.
            self._client.publish(self.topic, flood_payload(self.published), qos=1)
            self.published += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing and wait until every PUBLISH is answered."""
        self._stop.set()
        self._thread.join(DEADLINE_S)
        with self._answered:
            assert self._answered.wait_for(lambda: self._outstanding() == 0, timeout=DEADLINE_S)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def seconds(self) -> float:
        """From the first publish to the last PUBACK: the longest the broker can have counted."""
        return self.finished - self.started


def flood_payload(n: int) -> bytes:
    return f"flood {n:08d} ".encode().ljust(FLOOD_PAYLOAD_BYTES, b"f")


def is_flood(payload: bytes) -> bool:
    return payload.startswith(b"flood ")


def test_a_flooding_device_is_held_to_its_budget_and_an_honest_one_is_not_refused(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(SHARED_EVENTS)
    honest = open_client("dev-b")
    flooder = Flooder(broker, test_pki.client_context(test_pki.device("dev-a")), "dev-a")

    flooder.start()
    started = time.monotonic()
    sent: list[bytes] = []
    for n in range(HONEST_BATCHES):
        # Paced over the flood like a gateway's batches (10/s), each waiting for its PUBACK.
        while time.monotonic() < started + FLOOD_S * n / HONEST_BATCHES:
            time.sleep(0.005)
        batch = f"honest batch {n}".encode()
        assert not honest.publish(events("dev-b"), batch).is_failure, n
        sent.append(batch)
    flooder.stop()

    bound = admitted_at_most(flooder.seconds)
    print(
        f"flood: {flooder.published} published in {flooder.seconds:.2f} s, "
        f"{flooder.accepted} accepted (budget bound {bound}), {flooder.refused} refused"
    )
    # Flat out, the flood tried many times its budget; all but the budget was refused with
    # PUBACK 0x87 on a connection that stayed up.
    assert flooder.published > 5 * bound
    assert set(flooder.codes) == {0, NOT_AUTHORIZED}
    assert flooder.accepted <= bound
    assert flooder.accepted >= MESSAGE_BURST  # the burst itself passes
    assert flooder.disconnects == [] or all(r.value == 0 for r in flooder.disconnects)

    # The ledger got every honest batch and exactly the flood's accepted ones, nothing refused.
    got = ledger.collect(flooder.accepted + len(sent), timeout=DEADLINE_S * 2)
    got += ledger.received_within(GRACE_S)
    payloads = [bytes(m.payload) for m in got]
    assert sorted(p for p in payloads if not is_flood(p)) == sorted(sent)
    assert sum(map(is_flood, payloads)) == flooder.accepted
    log = broker.log_text()
    assert f"custody_identity: client 'dev-a' {OVER_BUDGET}" in log
    assert f"client 'dev-b' {OVER_BUDGET}" not in log
    assert "dropped" not in log


def test_the_ledgers_queue_holds_only_the_budget_while_it_is_away(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger", clean_start=False, session_expiry=3600)
    ledger.subscribe(SHARED_EVENTS)
    ledger.close()  # a persistent session with nobody reading: everything queues
    honest = open_client("dev-b")
    flooder = Flooder(broker, test_pki.client_context(test_pki.device("dev-a")), "dev-a")
    flooder.start()
    sent = []
    for n in range(HONEST_BATCHES):
        time.sleep(FLOOD_S / HONEST_BATCHES)
        batch = f"honest batch {n}".encode()
        assert not honest.publish(events("dev-b"), batch).is_failure, n
        sent.append(batch)
    flooder.stop()
    bound = admitted_at_most(flooder.seconds)

    back = open_client("ledger", clean_start=False, session_expiry=3600)
    assert back.session_present
    queued = back.collect(flooder.accepted + len(sent), timeout=DEADLINE_S * 2)
    queued += back.received_within(GRACE_S)
    payloads = [bytes(m.payload) for m in queued]
    flood = sum(map(is_flood, payloads))
    print(
        f"ledger away: flood {flooder.published} published, {flooder.accepted} accepted, "
        f"{flood} queued (bound {bound}); honest {len(sent)} sent, "
        f"{len(payloads) - flood} queued"
    )
    # Without the budget the flood alone would have passed Mosquitto's default queue limit
    # many times over; with it, the session's queue holds the budget and the honest batches.
    assert flooder.published > 5 * MOSQUITTO_DEFAULT_QUEUE
    assert flood == flooder.accepted <= bound < MOSQUITTO_DEFAULT_QUEUE
    assert sorted(p for p in payloads if not is_flood(p)) == sorted(sent)
    assert "Outgoing messages are being dropped" not in broker.log_text()


def test_a_reconnect_does_not_refill_the_bucket(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(SHARED_EVENTS)
    context = test_pki.client_context(test_pki.device("dev-a"))
    floods = []
    for _ in range(3):  # flood, drop the connection, come back at once and flood again
        flooder = Flooder(broker, context, "dev-a")
        flooder.start()
        time.sleep(1.0)
        flooder.stop()
        floods.append(flooder)
    accepted = sum(f.accepted for f in floods)
    # The bucket is the identity's: one burst for the whole run, not one per connection (which
    # would let 3 x 200 through on top of the rate).
    bound = admitted_at_most(floods[-1].finished - floods[0].started)
    print(f"reconnecting flood: {[f.accepted for f in floods]} accepted, bound {bound}")
    assert all(f.refused > 0 for f in floods)  # each connection used up what it was given
    assert accepted <= bound


# One message empties a bucket, which then takes 2 s to refill: entries stay "mid-burst".
SLOW_BUDGET = {
    "publish_messages_per_s": "0.5",
    "publish_message_burst": "1",
    "publish_identities": "2",
}


@pytest.mark.parametrize("broker", [SLOW_BUDGET], indirect=True, ids=["2-identities"])
def test_the_budget_table_is_bounded_and_forgets_only_full_buckets(
    broker: MosquittoBroker, open_client: OpenClient
) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(SHARED_EVENTS)
    for _ in range(3):
        assert not ledger.publish("custody/v1/dev/dev-a/acks", b"ack").is_failure  # not limited
    dev_a, dev_b, dev_c = (open_client(d) for d in ("dev-a", "dev-b", "gw-kol-01"))
    assert not dev_a.publish(events("dev-a"), b"a 1").is_failure
    assert dev_a.publish(events("dev-a"), b"a 2").value == NOT_AUTHORIZED  # its budget
    assert not dev_b.publish(events("dev-b"), b"b 1").is_failure
    # Two identities tracked, both mid-burst: a third is refused (fail-closed), and logged.
    assert dev_c.publish(events("gw-kol-01"), b"c 1").value == NOT_AUTHORIZED
    assert "2 identities are mid-burst" in broker.log_text()
    time.sleep(2.2)  # both buckets full again: the same as no entry, so they may be forgotten
    assert not dev_c.publish(events("gw-kol-01"), b"c 2").is_failure
    assert not dev_a.publish(events("dev-a"), b"a 3").is_failure
    got = [bytes(m.payload) for m in ledger.collect(4)] + [
        bytes(m.payload) for m in ledger.received_within(GRACE_S)
    ]
    assert sorted(got) == [b"a 1", b"a 3", b"b 1", b"c 2"]


# --- an honest gateway, with the real commands -------------------------------------------------

BACKLOG = 3000
# Mosquitto's debug line for every PUBLISH it takes in (src/handle_publish.c), timestamped to
# the second (custody.conf log_timestamp_format).
RECEIVED = re.compile(
    r"^(\S+): Received PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '[^']*', \.\.\. "
    r"\((\d+) bytes\)\)$",
    re.MULTILINE,
)


def peak_per_second(log: str, client_id: str) -> tuple[int, int]:
    """The most messages and payload bytes ``client_id`` published within one logged second."""
    messages: Counter[str] = Counter()
    payload: Counter[str] = Counter()
    for stamp, sender, size in RECEIVED.findall(log):
        if sender == client_id:
            messages[stamp] += 1
            payload[stamp] += int(size)
    return max(messages.values(), default=0), max(payload.values(), default=0)


def test_an_honest_backlog_drain_is_never_refused(tmp_path: Path, central: Central) -> None:
    gw = enrol_gateway(tmp_path, central, "gw-kol-01")
    with Recorder(gw) as rec:  # a gateway back from an outage: a backlog, captured offline
        futures = [
            rec.submit(EventType.WEIGHING, {"lot": "LOT-1"}, masses={"bag": 15_000 + i})
            if i % 3 == 0
            else rec.submit(EventType.SEAL_SCAN, {"seal": f"SEAL-{i:06d}"})
            for i in range(BACKLOG)
        ]
        for f in futures:
            f.result()
    with LedgerProcess(central):
        result = sync(gw, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outbox"]["pending"] + summary["outbox"]["sent"] == 0, summary
    log = central.broker.log_text()
    peak_messages, peak_bytes = peak_per_second(log, "gw-kol-01")
    print(
        f"honest drain: {summary['acked']} records in {summary['batches_sent']} batches, "
        f"peak {peak_messages} messages and {peak_bytes} bytes in one second "
        f"(budget {MESSAGES_PER_S:.0f}/s, burst {MESSAGE_BURST:.0f}; "
        f"{BYTES_PER_S:.0f} B/s, burst {BYTE_BURST:.0f})"
    )
    assert OVER_BUDGET not in log
    assert "Denied PUBLISH from gw-kol-01" not in log
    assert peak_messages > 0


# --- the gateway's side of a refusal -------------------------------------------------------------

TIGHT_BUDGET = {"publish_messages_per_s": "2", "publish_message_burst": "3"}


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, tmp_path: Path, test_pki: TestPKI
) -> Iterator[MosquittoBroker]:
    """The suite's broker; parametrized (indirect) with plugin options, the production
    configuration with those budget lines replaced."""
    template = CONF_TEMPLATE
    options: dict[str, str] = getattr(request, "param", {})
    if options:
        text = CONF_TEMPLATE.read_text()
        for name, value in options.items():
            text, n = re.subn(
                rf"^plugin_opt_{name} \S+$", f"plugin_opt_{name} {value}", text, flags=re.MULTILINE
            )
            assert n == 1, name
        template = tmp_path / "custody-budget.conf"
        template.write_text(text)
    with MosquittoBroker(tmp_path / "mosquitto", test_pki, template=template) as running:
        yield running


@PAHO_TLS_RECONNECT_LEAK
@pytest.mark.parametrize("broker", [TIGHT_BUDGET], indirect=True, ids=["2-per-s"])
def test_a_gateway_over_the_budget_keeps_its_records_and_sends_them_again(
    gateway: Gateway, ledger: Ledger, broker: MosquittoBroker
) -> None:
    n = 1500  # about ten batches at the uplink's first batch sizes: several times the burst
    with gateway.recorder() as rec:
        futures = [rec.submit(EventType.SEAL_SCAN, {"seal": f"T-{i:05d}"}) for i in range(n)]
        for f in futures:
            f.result()
    stats, counts = sync_once(gateway.data_dir, timeout_s=60)
    refusals = broker.log_text().count(f"Denied PUBLISH from {DEVICE} ")
    print(f"tight budget: {stats.batches_sent} batches sent, {refusals} refused, {stats}")
    # Refused batches were not lost, nor did they stop the gateway: kept, sent again, acked.
    assert refusals > 0 and stats.requeued > 0
    assert stats.refused_publishes == 0
    assert counts == {"pending": 0, "sent": 0, "acked": n + 1, "rejected": 0}, stats
    logged = ledger.store.events(DEVICE)
    assert [e.seq for e in logged] == list(range(1, n + 2))  # each once, in seq order
