"""The gateway service with every simulator: memory, idle CPU and capture latency.

``custody-agent run`` runs as a child process, as under systemd, on a fresh
gateway (``bench.e2e.make_site``) wired to a private TLS Mosquitto and a
``custody-ledger run`` child process (``bench.e2e.Stack``). ``SiteSimulator``
plays the weighbridge: an XK3190-A12 indicator streaming at ``--rate`` frames
per second on a pseudo-terminal, trucks arriving every ``--gap`` seconds of
empty bridge (``firmware_bridge.sim.scenarios.truck_visits``: drive on, rock,
settle, hold, drive off); on arrival the RFID reader (RDM6300, its own pty)
reads the truck's tag and the scanner (its own pty) reads two seal codes. A
small fleet comes back, so visits alternate pass in / pass out with a ticket.

Measured (all from outside the service, nothing is added to it):

- ``rss_mb``: median of ``VmRSS`` in ``/proc/PID/status``, sampled every
  ``SAMPLE_S`` after ``--warmup`` seconds.
- ``cpu_percent``: the service's CPU time (``utime + stime`` in
  ``/proc/PID/stat``, all threads) over the windows with no truck on the
  bridge (from ``SETTLE_S`` after a truck left to the next arrival, after the
  warm-up), divided by the windows' wall time. The indicator keeps streaming
  an empty bridge meanwhile, as a real one does; nothing polls the service's
  HTTP endpoint inside these windows.
- ``capture_latency_ms``: the weighbridge worker's own measure, read from
  ``/metrics`` (``custody_weighbridge_capture_latency_seconds``) once per truck
  after it left: from the time the port reader read the reading that made the
  bridge stable to the time the signed weighing was durable in the outbox
  (``Recorder.weighing`` returns after the commit). One capture per truck, so
  each scrape sees exactly one new value; a scrape that sees two captures is
  counted in ``latency_missed``.
- ``captures`` and ``acked``: ``/metrics`` at the end, after waiting for the
  outbox to drain (``pending = sent = 0``); ``ledger_log_size`` is read from
  the ledger's store.

Median and p99 (nearest rank) over the run; the targets are reported, never
asserted (``meets_targets``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.e2e import Site, Stack, make_site
from bench.machine import host_busy_seconds, machine
from firmware_bridge.sim import encoders, scenarios
from firmware_bridge.sim.runner import PtySink
from ledger.store import LedgerStore

__all__ = [
    "SUMMARY",
    "TARGETS",
    "ServiceMetrics",
    "SiteSimulator",
    "Truck",
    "add_arguments",
    "configure_gateway",
    "cpu_seconds",
    "render",
    "rss_mb",
    "run",
    "set_settings",
]

SUMMARY = "the gateway service with all simulators: RSS, idle CPU, capture latency"
TARGETS: dict[str, float] = {"rss_mb": 80, "cpu_percent": 2, "capture_latency_ms": 50}
DIALECT = "xk3190-a12"
SAMPLE_S = 0.5  # RSS sampling period
SETTLE_S = 1.0  # after a truck leaves: its ticket, visit book and ack are done by then
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the simulated weighbridge ---------------------------------------------------------------
@dataclass
class Truck:
    """One visit as the simulator played it (``time.monotonic`` instants)."""

    number: int
    tag: str
    gross_kg: int
    seals: tuple[str, ...]
    arrived_at: float
    stable_at: float | None = None
    left_at: float | None = None


@dataclass
class SiteSimulator:
    """An indicator, an RFID reader and a scanner on ptys, driven by one truck schedule.

    ``hook(mark, truck)`` is called in the simulator's thread just before the
    frame of a mark is written: ``arrive``, ``stable`` (first frame of the
    hold), ``leave`` (first empty reading), and ``idle`` (``settle_s`` after
    ``leave``). It must be quick; hand the work to another thread.
    """

    directory: Path
    rate: float = 10.0  # indicator frames per second (XK3190 continuous output: ~10 Hz)
    gap_s: float = 5.0  # empty bridge between trucks, on top of the scenario's own lead-in
    frames_per_phase: int = 12
    seed: int = 1
    hold_s: float = 0.0  # extra seconds the truck stands still after the scenario's hold starts
    fleet: int = 3  # trucks that come back: pass in, then pass out on their next visit
    seals_per_truck: int = 2
    settle_s: float = SETTLE_S
    hook: Callable[[str, Truck], None] | None = None
    trucks: list[Truck] = field(default_factory=list)
    frames: int = 0
    phase: str = "idle"  # the last mark: "arrive" and "stable" mean a truck is on the bridge

    def __post_init__(self) -> None:
        self.scale = PtySink(self.directory / "ttyWB")
        self.rfid = PtySink(self.directory / "ttyRFID")
        self.scanner = PtySink(self.directory / "ttySCAN")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="site-sim", daemon=True)
        self._lock = threading.Lock()

    @property
    def settings(self) -> dict[str, str]:
        """The gateway's ``weighbridge.*`` settings (TOML values) for these devices."""
        return {
            "weighbridge.port": json.dumps(f"{DIALECT}@{self.scale.path}"),
            "weighbridge.rfid": json.dumps(f"rdm6300@{self.rfid.path}"),
            "weighbridge.scanner": json.dumps(f"scanner-line@{self.scanner.path}"),
        }

    def start(self) -> SiteSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for sink in (self.scale, self.rfid, self.scanner):
            sink.close()

    def snapshot(self) -> list[Truck]:
        with self._lock:
            return list(self.trucks)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        fleet = [f"{rng.randrange(1 << 40):010X}" for _ in range(self.fleet)]
        seals = scenarios.seal_codes(rng)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        truck: Truck | None = None
        idle_due: float | None = None
        samples = scenarios.truck_visits(rng, frames_per_phase=self.frames_per_phase)
        gap_frames = hold_frames = 0
        held = scenarios.Sample(0, True)
        while not self._stop.is_set():
            if hold_frames:
                hold_frames -= 1
                sample = held
            elif gap_frames:
                gap_frames -= 1
                sample = scenarios.Sample(0, True)
            else:
                sample = next(samples)
            now = time.monotonic()
            if idle_due is not None and now >= idle_due and truck is not None:
                idle_due = None
                self._mark("idle", truck)
            if sample.event == "arrive":
                idle_due = None  # a gap shorter than settle_s: no idle window this time
                n = len(self.trucks) + 1
                codes = tuple(next(seals) for _ in range(self.seals_per_truck))
                truck = Truck(n, fleet[(n - 1) % len(fleet)], 0, codes, now)
                with self._lock:
                    self.trucks.append(truck)
                self._mark("arrive", truck)
                for _ in range(3):  # RDM6300 repeats while the tag is in the field
                    self.rfid.write(encoders.rdm6300(truck.tag))
                for code in codes:
                    self.scanner.write(encoders.scanner_line(code))
            elif sample.event == "stable" and truck is not None:
                truck.gross_kg, truck.stable_at = sample.kg, now
                self._mark("stable", truck)
                hold_frames = round(self.hold_s * self.rate)
                held = scenarios.Sample(sample.kg, True, sample.overload)
            elif sample.event == "leave" and truck is not None:
                truck.left_at = now
                self._mark("leave", truck)
                idle_due = now + self.settle_s
                gap_frames = round(self.gap_s * self.rate)
            self.scale.write(_xk3190_a12(sample))
            self.frames += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # we fell behind (a loaded machine): no burst

    def _mark(self, mark: str, truck: Truck) -> None:
        self.phase = mark
        if self.hook is not None:
            self.hook(mark, truck)


def _xk3190_a12(s: scenarios.Sample) -> bytes:
    if s.overload:
        return encoders.xk3190_a12("", overload=True)
    neg = s.kg < 0
    return encoders.xk3190_a12(("-" if neg else "") + f"{abs(s.kg):0{7 - neg}d}")


# --- the gateway's configuration -------------------------------------------------------------
def set_settings(data_dir: Path, values: Mapping[str, str]) -> None:
    """Set ``section.name`` keys of config.toml to raw TOML values (every key must exist)."""
    path = data_dir / "config.toml"
    lines = path.read_text().splitlines()
    section, left = "", dict(values)
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[] ")
            continue
        m = re.match(r"(\w+) = ", line)
        key = f"{section}.{m.group(1)}" if m else ""
        if key in left:
            lines[i] = f"{m.group(1) if m else ''} = {left.pop(key)}"
    if left:
        raise KeyError(f"not in {path}: {', '.join(left)}")
    path.write_text("\n".join(lines) + "\n")


def configure_gateway(site: Site, stack: Stack, extra: Mapping[str, str] | None = None) -> None:
    """Sync over the stack's TLS broker, HTTP on a free port, plus ``extra`` settings."""
    assert stack.pki is not None, "the stack must run with tls=True"
    creds = stack.pki.device(site.device_id)
    values = {
        "service.http_port": "0",
        "sync.broker": json.dumps(stack.url()),
        "sync.ca_file": json.dumps(str(stack.pki.ca_file)),
        "sync.cert_file": json.dumps(str(creds.cert)),
        "sync.key_file": json.dumps(str(creds.key)),
        # Mosquitto drops shared-subscription messages while the ledger is away; the
        # gateway resends after this (the shortest the setting allows).
        "sync.ack_timeout_s": "5",
        **(extra or {}),
    }
    set_settings(site.gateway_dir, values)


# --- reading the service from outside ------------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``VmRSS``, proc(5))."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``, all threads (``/proc/PID/stat`` utime, stime)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK  # fields 14 and 15


class ServiceMetrics:
    """``/metrics`` and ``/healthz`` of a running service, found through ``service.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._url: str | None = None

    def url(self) -> str:
        if self._url is None:
            info = json.loads((self.data_dir / "service.json").read_text())
            self._url = str(info["url"])
        return self._url

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        # Our own child on loopback, http:// from service.json.
        with urllib.request.urlopen(self.url() + "/metrics", timeout=30) as resp:  # noqa: S310
            body = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url() + "/healthz", timeout=30) as resp:  # noqa: S310
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    @staticmethod
    def get(
        metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
    ) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def captured(metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> int:
    return int(
        ServiceMetrics.get(
            metrics, "custody_captures_total", workflow="weighbridge", outcome="captured"
        )
    )


def outbox_states(
    metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, int]:
    return {
        state: int(ServiceMetrics.get(metrics, "custody_outbox_events", state=state))
        for state in ("pending", "sent", "acked")
    }


@contextlib.contextmanager
def service_process(data_dir: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``custody-agent run`` as a child (JSON log to ``log_path``); SIGTERM on the way out."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "service.json").unlink()
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(data_dir), "run",
         "--log-format", "json"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (data_dir / "service.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"custody-agent run did not start ({proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- the benchmark ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=_positive, default=60.0, help="how long trucks arrive (default 60)"
    )
    parser.add_argument(
        "--warmup", type=_non_negative, default=10.0,
        help="seconds before RSS and idle CPU are sampled (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=_positive, default=10.0,
        help="indicator frames per second (default 10, a typical continuous output)",
    )  # fmt: skip
    parser.add_argument(
        "--gap", type=_positive, default=5.0,
        help="seconds of empty bridge between trucks (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--window", type=_non_negative, default=0.5,
        help="weighbridge.window_s: the stable hold must span it (default 0.5; the "
        "simulated hold is 12 frames)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds: float = args.seconds
    warmup: float = min(args.warmup, seconds / 2)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        site = make_site(root)
        marks: queue.Queue[tuple[str, Truck, float]] = queue.Queue()
        sim = SiteSimulator(
            root, rate=args.rate, gap_s=args.gap, seed=args.seed,
            hook=lambda mark, truck: marks.put((mark, truck, time.monotonic())),
        )  # fmt: skip
        extra = {**sim.settings, "weighbridge.window_s": str(args.window)}
        with Stack(site, root, tls=True) as stack:
            configure_gateway(site, stack, extra)
            busy0 = host_busy_seconds()
            with service_process(site.gateway_dir, root / "service.log") as proc:
                metrics = ServiceMetrics(site.gateway_dir)
                _wait(lambda: metrics.health()["status"] == "ok", "a healthy service")
                measured = _measure(proc.pid, sim, marks, metrics, seconds, warmup)
                drained = _wait_drained(metrics)
                final = metrics.scrape()
                proc.send_signal(signal.SIGTERM)
                exit_code = proc.wait(60)
            busy1 = host_busy_seconds()
            with contextlib.closing(LedgerStore(site.ledger_dir / "ledger.sqlite")) as store:
                ledger_log = store.log_size()
        states = outbox_states(final)
    lat = sorted(measured["latencies_ms"])
    rss = measured["rss_mb"]
    idle_cpu, idle_wall = measured["idle_cpu_s"], measured["idle_wall_s"]
    results: dict[str, Any] = {
        "benchmark": "service",
        "rss_mb": round(statistics.median(rss), 1) if rss else None,
        "cpu_percent": round(100 * idle_cpu / idle_wall, 2) if idle_wall else None,
        "capture_latency_ms": round(_percentile(lat, 99), 2) if lat else None,
        "capture_latency_p50_ms": round(_percentile(lat, 50), 2) if lat else None,
        "captures": captured(final),
        "trucks": len(sim.trucks),
        "acked": states["acked"],
        "outbox": states,
        "drained": drained,
        "ledger_log_size": ledger_log,
        "exit_code": exit_code,
        "rss_max_mb": round(max(rss), 1) if rss else None,
        "cpu_percent_whole_run": round(100 * measured["run_cpu_s"] / measured["run_wall_s"], 2),
        "idle_windows": measured["idle_windows"],
        "idle_seconds": round(idle_wall, 1),
        "latency_missed": measured["missed"],
        "latencies_ms": [round(v, 2) for v in measured["latencies_ms"]],
        "other_load_cores": (
            round((busy1 - busy0 - measured["run_cpu_s"]) / measured["run_wall_s"], 2)
            if busy0 is not None and busy1 is not None
            else None
        ),
        "method": {
            "rss_mb": f"median VmRSS (/proc/PID/status) every {SAMPLE_S} s after the warm-up",
            "cpu_percent": "service utime+stime (/proc/PID/stat) / wall time over the windows "
            f"with an empty bridge ({SETTLE_S} s after a truck left to the next arrival), "
            "after the warm-up",
            "capture_latency_ms": "p99 of custody_weighbridge_capture_latency_seconds "
            "(/metrics, scraped once per truck): port read of the reading that made the "
            "bridge stable -> signed weighing durable in the outbox",
        },
        "parameters": {
            "seconds": seconds,
            "warmup": warmup,
            "rate": args.rate,
            "gap": args.gap,
            "window_s": args.window,
            "seed": args.seed,
            "dialect": DIALECT,
            "devices": ["indicator xk3190-a12 (pty)", "rfid rdm6300 (pty)", "scanner-line (pty)"],
            "broker": "private Mosquitto, TLS + client certificates",
            "ledger": "custody-ledger run",
        },
        "targets": TARGETS,
        "machine": machine(),
    }
    results["meets_targets"] = {
        k: results[k] is not None and results[k] <= v for k, v in TARGETS.items()
    }
    return results


def _measure(
    pid: int,
    sim: SiteSimulator,
    marks: queue.Queue[tuple[str, Truck, float]],
    metrics: ServiceMetrics,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    t0 = time.monotonic()
    cpu0 = cpu_seconds(pid)
    sim.start()
    rss: list[float] = []
    latencies: list[float] = []
    missed = 0
    seen = 0
    idle_cpu = idle_wall = 0.0
    windows = 0
    idle_start: tuple[float, float] | None = None  # (wall, cpu)
    next_sample = t0 + warmup
    try:
        while time.monotonic() - t0 < seconds:
            try:
                mark, _truck, at = marks.get(timeout=SAMPLE_S / 2)
            except queue.Empty:
                mark, at = "", 0.0
            now = time.monotonic()
            if now >= next_sample:
                rss.append(rss_mb(pid))
                next_sample += SAMPLE_S
            if mark == "idle" and at - t0 >= warmup:
                idle_start = (at, cpu_seconds(pid))
            elif mark == "arrive":
                if idle_start is not None:
                    idle_cpu += cpu_seconds(pid) - idle_start[1]
                    idle_wall += at - idle_start[0]
                    windows += 1
                idle_start = None
            elif mark == "leave":  # outside any idle window: scraping costs the service CPU
                m = metrics.scrape()
                n = captured(m)
                if n == seen + 1:
                    latencies.append(
                        1000 * ServiceMetrics.get(m, "custody_weighbridge_capture_latency_seconds")
                    )
                elif n > seen + 1:
                    missed += n - seen - 1
                    latencies.append(
                        1000 * ServiceMetrics.get(m, "custody_weighbridge_capture_latency_seconds")
                    )
                seen = n
    finally:
        sim.stop()
    wall = time.monotonic() - t0
    return {
        "rss_mb": rss,
        "latencies_ms": latencies,
        "missed": missed,
        "idle_cpu_s": idle_cpu,
        "idle_wall_s": idle_wall,
        "idle_windows": windows,
        "run_cpu_s": cpu_seconds(pid) - cpu0,
        "run_wall_s": wall,
    }


def _wait(check: Callable[[], Any], what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _wait_drained(metrics: ServiceMetrics) -> bool:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        s = outbox_states(metrics.scrape())
        if s["pending"] == 0 and s["sent"] == 0:
            return True
        time.sleep(0.2)
    return False


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def render(result: Mapping[str, Any]) -> str:
    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    rows = [
        ("RSS MB (median)", fmt(result["rss_mb"], ".1f"), "rss_mb"),
        ("idle CPU %", fmt(result["cpu_percent"], ".2f"), "cpu_percent"),
        ("capture latency p99 ms", fmt(result["capture_latency_ms"], ".2f"), "capture_latency_ms"),
        ("capture latency p50 ms", fmt(result["capture_latency_p50_ms"], ".2f"), None),
        ("captures / trucks", f"{result['captures']} / {result['trucks']}", None),
        ("acked / ledger log", f"{result['acked']} / {result['ledger_log_size']}", None),
        ("CPU % whole run", fmt(result["cpu_percent_whole_run"], ".2f"), None),
    ]
    lines = [f"{'metric':<26}{'value':>12}  {'target':>8}  ok"]
    for label, value, key in rows:
        target = ok = ""
        if key is not None:
            target = f"<= {result['targets'][key]:g}"
            ok = "yes" if result["meets_targets"][key] else "NO"
        lines.append(f"{label:<26}{value:>12}  {target:>8}  {ok}")
    p, m = result["parameters"], result["machine"]
    lines.append("")
    lines.append(
        f"{p['seconds']:g} s, warm-up {p['warmup']:g} s, indicator {p['rate']:g} frames/s, "
        f"{p['gap']:g} s between trucks, {result['idle_windows']} idle windows "
        f"({result['idle_seconds']:g} s); other processes used {result['other_load_cores']} cores"
    )
    lines.append(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('python', '?')}")
    return "\n".join(lines)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value
