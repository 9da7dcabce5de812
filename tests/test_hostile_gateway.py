"""One enrolled device turned hostile, against the real central side: a private Mosquitto on the
production configuration and ``custody-ledger run`` as a real process (the enrolment procedure of
tests/test_enrolment.py sets both up). The attacker holds gateway A's certificate and signing key
and publishes with its own MQTT client; gateway B is honest and must keep being acked.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from custody.envelope import EventSigner, event_id_of
from custody.event import EventType, Payload
from custody.keys import DeviceKey
from ledger.intake import Intake
from ledger.keys import load_ledger_keypair
from ledger.service import IntakeSettings, LedgerService
from ledger.store import LedgerStore
from sync.ack import verify_ack
from sync.batch import encode_batch
from sync.mqtt import BrokerConfig
from sync.topics import acks_topic, events_topic
from tests.support import REPO, wait_until
from tests.test_enrolment import Central, central, enrol_gateway, record_weighings, sync
from tests.test_intake_hostile import T, badly_signed

__all__ = ["central"]  # the fixture, re-used

ATTACKER = "gw-kol-01"  # gateway A: enrolled, then stolen
HONEST = "gw-kol-02"  # gateway B
SITE = "KOL-01"
DEADLINE_S = 60.0


def ledger_subscriptions(central: Central) -> int:
    """SUBACKs the broker sent to ledger clients (devices' client ids start with gw-)."""
    return len(re.findall(r"Sending SUBACK to (?!gw-)\S+", central.broker.log_text()))


class Ledger:
    """``custody-ledger run`` as a real process with /metrics on a free port; SIGTERM on exit."""

    def __init__(self, central: Central, *extra: str) -> None:
        d, pki = central.data, central.pki.directory
        subscribed = ledger_subscriptions(central)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(d), "run",
             "--broker", central.url, "--ca-file", str(pki / "ca.crt"),
             "--cert-file", str(pki / "ledger.crt"), "--key-file", str(pki / "ledger.key"),
             "--http", "127.0.0.1:0", *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.stderr: list[str] = []
        self.address = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: bool(self.address) or self.proc.poll() is not None, "/metrics")
        assert self.address, "".join(self.stderr)
        # Subscribed before anyone publishes: Mosquitto gives a shared subscription's
        # messages to no one while its group has no session.
        wait_until(lambda: ledger_subscriptions(central) > subscribed, "the subscription")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            found = re.search(r"/healthz on ([\d.]+:\d+)", line)
            if found:
                self.address = found.group(1)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=10) as r:
            text = r.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
        found = re.search("^" + pattern + "$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def health(self) -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"http://{self.address}/healthz", timeout=10) as r:
                body: dict[str, object] = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        if t is None:
            assert self.proc.returncode == 0, "".join(self.stderr)


class Device:
    """The attacker's own MQTT client with gateway A's certificate (client id = its device id,
    as the broker requires)."""

    def __init__(self, central: Central, gw: Path, device_id: str) -> None:
        sync_cfg = tomllib.loads((gw / "config.toml").read_text())["sync"]
        self.device_id = device_id
        self.acks: list[bytes] = []
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=device_id,
            protocol=paho.MQTTv5,
        )  # fmt: skip
        self.client.tls_set(  # the paths are relative to the data dir
            ca_certs=str(gw / sync_cfg["ca_file"]), certfile=str(gw / sync_cfg["cert_file"]),
            keyfile=str(gw / sync_cfg["key_file"]),
        )  # fmt: skip
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.client.on_message = lambda c, u, m: self.acks.append(bytes(m.payload))
        self.client.connect("localhost", central.broker.tls_port)
        self.client.loop_start()
        wait_until(self.client.is_connected, f"{device_id} to connect")
        self.client.subscribe(acks_topic(device_id), qos=1)

    def publish(self, payload: bytes, *, wait: bool = True) -> None:
        info = self.client.publish(events_topic(self.device_id), payload, qos=1)
        if wait:
            info.wait_for_publish(10)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateways(tmp_path: Path, central: Central) -> tuple[Path, Path]:
    return enrol_gateway(tmp_path, central, ATTACKER), enrol_gateway(tmp_path, central, HONEST)


def device_key(gw: Path) -> DeviceKey:
    return DeviceKey(bytes.fromhex((gw / "device.key").read_text().strip()))


def store(central: Central) -> LedgerStore:
    return LedgerStore(central.data / "ledger.sqlite")


def signed(key: DeviceKey, seq: int, prev: bytes, *, site: str = SITE, **kw: object) -> bytes:
    type_ = kw.get("type_", EventType.SEAL_SCAN)
    body = kw.get("body", {"seal": f"S-{seq}"})
    assert isinstance(type_, EventType) and isinstance(body, dict)
    return EventSigner(key).sign(Payload(ATTACKER, site, seq, prev, T, 1, type_, body)).cose


def honest_gateway_is_acked(gw: Path, n: int) -> None:
    record_weighings(gw, n)
    result = sync(gw)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outbox"]["pending"] + summary["outbox"]["sent"] == 0, summary


# --- one message cannot stop the intake --------------------------------------------------------
def test_a_poison_batch_neither_stops_the_ledger_nor_comes_back_after_a_restart(
    central: Central, gateways: tuple[Path, Path]
) -> None:
    attacker_gw, honest_gw = gateways
    key = device_key(attacker_gw)
    bad = badly_signed(key, 2)
    poison = [
        encode_batch(ATTACKER, [bad, bad]),  # the same bad envelope twice
        encode_batch(ATTACKER, [badly_signed(key, 2), badly_signed(key, 1)]),  # out of order
        encode_batch(ATTACKER, [badly_signed(key, 2**63)]),  # a seq beyond 64 bits
    ]
    assert len(poison[0]) < 1000
    attacker = Device(central, attacker_gw, ATTACKER)
    try:
        # Published while no ledger runs: the broker holds them for the ledger's session
        # (created at enrolment by nobody, so start the ledger once first).
        with Ledger(central):
            pass
        for payload in poison:
            attacker.publish(payload)
        for _run in range(2):  # and across a restart
            with Ledger(central) as ledger:
                honest_gateway_is_acked(honest_gw, 2)
                assert ledger.alive()
                assert ledger.health()["status"] == "ok"
    finally:
        attacker.close()
    s = store(central)
    try:
        rows = [r for r in s.rejections() if r[0] == ATTACKER]
        # One row per rejected record, each batch handled once: nothing was redelivered.
        assert sorted((r[1] or 0) for r in rows) == [0, 1, 2, 2]
        assert all("does not verify" in r[2] for r in rows)
        assert s.dead_letters() == []
        assert len(s.events(HONEST)) == 8  # each weighing command also records a boot
    finally:
        s.close()


class _Exploding(Intake):
    """An intake with a bug that one payload triggers (what a real one might have)."""

    def ingest(self, device_id: str, payload: bytes, *, correlation: bytes | None = None):  # type: ignore[no-untyped-def]
        if payload.endswith(b"BOOM"):
            raise RuntimeError("a bug the message triggers")
        return super().ingest(device_id, payload, correlation=correlation)


def dead_lettered(svc: LedgerService) -> Callable[[], bool]:
    return lambda: svc.counters["dead_letters"] == 1


def test_a_message_the_intake_cannot_handle_is_dead_lettered_once_and_acked(
    central: Central, gateways: tuple[Path, Path]
) -> None:
    attacker_gw, honest_gw = gateways
    pki = central.pki.directory

    def service() -> tuple[LedgerService, threading.Event, threading.Thread, LedgerStore]:
        st = store(central)
        config = BrokerConfig(
            url=central.url, client_id="ledger", ca_file=pki / "ca.crt",
            cert_file=pki / "ledger.crt", key_file=pki / "ledger.key",
        )  # fmt: skip
        svc = LedgerService(_Exploding(st, load_ledger_keypair(central.data)), config)
        stop = threading.Event()
        thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        thread.start()
        wait_until(lambda: svc.counters["connects"] >= 1, "the ledger to connect")
        return svc, stop, thread, st

    attacker = Device(central, attacker_gw, ATTACKER)
    try:
        for run in range(2):
            svc, stop, thread, st = service()
            try:
                if run == 0:
                    wait_until(lambda: ledger_subscriptions(central) >= 1, "the subscription")
                    attacker.publish(b"\x00" + b"x" * 40 + b"BOOM")
                    wait_until(dead_lettered(svc), "the dead letter")
                honest_gateway_is_acked(honest_gw, 1)
                assert thread.is_alive()
                if run == 0:
                    assert svc.health()["status"] == "degraded"  # a recent dead letter
            finally:
                stop.set()
                thread.join(15)
                svc.intake.close()
                kept = st.dead_letters()
                st.close()
            # Kept once, and not delivered again after the restart.
            assert [(d.device_id, d.count) for d in kept] == [(ATTACKER, 1)]
            assert "RuntimeError: a bug the message triggers" in kept[0].error
    finally:
        attacker.close()
    out = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(central.data), "alarms"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"DEAD LETTER {ATTACKER}" in out and "RuntimeError" in out


# --- identity: the site is the enrolled one ----------------------------------------------------
def test_a_device_cannot_credit_its_records_to_another_site(
    central: Central, gateways: tuple[Path, Path]
) -> None:
    attacker_gw, _ = gateways
    key = device_key(attacker_gw)
    elsewhere = signed(key, 1, bytes(32), site="REFINER-01")
    attacker = Device(central, attacker_gw, ATTACKER)
    try:
        with Ledger(central):
            attacker.publish(encode_batch(ATTACKER, [elsewhere]))
            wait_until(lambda: bool(attacker.acks), "the ack")
    finally:
        attacker.close()
    ack = verify_ack(attacker.acks[0], load_ledger_keypair(central.data).public,
                     device_id=ATTACKER, device_kid=key.kid)  # fmt: skip
    assert [(r.seq, r.event_id) for r in ack.rejected] == [(1, event_id_of(elsewhere))]
    assert "REFINER-01" in ack.rejected[0].reason and SITE in ack.rejected[0].reason
    s = store(central)
    try:
        assert s.events(ATTACKER) == []
    finally:
        s.close()


# --- retired keys: nothing parked gets in after the rotation ------------------------------------
def test_records_parked_before_a_rotation_are_refused_over_the_broker(
    central: Central, gateways: tuple[Path, Path]
) -> None:
    attacker_gw, _ = gateways
    key = device_key(attacker_gw)
    first = signed(key, 1, bytes(32))
    rotation = signed(key, 2, event_id_of(first), type_=EventType.KEY_ROTATION,
                      body={"new_key": DeviceKey.generate().public_key})  # fmt: skip
    after = signed(key, 3, event_id_of(rotation))
    attacker = Device(central, attacker_gw, ATTACKER)
    try:
        with Ledger(central):
            attacker.publish(encode_batch(ATTACKER, [after]))  # parked: seq 1 and 2 missing
            wait_until(lambda: len(attacker.acks) >= 1, "the first ack")
            attacker.publish(encode_batch(ATTACKER, [first, rotation]))
            wait_until(lambda: len(attacker.acks) >= 2, "the second ack")
    finally:
        attacker.close()
    ack = verify_ack(attacker.acks[1], load_ledger_keypair(central.data).public,
                     device_id=ATTACKER, device_kid=key.kid)  # fmt: skip
    assert (ack.seq, [r.seq for r in ack.rejected]) == (2, [3])
    assert "retired by its key_rotation" in ack.rejected[0].reason
    s = store(central)
    try:
        assert [e.seq for e in s.events(ATTACKER)] == [1, 2]
    finally:
        s.close()


# --- flooding: one device's share is bounded -----------------------------------------------------
def test_a_flooding_device_is_dropped_over_budget_and_cannot_grow_the_store(
    central: Central, gateways: tuple[Path, Path]
) -> None:
    attacker_gw, honest_gw = gateways
    stranger = DeviceKey.generate()
    unknown = encode_batch(
        ATTACKER, [signed(stranger, 1, bytes(32), body={"seal": f"X{i}"}) for i in range(300)]
    )
    garbage = b"\x07" + bytes(200)
    retention = 50
    attacker = Device(central, attacker_gw, ATTACKER)
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        while not stop.is_set():
            for payload in (unknown, garbage):
                attacker.publish(payload, wait=False)
                sent[0] += 1
            time.sleep(0.002)

    before = (central.data / "ledger.sqlite").stat().st_size
    try:
        with Ledger(central, "--rejection-retention", str(retention)) as ledger:
            flooder = threading.Thread(target=flood, daemon=True)
            flooder.start()
            try:
                wait_until(lambda: sent[0] > 600, "the flood")
                honest_gateway_is_acked(honest_gw, 3)
                wait_until(lambda: sent[0] > 3000, "more flood")
                assert ledger.alive()
            finally:
                stop.set()
                flooder.join(10)
            drops = sum(
                ledger.metric("custody_ledger_device_drops_total", device=ATTACKER, limit=limit)
                for limit in ("messages", "records", "bytes", "queue")
            )
            assert drops > 0
            assert ledger.metric("custody_ledger_device_limit", limit="records_per_s") == 1000
            # Housekeeping prunes every few seconds: wait for it, then the rows are bounded.
            wait_until(
                lambda: ledger.metric("custody_ledger_rejection_rows") <= retention,
                "rejections pruned to the retention",
            )
    finally:
        attacker.close()
    s = store(central)
    try:
        assert s.rejection_rows() <= retention
        assert s.events(ATTACKER) == []
        assert len(s.events(HONEST)) == 6
        summarised = s.conn.execute(
            "SELECT max(count) FROM rejections WHERE reason = 'unknown device key'"
        ).fetchone()[0]
        assert summarised in (None, 300)  # one row per batch, when any is still kept
    finally:
        s.close()
    # Growth: far below one row per rejected envelope (300 per unknown-key batch).
    assert (central.data / "ledger.sqlite").stat().st_size - before < 2 * 1024 * 1024


def test_a_ledger_with_a_client_id_not_its_own_is_refused_and_says_why(
    central: Central,
) -> None:
    pki = central.pki.directory
    st = store(central)
    svc = LedgerService(
        Intake(st, load_ledger_keypair(central.data)),
        BrokerConfig(url=central.url, client_id=ATTACKER, ca_file=pki / "ca.crt",
                     cert_file=pki / "ledger.crt", key_file=pki / "ledger.key"),
        settings=IntakeSettings(http=("127.0.0.1", 0)),
    )  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: svc.counters["refused"] >= 1, "the broker's refusal")
        report = svc.health()
        assert report["status"] == "degraded"
        assert any("refuses the ledger's connection" in p for p in report["problems"])  # type: ignore[attr-defined]
        assert svc.counters["connects"] == 0
    finally:
        stop.set()
        thread.join(15)
        svc.intake.close()
        st.close()
