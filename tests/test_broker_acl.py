"""Mosquitto with the production config, ACL and identity plugin (deploy/mosquitto/): per-device
isolation by certificate identity, mutual TLS, client ids bound to certificates (no session
takeover), the ledger's shared subscription, queues that survive a restart, and the Last Will.
The publish budget that keeps one flooding device from filling the ledger's queue is tested in
tests/test_broker_budget.py.

Theory of operation. Mosquitto 2.0 grants every SUBSCRIBE and checks read permission per message
at delivery, and answers a denied PUBLISH with a PUBACK, so SUBACK and PUBACK codes prove nothing
about isolation: every test asserts on what a subscriber actually receives. To show that something
did NOT arrive, a test sends a forbidden message and then an allowed "sentinel" on the same
connection: MQTT keeps one publisher's messages in order to each subscriber (MQTT 5 §4.6), so once
the sentinel is in, the forbidden one would already be in too; a short grace period after it
catches a broker that reorders.

Client ids: the identity plugin admits a certificate only under its CN as client id, or
"ledger/WORKER" for the ledger (deploy/mosquitto/custody_identity.c), and refuses anything else
with CONNACK 0x87 before any session is touched. The takeover tests show the victim's session
intact afterwards: still connected, or resumed with its queued messages.

Clients are paho-mqtt 2 (MQTT 5, callback API version 2) over TLS with the test PKI; their
callbacks only enqueue (STYLE.md 7). Every wait has a deadline.
"""

from __future__ import annotations

import datetime as dt
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sync.ack import MAX_ACK_BYTES
from sync.batch import MAX_BATCH_BYTES
from tests.brokers import CertKey, MosquittoBroker, TestPKI

# Upper bound for anything that should happen (it takes milliseconds on loopback).
DEADLINE_S = 5.0
# How long to keep watching for a message that must not arrive, after the sentinel arrived.
GRACE_S = 0.3

ALL_EVENTS = "custody/v1/dev/+/events"
ALL_STATUS = "custody/v1/dev/+/status"
SHARED_EVENTS = "$share/ledger/custody/v1/dev/+/events"


def events(device_id: str) -> str:
    return f"custody/v1/dev/{device_id}/events"


def acks(device_id: str) -> str:
    return f"custody/v1/dev/{device_id}/acks"


def status(device_id: str) -> str:
    return f"custody/v1/dev/{device_id}/status"


class Endpoint:
    """One paho client on the broker's TLS listener; callbacks only put into queues."""

    def __init__(
        self,
        broker: MosquittoBroker,
        context: ssl.SSLContext,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        will: tuple[str, bytes] | None = None,
        username: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self._connacks: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self._pubacks: dict[int, ReasonCode] = {}
        self._aborted = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        if username is not None:
            client.username_pw_set(username, "any password")
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry:
            properties.SessionExpiryInterval = session_expiry
        self._client = client
        client.connect(
            broker.host,
            broker.tls_port,
            keepalive=30,
            clean_start=clean_start,
            properties=properties,
        )
        client.loop_start()
        reason, self.session_present = self._connacks.get(timeout=DEADLINE_S)
        assert not reason.is_failure, f"{client_id}: CONNACK {reason}"

    # paho callbacks (paho's network thread): enqueue only.

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        self._connacks.put((reason, flags.session_present))

    def _on_subscribe(
        self, _c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        self._subacks.put(reasons)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._pubacks[mid] = reason

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.disconnects.put(reason)

    # Test-side API.

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        """Subscribe at QoS 1 and wait for the SUBACK (whose codes prove nothing, see above)."""
        result, _mid = self._client.subscribe([(topic, 1) for topic in topics])
        assert result == MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._subacks.get(timeout=DEADLINE_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and wait for the PUBACK; returns its reason code."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=DEADLINE_S)
        assert info.is_published(), f"{self.client_id}: no PUBACK for {topic}"
        return self._pubacks[info.mid]

    def publish_many(self, topic: str, payloads: list[bytes]) -> None:
        """Publish at QoS 1 without waiting in between; wait until every PUBACK is in."""
        infos = [self._client.publish(topic, p, qos=1) for p in payloads]
        deadline = time.monotonic() + DEADLINE_S * 2
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        assert all(info.is_published() for info in infos)
        assert all(not self._pubacks[info.mid].is_failure for info in infos)

    def expect(self, timeout: float = DEADLINE_S) -> mqtt.MQTTMessage:
        """The next message; fails the test when none arrives before the deadline."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pass
        pytest.fail(f"{self.client_id}: no message within {timeout} s")

    def received_within(self, seconds: float) -> list[mqtt.MQTTMessage]:
        """Everything that arrives in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        got = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return got

    def collect(self, count: int, timeout: float = DEADLINE_S) -> list[mqtt.MQTTMessage]:
        """Up to ``count`` messages, stopping at the deadline."""
        deadline = time.monotonic() + timeout
        got: list[mqtt.MQTTMessage] = []
        while len(got) < count and (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        """DISCONNECT (a normal close: no Last Will) and stop the network thread."""
        if self._aborted:
            return
        self._client.disconnect()
        self._client.loop_stop()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash or a cut cable would."""
        self._aborted = True
        self._client.loop_stop()
        sock = self._client.socket()
        assert sock is not None
        sock.close()


OpenClient = Callable[..., Endpoint]


@pytest.fixture
def open_client(broker: MosquittoBroker, test_pki: TestPKI) -> Iterator[OpenClient]:
    """``open_client(identity, client_id=identity, **Endpoint options)``; identity is "ledger" or
    a device id (the certificate CN). Everything opened is closed at teardown."""
    opened: list[Endpoint] = []

    def open_(identity: str, client_id: str | None = None, **options: Any) -> Endpoint:
        cert = test_pki.ledger if identity == "ledger" else test_pki.device(identity)
        endpoint = Endpoint(broker, test_pki.client_context(cert), client_id or identity, **options)
        opened.append(endpoint)
        return endpoint

    yield open_
    for endpoint in opened:
        endpoint.close()


# (a) Writes: a device publishes only on its own topics.


def test_device_cannot_publish_on_another_devices_topics(open_client: OpenClient) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(ALL_EVENTS, ALL_STATUS)
    # The username dev-a sends names another identity: ignored, the identity is the certificate's
    # CN (the ACL keys on %u, never on the client id %c, which is bound to the CN anyway).
    dev_a = open_client("dev-a", username="dev-b")

    refusals = [
        dev_a.publish(events("dev-b"), b"forged event"),
        dev_a.publish(status("dev-b"), b"forged death", retain=True),
        dev_a.publish(acks("dev-b"), b"forged ack"),  # the ledger's right
    ]
    dev_a.publish(events("dev-a"), b"sentinel")

    first = ledger.expect()
    assert (first.topic, first.payload) == (events("dev-a"), b"sentinel")
    assert ledger.received_within(GRACE_S) == []
    # Not the criterion above, but what the uplink sees: 2.0.11 answers a denied QoS 1 publish with
    # PUBACK 0x87 "Not authorized" and keeps the connection.
    assert [reason.value for reason in refusals] == [0x87] * 3


# (b) Reads: a device receives only its own acks.


def test_device_cannot_receive_another_devices_acks(open_client: OpenClient) -> None:
    dev_a = open_client("dev-a")
    dev_b = open_client("dev-b")
    # Mosquitto grants all three (it does not check subscriptions); delivery is what counts.
    dev_a.subscribe(acks("dev-b"), "custody/v1/dev/+/acks", "#")
    dev_b.subscribe(acks("dev-b"))
    ledger = open_client("ledger")

    ledger.publish(acks("dev-b"), b"ack for dev-b")
    ledger.publish(acks("dev-a"), b"sentinel ack for dev-a")

    to_b = dev_b.expect()
    assert (to_b.topic, to_b.payload) == (acks("dev-b"), b"ack for dev-b")
    to_a = [dev_a.expect(), *dev_a.received_within(GRACE_S)]
    # Overlapping subscriptions deliver one copy each (allow_duplicate_messages defaults to true).
    assert {(m.topic, m.payload) for m in to_a} == {(acks("dev-a"), b"sentinel ack for dev-a")}


# (c) Mutual TLS: only certificates from our CA get in.


def _connack_outcome(
    broker: MosquittoBroker,
    context: ssl.SSLContext,
    client_id: str,
    *,
    clean_start: bool = True,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
) -> str:
    """How far a client gets: "connected", or how it was refused ("refused by CONNACK: <reason>",
    "disconnected: ...", "TLS handshake failed: ..."). Driven without a thread. MQTT 5 attempts
    ask for a persistent session (Session Expiry Interval 1 h), as a takeover would."""
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean_start,
        protocol=protocol,
    )
    client.tls_set_context(context)
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.put(
        f"refused by CONNACK: {reason}" if reason.is_failure else "connected"
    )
    client.on_disconnect = lambda _c, _u, _f, reason, _p: outcome.put(f"disconnected: {reason}")
    options: dict[str, Any] = {}
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        options = {"clean_start": clean_start, "properties": properties}
    try:
        client.connect(broker.host, broker.tls_port, keepalive=30, **options)
    except (ssl.SSLError, OSError) as exc:
        _close_sockets_left_in(exc)
        return f"TLS handshake failed: {exc}"
    deadline = time.monotonic() + DEADLINE_S
    while outcome.empty() and time.monotonic() < deadline:
        if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            break
    result = outcome.get_nowait() if not outcome.empty() else "no answer"
    if result == "connected":
        client.disconnect()
        client.loop(timeout=0.05)
    elif (sock := client.socket()) is not None:
        sock.close()  # refused: the broker closes its end; close ours now, not at collection
    return result


def _close_sockets_left_in(exc: BaseException) -> None:
    """paho 2.2 does not close its SSLSocket when the handshake fails inside connect(); the
    socket is then only referenced by the traceback and would raise ResourceWarning later."""
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """Another CA issuing a certificate for the same CN as a real device."""
    return TestPKI.create(tmp_path_factory.mktemp("rogue-pki"), ["dev-a"])


@pytest.mark.parametrize(
    "tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_only_certificates_from_our_ca_can_connect(
    broker: MosquittoBroker, test_pki: TestPKI, rogue_pki: TestPKI, tls_max: ssl.TLSVersion
) -> None:
    def context(identity: CertKey | None) -> ssl.SSLContext:
        ctx = test_pki.client_context(identity)  # trusts our broker; presents `identity`
        ctx.maximum_version = tls_max
        return ctx

    # Control: the same code path with a genuine certificate connects.
    assert _connack_outcome(broker, context(test_pki.device("dev-a")), "dev-a") == "connected"
    # Refused at the TLS layer (require_certificate), not merely by a CONNACK: TLS 1.2 fails in
    # the handshake; under TLS 1.3 the client's handshake completes first and the broker then
    # drops the connection, so the client sees a disconnect and never a CONNACK.
    no_cert = _connack_outcome(broker, context(None), "dev-a")
    rogue = _connack_outcome(broker, context(rogue_pki.device("dev-a")), "dev-a")
    for outcome in (no_cert, rogue):
        assert outcome.startswith(("TLS handshake failed", "disconnected")), outcome


# (d) The ledger's shared subscription splits the load.


def test_shared_subscription_delivers_each_event_to_exactly_one_ledger_worker(
    open_client: OpenClient,
) -> None:
    workers = [open_client("ledger", f"ledger/{n}") for n in (1, 2)]
    for worker in workers:
        worker.subscribe(SHARED_EVENTS)
    sent = set()
    for device_id in ("dev-a", "dev-b"):
        device = open_client(device_id)
        payloads = [f"{device_id} batch {n}".encode() for n in range(20)]
        device.publish_many(events(device_id), payloads)
        sent |= {(events(device_id), p) for p in payloads}

    received: list[list[tuple[str, bytes]]] = [[], []]
    deadline = time.monotonic() + DEADLINE_S
    while sum(map(len, received)) < len(sent) and time.monotonic() < deadline:
        for worker, got in zip(workers, received, strict=True):
            got += [(m.topic, bytes(m.payload)) for m in worker.received_within(0.05)]
    got_1, got_2 = (set(got) for got in received)
    assert len(got_1) == len(received[0]) and len(got_2) == len(received[1])  # no duplicates
    assert got_1.isdisjoint(got_2)
    assert got_1 | got_2 == sent
    assert got_1 and got_2  # both workers took a share
    assert all(not w.received_within(GRACE_S) for w in workers)


# (e) Persistence: queued QoS 1 messages survive a broker restart, beyond the default 1000.


def test_offline_session_queue_survives_restart_beyond_default_limit(
    broker: MosquittoBroker, open_client: OpenClient
) -> None:
    ledger = open_client("ledger", "ledger/durable", clean_start=False, session_expiry=3600)
    ledger.subscribe(ALL_EVENTS)
    ledger.close()
    # 1520 > Mosquitto's default max_queued_messages (1000), which would silently drop 520
    # while still answering every PUBACK with success. From several devices, as in the field:
    # one device's publish budget passes 200 at once (custody.conf, tests/test_broker_budget.py).
    sent: dict[str, list[bytes]] = {}
    for device_id in (f"gw-queue-{n}" for n in range(8)):
        sent[device_id] = [f"{device_id} batch {n:03d}".encode() for n in range(190)]
        device = open_client(device_id)
        device.publish_many(events(device_id), sent[device_id])
        device.close()

    broker.stop()  # SIGTERM: Mosquitto writes mosquitto.db
    assert (broker.persistence_dir / "mosquitto.db").is_file()
    broker.restart()

    ledger = open_client("ledger", "ledger/durable", clean_start=False, session_expiry=3600)
    assert ledger.session_present
    got = ledger.collect(sum(map(len, sent.values())), timeout=DEADLINE_S * 2)
    by_device: dict[str, list[bytes]] = {device_id: [] for device_id in sent}
    for message in got:
        by_device[message.topic.split("/")[3]].append(bytes(message.payload))
    assert by_device == sent  # all of them, once, each device's in order
    assert ledger.received_within(GRACE_S) == []
    assert "dropped" not in broker.log_text()


# (f) Birth/death: the Last Will marks an abruptly lost device offline, retained.


def test_last_will_publishes_retained_death_when_connection_dies(
    open_client: OpenClient,
) -> None:
    ledger = open_client("ledger", "ledger/live")
    ledger.subscribe(ALL_STATUS)
    device = open_client("dev-a", will=(status("dev-a"), b"dead boot=7"))
    device.publish(status("dev-a"), b"alive boot=7", retain=True)
    assert ledger.expect().payload == b"alive boot=7"

    device.abort()

    death = ledger.expect()
    assert (death.topic, death.payload) == (status("dev-a"), b"dead boot=7")
    # Retained: a ledger that subscribes later learns the device is offline. (A live subscriber
    # sees retain=False: MQTT 5 clears it unless subscribed with Retain As Published.)
    late = open_client("ledger", "ledger/late")
    late.subscribe(ALL_STATUS)
    retained = late.expect()
    assert (retained.topic, retained.payload, retained.retain) == (
        status("dev-a"),
        b"dead boot=7",
        True,
    )


def test_last_will_on_another_devices_status_is_not_published(open_client: OpenClient) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(ALL_STATUS)
    # Accepted at CONNECT by 2.0.11, but the write check at publication refuses it.
    attacker = open_client("dev-a", will=(status("dev-b"), b"dead (forged by dev-a)"))
    attacker.abort()
    witness = open_client("dev-b")
    witness.publish(status("dev-b"), b"sentinel")

    got = [ledger.expect(), *ledger.received_within(GRACE_S)]
    assert [(m.topic, m.payload) for m in got] == [(status("dev-b"), b"sentinel")]


# (g) Client ids are bound to certificates: no session takeover.

REFUSED = "refused by CONNACK: Not authorized"  # 0x87 (MQTT 3.1.1: return code 5)


def test_a_certificate_connects_only_under_its_own_client_id(
    broker: MosquittoBroker, test_pki: TestPKI
) -> None:
    def outcome(identity: str, client_id: str, **options: Any) -> str:
        cert = test_pki.ledger if identity == "ledger" else test_pki.device(identity)
        return _connack_outcome(broker, test_pki.client_context(cert), client_id, **options)

    attempts = {
        ("dev-a", "dev-a"): "connected",
        ("dev-a", "dev-b"): REFUSED,  # another gateway's
        ("dev-a", "ledger"): REFUSED,  # the ledger's
        ("dev-a", "ledger/2"): REFUSED,  # a ledger worker's
        ("dev-a", "dev-a/2"): REFUSED,  # worker ids are for the ledger only
        ("dev-a", "dev-ab"): REFUSED,  # a prefix is not the CN
        ("dev-a", "custody-dev-a"): REFUSED,
        ("ledger", "ledger"): "connected",
        ("ledger", "ledger/2"): "connected",
        ("ledger", "ledger/"): REFUSED,
        ("ledger", "ledger/a/b"): REFUSED,
        ("ledger", "ledger/a+b"): REFUSED,
        ("ledger", "custody-ledger"): REFUSED,
        ("ledger", "dev-a"): REFUSED,  # the ledger cannot pose as a gateway either
    }
    got = {attempt: outcome(*attempt) for attempt in attempts}
    assert got == attempts
    v311 = MQTTProtocolVersion.MQTTv311
    assert outcome("dev-a", "ledger", protocol=v311) == REFUSED
    assert outcome("dev-a", "dev-a", protocol=v311) == "connected"
    # The operator sees who tried what.
    assert (
        "custody_identity: refused client id 'ledger' from 127.0.0.1: certificate CN 'dev-a' "
        "must connect as 'dev-a'" in broker.log_text()
    )


def test_a_device_cannot_take_over_the_ledgers_session(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger", clean_start=False, session_expiry=3600)
    ledger.subscribe(SHARED_EVENTS)
    device = open_client("dev-b")
    attacker = test_pki.client_context(test_pki.device("dev-a"))
    # Resume the ledger's session (Clean Start 0), or wipe it (Clean Start 1).
    for clean_start in (False, True):
        assert _connack_outcome(broker, attacker, "ledger", clean_start=clean_start) == REFUSED

    device.publish(events("dev-b"), b"batch while attacked")
    assert ledger.expect().payload == b"batch while attacked"
    assert ledger.disconnects.empty()
    # The session itself is intact: it keeps queueing while the ledger is away.
    ledger.close()
    device.publish(events("dev-b"), b"batch while the ledger is away")
    back = open_client("ledger", clean_start=False, session_expiry=3600)
    assert back.session_present
    assert back.expect().payload == b"batch while the ledger is away"


def test_a_device_cannot_take_over_another_devices_session(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    # dev-b has a persistent session with an ack queued while it is offline.
    victim = open_client("dev-b", clean_start=False, session_expiry=3600)
    victim.subscribe(acks("dev-b"))
    victim.close()
    open_client("ledger").publish(acks("dev-b"), b"queued ack for dev-b")

    attacker = test_pki.client_context(test_pki.device("dev-a"))
    for clean_start in (False, True):
        assert _connack_outcome(broker, attacker, "dev-b", clean_start=clean_start) == REFUSED

    back = open_client("dev-b", clean_start=False, session_expiry=3600)
    assert back.session_present
    assert back.expect().payload == b"queued ack for dev-b"
    # And the attacker's own identity still works.
    assert _connack_outcome(broker, attacker, "dev-a") == "connected"


def _certificate(pki: TestPKI, directory: Path, subject: x509.Name) -> CertKey:
    """A client certificate with any subject, signed by the broker's CA, as a CA that made a
    mistake would issue it (our CA never does: ledger/pki.py, make-test-pki.sh)."""
    ca_key = serialization.load_pem_private_key((pki.directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertKey(directory / "odd.crt", directory / "odd.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.mark.parametrize(
    ("names", "client_id"),
    [
        ([(NameOID.COMMON_NAME, "dev-a/x")], "dev-a/x"),  # a "/" would add topic levels to %u
        ([(NameOID.COMMON_NAME, "dev-a+")], "dev-a+"),  # a wildcard (CVE-2017-7650)
        ([(NameOID.COMMON_NAME, "dev-a"), (NameOID.COMMON_NAME, "ledger")], "dev-a"),
        ([(NameOID.COMMON_NAME, "dev-a"), (NameOID.COMMON_NAME, "ledger")], "ledger"),
        ([(NameOID.ORGANIZATION_NAME, "no CN")], "dev-a"),
    ],
    ids=["slash", "plus", "two-cns-first", "two-cns-second", "no-cn"],
)
def test_a_certificate_without_one_plain_cn_is_refused(
    broker: MosquittoBroker,
    test_pki: TestPKI,
    tmp_path: Path,
    names: list[tuple[x509.ObjectIdentifier, str]],
    client_id: str,
) -> None:
    subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in names])
    pair = _certificate(test_pki, tmp_path / "odd", subject)
    assert _connack_outcome(broker, test_pki.client_context(pair), client_id) == REFUSED


# Bounded in time: the attacker retries for this long while the honest traffic flows.
TAKEOVER_ATTACK_S = 3.0


def test_the_ledger_keeps_receiving_and_acking_while_a_device_retries_the_takeover(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger", clean_start=False, session_expiry=3600)
    ledger.subscribe(SHARED_EVENTS)
    device = open_client("dev-b")
    device.subscribe(acks("dev-b"))
    stop = threading.Event()
    outcomes: list[str] = []

    def attack() -> None:
        context = test_pki.client_context(test_pki.device("dev-a"))
        while not stop.is_set():
            clean_start = len(outcomes) % 2 == 1
            outcomes.append(_connack_outcome(broker, context, "ledger", clean_start=clean_start))

    attacker = threading.Thread(target=attack, name="takeover-attacker", daemon=True)
    attacker.start()
    rounds = 0
    try:
        deadline = time.monotonic() + TAKEOVER_ATTACK_S
        while time.monotonic() < deadline:
            batch = f"batch {rounds}".encode()
            device.publish(events("dev-b"), batch)
            received = ledger.expect()
            assert (received.topic, received.payload) == (events("dev-b"), batch)
            ledger.publish(acks("dev-b"), b"ack for " + batch)
            assert device.expect().payload == b"ack for " + batch
            rounds += 1
    finally:
        stop.set()
        attacker.join(DEADLINE_S * 2)
    assert not attacker.is_alive()
    assert rounds >= 10
    assert len(outcomes) >= 10
    assert set(outcomes) == {REFUSED}
    assert ledger.disconnects.empty() and device.disconnects.empty()


# (h) Limits. The per-device publish budget, which keeps one flooding device from filling the
# ledger's queue and so from making the broker drop honest batches: tests/test_broker_budget.py.


def test_the_broker_announces_its_limits_and_passes_the_largest_packets(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    connack: queue.Queue[Properties] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="dev-a", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set_context(test_pki.client_context(test_pki.device("dev-a")))
    client.on_connect = lambda _c, _u, _f, _r, properties: connack.put(properties)
    client.connect(broker.host, broker.tls_port, keepalive=30)
    client.loop_start()
    try:
        announced = connack.get(timeout=DEADLINE_S)
    finally:
        client.disconnect()
        client.loop_stop()
    assert announced.MaximumPacketSize == 384 * 1024  # custody.conf max_packet_size
    assert announced.MaximumQoS == 1  # max_qos
    assert announced.ReceiveMaximum == 20  # max_inflight_messages (not enforced for QoS 1)

    # The protocol's largest packets get through: a full ack and a full batch, with properties.
    ledger = open_client("ledger")
    ledger.subscribe(ALL_EVENTS)
    device = open_client("dev-a")
    device.subscribe(acks("dev-a"))
    ack = b"a" * MAX_ACK_BYTES
    assert not ledger.publish(acks("dev-a"), ack).is_failure
    assert device.expect().payload == ack
    batch = b"b" * MAX_BATCH_BYTES
    assert not device.publish(events("dev-a"), batch).is_failure
    assert ledger.expect().payload == batch


def test_a_qos_2_publish_gets_the_client_disconnected(
    broker: MosquittoBroker, test_pki: TestPKI, open_client: OpenClient
) -> None:
    ledger = open_client("ledger")
    ledger.subscribe(ALL_EVENTS)
    device = open_client("dev-a")
    device._client.publish(events("dev-a"), b"parked until PUBREL", qos=2)
    reason = device.disconnects.get(timeout=DEADLINE_S)
    assert reason.value == 0x9B  # QoS not supported
    assert "Too high QoS in PUBLISH from dev-a" in broker.log_text()
    assert ledger.received_within(GRACE_S) == []


# The plain listener that local-only tests use.


def test_plain_listener_is_anonymous_and_unrestricted(broker: MosquittoBroker) -> None:
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = lambda _c, _u, message: got.put(message)
    client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("any/topic/#", qos=1)
    client.connect(broker.host, broker.plain_port, keepalive=30)
    client.loop_start()
    try:
        assert subscribed.wait(DEADLINE_S)
        client.publish("any/topic/x", b"hello", qos=1).wait_for_publish(DEADLINE_S)
        assert got.get(timeout=DEADLINE_S).payload == b"hello"
    finally:
        client.disconnect()
        client.loop_stop()


def test_pki_refuses_reserved_and_unsafe_device_ids(tmp_path: Path, test_pki: TestPKI) -> None:
    for bad in ("ledger", "a/b", "a+b", "#", ".."):
        with pytest.raises(RuntimeError, match="device id"):
            TestPKI.create(tmp_path / "pki", [bad])
    assert test_pki.device("gw-new.01").cert.is_file()
