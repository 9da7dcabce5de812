"""Side by side with the closest peer, ThingsBoard IoT Gateway, on this machine, in one run.

Method (docs/comparison.md has the long version and the last table):

1. One numbered XK3190-A12 stream (``bench.peers.stream``) on a pseudo-terminal,
   read by one gateway at a time; each gateway publishes to its own private
   Mosquitto (``lab.mosquitto.MosquittoBroker``, the production global settings).
2. A witness subscribes on each broker (persistent session, QoS 1) and counts
   what arrives per reading: the peer's telemetry lines are parsed back to the
   reading number; our batches are split into event ids, mapped to readings
   through the ledger's opened masses at the end of each phase.
3. Phases per gateway: warm-up; a fixed offered load (``--rate`` for
   ``--fixed-s``); saturation (``--saturation-frames`` as fast as the pty takes
   them); a broker outage of ``--outage-s`` while the stream runs; a SIGKILL of
   the gateway while the broker is down, restart, broker back. Loss = offered
   readings that never reached the broker; duplicates = extra arrivals.

Figures: ``events_per_s`` (readings from first frame written to last arrival at
the broker), ``latency`` (frame written -> first arrival), ``wire_bytes_per_event``
(kernel ``tcpi_bytes_acked`` of the gateway's sockets to its broker, via ``ss``),
``rss_mb`` (and anonymous/file-backed) at the end of the fixed load,
``cpu_us_per_event`` (utime+stime of the gateway process over the phase),
``lost_after_kill``, ``lost_after_outage``, ``duplicates``. Each is reported for
both, with the ratio ours/theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.e2e import DEVICE_ID, Site, Stack, make_site, outbox_counts, temp_root
from bench.machine import machine
from bench.peers import ours, thingsboard
from bench.peers.stream import Stream, proc_sample, reading_of_line, tcp_counters
from custody.envelope import event_id_of
from firmware_bridge.sim.runner import PtySink
from lab.mosquitto import CONF_TEMPLATE, MosquittoBroker
from sync.batch import decode_batch
from sync.topics import events_topic

__all__ = ["SUMMARY", "add_arguments", "render", "run"]

SUMMARY = (
    "side by side with ThingsBoard IoT Gateway on one pty stream: events/s, bytes, RSS, CPU, "
    "loss after kill and outage, duplicates (installs the peer in a cache venv; minutes)"
)
GATEWAY_START_TIMEOUT_S = 60.0

GUARANTEES = {
    "ours": (
        "every reading is a signed record (Ed25519 COSE_Sign1, hash-chained, mass as a Pedersen "
        "commitment with the opening sealed to the ledger), fsynced in the outbox before it "
        "counts as taken, released only by a ledger-signed ack after the ledger verified and "
        "logged it exactly once"
    ),
    "theirs": (
        "unsigned JSON telemetry; a stored pack is deleted once the MQTT client has accepted "
        "the publish (a PUBACK within 1 s, else still deleted: peers.md §1.4); no per-message "
        "id on the wire, so a retried pack duplicates"
    ),
}
SETTINGS = {
    "ours": (
        "defaults of `custody-agent init`: outbox SQLite WAL synchronous=FULL with group commit, "
        "MQTT 5 QoS 1, sync.window 4, sync.ack_timeout_s 60, keepalive 30 s, persistent session"
    ),
    "theirs": (
        "storage sqlite (max_read_records_count 1000, writing_batch_size 1000), qos 1, "
        "reportStrategy ON_RECEIVED, remoteConfiguration off (#2124), statistics and remote "
        "shell off, keep_alive 30 s (default 120 s), serial connector = the packaged custom "
        "example, logLevel WARNING"
    ),
}
CAVEATS = [
    "Per-frame records on our side: `custody-agent run` with weighbridge.* makes one or two "
    "signed weighings per truck visit (about 60 frames), so per event it is not comparable; "
    "`python -m bench.peers.ours` runs the same library path (PortReader -> parser -> "
    "Recorder -> Uplink) with one record per frame.",
    "Our records carry more: a signature, a hash chain link, a commitment and a sealed "
    "opening per reading; the peer ships the raw line as JSON. Bytes per event measure "
    "that difference, not only efficiency.",
    "Our delivery figure counts arrivals at the broker; every one was also verified, logged "
    "and acked by `custody-ledger run` (a third process on the same two cores).",
    "The peer batches many readings per publish; events/s and bytes/event are compared, "
    "never messages/s.",
    "A broker stop closes TCP cleanly, so both clients notice at once: the most favourable "
    "outage for the peer (a silent link drop waits for its keepalive, #2157).",
    "Two shared cores and other jobs on the machine: the figures are noisy; rerun before "
    "quoting small differences.",
    "The peer's updater tries to phone home at start (no switch, peers.md §1.2); offline it "
    "logs a warning and carries on.",
]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=20.0,
        help="fixed offered load, frames per second (20)",
    )
    parser.add_argument(
        "--fixed-s", type=_positive_float, default=30.0, help="seconds of fixed load (30)"
    )
    parser.add_argument(
        "--saturation-frames",
        type=_positive_int,
        default=3000,
        help="frames offered as fast as the pty takes them (3000)",
    )
    parser.add_argument(
        "--fault-rate",
        type=_positive_float,
        default=10.0,
        help="frames per second during the fault phases (10)",
    )
    parser.add_argument(
        "--outage-s",
        type=_positive_float,
        default=60.0,
        help="broker outage without a restart, seconds (60)",
    )
    parser.add_argument(
        "--settle-s",
        type=_positive_float,
        default=240.0,
        help="most seconds to wait for stragglers after a phase (240)",
    )
    parser.add_argument(
        "--quiet-s",
        type=_positive_float,
        default=75.0,
        help="stop waiting after this long with nothing new (75; above our "
        "60 s ack timeout, after which unacked records are resent)",
    )
    parser.add_argument(
        "--only",
        choices=("both", "ours", "theirs"),
        default="both",
        help="run one side only (ratios need both)",
    )
    parser.add_argument(
        "--tbgw-version",
        default=thingsboard.TBGW_VERSION,
        help=f"thingsboard-gateway version from PyPI ({thingsboard.TBGW_VERSION})",
    )
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the work directory (logs, configs, databases) here")  # fmt: skip


# --- the broker-side witness ---


class Witness:
    """Subscribes on a broker with a persistent session and timestamps every publish."""

    def __init__(self, host: str, port: int, topic: str, username: str | None) -> None:
        self.messages: list[tuple[float, bytes]] = []
        self.payload_bytes = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-witness-{os.getpid()}",
            clean_session=False, protocol=mqtt.MQTTv311,
        )  # fmt: skip
        if username:
            self._client.username_pw_set(username)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), bytes(msg.payload)))
            self.payload_bytes += len(msg.payload)

    def take(self, start: int) -> list[tuple[float, bytes]]:
        with self._lock:
            return self.messages[start:]

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# --- one gateway under test ---


class Side:
    """A gateway, its broker and its witness; ``arrivals`` maps reading -> arrival times."""

    name = ""
    broker: MosquittoBroker
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, root: Path, sink: PtySink) -> None:
        self.root = root
        self.sink = sink
        self.arrivals: dict[int, list[float]] = {}

    def start(self) -> None:
        raise NotImplementedError

    def start_gateway(self) -> None:
        raise NotImplementedError

    def delivered(self) -> set[int]:
        """Readings known to have reached the broker (and, ours, the ledger)."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Fold new witness messages into ``arrivals``."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill_gateway(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop_gateway(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop_gateway()


class Theirs(Side):
    name = "theirs"

    def __init__(self, root: Path, sink: PtySink, version: str) -> None:
        super().__init__(root, sink)
        self.version = version
        self.install = thingsboard.ensure_installed(version)
        self.responder: thingsboard.SessionLimitsResponder | None = None
        self.witness: Witness | None = None
        self._seen = 0
        self.unparsed = 0

    def start(self) -> None:
        acl = self.root / "tbgw.acl"
        acl.write_text(thingsboard.render_acl())
        template = self.root / "tbgw-mosquitto.conf"
        template.write_text(thingsboard.broker_template(CONF_TEMPLATE.read_text(), acl))
        self.broker = MosquittoBroker(
            self.root / "mosquitto", template=template, acl_file=acl
        ).start()
        port = self.broker.plain_port
        self.responder = thingsboard.SessionLimitsResponder(self.broker.host, port).start()
        self.witness = Witness(
            self.broker.host, port, thingsboard.TELEMETRY_TOPIC, thingsboard.BENCH_USER
        )
        self.config_dir = thingsboard.write_config_dir(
            self.root / "tbgw", self.install.package_dir(),
            host=self.broker.host, port=port, serial_port=self.sink.path,
        )  # fmt: skip
        self.start_gateway()

    def start_gateway(self) -> None:
        log = (self.root / "tbgw.out").open("ab")
        self.proc = subprocess.Popen(
            thingsboard.gateway_command(self.install), cwd=self.root / "tbgw",
            env=thingsboard.gateway_env(self.config_dir), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def refresh(self) -> None:
        assert self.witness is not None
        new = self.witness.take(self._seen)
        self._seen += len(new)
        for t, payload in new:
            for line in thingsboard.readings_in_telemetry(payload):
                n = reading_of_line(line)
                if n is None:
                    self.unparsed += 1
                else:
                    self.arrivals.setdefault(n, []).append(t)

    def delivered(self) -> set[int]:
        self.refresh()
        return set(self.arrivals)

    def info(self) -> dict[str, Any]:
        return {
            "name": "ThingsBoard IoT Gateway",
            "version": self.install.version(),
            "session_limit_requests_answered": self.responder.requests if self.responder else 0,
            "lines_not_parsed": self.unparsed,
            "payload_bytes": self.witness.payload_bytes if self.witness else 0,
        }

    def stored_not_sent(self) -> int:
        """Records left in the peer's SQLite storage (read after it stopped)."""
        total = 0
        for db in (self.root / "tbgw" / "data").glob("*.db"):
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                total += conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        return total

    def close(self) -> None:
        super().close()
        for part in (self.witness, self.responder):
            if part is not None:
                part.stop()
        if self.broker.running:
            self.broker.stop()


class Ours(Side):
    name = "ours"

    def __init__(self, root: Path, sink: PtySink) -> None:
        super().__init__(root, sink)
        self.site: Site = make_site(root / "site")
        self.stack = Stack(self.site, root / "stack")
        self.witness: Witness | None = None
        self._seen = 0
        self.event_arrivals: dict[bytes, list[float]] = {}

    def start(self) -> None:
        self.stack.start()
        assert self.stack.broker is not None
        self.broker = self.stack.broker
        self.witness = Witness(self.broker.host, self.broker.plain_port,
                               events_topic(DEVICE_ID), None)  # fmt: skip
        self.start_gateway()

    def start_gateway(self) -> None:
        log = (self.root / "ours.stderr").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peers.ours", "--data-dir", str(self.site.gateway_dir),
             "--port", self.sink.path, "--broker", self.stack.url()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if line != ours.READY_LINE:
            raise RuntimeError(f"our bench gateway did not start:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        path = self.root / "ours.stderr"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def refresh(self) -> None:
        assert self.witness is not None
        new = self.witness.take(self._seen)
        self._seen += len(new)
        for t, payload in new:
            batch = decode_batch(payload, device_id=DEVICE_ID)
            for env in batch.envelopes:
                self.event_arrivals.setdefault(event_id_of(env), []).append(t)
        readings = ours.ledger_readings(self.site.ledger_dir / "ledger.sqlite")
        self.arrivals = {}
        for event_id, times in self.event_arrivals.items():
            n = readings.get(event_id)
            if n is not None:
                self.arrivals.setdefault(n, []).extend(times)

    def delivered(self) -> set[int]:
        # Logged by the ledger, which implies the broker had it.
        return set(ours.ledger_readings(self.site.ledger_dir / "ledger.sqlite").values())

    def info(self) -> dict[str, Any]:
        self.refresh()
        return {
            "name": "cobalt-custody (bench.peers.ours, per-frame records)",
            "ledger_pid": self.stack.ledger_proc.pid if self.stack.ledger_proc else None,
            "events_at_broker_not_logged": sum(
                1
                for e in self.event_arrivals
                if e not in ours.ledger_readings(self.site.ledger_dir / "ledger.sqlite")
            ),
            "payload_bytes": self.witness.payload_bytes if self.witness else 0,
        }

    def outbox(self) -> dict[str, int]:
        return outbox_counts(self.site)

    def close(self) -> None:
        super().close()
        if self.witness is not None:
            self.witness.stop()
        self.stack.stop()


# --- phases ---


def _settle(side: Side, ids: list[int], *, settle_s: float, quiet_s: float) -> float:
    """Wait until every id is delivered, or nothing new for ``quiet_s``, or ``settle_s``."""
    want = set(ids)
    t0 = last_change = time.monotonic()
    count = -1
    while True:
        got = side.delivered() & want
        now = time.monotonic()
        if len(got) != count:
            count, last_change = len(got), now
        if got == want or now - last_change > quiet_s or now - t0 > settle_s:
            return now - t0
        time.sleep(0.25)


def _arrival_stats(side: Side, stream: Stream, ids: list[int]) -> dict[str, Any]:
    side.refresh()
    first = {n: min(side.arrivals[n]) for n in ids if n in side.arrivals}
    lat = sorted(first[n] - stream.offered[n] for n in first)
    dups = sum(len(side.arrivals[n]) - 1 for n in first)
    out: dict[str, Any] = {"offered": len(ids), "delivered": len(first),
                           "lost": len(ids) - len(first), "duplicates": dups}  # fmt: skip
    if first:
        span = max(first.values()) - stream.offered[ids[0]]
        out["events_per_s"] = round(len(first) / span, 1) if span > 0 else None
        out["latency_ms_p50"] = round(1000 * statistics.median(lat), 1)
        out["latency_ms_p95"] = round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1)
    return out


def _load_phase(
    side: Side, stream: Stream, count: int, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    port = side.broker.plain_port
    p0 = proc_sample(side.pid)
    w0 = tcp_counters(side.pid, port)
    ledger0 = _ledger_cpu(side)
    ids = stream.offer(count, rate)
    waited = _settle(side, ids, settle_s=args.settle_s, quiet_s=args.quiet_s)
    p1 = proc_sample(side.pid)
    w1 = tcp_counters(side.pid, port)
    out = _arrival_stats(side, stream, ids)
    n = max(out["delivered"], 1)
    out.update({
        "offered_rate": rate or "saturation",
        "cpu_us_per_event": round((p1.cpu_s - p0.cpu_s) / n * 1e6, 1),
        "wire_bytes_per_event": round((w1[0] - w0[0]) / n, 1),
        "downlink_bytes_per_event": round((w1[1] - w0[1]) / n, 1),
        "rss_mb": round(p1.rss_mb, 1),
        "rss_anon_mb": round(p1.rss_anon_mb, 1),
        "rss_file_mb": round(p1.rss_file_mb, 1),
        "settle_s": round(waited, 1),
    })  # fmt: skip
    ledger1 = _ledger_cpu(side)
    if ledger0 is not None and ledger1 is not None:
        out["ledger_cpu_us_per_event"] = round((ledger1 - ledger0) / n * 1e6, 1)
    return out


def _ledger_cpu(side: Side) -> float | None:
    if isinstance(side, Ours) and side.stack.ledger_proc is not None:
        return proc_sample(side.stack.ledger_proc.pid).cpu_s
    return None


@contextlib.contextmanager
def _streaming(stream: Stream, rate: float) -> Iterator[list[int]]:
    ids: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=stream.offer_until, args=(stop, rate, ids), daemon=True)
    thread.start()
    try:
        yield ids
    finally:
        stop.set()
        thread.join(10)


def _outage_phase(side: Side, stream: Stream, args: argparse.Namespace) -> dict[str, Any]:
    with _streaming(stream, args.fault_rate) as ids:
        time.sleep(5)
        side.broker.stop()
        time.sleep(args.outage_s)
        side.broker.start()
        time.sleep(5)
    waited = _settle(side, ids, settle_s=args.settle_s, quiet_s=args.quiet_s)
    out = _arrival_stats(side, stream, ids)
    out.update({"outage_s": args.outage_s, "settle_s": round(waited, 1)})
    return out


def _kill_phase(side: Side, stream: Stream, args: argparse.Namespace) -> dict[str, Any]:
    with _streaming(stream, args.fault_rate) as ids:
        time.sleep(5)
        side.broker.stop()
        time.sleep(5)
        side.kill_gateway()
        before_kill = list(ids)
        time.sleep(1)
        side.start_gateway()
        time.sleep(5)
        side.broker.start()
        time.sleep(5)
    waited = _settle(side, ids, settle_s=args.settle_s, quiet_s=args.quiet_s)
    out = _arrival_stats(side, stream, ids)
    delivered = side.delivered()
    out.update({
        "offered_before_kill": len(before_kill),
        "lost_offered_before_kill": sum(1 for n in before_kill if n not in delivered),
        "settle_s": round(waited, 1),
    })  # fmt: skip
    return out


def _wait_port_open(side: Side, timeout_s: float = GATEWAY_START_TIMEOUT_S) -> None:
    """Until the gateway holds the pty open: pyserial flushes the input queue when it opens
    a port, so frames written earlier would be lost to either gateway."""
    deadline = time.monotonic() + timeout_s
    fd_dir = f"/proc/{side.pid}/fd"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for name in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{name}") == side.sink.slave_path:
                        return
        time.sleep(0.1)
    raise RuntimeError(f"{side.name}: the gateway did not open {side.sink.path}")


def _run_side(side: Side, stream: Stream, args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    side.start()
    try:
        _wait_port_open(side)
        warm = stream.offer(20, args.rate)
        _settle(side, warm, settle_s=GATEWAY_START_TIMEOUT_S, quiet_s=GATEWAY_START_TIMEOUT_S)
        phases["warmup"] = _arrival_stats(side, stream, warm)
        if phases["warmup"]["delivered"] == 0:
            raise RuntimeError(f"{side.name}: nothing reached the broker after warm-up")
        count = max(1, round(args.rate * args.fixed_s))
        phases["fixed"] = _load_phase(side, stream, count, args.rate, args)
        phases["saturation"] = _load_phase(side, stream, args.saturation_frames, 0.0, args)
        phases["outage"] = _outage_phase(side, stream, args)
        phases["kill"] = _kill_phase(side, stream, args)
        info = side.info()
        if isinstance(side, Ours):
            info["outbox"] = side.outbox()
        phases["info"] = info
    finally:
        side.close()
    if isinstance(side, Theirs):
        phases["info"]["stored_not_sent_at_stop"] = side.stored_not_sent()
    return phases


def _figures(sides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    def pick(side: Mapping[str, Any]) -> dict[str, Any]:
        fixed, sat = side["fixed"], side["saturation"]
        return {
            "events_per_s_fixed": fixed.get("events_per_s"),
            "events_per_s_saturation": sat.get("events_per_s"),
            "latency_ms_p50_fixed": fixed.get("latency_ms_p50"),
            "wire_bytes_per_event": fixed.get("wire_bytes_per_event"),
            "rss_mb": fixed.get("rss_mb"),
            "rss_anon_mb": fixed.get("rss_anon_mb"),
            "cpu_us_per_event_fixed": fixed.get("cpu_us_per_event"),
            "cpu_us_per_event_saturation": sat.get("cpu_us_per_event"),
            "lost_after_kill": side["kill"]["lost_offered_before_kill"],
            "lost_after_outage": side["outage"]["lost"],
            "duplicates": side["kill"]["duplicates"] + side["outage"]["duplicates"],
        }

    picked = {name: pick(side) for name, side in sides.items()}
    out: dict[str, dict[str, Any]] = {}
    for key in next(iter(picked.values())):
        row: dict[str, Any] = {name: vals[key] for name, vals in picked.items()}
        a, b = row.get("ours"), row.get("theirs")
        if isinstance(a, int | float) and isinstance(b, int | float):
            row["ratio"] = round(a / b, 3) if b else None
        out[key] = row
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    sides: dict[str, dict[str, Any]] = {}
    with temp_root("custody-bench-peers-") as root:
        try:
            sink = PtySink(root / "ttyWB")
            stream = Stream(sink)
            order: list[tuple[str, Callable[[], Side]]] = []
            if args.only in ("both", "theirs"):
                order.append(("theirs", lambda: Theirs(root / "theirs", sink, args.tbgw_version)))
            if args.only in ("both", "ours"):
                order.append(("ours", lambda: Ours(root / "ours", sink)))
            for name, make in order:
                (root / name).mkdir()
                sides[name] = _run_side(make(), stream, args)
            sink.close()
        finally:
            if args.keep is not None:
                shutil.copytree(root, args.keep, dirs_exist_ok=True, symlinks=True)
    return {
        "benchmark": "peers",
        "figures": _figures(sides),
        "sides": sides,
        "guarantees": {k: GUARANTEES[k] for k in sides},
        "settings": {k: SETTINGS[k] for k in sides},
        "caveats": CAVEATS,
        "stream": "XK3190-A12 frames on a pty, weight field = reading number (bench.peers.stream)",
        "wire_bytes_method": (
            "kernel tcpi_bytes_acked of the gateway process's sockets to its broker (ss -ti), "
            "over the fixed-load phase, divided by readings delivered"
        ),
        "parameters": {
            "rate": args.rate,
            "fixed_s": args.fixed_s,
            "saturation_frames": args.saturation_frames,
            "fault_rate": args.fault_rate,
            "outage_s": args.outage_s,
            "settle_s": args.settle_s,
            "quiet_s": args.quiet_s,
            "only": args.only,
            "tbgw_version": args.tbgw_version,
        },
        "wall_s": round(time.time() - started, 1),
        "machine": machine(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def render(result: Mapping[str, Any]) -> str:
    lines = [f"{'figure':<30}{'ours':>12}{'theirs':>12}{'ours/theirs':>13}"]
    for key, row in result["figures"].items():
        lines.append(
            f"{key:<30}{_fmt(row.get('ours')):>12}{_fmt(row.get('theirs')):>12}"
            f"{_fmt(row.get('ratio')):>13}"
        )
    lines.append("")
    for side, text in result["guarantees"].items():
        lines.append(f"{side}: {text}")
    for side, text in result["settings"].items():
        lines.append(f"{side} settings: {text}")
    lines.append(f"wall time {result['wall_s']} s; figures are noisy on a shared 2-core machine")
    return "\n".join(lines)
