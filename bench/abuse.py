"""One enrolled device floods the central side while honest gateways keep syncing.

Setup (not timed): a test PKI, a private Mosquitto on the production configuration
(``lab.mosquitto``: TLS, ACL, the identity plugin, the shipped queue limits), a fresh ledger
(``custody-ledger init``) with ``--honest`` + 1 enrolled device keys, and ``custody-ledger run``
as a child process, with its default per-device budgets and ``--retention`` rejection rows.

Honest gateways (``--honest``, default 10) are MQTT clients in this process, each with its own
device certificate and client id: every ``--period`` seconds (staggered) each publishes one
batch of ``--records`` new bag weighings (commitments and sealed openings, chained, signed), and
waits for the ledger-signed ack that covers them (verified). Its **ack latency** is publish to
verified ack. A batch not acked within ``--ack-timeout`` counts as lost and the gateway resends,
as the real uplink does.

Phases of ``--seconds`` each, in one run: ``baseline`` (no flood), then the enrolled attacker
device publishes on its own events topic at ``--rate`` messages per second (QoS 1, at most 20 in
flight as the broker allows):

- ``garbage``: 512-byte payloads that are no batch at all;
- ``unknown_keys``: zlib batches of 900 small records signed by a key nobody enrolled;
- ``own_records``: batches of 10 valid, chained records of its own enrolled key.

The broker's identity plugin refuses a device's publishes beyond its publish budget (PUBACK
0x87); ``flood_accepted_by_broker_per_s`` is what got through to the ledger's queue.

Reported per phase: the honest gateways' ack latency p50/p99 (ms), their acked and lost
batches, the offered and achieved flood (messages/s, bytes/s), the ledger's database growth
(SQLite file + WAL, bytes) and the ledger's own counters from /metrics (drops per limit,
rejection rows). ``ledger_stayed_up`` says whether the ``custody-ledger run`` process lived
through every phase. Targets: p99 with each flood at most 3x the baseline p99; growth from
garbage and unknown keys bounded by the configured rejection retention (``retention_bytes``,
rows x 200 bytes, is the bound quoted).
"""

from __future__ import annotations

import argparse
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import machine
from custody.commitment import commit_masses, seal_openings
from custody.envelope import EventSigner, event_id_of
from custody.errors import CustodyError
from custody.event import GENESIS_PREV, DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey, LedgerPublicKeys
from lab.mosquitto import MosquittoBroker, TestPKI
from ledger.keys import create_ledger_keys, load_ledger_keypair
from ledger.store import LedgerStore
from sync.ack import verify_ack
from sync.batch import encode_batch
from sync.mqtt import BrokerConfig, LinkEventKind, MqttLink
from sync.topics import acks_topic, events_topic

__all__ = ["SUMMARY", "TARGETS", "add_arguments", "render", "run"]

SUMMARY = "ten honest gateways sync while one enrolled device floods (garbage, unknown keys, own)"
TARGETS: dict[str, float] = {"p99_ratio_max": 3.0}
SITE = "BENCH-01"
ATTACKER = "flood-01"
PHASES = ("baseline", "garbage", "unknown_keys", "own_records")
ROW_BYTES_BOUND = 200  # a rejection row with its index entries, generously


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--honest", type=int, default=10, help="honest gateways (default 10)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (default 20)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="flood messages per second offered (default 300)")  # fmt: skip
    parser.add_argument("--period", type=float, default=1.0,
                        help="seconds between an honest gateway's batches (default 1)")  # fmt: skip
    parser.add_argument("--records", type=int, default=5,
                        help="records per honest batch (default 5)")  # fmt: skip
    parser.add_argument("--retention", type=int, default=10_000,
                        help="the ledger's --rejection-retention (default 10000)")  # fmt: skip
    parser.add_argument("--ack-timeout", type=float, default=10.0,
                        help="seconds until an unacked batch is resent (10)")  # fmt: skip


# --- signed records -------------------------------------------------------------------------
@dataclass
class Chain:
    device_id: str
    key: DeviceKey
    seal_key: bytes
    seq: int = 0
    prev: bytes = GENESIS_PREV

    def next(self, *, mass: bool) -> bytes:
        self.seq += 1
        now = DeviceTime(time.time_ns() // 1_000_000, TimeSource.NTP, TimeQuality.SYNCED)
        if mass:
            points, openings = commit_masses({"bag": 250_000 + self.seq % 1000})
            body: dict[str, Any] = {
                "mass": {n: p.encoded for n, p in points.items()},
                "sealed": seal_openings(openings, self.seal_key), "direction": "out",
            }  # fmt: skip
            type_ = EventType.WEIGHING
        else:
            body, type_ = {"seal": f"F-{self.seq}"}, EventType.SEAL_SCAN
        payload = Payload(self.device_id, SITE, self.seq, self.prev, now, 1, type_, body)
        env = EventSigner(self.key).sign(payload).cose
        self.prev = event_id_of(env)
        return env


# --- MQTT clients ---------------------------------------------------------------------------
def _link(pki: TestPKI, device_id: str, port: int) -> MqttLink:
    """A device's MQTT 5 session with its own certificate (client id = its CN)."""
    pair = pki.device(device_id)
    link = MqttLink(BrokerConfig(
        url=f"mqtts://127.0.0.1:{port}", client_id=device_id, ca_file=pki.ca_file,
        cert_file=pair.cert, key_file=pair.key,
    ))  # fmt: skip
    link.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            event = link.events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"{device_id} could not connect to the broker") from None
        if event.kind is LinkEventKind.CONNECTED:
            return link


class Honest:
    """One honest gateway: a batch every period, latency to the verified ack."""

    def __init__(self, chain: Chain, link: MqttLink, ledger: LedgerPublicKeys) -> None:
        self.chain = chain
        self.link = link
        self.ledger = ledger
        self.latencies: dict[str, list[float]] = {}
        self.lost: dict[str, int] = {}
        self._waiting_for = 0  # the seq whose ack ends the current batch
        self._acked = threading.Event()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.link.subscribe(acks_topic(self.chain.device_id))
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_acks(self) -> None:
        while not self._closed.is_set():
            try:
                event = self.link.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event.kind != "message":
                continue
            try:
                ack = verify_ack(event.payload, self.ledger, device_id=self.chain.device_id,
                                 device_kid=self.chain.key.kid)  # fmt: skip
            except CustodyError:
                continue  # a bad ack is not counted; the batch is resent on its timeout
            with self._lock:
                if self._waiting_for and ack.seq >= self._waiting_for:
                    self._acked.set()

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.link.stop()

    def run(self, phase: Callable[[], str], stop: threading.Event, period: float,
            records: int, ack_timeout: float, offset: float) -> None:  # fmt: skip
        stop.wait(offset)
        while not stop.is_set():
            envs = [self.chain.next(mass=True) for _ in range(records)]
            payload = encode_batch(self.chain.device_id, envs)
            started = time.monotonic()
            name = phase()
            while not stop.is_set():
                with self._lock:
                    self._waiting_for = self.chain.seq
                    self._acked.clear()
                self.link.publish(events_topic(self.chain.device_id), payload)
                if self._acked.wait(ack_timeout):
                    break
                self.lost[name] = self.lost.get(name, 0) + 1
            if stop.is_set():
                return
            self.latencies.setdefault(name, []).append(time.monotonic() - started)
            stop.wait(max(0.0, period - (time.monotonic() - started)))


class Flood:
    """The attacker: publishes the phase's payloads at a fixed offered rate."""

    def __init__(self, link: MqttLink, payloads: Mapping[str, Iterator[bytes]]) -> None:
        self.link = link
        self.payloads = payloads
        self.sent: dict[str, tuple[int, int, float]] = {}  # phase -> (messages, bytes, seconds)
        self.refused: dict[str, int] = {}  # phase -> publishes the broker refused (its budget)

    def _count_refusals(self, name: str) -> None:
        while True:
            try:
                event = self.link.events.get_nowait()
            except queue.Empty:
                return
            if event.kind is LinkEventKind.PUBACK and event.code:
                self.refused[name] = self.refused.get(name, 0) + 1

    def run(self, name: str, rate: float, seconds: float) -> None:
        source = self.payloads[name]
        self._count_refusals("before")
        self.refused[name] = 0
        started = time.monotonic()
        n = size = 0
        while (now := time.monotonic()) - started < seconds:
            due = started + n / rate
            if due > now:
                time.sleep(due - now)
            payload = next(source)
            if self.link.publish(events_topic(ATTACKER), payload) is not None:
                n += 1
                size += len(payload)
            else:  # the in-flight window is full: the broker paces the publisher
                time.sleep(0.001)
            self._count_refusals(name)
        self.sent[name] = (n, size, time.monotonic() - started)
        time.sleep(0.5)  # the last PUBACKs
        self._count_refusals(name)


def _garbage() -> Iterator[bytes]:
    i = 0
    while True:
        i += 1
        yield b"\x07" + i.to_bytes(8, "big") + bytes(503)


def _unknown_keys(seal_key: bytes) -> Iterator[bytes]:
    stranger = Chain(ATTACKER, DeviceKey.generate(), seal_key)
    envs = [stranger.next(mass=False) for _ in range(900)]
    payload = encode_batch(ATTACKER, envs)
    while True:
        yield payload


def _own_records(chain: Chain, count: int) -> Iterator[bytes]:
    batches = [encode_batch(ATTACKER, [chain.next(mass=False) for _ in range(10)])
               for _ in range(count)]  # fmt: skip
    yield from batches
    while True:  # past the prepared chain: resend the last (duplicates)
        yield batches[-1]


# --- the ledger process -------------------------------------------------------------------------
class LedgerProcess:
    def __init__(self, data: Path, pki: TestPKI, port: int, retention: int, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(data), "run",
             "--broker", f"mqtts://127.0.0.1:{port}", "--ca-file", str(pki.ca_file),
             "--cert-file", str(pki.ledger.cert), "--key-file", str(pki.ledger.key),
             "--http", "127.0.0.1:0", "--rejection-retention", str(retention)],
            stdout=self._out, stderr=self._out,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        self.address = ""
        while not self.address:
            found = re.search(rb"/healthz on ([\d.]+:\d+)", log.read_bytes())
            if found:
                self.address = found.group(1).decode()
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"custody-ledger run did not start: {log.read_text()[-2000:]}")
            else:
                time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("custody_ledger_") and " " in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._out.close()
        return code


@contextmanager
def _central(root: Path, devices: list[str]) -> Iterator[tuple[TestPKI, MosquittoBroker, Path]]:
    pki = TestPKI.create(root / "pki", devices)
    data = root / "ledger"
    create_ledger_keys(data, "bench-ledger")
    LedgerStore(data / "ledger.sqlite").close()
    with MosquittoBroker(root / "broker", pki) as broker:
        yield pki, broker, data


def _db_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("ledger.sqlite*"))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    honest_ids = [f"honest-{i:02d}" for i in range(args.honest)]
    with tempfile.TemporaryDirectory(prefix="custody-bench-abuse-") as tmp:
        root = Path(tmp)
        with _central(root, [*honest_ids, ATTACKER]) as (pki, broker, data):
            keys = load_ledger_keypair(data)
            seal_key = keys.public.sealing_key
            store = LedgerStore(data / "ledger.sqlite")
            chains = {d: Chain(d, DeviceKey.generate(), seal_key) for d in [*honest_ids, ATTACKER]}
            for device_id, chain in chains.items():
                store.enroll(device_id, SITE, chain.key.public_key, chain.key.kid)
            store.close()
            own = _own_records(chains[ATTACKER], int(args.rate * args.seconds) + 100)
            ledger = LedgerProcess(data, pki, broker.tls_port, args.retention, root / "ledger.log")
            try:
                return _measure(args, ledger, pki, broker, data, chains, honest_ids, keys.public,
                                {"garbage": _garbage(), "unknown_keys": _unknown_keys(seal_key),
                                 "own_records": own})  # fmt: skip
            finally:
                if ledger.alive():
                    ledger.stop()


def _measure(
    args: argparse.Namespace, ledger: LedgerProcess, pki: TestPKI, broker: MosquittoBroker,
    data: Path, chains: dict[str, Chain], honest_ids: list[str], public: LedgerPublicKeys,
    floods: Mapping[str, Iterator[bytes]],
) -> dict[str, Any]:  # fmt: skip
    current = ["warmup"]
    stop = threading.Event()
    gateways = [Honest(chains[d], _link(pki, d, broker.tls_port), public) for d in honest_ids]
    threads = _start_honest(args, gateways, lambda: current[0], stop)
    flood = Flood(_link(pki, ATTACKER, broker.tls_port), floods)
    phases: dict[str, Any] = {}
    up = True
    try:
        time.sleep(min(5.0, args.seconds / 2))  # warm-up: connections, first acks
        for name in PHASES:
            before = _db_bytes(data)
            current[0] = name
            if name == "baseline":
                time.sleep(args.seconds)
            else:
                flood.run(name, args.rate, args.seconds)
            current[0] = "cooldown"
            up = up and ledger.alive()
            phases[name] = _phase_figures(name, args, gateways, flood)
            phases[name]["db_growth_bytes"] = _db_bytes(data) - before
            phases[name]["ledger_up"] = ledger.alive()
            time.sleep(min(3.0, args.seconds / 4))  # let the ledger drain before the next
    finally:
        stop.set()
        for t in threads:
            t.join(args.ack_timeout + 5)
        for g in gateways:
            g.close()
        flood.link.stop()
    return _report(args, phases, ledger.metrics() if ledger.alive() else {}, up and ledger.alive())


def _start_honest(
    args: argparse.Namespace, gateways: list[Honest], phase: Callable[[], str],
    stop: threading.Event,
) -> list[threading.Thread]:  # fmt: skip
    """One thread per honest gateway, their batch periods staggered evenly."""
    threads = [
        threading.Thread(
            target=g.run,
            daemon=True,
            args=(
                phase,
                stop,
                args.period,
                args.records,
                args.ack_timeout,
                args.period * i / len(gateways),
            ),
        )
        for i, g in enumerate(gateways)
    ]
    for t in threads:
        t.start()
    return threads


def _phase_figures(
    name: str, args: argparse.Namespace, gateways: list[Honest], flood: Flood
) -> dict[str, Any]:
    """What the honest gateways saw during one phase, and what the flood offered."""
    lat = [x for g in gateways for x in g.latencies.get(name, [])]
    messages, size, seconds = flood.sent.get(name, (0, 0, args.seconds))
    flooded = name != "baseline"
    return {
        "honest_acked_batches": len(lat),
        "honest_lost_batches": sum(g.lost.get(name, 0) for g in gateways),
        "ack_latency_ms_p50": _ms(_pct(lat, 0.5)),
        "ack_latency_ms_p99": _ms(_pct(lat, 0.99)),
        "flood_messages_per_s": round(messages / seconds, 1) if flooded else 0,
        "flood_bytes_per_s": round(size / seconds) if flooded else 0,
        # What the broker's per-device publish budget let through to the ledger.
        "flood_accepted_by_broker_per_s": (
            round((messages - flood.refused.get(name, 0)) / seconds, 1) if flooded else 0
        ),
    }


def _report(
    args: argparse.Namespace, phases: dict[str, Any], metrics: Mapping[str, float], up: bool
) -> dict[str, Any]:
    base = phases["baseline"]["ack_latency_ms_p99"] or 0.0
    drops = {k.split('limit="')[1].rstrip('"}'): v for k, v in metrics.items()
             if k.startswith("custody_ledger_device_drops_total")}  # fmt: skip
    return {
        "benchmark": "abuse",
        "machine": machine(),
        "honest_gateways": args.honest, "records_per_batch": args.records,
        "batch_period_s": args.period, "phase_seconds": args.seconds,
        "offered_flood_messages_per_s": args.rate,
        "rejection_retention_rows": args.retention,
        "retention_bytes": args.retention * ROW_BYTES_BOUND,
        "phases": phases,
        "p99_ratio": {
            n: round((phases[n]["ack_latency_ms_p99"] or 0.0) / base, 2) if base else None
            for n in PHASES[1:]
        },
        "ledger_stayed_up": up,
        "ledger_drops_by_limit": drops,
        "ledger_rejection_rows": metrics.get("custody_ledger_rejection_rows"),
        "ledger_dead_letters": metrics.get("custody_ledger_dead_letters_total"),
        "targets": TARGETS,
    }  # fmt: skip


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def render(result: Mapping[str, Any]) -> str:
    lines = [
        f"abuse: {result['honest_gateways']} honest gateways, flood offered "
        f"{result['offered_flood_messages_per_s']:.0f} msg/s, "
        f"{result['phase_seconds']:.0f} s a phase",
        f"{'phase':<14}{'p50 ms':>9}{'p99 ms':>9}{'acked':>7}{'lost':>6}{'msg/s':>9}"
        f"{'bytes/s':>11}{'to ledger/s':>12}{'db growth':>12}",
    ]
    for name, p in result["phases"].items():
        lines.append(
            f"{name:<14}{p['ack_latency_ms_p50'] or 0:>9.1f}{p['ack_latency_ms_p99'] or 0:>9.1f}"
            f"{p['honest_acked_batches']:>7}{p['honest_lost_batches']:>6}"
            f"{p['flood_messages_per_s']:>9.1f}{p['flood_bytes_per_s']:>11}"
            f"{p['flood_accepted_by_broker_per_s']:>12}{p['db_growth_bytes']:>12}"
        )
    lines.append(f"p99 / baseline p99: {result['p99_ratio']} (target <= "
                 f"{TARGETS['p99_ratio_max']})")  # fmt: skip
    lines.append(f"ledger stayed up: {result['ledger_stayed_up']}; drops by limit: "
                 f"{result['ledger_drops_by_limit']}; rejection rows "
                 f"{result['ledger_rejection_rows']} (retention "
                 f"{result['rejection_retention_rows']})")  # fmt: skip
    return "\n".join(lines)
