"""``make demo``: a site's morning, from the weighbridge to a buyer's verified lot.

Embedded defaults, no hardware: everything lives in a temporary directory (or ``--data-dir``).
The demo runs the same programs an operator would, and prints the commands as it goes:

1. ``custody-registry init`` makes the consortium's registry authority key and
   ``custody-ledger init`` the ledger's keys (pinning the authority); ``custody-agent init``
   makes the identities of two gateways (a mine and a refiner), the authority enrols them
   (``custody-registry enrol``) and the ledger logs its entries (``custody-ledger enrol``).
2. A private Mosquitto (the production config template, TLS with client certificates from a
   throwaway PKI, per-device ACL) on free loopback ports, unless ``--broker`` names a plain
   ``mqtt://`` broker, and ``custody-ledger run`` taking records in.
3. The mine's gateway service, ``custody-agent run``, configured like a site engineer would:
   a weighbridge indicator, an RFID reader and a barcode scanner on serial ports (here simulated
   devices on pseudo-terminals), and sync to the broker.
4. The yard: trucks drive on, the indicator settles, the RFID reader reads the tag on the
   windscreen; the service captures each stable weight as a signed weighing, pairs the two
   passes of a visit and prints the driver's ticket. Ore comes in; at the bagging station (a
   second process on the same outbox, as the handheld console would be) sealed bags of the lot
   are weighed, tagged and the lot is closed; the dispatch truck leaves with the bags, their
   seals scanned at the bridge. Meanwhile the site's uplink drops (the private broker is
   stopped) and comes back: the outbox holds the records and then drains. A live view shows
   the captures, the outbox and the ledger's acks, from the service's ``/metrics`` and the
   ledger's log (redrawn in place on a terminal, plain lines when piped).
5. ``SIGTERM`` drains the service; every gateway record is checked to be a leaf of the
   ledger's signed log, and the last one gets an inclusion proof checked here.
6. The refiner (a second gateway) receives the lot, its receipt typed with ``custody-agent
   record weighing --direction in``; the ledger proves the lot's total, the receipt within
   tolerance and the mine's mass balance in one zero-knowledge bundle (``custody-ledger
   summary``), after the authority's heartbeat shows the registry complete.
   The buyer pins the ledger's and the registry authority's public keys in a trust file of
   their own (``custody-verify trust add``) and ``custody-verify`` checks the bundle offline
   against those pins: nothing in the folder the seller hands over is trusted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from agent import enrol
from agent.identity import load_ledger_keys
from agent.recorder import Recorder
from agent.settings import SETTINGS
from custody.event import EventType
from custody.mass import kg_to_units
from custody.merkle import leaf_hash, root_from_leaf_hashes, verify_inclusion
from firmware_bridge.sim import encoders
from firmware_bridge.sim.runner import PtySink
from ledger.log import Checkpoint, verify_checkpoint

if TYPE_CHECKING:
    from lab.mosquitto import MosquittoBroker
    from ledger.store import LedgerStore

DEVICE_ID, SITE_ID = "gw-kol-01", "KOL-01"
REFINER_DEVICE, REFINER_SITE = "gw-ref-01", "REF-01"
LOT = "LOT-2026-0042"
# Waits are deadlines, not expectations: the whole demo takes about half a minute.
WAIT_S = 60.0
SYNC_TIMEOUT_S = 60
COMMANDS = {
    "custody-agent": "agent.cli",
    "custody-ledger": "ledger.cli",
    "custody-registry": "ledger.authority_cli",
    "custody-verify": "ledger.verify.cli",
}

# The simulated devices. The XK3190-A12 sends a weight frame continuously and has no motion
# flag (device-protocols.md §1.6), so stability is the gateway's window alone. The demo keeps
# every weighbridge setting at its default, as a site does: a truck stands still until the
# gateway has weighed it, which takes at least the default window_s of stable readings.
SCALE_DIALECT = "xk3190-a12"
FRAME_S = 0.05  # 20 frames/s, like a real indicator's continuous output
WINDOW_S = float(next(s.default for s in SETTINGS if s.key == "weighbridge.window_s"))
DIVISION_KG = 20  # the bridge's verification scale interval (OIML R76 "e")
BAG_KG = "1502.5"
SEALS = tuple(f"SEAL-{n:06d}" for n in (104201, 104202, 104203))


@dataclass(frozen=True, slots=True)
class Truck:
    plate: str
    tag: str  # the EM4100 tag on its windscreen (10 hex digits): what the gateway sees


ORE_1 = Truck("CD-LSH-1187", "3C00A1B2C4")
ORE_2 = Truck("CD-LSH-2231", "3C00A1C90E")
DISPATCH = Truck("CD-KLZ-4471", "4A0017F3D2")
TRUCKS = (ORE_1, ORE_2, DISPATCH)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


# --- output ----------------------------------------------------------------------------------
class Console:
    """Transcript lines plus one status line: redrawn in place on a terminal; elsewhere
    (a pipe, a test) printed only when its content changed, so a log stays short."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._status = ""
        self._printed = ""
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\r\x1b[K")
            self.stream.write(text + "\n")
            if self.tty and self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def status(self, line: str, *, key: str) -> None:
        """Show ``line``; ``key`` is its content without the clock (what counts as a change)."""
        with self._lock:
            if self.tty:
                # One terminal row, or "\r" would not return to its start (wrapped lines).
                width = shutil.get_terminal_size().columns - 1
                self._status = line if len(line) <= width else line[: width - 1] + "…"
                self.stream.write("\r\x1b[K" + self._status)
            elif key != self._printed:
                self.stream.write(line + "\n")
            self._printed = key
            self.stream.flush()

    def end_status(self) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""


def step(title: str) -> None:
    print(f"\n== {title} ==")


def run_cmd(*argv: str, quiet: bool = False) -> str:
    """Run ``custody-agent``/``custody-ledger`` as a subprocess, echoing it like a transcript."""
    shown = " ".join(shlex.quote(a) for a in argv)
    print(f"$ {shown}")
    done = subprocess.run(
        [sys.executable, "-m", COMMANDS[argv[0]], *argv[1:]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"`{shown}` exited {done.returncode}: {done.stderr.strip()}")
    if not quiet:
        print(done.stdout, end="")
    return done.stdout


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


# --- keys, broker, ledger ------------------------------------------------------------------------
def enrol_gateway(
    root: Path, ledger_dir: Path, ledger_pub: str, authority_dir: Path, site: str, device: str
) -> Path:
    gw_dir = root / device
    record = run_cmd(
        "custody-agent", "--data-dir", str(gw_dir), "init", "--site", site,
        "--device", device, "--ledger-key", ledger_pub, quiet=True,
    )  # fmt: skip
    record_file = root / f"enrolment-{device}.json"
    record_file.write_text(record)
    print(f"enrolment record written to {record_file}")
    # The consortium's registry authority signs the enrolment; the ledger only logs it.
    entry = run_cmd("custody-registry", "enrol", str(record_file), "--site", site,
                    "--dir", str(authority_dir)).splitlines()[0]  # fmt: skip
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "enrol", entry)
    return gw_dir


def registry_heartbeat(ledger_dir: Path, authority_dir: Path) -> None:
    entry = run_cmd("custody-registry", "heartbeat", "--dir", str(authority_dir)).splitlines()[0]
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "registry", "add", entry)


@contextlib.contextmanager
def private_broker(
    root: Path,
) -> Iterator[tuple[MosquittoBroker, str, dict[str, dict[str, str]], list[str]]]:
    """A TLS Mosquitto with a throwaway PKI: (it, url, TLS settings per gateway, ledger TLS
    flags)."""
    from lab.mosquitto import MosquittoBroker, TestPKI

    pki = TestPKI.create(root / "pki", [DEVICE_ID, REFINER_DEVICE])
    with MosquittoBroker(root / "mosquitto", pki) as broker:
        url = f"mqtts://{broker.host}:{broker.tls_port}"
        print(f"private Mosquitto on {url} (TLS, client certificates, per-device ACL)")
        gateway_tls = {}
        for device_id in (DEVICE_ID, REFINER_DEVICE):
            device = pki.device(device_id)
            gateway_tls[device_id] = {
                "sync.ca_file": str(pki.ca_file), "sync.cert_file": str(device.cert),
                "sync.key_file": str(device.key),
            }  # fmt: skip
        ledger_tls = [
            "--ca-file", str(pki.ca_file), "--cert-file", str(pki.ledger.cert),
            "--key-file", str(pki.ledger.key),
        ]  # fmt: skip
        yield broker, url, gateway_tls, ledger_tls


def set_config(gw_dir: Path, settings: dict[str, str]) -> None:
    """What a site engineer does with ``custody-agent config set``: checked, comments kept."""
    enrol.set_settings(gw_dir / "config.toml", list(settings.items()))


def configure_sync(gw_dir: Path, url: str, tls: dict[str, str]) -> None:
    set_config(gw_dir, {"sync.broker": url, **tls})


@contextlib.contextmanager
def ledger_running(ledger_dir: Path, url: str, tls_flags: list[str]) -> Iterator[None]:
    argv = ["custody-ledger", "--data-dir", str(ledger_dir), "run", "--broker", url, *tls_flags,
            "--http", "127.0.0.1:0"]  # fmt: skip
    print("$ " + " ".join(shlex.quote(a) for a in argv) + " &")
    log = (ledger_dir / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *argv[1:]], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        if proc.poll() is not None:
            raise DemoError(f"custody-ledger run exited {proc.returncode}: see {log.name}")
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        log.close()


# --- the simulated yard ------------------------------------------------------------------------
class Yard:
    """The mine's weighbridge as the gateway sees it: an indicator, an RFID reader and a seal
    scanner on three pseudo-terminals (``firmware_bridge.sim``), driven by one script so the
    reader sees a truck's tag, and the scanner its seals, while the indicator shows it on the
    bridge. Like the traffic light of an unattended bridge, a truck stays until the gateway
    has weighed it (``weighed`` turns true), then drives off."""

    def __init__(self, root: Path, console: Console) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.scale = PtySink(root / "ttyWB")
        self.rfid = PtySink(root / "ttyRFID")
        self.scanner = PtySink(root / "ttySCAN")
        self.console = console

    def close(self) -> None:
        for sink in (self.scale, self.rfid, self.scanner):
            sink.close()

    def _frame(self, kg: int, *, extra: Callable[[], None] | None = None) -> None:
        self.scale.write(encoders.xk3190_a12(f"{kg:07d}"))
        if extra is not None:
            extra()
        time.sleep(FRAME_S)

    def idle(self, frames: int) -> None:
        for _ in range(frames):
            self._frame(0)

    def visit(
        self,
        truck: Truck,
        kg: int,
        why: str,
        weighed: Callable[[], bool],
        *,
        seals: Sequence[str] = (),
    ) -> None:
        """One pass over the bridge: drive on, rock, settle, wait for the capture, drive off."""
        self.console.say(
            f"yard: {truck.plate} (tag {truck.tag}) drives on, {why}: the bridge reads {kg:,} kg"
        )
        to_scan = list(seals)

        def reads() -> None:
            # The reader repeats the tag while it is in the field (about every 50 ms), and
            # the gatekeeper scans the load's seals as the truck rolls on.
            self.rfid.write(encoders.rdm6300(truck.tag))
            if to_scan:
                self.scanner.write(encoders.scanner_line(to_scan.pop(0)))

        ramp = 8
        for i in range(1, ramp + 1):
            self._frame(_division(kg * i / ramp), extra=reads)
        for swing in (260, -180, 120, -60):  # the truck rocks on its suspension
            self._frame(kg + swing, extra=reads)
        deadline = time.monotonic() + WAIT_S
        held = 0
        # Stand still for at least the gateway's window, then ask it every fifth frame (a
        # /metrics scrape) until it has weighed the truck: the unattended bridge's green light.
        while held < WINDOW_S / FRAME_S or held % 5 or not weighed():
            if time.monotonic() >= deadline:
                raise DemoError(f"the gateway did not capture {truck.plate} within {WAIT_S:g} s")
            self._frame(kg, extra=reads if held < 4 else None)
            held += 1
        for i in range(ramp - 1, -1, -1):
            self._frame(_division(kg * i / ramp))
        self.idle(4)


def _division(kg: float) -> int:
    return round(kg / DIVISION_KG) * DIVISION_KG


# --- watching the service -------------------------------------------------------------------------
@dataclass
class Snapshot:
    """What the live view shows, from the service's /metrics and the ledger's log."""

    outcomes: dict[str, float] = field(default_factory=dict)  # captures by outcome
    passes: dict[str, float] = field(default_factory=dict)
    outbox: dict[str, float] = field(default_factory=dict)  # events by state
    acked_since_start: float = 0.0
    last_ack: float | None = None  # unix time
    connected: bool = False
    ledger_log: int = 0

    @property
    def drained(self) -> bool:
        total = sum(self.outbox.values())
        return total > 0 and self.outbox.get("acked", 0) == total

    def line(self) -> str:
        others = {k: v for k, v in self.outcomes.items() if k != "captured"}
        passes = ", ".join(f"{k} {int(v)}" for k, v in sorted(self.passes.items()))
        ob = self.outbox
        parts = [
            f"captured {int(self.outcomes.get('captured', 0))}"
            + (f" ({passes})" if passes else ""),
            *(f"{k} {int(v)}" for k, v in sorted(others.items())),
            f"outbox pending {int(ob.get('pending', 0))} sent {int(ob.get('sent', 0))} "
            f"acked {int(ob.get('acked', 0))}",
            f"ledger log {self.ledger_log}",
        ]
        if not self.connected:
            parts.append("broker: connecting")
        return " | ".join(parts)


class Monitor:
    """Scrapes the service's /metrics and reads the ledger's log size; the live view."""

    def __init__(self, service_url: str, ledger_dir: Path, service_log: Path, console: Console):
        self.url = service_url
        self.ledger_dir = ledger_dir
        self.service_log = service_log
        self.console = console
        self.latest = Snapshot()
        self.tickets: list[str] = []
        self._log_offset = 0
        self._log_lock = threading.Lock()
        self._store: LedgerStore | None = None
        self._store_lock = threading.Lock()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)

    def scrape(self) -> Snapshot:
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:  # noqa: S310
                text = resp.read().decode()
        except OSError as exc:  # URLError included
            raise DemoError(
                f"the service's /metrics did not answer ({exc}); its log ends:\n"
                + _tail(self.service_log)
            ) from exc
        snap = Snapshot(ledger_log=self._ledger_log())
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "custody_captures_total":
                    snap.outcomes[s.labels["outcome"]] = s.value
                elif s.name == "custody_weighbridge_passes_total":
                    snap.passes[s.labels["pass"]] = s.value
                elif s.name == "custody_outbox_events":
                    snap.outbox[s.labels["state"]] = s.value
                elif s.name == "custody_sync_acked_total":
                    snap.acked_since_start = s.value
                elif s.name == "custody_sync_last_ack_timestamp_seconds":
                    snap.last_ack = s.value
                elif s.name == "custody_sync_connected":
                    snap.connected = s.value == 1
        self.latest = snap
        return snap

    def _ledger_log(self) -> int:
        """Device records in the ledger's log (its size less the registry's entries), read
        from its store (SQLite in WAL mode: readers never block the running ledger)."""
        from ledger.cli import STORE_FILE
        from ledger.store import LedgerStore

        with self._store_lock:
            if self._store is None:
                path = self.ledger_dir / STORE_FILE
                if not path.exists():
                    return 0
                self._store = LedgerStore(path)
            return self._store.log_size() - len(self._store.registry_entries())

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Snapshot:
        """Stop the view after one last refresh; returns what it showed."""
        self._stop.set()
        self._thread.join(10)
        try:
            snap = self.refresh()
        except DemoError:  # the service is gone: the caller reports why
            snap = self.latest
        self.console.end_status()
        return snap

    def refresh(self) -> Snapshot:
        """Update the view now (from the caller's thread)."""
        self._read_log()
        snap = self.scrape()
        self._render(snap)
        return snap

    def _run(self) -> None:
        while not self._stop.wait(1.0):  # about once a second, like `watch`
            with contextlib.suppress(DemoError):  # the main thread reports a dead service
                self.refresh()

    def _render(self, snap: Snapshot) -> None:
        line = snap.line()
        shown = f"[{time.monotonic() - self._started:5.1f}s] {line}"
        if snap.last_ack is not None:
            shown += f" | last ack {max(0.0, time.time() - snap.last_ack):.1f} s ago"
        self.console.status(shown, key=line)

    def _read_log(self) -> None:
        """New driver's tickets from the service's log (one JSON event per line)."""
        with self._log_lock:
            self._read_log_locked()

    def _read_log_locked(self) -> None:
        try:
            with self.service_log.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for raw in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if event.get("event") == "weighbridge.ticket":
                    self.tickets.append(_ticket_line(event))
                    self.console.say("gateway: " + self.tickets[-1])
                elif event.get("level") in ("warning", "error"):
                    self.console.say(f"gateway {event['level']}: {event.get('event')} {raw!r}")


def _ticket_line(ticket: dict[str, Any]) -> str:
    """The service's ``weighbridge.ticket`` event (the ticket's fields) as one line."""
    net = ticket.get("net_kg")
    net_text = f"{float(net):,.1f} kg".replace(",", " ") if net is not None else "?"
    seals = ticket.get("seals", 0)
    return (
        f"ticket seq {ticket.get('seq', '?')}: {ticket.get('vehicle', '?')} "
        f"NET {net_text} {ticket.get('material', '')}" + (f", {seals} seal(s)" if seals else "")
    ).rstrip()


@contextlib.contextmanager
def gateway_service(gw_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``custody-agent run`` in the background: (process, its HTTP URL, its log file)."""
    argv = ["custody-agent", "--data-dir", str(gw_dir), "run", "--log-format", "json"]
    log_path = gw_dir / "service.log"
    print("$ " + " ".join(shlex.quote(a) for a in argv) + f" > {log_path} &")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *argv[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each log line reaches the file at once
        )
    try:
        info = gw_dir / "service.json"

        def up() -> bool:
            if proc.poll() is not None:
                raise DemoError(f"custody-agent run exited {proc.returncode}: {_tail(log_path)}")
            return info.exists()

        wait_for(up, "the service's HTTP endpoint (service.json)")
        url = str(json.loads(info.read_text())["url"])
        yield proc, url, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def health(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:  # noqa: S310
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while failing: the body still says why
        body = json.loads(exc.read())
    return body


# --- the morning ---------------------------------------------------------------------------------
def bagging_station(gw_dir: Path, console: Console) -> None:
    """Sealed bags of the lot, weighed on the bagging platform and tagged: a second process on
    the gateway's outbox (as ``custody-agent scan`` would be), beside the running service."""
    with Recorder(gw_dir, boot_reason="bagging station") as rec:
        for seal in SEALS:
            rec.weighing(bag=kg_to_units(BAG_KG), lot=LOT, seals=[seal], direction="out")
            rec.seal_scan(seal, lot=LOT, symbology="QR")
            console.say(f"bagging: bag {seal} {BAG_KG} kg into {LOT} (weighed, sealed, tagged)")
        mistaken = rec.seal_scan("SEAL-104299", lot=LOT)
        rec.void(mistaken.event_id, "scanned a bag of another lot")
        console.say("bagging: SEAL-104299 scanned by mistake, voided (a signed void, not a delete)")
        rec.record(EventType.AGGREGATION, {"lot": LOT, "children": list(SEALS), "action": "ADD"})
        # The site's share of the lot: one commitment to the sum of its bags, then a checkpoint.
        rec.lot_close(LOT)
        console.say(f"bagging: {LOT} closed: {len(SEALS)} bags, a commitment to their sum")


def morning(
    yard: Yard, monitor: Monitor, gw_dir: Path, console: Console, broker: MosquittoBroker | None
) -> None:
    def passes() -> int:
        return int(sum(monitor.scrape().passes.values()))

    def one_more() -> Callable[[], bool]:
        before = passes()
        return lambda: passes() > before

    yard.idle(10)  # the indicator's empty-bridge stream: zero tracking
    # Ore in: each truck weighed full on arrival and empty on leaving (two passes, one ticket).
    yard.visit(ORE_1, 38_420, "ore, full", one_more())
    yard.visit(ORE_2, 41_260, "ore, full", one_more())
    yard.visit(ORE_1, 14_300, "tipped at the pad, empty", one_more())
    yard.visit(ORE_2, 15_020, "tipped at the pad, empty", one_more())
    if broker is not None:  # a real outage: the broker stops (SIGTERM, persisting its sessions)
        broker.stop()
        console.say("link: the site's uplink is down; the gateway keeps capturing to its outbox")
    bagging_station(gw_dir, console)
    # The lot leaves: the dispatch truck's tare on arrival, then loaded, its bags' seals scanned.
    yard.visit(DISPATCH, 14_140, "dispatch, empty", one_more())
    if broker is not None:
        monitor.refresh()  # the backlog, as it stands at the end of the outage
        broker.restart()
        console.say("link: the uplink is back; the outbox drains to the ledger")
    yard.visit(DISPATCH, 18_660, f"dispatch, loaded with {LOT}", one_more(), seals=SEALS)


# --- the ledger's side ----------------------------------------------------------------------------
def signed_checkpoint(ledger_dir: Path) -> Checkpoint:
    cp_json: dict[str, Any] = json.loads(
        run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "log", "checkpoint", quiet=True)
    )
    return verify_checkpoint(
        bytes.fromhex(cp_json["checkpoint"]), load_ledger_keys(ledger_dir / "ledger-public.json")
    )


def audit_ledger(ledger_dir: Path, gw_dir: Path) -> tuple[int, int, bytes, Checkpoint]:
    """(gateway events, how many are acked and in the signed log, the last event id, the
    ledger's signed checkpoint): every leaf
    of the ledger's log recomputed into the root the ledger signed (RFC 9162 §2.1.1)."""
    from ledger.cli import STORE_FILE
    from ledger.store import LedgerStore

    listed = json.loads(run_cmd("custody-agent", "--data-dir", str(gw_dir), "events", "list",
                                "--json", quiet=True))  # fmt: skip
    checkpoint = signed_checkpoint(ledger_dir)
    store = LedgerStore(ledger_dir / STORE_FILE)
    try:
        leaves = store.leaf_hashes(0, checkpoint.size)
    finally:
        store.close()
    if root_from_leaf_hashes(leaves) != checkpoint.root:
        raise DemoError("the ledger's log does not hash to the root it signed")
    in_log = set(leaves)
    verified = sum(
        1 for e in listed
        if e["state"] == "acked" and leaf_hash(bytes.fromhex(e["event_id"])) in in_log
    )  # fmt: skip
    print(
        f"signed checkpoint: size {checkpoint.size}, root {checkpoint.root.hex()[:16]}…; "
        f"{verified} of the gateway's {len(listed)} records are leaves of it"
    )
    return len(listed), verified, bytes.fromhex(listed[-1]["event_id"]), checkpoint


def check_inclusion(ledger_dir: Path, event_id: bytes, checkpoint: Checkpoint) -> None:
    """An inclusion proof from the ledger's CLI, verified here against its signed checkpoint."""
    index = checkpoint.size - 1
    proof_json: dict[str, Any] = json.loads(
        run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "log", "prove-inclusion",
                str(index), quiet=True)
    )  # fmt: skip
    leaf = bytes.fromhex(proof_json["leaf_hash"])
    if leaf != leaf_hash(event_id):
        raise DemoError(f"log entry {index} is not the gateway's last record")
    proof = [bytes.fromhex(h) for h in proof_json["proof"]]
    verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    print(
        f"the gateway's last record {event_id.hex()[:16]}… is entry {index} of the signed log "
        f"({len(proof)}-hash inclusion proof verified against the checkpoint)"
    )


def receive_at_refiner(ref_dir: Path) -> None:
    """The refiner weighs the lot in: 4,507.5 kg of bags, read as 4,505 kg. Its receipt is what
    an operator without a weighbridge link types: a weighing of the lot, direction in."""
    run_cmd(
        "custody-agent", "--data-dir", str(ref_dir), "record", "weighing", "--gross-kg", "18655",
        "--tare-kg", "14150", "--vehicle", DISPATCH.plate, "--lot", LOT, "--direction", "in",
    )  # fmt: skip
    print("refiner REF-01 weighed the lot in: net 4505.0 kg")


# --- the whole path ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parties:
    """Where each party of the demo keeps its files, and the public keys others pin."""

    ledger_dir: Path
    authority_dir: Path
    authority_pub: str  # the registry authority's public key file
    ledger_pub: str  # the ledger's public key file
    mine_dir: Path  # the mine's gateway
    refiner_dir: Path  # the refiner's gateway


def create_parties(root: Path) -> Parties:
    step("1. keys: the registry authority, the ledger, two gateways (a mine and a refiner)")
    ledger_dir = root / "ledger"
    authority_dir = root / "consortium-registry"
    run_cmd("custody-registry", "init", "--name", "consortium-registry",
            "--dir", str(authority_dir))  # fmt: skip
    authority_pub = str(authority_dir / "authority-public.json")
    ledger_pub = run_cmd(
        "custody-ledger", "--data-dir", str(ledger_dir), "init", "--authority", authority_pub
    ).strip()
    return Parties(
        ledger_dir, authority_dir, authority_pub, ledger_pub,
        enrol_gateway(root, ledger_dir, ledger_pub, authority_dir, SITE_ID, DEVICE_ID),
        enrol_gateway(root, ledger_dir, ledger_pub, authority_dir, REFINER_SITE, REFINER_DEVICE),
    )  # fmt: skip


def configure_mine(gw_dir: Path, yard: Yard) -> None:
    """The settings a site engineer writes: the devices' ports and dialects."""
    # The site's vehicle registry: records and tickets name each truck by its plate.
    rows = ["tag,plate,haulier"] + [f"{t.tag},{t.plate},Kolwezi Haulage" for t in TRUCKS]
    (gw_dir / "vehicles.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    settings = {
        "weighbridge.vehicles": "vehicles.csv",
        "weighbridge.port": f"{SCALE_DIALECT}@{yard.scale.path}",
        "weighbridge.rfid": f"rdm6300@{yard.rfid.path}",
        "weighbridge.scanner": f"scanner-line@{yard.scanner.path}",
        "service.http_port": "0",  # any free port; the service names it in service.json
        # After the outage, a batch the gateway sends as it reconnects was sometimes never
        # delivered to the ledger (it reconnects at about the same time) and waited for the
        # default minute without an ack before the resend; the shortest allowed keeps the
        # demo short. Sites keep the default.
        "sync.ack_timeout_s": "5",
    }
    set_config(gw_dir, settings)
    for key, value in settings.items():
        print(f"config.toml: {key} = {value}")


def mine_day(
    stack: contextlib.ExitStack, root: Path, parties: Parties, console: Console,
    broker: MosquittoBroker | None,
) -> tuple[Snapshot, list[str]]:  # fmt: skip
    """Steps 3 and 4: the mine's service runs a morning, then drains on SIGTERM. Returns the
    live view's last snapshot and the drivers' tickets."""
    gw_dir = parties.mine_dir
    step("3. the mine's gateway service, its devices simulated on serial ports")
    yard = Yard(root / "devices", console)
    stack.callback(yard.close)
    configure_mine(gw_dir, yard)
    proc, service_url, service_log = stack.enter_context(gateway_service(gw_dir))
    wait_for(lambda: health(service_url)["status"] == "ok", "the service's /healthz to be ok")
    workers = health(service_url)["workers"]
    print(f"service up at {service_url}: workers {', '.join(sorted(workers))} ok")

    step("4. a morning at the mine (live view from /metrics and the ledger's log)")
    monitor = Monitor(service_url, parties.ledger_dir, service_log, console)
    monitor.start()
    try:
        morning(yard, monitor, gw_dir, console, broker)
        # The gateway's scheduled checkpoint, due now: it shows a buyer that the mine's
        # chain is complete past the lot (the service signs one every hour).
        run_cmd("custody-agent", "--data-dir", str(gw_dir), "checkpoint")

        def drained() -> bool:
            snap = monitor.scrape()
            return snap.drained and snap.ledger_log == int(sum(snap.outbox.values()))

        wait_for(drained, "the ledger to ack every record")
    finally:
        final = monitor.stop()
        monitor.close()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    if code != 0:
        raise DemoError(f"custody-agent run exited {code} on SIGTERM: {_tail(service_log)}")
    print(f"custody-agent run drained on SIGTERM and exited {code}")
    if monitor.tickets:
        print("the last driver's ticket (printed in full on the ticket printer, when one is set):")
        print(monitor.tickets[-1])
    return final, monitor.tickets


def buyer_verifies(root: Path, parties: Parties) -> str:
    """The seller's bundle for the lot, checked by a buyer against keys the buyer pinned."""
    ledger = str(parties.ledger_dir)
    run_cmd("custody-ledger", "--data-dir", ledger, "devices")
    # The authority's heartbeat, logged after the lot: the registry a buyer sees is complete.
    registry_heartbeat(parties.ledger_dir, parties.authority_dir)
    # What the seller hands the buyer: the bundle, in a folder of the seller's making.
    bundle = root / "from-seller" / f"{LOT}.cbor"
    bundle.parent.mkdir()
    run_cmd("custody-ledger", "--data-dir", ledger, "summary", "--lot", LOT, "--out", str(bundle))
    # The buyer's own step: pin the ledger's public keys, got from the ledger's operator, in the
    # buyer's trust file (a real buyer's is ~/.config/custody/trusted-ledgers.json; the demo
    # keeps its own). A key file in the seller's folder would be the seller's choice of ledger.
    trust = root / "buyer" / "trusted-ledgers.json"
    run_cmd("custody-verify", "trust", "add", parties.ledger_pub, "--trust", str(trust))
    run_cmd("custody-verify", "trust", "add", parties.authority_pub, "--trust", str(trust))
    return run_cmd("custody-verify", str(bundle), "--trust", str(trust))


def run(root: Path, broker_url: str | None = None, *, keep: bool = True) -> int:
    parties = create_parties(root)
    ledger_dir, gw_dir = parties.ledger_dir, parties.mine_dir
    with contextlib.ExitStack() as stack:
        step("2. a broker and the ledger")
        broker: MosquittoBroker | None = None  # ours to stop and restart (an outage)
        if broker_url is None:
            broker, url, gateway_tls, ledger_tls = stack.enter_context(private_broker(root))
        else:
            url, gateway_tls, ledger_tls = broker_url, {}, []
        for device, directory in ((DEVICE_ID, gw_dir), (REFINER_DEVICE, parties.refiner_dir)):
            configure_sync(directory, url, gateway_tls.get(device, {}))
        stack.enter_context(ledger_running(ledger_dir, url, ledger_tls))

        final, tickets = mine_day(stack, root, parties, Console(), broker)

        step("5. the ledger's signed log")
        run_cmd("custody-agent", "--data-dir", str(gw_dir), "status")
        total, verified, last_event, checkpoint = audit_ledger(ledger_dir, gw_dir)
        check_inclusion(ledger_dir, last_event, checkpoint)

        step("6. the refiner receives the lot; a zero-knowledge summary for a buyer")
        receive_at_refiner(parties.refiner_dir)
        run_cmd(
            "custody-agent", "--data-dir", str(parties.refiner_dir), "sync", "--once",
            "--timeout", str(SYNC_TIMEOUT_S),
        )  # fmt: skip
    verdict = buyer_verifies(root, parties)

    step("summary")
    outcomes = ", ".join(f"{k} {int(v)}" for k, v in sorted(final.outcomes.items()))
    passes = ", ".join(f"{k} {int(v)}" for k, v in sorted(final.passes.items()))
    print(f"weighbridge captures: {outcomes} (passes: {passes}); tickets {len(tickets)}")
    print(f"gateway records: {total} signed, {int(final.outbox.get('acked', 0))} acked, "
          f"{verified} verified in the ledger's signed log")  # fmt: skip
    print(f"buyer: {verdict.splitlines()[0].split(':', 1)[0]} ({LOT})")
    if verified != total or not verdict.startswith("ACCEPTED"):
        raise DemoError("not every record reached the ledger, or the lot was not accepted")
    print(
        f"\ndemo OK; files in {root}"
        + ("" if keep else " (removed on exit; --data-dir keeps them)")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.demo",
        description="A demo site: simulated weighbridge devices, the gateway service, a "
        "broker and a ledger; ends with a lot summary a buyer verifies.",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the demo's files here (must be new)")
    parser.add_argument(
        "--broker", metavar="URL",
        help="use this plain mqtt:// broker instead of starting a private TLS Mosquitto",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.broker is not None and not args.broker.startswith("mqtt://"):
        parser.error("--broker takes a plain mqtt://HOST:PORT (TLS needs the private PKI)")
    try:
        if args.data_dir is not None:
            return run(args.data_dir, args.broker)
        with tempfile.TemporaryDirectory(prefix="custody-demo-") as tmp:
            return run(Path(tmp), args.broker, keep=False)
    except DemoError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
