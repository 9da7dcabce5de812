"""``custody-agent run`` as a real process: systemd notify, health, metrics, signals, devices.

The service runs as a subprocess on a gateway data dir; the test talks to it
the way systemd, Prometheus and an operator do: a unix datagram socket of
the test's own as ``$NOTIFY_SOCKET``, HTTP on the port it wrote to
``service.json``, signals, and ``custody-agent`` commands from other
processes on the same data dir. Waits are deadline-based (``WAIT_S``) and
never assert how fast anything is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.service.health import METRICS, SampleCollector
from agent.service.notify import Notifier
from agent.service.workers import PortWorker, Sample, Worker
from custody.exits import ExitCode
from firmware_bridge.sim.runner import PtySink, Simulator
from tests.conftest import Gateway
from tests.support import REPO, run_cli, wait_until

WAIT_S = 60.0  # generous: a shared, noisy machine; never a performance assertion


# --- helpers -------------------------------------------------------------------------------
def set_config(data_dir: Path, key: str, value: str) -> None:
    """Replace ``name = ...`` in ``[section]`` of config.toml with a raw TOML value."""
    section, name = key.split(".", 1)
    path = data_dir / "config.toml"
    lines = path.read_text().splitlines()
    current, done = "", False
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.startswith(f"{name} = "):
            lines[i] = f"{name} = {value}"
            done = True
    assert done, key
    path.write_text("\n".join(lines) + "\n")


def healthy(report: dict[str, Any]) -> bool:
    """Every worker ok but the uplink, which is degraded here by design: no test in this
    file configures a broker, and the service says so in /healthz."""
    others = {n: w["state"] for n, w in report["workers"].items() if n != "sync"}
    sync = report["workers"].get("sync", {})
    return (
        report["status"] == "degraded" and set(others.values()) <= {"ok"}
        and sync.get("state") == "degraded" and "sync not configured" in sync.get("reason", "")
    )  # fmt: skip


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket collecting messages."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        """Take what has arrived (waiting up to 0.2 s for the first datagram)."""
        timeout: float | None = 0.2
        while True:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return
            data = self.sock.recv(4096)
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
            timeout = 0

    def wait_for(self, key: str, value: str = "1", after: int = 0) -> int:
        """Index of the first message at or after ``after`` that sets key=value."""

        def found() -> int | None:
            self.poll()
            for i, m in enumerate(self.messages[after:], after):
                if m.get(key) == value:
                    return i + 1  # +1 so that index 0 is truthy
            return None

        return int(wait_until(found, f"{key}={value} on {self.address}")) - 1

    def close(self) -> None:
        self.sock.close()


class ServiceProcess:
    """``custody-agent run --log-format json`` as a child process, its log parsed line by line."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "--data-dir", str(data_dir), "run",
             "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stderr = ""
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.raw.append(line)
                self.events.append(json.loads(line))  # every line is one JSON event

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e for e in self.events
                if e["event"] == event and all(e.get(k) == v for k, v in match.items())
            ]  # fmt: skip

    def wait_event(self, event: str, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            hits = self.find(event, **match)
            if hits:
                return hits[0]
            assert self.proc.poll() is None or self.find(event, **match), (
                f"service exited ({self.proc.returncode}) before {event}: {self.log_text()}"
            )
            return None

        return dict(wait_until(found, f"log event {event} {match}"))

    def log_text(self) -> str:
        with self._lock:
            return "".join(self.raw) + self.stderr

    @property
    def url(self) -> str:
        return str(self.wait_event("http.listening")["url"])

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            # Our own service on loopback, http:// from service.json.
            with urllib.request.urlopen(self.url + path, timeout=30) as resp:  # noqa: S310
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/healthz")[1]))

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = self.get("/metrics")
        assert code == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = WAIT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return rc

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._threads:
            t.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def service(data_dir: Path, *, env: dict[str, str] | None = None) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(data_dir, env=env)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def gw(gateway: Gateway) -> Path:
    """The gateway data dir with an ephemeral HTTP port (never a fixed port in tests)."""
    set_config(gateway.data_dir, "service.http_port", "0")
    return gateway.data_dir


@pytest.fixture
def notify_socket() -> Iterator[NotifyListener]:
    # A short path of our own: AF_UNIX paths are limited to 108 bytes (unix(7)).
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    listener = NotifyListener(os.path.join(directory, "notify"))
    yield listener
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(listener.address)
    os.rmdir(directory)


# --- systemd notify --------------------------------------------------------------------------
def test_ready_after_the_outbox_opens_then_watchdog_while_workers_live(
    gw: Path, notify_socket: NotifyListener
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    with service(gw, env=env) as svc:
        ready = notify_socket.wait_for("READY", "1")
        # READY=1 came after the outbox was opened: the service's boot event is durable.
        listed = run_cli("--data-dir", str(gw), "events", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [e["type"] for e in json.loads(listed.stdout)] == ["boot"]
        assert notify_socket.messages[ready]["STATUS"].startswith("running")
        first_ping = notify_socket.wait_for("WATCHDOG", "1", after=ready + 1)
        notify_socket.wait_for("WATCHDOG", "1", after=first_ping + 1)  # and it keeps coming
        assert all("WATCHDOG" not in m for m in notify_socket.messages[:ready])
        assert svc.terminate() == 0
    stopping = notify_socket.wait_for("STOPPING", "1")
    assert stopping > ready


def test_watchdog_is_withheld_while_a_worker_is_stuck_and_resumes_after(
    gw: Path, notify_socket: NotifyListener
) -> None:
    # A real stall: another process holds the checkpoint lock (as a `custody-agent
    # checkpoint` would), so the service's checkpoint worker blocks and its heartbeat ages.
    set_config(gw, "service.checkpoint_interval_s", "1")
    set_config(gw, "service.heartbeat_timeout_s", "1")
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    with open(gw / "checkpoint.lock", "a") as lock, service(gw, env=env) as svc:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        ready = notify_socket.wait_for("READY", "1")
        withheld = svc.wait_event("watchdog.withheld")
        assert withheld["workers"] == ["checkpoint"]
        notify_socket.poll()  # pings sent before the decision are in the buffer by now
        stuck_from = len(notify_socket.messages)
        code, body = svc.get("/healthz")
        assert code == 503 and json.loads(body)["status"] == "failing"
        assert json.loads(body)["workers"]["checkpoint"]["alive"] is False
        assert svc.metric("custody_worker_up", worker="checkpoint") == 0
        notify_socket.poll()
        assert not any("WATCHDOG" in m for m in notify_socket.messages[stuck_from:])

        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)  # the other process finishes
        notify_socket.wait_for("WATCHDOG", "1", after=max(stuck_from, ready + 1))
        wait_until(lambda: healthy(svc.health()), "healthy again")
        assert svc.terminate() == 0


def test_sigterm_with_a_stuck_worker_gives_up_at_the_deadline_with_exit_12(gw: Path) -> None:
    set_config(gw, "service.checkpoint_interval_s", "1")
    set_config(gw, "service.heartbeat_timeout_s", "1")
    set_config(gw, "service.drain_deadline_s", "1")
    with open(gw / "checkpoint.lock", "a") as lock, service(gw) as svc:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the checkpoint worker will block on it
        svc.wait_event("service.ready")  # before it, workers not yet started look down too

        def checkpoint_stuck() -> bool:
            health = svc.health()
            return health["status"] == "failing" and not health["workers"]["checkpoint"]["alive"]

        wait_until(checkpoint_stuck, "the checkpoint worker to miss its heartbeat")
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit() == ExitCode.DRAIN_TIMEOUT, svc.log_text()
        assert svc.wait_event("drain.deadline_exceeded")["workers"] == ["checkpoint"]
    verified = run_cli("--data-dir", str(gw), "events", "verify")
    assert verified.returncode == 0, verified.stderr  # nothing half-written


def test_abstract_notify_socket_and_sigterm(gw: Path) -> None:
    name = f"@custody-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener(name)
    try:
        with service(gw, env={"NOTIFY_SOCKET": name}) as svc:
            ready = listener.wait_for("READY", "1")
            assert svc.terminate() == 0
            assert listener.wait_for("STOPPING", "1") > ready
            assert not any("WATCHDOG" in m for m in listener.messages)  # no WATCHDOG_USEC
    finally:
        listener.close()


def test_notify_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready("x") is False and notifier.failures == 0
    # sd_watchdog_enabled(3): a WATCHDOG_PID naming another process means not ours.
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_interval_s == 2.0


def test_a_vanished_notify_socket_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False
    assert notifier.failures == 1 and "gone" in (notifier.last_error or "")
    notifier.close()


def test_a_receiver_that_does_not_read_never_blocks_the_sender(
    notify_socket: NotifyListener,
) -> None:
    # unix(7): a datagram queue holds net.unix.max_dgram_qlen messages; past that a blocking
    # sendto would hang the service's main loop (signals, watchdog). It must fail instead.
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    results = [notifier.watchdog() for _ in range(500)]
    notifier.close()
    assert results[0] is True and results.count(False) == notifier.failures > 0
    notify_socket.poll()
    assert 0 < len(notify_socket.messages) < 500


# --- health and metrics ----------------------------------------------------------------------
def test_healthz_and_metrics_follow_a_capture_from_another_process(gw: Path) -> None:
    with service(gw) as svc:
        url = svc.url  # from the http.listening log event, written after service.json
        info = json.loads((gw / "service.json").read_text())
        assert info["host"] == "127.0.0.1" and info["url"] == url
        # /healthz answers from the moment the port listens; the workers start after it.
        svc.wait_event("service.ready")
        code, _ = svc.get("/healthz")
        health = svc.health()
        assert code == 200 and healthy(health), health
        assert health["outbox"]["events"]["pending"] == 1  # the service's boot event
        before = svc.metric("custody_outbox_events", state="pending")
        assert before == 1.0
        assert svc.metric("custody_clock_quality", quality=health["outbox"]["clock_quality"]) == 1

        recorded = run_cli("--data-dir", str(gw), "record", "seal", "--seal-id", "SEAL-0001")
        assert recorded.returncode == 0, recorded.stderr
        # The record command opens the outbox too (its own boot event + the seal scan).
        after = svc.metric("custody_outbox_events", state="pending")
        assert after == 3.0
        assert (svc.metric("custody_outbox_disk_used_bytes") or 0) > 0
        assert (svc.metric("custody_outbox_oldest_unacked_age_seconds") or -1) >= 0
        assert svc.get("/nothing")[0] == 404
        assert svc.terminate() == 0
    assert not (gw / "service.json").exists()


def test_every_worker_metric_is_declared_and_undeclared_ones_are_refused() -> None:
    class Source:
        def __init__(self, samples: list[Sample]) -> None:
            self._samples = samples

        def samples(self) -> list[Sample]:
            return self._samples

    good = SampleCollector(
        Source([Sample("custody_port_frames", {"port": "p", "dialect": "d"}, 3)])
    )
    [family] = list(good.collect())
    assert family.name == "custody_port_frames" and family.type == "counter"
    with pytest.raises(ValueError, match="not declared"):
        list(SampleCollector(Source([Sample("custody_made_up", {}, 1)])).collect())
    with pytest.raises(ValueError, match="labels"):
        list(SampleCollector(Source([Sample("custody_port_frames", {}, 1)])).collect())
    assert all(spec.kind in ("gauge", "counter") and spec.help for spec in METRICS.values())


def test_port_worker_has_the_worker_shape() -> None:
    worker = PortWorker("xk3190-a12@loop://", log=lambda *a, **k: None, heartbeat_timeout_s=5)
    assert isinstance(worker, Worker)
    assert worker.name == "port:loop://" and not worker.alive
    assert worker.health().state == "starting"  # not run yet


# --- signals ---------------------------------------------------------------------------------
def test_sigterm_drains_within_the_deadline_and_the_outbox_verifies(gw: Path) -> None:
    set_config(gw, "service.drain_deadline_s", "10")
    with service(gw) as svc:
        svc.wait_event("service.ready")
        for i in range(3):
            r = run_cli("--data-dir", str(gw), "record", "weighing", "--gross-kg", f"{41000 + i}")
            assert r.returncode == 0, r.stderr
        svc.signal(signal.SIGTERM)
        rc = svc.wait_exit(timeout=10 + WAIT_S)  # the deadline, plus slack for a loaded machine
        assert rc == 0, svc.log_text()
        stopped = svc.wait_event("service.stopped")
        assert stopped["exit_code"] == 0 and stopped["seconds"] <= 10
    verified = run_cli("--data-dir", str(gw), "events", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["checked"] == 1 + 3 * 2  # service boot; 3x (boot, weighing)


def test_sighup_with_a_broken_config_keeps_running_and_names_the_problem(
    gw: Path, notify_socket: NotifyListener
) -> None:
    with service(gw, env={"NOTIFY_SOCKET": notify_socket.address}) as svc:
        ready = notify_socket.wait_for("READY", "1")
        good = (gw / "config.toml").read_text()
        set_config(gw, "service.drain_deadline_s", '"soon"')
        svc.signal(signal.SIGHUP)
        failed = svc.wait_event("config.reload_failed")
        assert failed["file"] == str(gw / "config.toml")
        assert failed["key"] == "service.drain_deadline_s"
        assert "integer" in failed["reason"]
        reloading = notify_socket.wait_for("RELOADING", "1", after=ready + 1)
        assert "MONOTONIC_USEC" in notify_socket.messages[reloading]
        notify_socket.wait_for("READY", "1", after=reloading + 1)
        assert svc.proc.poll() is None
        assert healthy(svc.health())
        assert svc.metric("custody_service_reloads_total", result="failed") == 1.0

        # A good file again: the reload takes, and the old settings stayed in force meanwhile.
        (gw / "config.toml").write_text(
            good.replace("drain_deadline_s = 20", "drain_deadline_s = 7")
        )
        svc.signal(signal.SIGHUP)
        svc.wait_event("config.reloaded")
        assert svc.metric("custody_service_reloads_total", result="ok") == 1.0
        assert svc.terminate() == 0
        assert svc.wait_event("service.stopping")["deadline_s"] == 7


def test_the_service_signs_checkpoints_on_its_schedule_busy_or_idle(gw: Path) -> None:
    """A checkpoint at every slot, records or not: their number says how long the service
    ran, never how busy the site was (docs/zk-summaries.md §6)."""
    set_config(gw, "service.checkpoint_interval_s", "1")
    with service(gw) as svc:
        svc.wait_event("service.ready")

        def signed() -> float:
            return svc.metric("custody_checkpoints_signed_total") or 0

        wait_until(lambda: signed() >= 2, "two idle slots")
        recorded = run_cli("--data-dir", str(gw), "record", "weighing", "--gross-kg", "1200")
        assert recorded.returncode == 0, recorded.stderr
        wait_until(lambda: signed() >= 4, "two more slots")
        worker = svc.health()["workers"]["checkpoint"]
        assert worker["signed"] == worker["due"] >= 4  # every slot that came due, signed
        assert svc.terminate() == 0
    listed = run_cli("--data-dir", str(gw), "events", "list", "--json")
    types = [e["type"] for e in json.loads(listed.stdout)]
    assert types[0] == "boot" and types.count("checkpoint") >= 4
    verified = run_cli("--data-dir", str(gw), "events", "verify")
    assert verified.returncode == 0, verified.stderr


def test_a_second_service_on_the_same_data_dir_is_refused(gw: Path) -> None:
    with service(gw) as first:
        first.wait_event("service.ready")
        second = run_cli("--data-dir", str(gw), "run")
        assert second.returncode == 5, second.stderr
        assert "already serving" in second.stderr and "Traceback" not in second.stderr
        assert healthy(first.health())
        assert first.terminate() == 0


def test_a_bad_config_at_start_fails_with_file_key_and_reason(gw: Path) -> None:
    set_config(gw, "devices.ports", '["no-such-dialect@/dev/ttyUSB9"]')
    result = run_cli("--data-dir", str(gw), "run")
    assert result.returncode == 3
    assert "devices.ports" in result.stderr and "unknown dialect" in result.stderr


def test_a_port_url_pyserial_refuses_stops_the_service_non_zero(gw: Path) -> None:
    # The dialect is valid (config check passes) but the URL scheme is not one pyserial
    # knows: the reader cannot retry its way out, so the service exits for systemd to see.
    set_config(gw, "devices.ports", '["xk3190-a12@nosuch://indicator"]')
    with service(gw) as svc:
        rc = svc.wait_exit()
        assert rc == ExitCode.WORKER_FAILED, svc.log_text()
        failed = svc.wait_event("worker.failed")
        assert failed["worker"] == "port:nosuch://indicator"
        assert failed["error"] == "PortConfigError" and "devices.ports" in failed["message"]
        assert svc.find("service.stopped")


# --- serial devices ----------------------------------------------------------------------------
@pytest.fixture
def scale_pty(tmp_path: Path) -> Iterator[tuple[PtySink, Path]]:
    """A simulated weighbridge indicator on a real pseudo-terminal behind a stable symlink."""
    link = tmp_path / "ttyBRIDGE"
    sink = PtySink(link)
    sim = Simulator("scale", "xk3190-a12", sink, rate=20.0, seed=7)
    thread = threading.Thread(target=sim.run, daemon=True)
    thread.start()
    yield sink, link
    sim.stop()
    thread.join(10)
    sink.close()


def test_an_unplugged_and_replugged_device_shows_in_reconnect_metrics(
    gw: Path, scale_pty: tuple[PtySink, Path]
) -> None:
    sink, link = scale_pty
    set_config(gw, "devices.ports", json.dumps([f"xk3190-a12@{link}"]))
    labels = {"port": str(link), "dialect": "xk3190-a12"}
    with service(gw) as svc:
        svc.wait_event("service.ready")
        wait_until(lambda: (svc.metric("custody_port_frames_total", **labels) or 0) > 5, "frames")
        assert svc.metric("custody_port_reconnects_total", **labels) == 0
        assert svc.health()["workers"][f"port:{link}"]["port_state"] == "open"

        sink.unplug()  # the USB adapter is pulled out: the reader gets EIO
        svc.wait_event("port.state", port=str(link), state="down")
        down = svc.health()
        assert down["status"] == "degraded", down
        assert down["workers"][f"port:{link}"]["state"] == "degraded"
        assert svc.metric("custody_port_up", **labels) == 0

        sink.replug()  # ...and put back: a new pty under the same name
        wait_until(lambda: svc.metric("custody_port_reconnects_total", **labels) == 1, "reconnect")
        frames = svc.metric("custody_port_frames_total", **labels) or 0
        wait_until(
            lambda: (svc.metric("custody_port_frames_total", **labels) or 0) > frames,
            "frames after the replug",
        )
        assert healthy(svc.health())
        assert svc.terminate() == 0


def test_sighup_adds_a_port_worker_without_restarting_the_others(
    gw: Path, scale_pty: tuple[PtySink, Path]
) -> None:
    _sink, link = scale_pty
    with service(gw) as svc:
        svc.wait_event("service.ready")
        assert set(svc.health()["workers"]) == {"checkpoint", "sync"}
        set_config(gw, "devices.ports", json.dumps([f"xk3190-a12@{link}"]))
        svc.signal(signal.SIGHUP)
        reloaded = svc.wait_event("config.reloaded")
        assert reloaded["restarted"] == [f"port:{link}"]
        labels = {"port": str(link), "dialect": "xk3190-a12"}
        wait_until(lambda: (svc.metric("custody_port_frames_total", **labels) or 0) > 0, "frames")
        set_config(gw, "devices.ports", "[]")
        svc.signal(signal.SIGHUP)
        wait_until(lambda: len(svc.find("config.reloaded")) == 2, "second reload")
        assert svc.find("config.reloaded")[1]["stopped"] == [f"port:{link}"]
        assert set(svc.health()["workers"]) == {"checkpoint", "sync"}
        assert svc.terminate() == 0


def test_log_lines_are_logfmt_by_default(gw: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(gw), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "event=service.ready" in line:
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    pattern = re.compile(r'^ts=\S+ level=(info|warning|error) event=[\w.]+( \w+=("[^"]*"|\S+))*$')
    assert lines and all(pattern.match(line.rstrip("\n")) for line in lines), lines


def test_checkpoint_slots_are_multiples_of_the_interval_in_utc() -> None:
    from agent.service.workers import CheckpointWorker

    worker = CheckpointWorker(None, interval_s=3600, heartbeat_timeout_s=30)  # type: ignore[arg-type]
    assert worker.next_slot(1_767_225_600.0) == 1_767_229_200.0  # on a slot: the next one
    assert worker.next_slot(1_767_225_601.5) == 1_767_229_200.0
    assert worker.next_slot(1_767_229_199.9) == 1_767_229_200.0


def test_workers_not_yet_started_are_starting_not_failing(tmp_path: Path) -> None:
    """/healthz answers from the moment its port listens, before the workers run: a worker
    that has not run yet is starting (HTTP 200), and one whose run ended is stopped."""
    from agent.service.workers import CheckpointWorker, PortWorker

    port = PortWorker(
        f"xk3190-a12@{tmp_path / 'no-such-tty'}", log=lambda *a, **k: None, heartbeat_timeout_s=30
    )
    checkpoint = CheckpointWorker(None, interval_s=3600, heartbeat_timeout_s=30)  # type: ignore[arg-type]
    assert port.health().state == "starting"
    assert checkpoint.health().state == "starting"
    stop = threading.Event()
    stop.set()
    port.run(stop)  # returns at once: the stop event is already set
    assert port.health().state == "stopped"
