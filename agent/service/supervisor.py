"""``custody-agent run``: the gateway service that owns every worker.

Theory of operation (gunicorn ``arbiter.py``, trio nurseries):

    open the outbox (Recorder: start-up check, boot event) ─▶ build workers from
    the config (one port worker per serial port, from ``devices.ports`` and the
    ports the workflow plug-ins declare; then the workflows, which subscribe to
    those ports on the ``PortBus``) ─▶ bind /healthz + /metrics ─▶ start one
    thread per worker ─▶ READY=1 ─▶ main loop:

        wait on the wake-up socket (signals, a worker that ended) or a tick
        SIGTERM/SIGINT ─▶ drain: STOPPING=1, stop workers, flush and close
                          the outbox, exit 0, all within service.drain_deadline_s
        SIGHUP        ─▶ RELOADING=1, re-read config.toml; a bad file is logged
                          (file, key, reason) and the running config kept;
                          otherwise workers whose settings changed restart; READY=1
        a worker's run() ended while not asked to ─▶ log it, drain, exit 11
        watchdog tick ─▶ WATCHDOG=1 only if every worker is alive (heartbeat fresh)

Signal handlers do nothing in Python: ``signal.set_wakeup_fd`` makes the
interpreter write the signal number to a socket pair (a kernel-bounded
buffer; if it ever fills, further wake-ups are dropped, which is harmless
because one pending byte already wakes the loop) and the main loop reads and
dispatches it. Worker threads write a zero byte to the same socket when they
end. Nothing else runs in a signal context.

Only one service may run per data dir (an exclusive ``flock`` on
``service.lock``); other ``custody-agent`` commands, such as ``record``, may
run beside it: the outbox serialises writers across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.clock import GpsClock
from agent.paths import DataDir
from agent.recorder import Recorder
from agent.service.context import PortSpec, ServiceContext, WorkflowPlugin
from agent.service.health import HealthServer, OutboxGauges
from agent.service.logs import EventLog
from agent.service.nosync import SyncNotConfigured
from agent.service.notify import Notifier
from agent.service.page import GatewayPage, access_for
from agent.service.workers import (
    CheckpointWorker,
    PortBus,
    PortWorker,
    Sample,
    SyncWorker,
    Worker,
    parse_port_spec,
)
from agent.settings import AgentConfig, load_config
from custody.errors import ConfigError, CustodyError, StorageError
from custody.exits import ExitCode
from custody.files import replace_file
from firmware_bridge.errors import DeviceError

__all__ = [
    "SERVICE_FILE",
    "Service",
]

SERVICE_FILE = "service.json"  # in the data dir while running: pid and the HTTP address
LOCK_FILE = "service.lock"
TICK_S = 0.5  # the longest the main loop sleeps: bounds watchdog and status latency
STATUS_EVERY_S = 5.0

# Settings read once at start (by the Recorder and the outbox); a reload only warns.
RESTART_ONLY = (
    "device_id", "site_id", "ledger_keys_file", "budget_mb", "alarm_percent",
    "min_free_mb", "batch_max", "startup_check", "earliest_valid",
)  # fmt: skip
_SYNC_KEYS = (
    "broker_url", "ca_file", "cert_file", "key_file", "sync_window",
    "max_bytes_per_s", "ack_timeout_s", "heartbeat_timeout_s",
)  # fmt: skip


@dataclass
class _Slot:
    worker: Worker
    fingerprint: object
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None
    trace: str = ""
    finished: bool = False


class Service:
    """The running gateway: a Recorder, the workers, the HTTP endpoint, the main loop."""

    def __init__(
        self,
        data_dir: Path,
        *,
        broker_url: str | None = None,
        log: EventLog | None = None,
        notifier: Notifier | None = None,
        workflows: Iterable[WorkflowPlugin] = (),
    ) -> None:
        self.paths = DataDir(data_dir)
        self.broker_url = broker_url
        self.log = log or EventLog()
        self.notifier = notifier or Notifier()
        self.workflows = list(workflows)
        self.slots: dict[str, _Slot] = {}
        self.reloads = {"ok": 0, "failed": 0}
        self.started_at = time.time()
        self.recorder: Recorder | None = None
        self.clock: GpsClock | None = None
        self.bus = PortBus()
        self.gauges: OutboxGauges | None = None
        self.http: HealthServer | None = None
        self.cfg: AgentConfig | None = None
        self._lock_fd = -1
        self._wake_r, self._wake_w = socket.socketpair()
        self._slots_lock = threading.Lock()  # HTTP threads read slots while reload edits them

    # --- the one library call --------------------------------------------------------
    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a worker failure; return the exit code."""
        self._take_lock()
        old_handlers = self._install_signals()
        try:
            self._start()
            return self._loop()
        finally:
            self._restore_signals(old_handlers)
            self._release()

    # --- start -----------------------------------------------------------------------------
    def _start(self) -> None:
        self.log.info("service.starting", data_dir=str(self.paths.root), pid=os.getpid())
        self.notifier.status("opening the outbox")
        self.recorder = Recorder(self.paths.root, boot_reason="service")
        cfg = self.cfg = self.recorder.config
        self.log.info(
            "outbox.open", path=str(self.paths.outbox), boot=self.recorder.boot,
            quarantined=(str(self.recorder.outbox.report.quarantined)
                         if self.recorder.outbox.report.quarantined else None),
        )  # fmt: skip
        # Every record's time (and the clock-quality gauge) goes through the GPS correction;
        # without a GPS port it is the recorder's own clock unchanged.
        self.clock = GpsClock(self.recorder.clock, earliest_valid_ms=cfg.earliest_valid_ms)
        self.recorder.clock = self.clock
        self.gauges = OutboxGauges(
            self.paths.outbox,
            budget_bytes=cfg.budget_mb * 2**20,
            alarm_percent=cfg.alarm_percent,
            clock=self.clock,
            boot=self.recorder.boot,
        )
        for name, (fingerprint, worker) in self._build(cfg, only=None)[0].items():
            self.slots[name] = _Slot(worker, fingerprint)
        self.http = self._bind(cfg)
        for slot in self.slots.values():
            self._spawn(slot)
        self.notifier.ready(self._status_line())
        self.log.info(
            "service.ready", workers=sorted(self.slots), notify=self.notifier.enabled,
            watchdog_s=self.notifier.watchdog_interval_s,
        )  # fmt: skip

    def _build(
        self, cfg: AgentConfig, only: dict[str, object] | None
    ) -> tuple[dict[str, tuple[object, Worker]], set[str]]:
        """Workers the config asks for: ({name: (fingerprint, worker)}, every wanted name).

        With ``only`` (name -> running fingerprint), a worker whose fingerprint
        is unchanged is not built again (it keeps running).
        """
        assert self.recorder is not None
        assert self.clock is not None
        wanted: dict[str, tuple[object, Callable[[], Worker]]] = {}
        for spec in self._port_specs(cfg):
            _dialect, url = parse_port_spec(spec)
            wanted[f"port:{url}"] = (
                (spec, cfg.heartbeat_timeout_s),
                lambda spec=spec: PortWorker(  # type: ignore[misc]
                    spec, log=self.log.event, heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                    bus=self.bus,
                ),
            )  # fmt: skip
        # Checkpoints commit masses, so they need the ledger's sealing key.
        if cfg.checkpoint_interval_s and self.recorder.ledger_keys is not None:
            recorder = self.recorder
            wanted["checkpoint"] = (
                (cfg.checkpoint_interval_s, cfg.heartbeat_timeout_s),
                lambda: CheckpointWorker(
                    recorder, interval_s=cfg.checkpoint_interval_s,
                    heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                ),
            )  # fmt: skip
        if self.broker_url or cfg.broker_url:
            key = self.recorder.key
            boot = self.recorder.boot
            wanted["sync"] = (
                (self.broker_url, *(getattr(cfg, k) for k in _SYNC_KEYS)),
                lambda: SyncWorker(
                    self.paths.root, cfg, key, boot=boot, broker_url=self.broker_url,
                    heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                ),
            )  # fmt: skip
        else:  # said in the log and kept in /healthz (degraded) while it lasts
            wanted["sync"] = ((), lambda: SyncNotConfigured(self.log.event))
        built: dict[str, tuple[object, Worker]] = {}
        names = set(wanted)
        for name, (fingerprint, make) in wanted.items():
            if only is not None and only.get(name) == fingerprint:
                continue
            built[name] = (fingerprint, make())
        # Workflows come last: they subscribe (on the bus, by URL) to the ports named above.
        ctx = ServiceContext(self.paths.root, cfg, self.recorder, self.log, self.bus, self.clock)
        for plugin in self.workflows:
            made = plugin.build(ctx)
            if made is None:
                continue
            worker, fingerprint = made
            names.add(worker.name)
            if only is not None and only.get(worker.name) == fingerprint:
                continue
            built[worker.name] = (fingerprint, worker)
        return built, names

    def _port_specs(self, cfg: AgentConfig) -> list[str]:
        """Every serial port the config reads, once: ``devices.ports`` and the workflows'."""
        specs = [PortSpec("devices.ports", spec) for spec in cfg.device_ports]
        for plugin in self.workflows:
            specs.extend(plugin.port_specs(cfg))
        by_url: dict[str, PortSpec] = {}
        for p in specs:
            dialect, url = parse_port_spec(p.spec)
            seen = by_url.setdefault(url, p)
            if seen.spec.partition("@")[0] != dialect:
                raise ConfigError(
                    cfg.source, p.key, f"{url} is read as {dialect!r} here and as "
                    f"{seen.spec.partition('@')[0]!r} by {seen.key}: one port, one dialect",
                )  # fmt: skip
        return [p.spec for p in by_url.values()]

    def _bind(self, cfg: AgentConfig) -> HealthServer:
        try:
            server = HealthServer(
                cfg.http_host, cfg.http_port, health=self.health_report, samples=self,
                page=self._status_page(cfg), access=access_for(cfg, self.paths.root),
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(
                cfg.source, "service.http_port", f"cannot listen on "
                f"{cfg.http_host}:{cfg.http_port}: {exc.strerror or exc}",
            ) from exc  # fmt: skip
        server.start()
        host, port = server.address
        self._write_service_file(host, port)
        self.log.info("http.listening", url=f"http://{host}:{port}", file=str(self._service_file))
        return server

    def _status_page(self, cfg: AgentConfig) -> GatewayPage:
        assert self.gauges is not None
        return GatewayPage(
            device_id=cfg.device_id, site_id=cfg.site_id, health=self.health_report,
            status=self.gauges.status, read=self.gauges.read, ports=self._port_workers,
        )  # fmt: skip

    def _port_workers(self) -> list[PortWorker]:
        with self._slots_lock:
            return [s.worker for s in self.slots.values() if isinstance(s.worker, PortWorker)]

    @property
    def _service_file(self) -> Path:
        return self.paths.root / SERVICE_FILE

    def _write_service_file(self, host: str, port: int) -> None:
        info = {"pid": os.getpid(), "host": host, "port": port, "url": f"http://{host}:{port}"}
        # Whole or absent: `keys rotate` and `status` read the pid and URL from it.
        replace_file(self._service_file, (json.dumps(info) + "\n").encode(), 0o644)

    def _spawn(self, slot: _Slot) -> None:
        def main() -> None:
            try:
                slot.worker.run(slot.stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the main loop, which exits non-zero
                slot.error = exc
                slot.trace = traceback.format_exc()
            finally:
                slot.finished = True
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"\0")

        slot.thread = threading.Thread(target=main, name=f"worker:{slot.worker.name}", daemon=True)
        slot.thread.start()
        self.log.info("worker.started", worker=slot.worker.name)

    # --- the main loop ------------------------------------------------------------------------
    def _loop(self) -> int:
        wd = self.notifier.watchdog_interval_s
        next_watchdog = time.monotonic()
        next_status = time.monotonic() + STATUS_EVERY_S
        last_status = ""
        withheld: tuple[str, ...] = ()
        while True:
            now = time.monotonic()
            timeout = TICK_S if wd is None else max(0.0, min(TICK_S, next_watchdog - now))
            for signum in self._wait(timeout):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.log.info("signal", signal=signal.Signals(signum).name)
                    return self._drain(0)
                if signum == signal.SIGHUP:
                    self.log.info("signal", signal="SIGHUP")
                    self._reload()
            failed = [s for s in self.slots.values() if s.finished and not s.stop.is_set()]
            if failed:
                return self._fail(failed[0])
            now = time.monotonic()
            if wd is not None and now >= next_watchdog:
                dead = tuple(sorted(n for n, s in self.slots.items() if not s.worker.alive))
                if not dead:
                    self.notifier.watchdog()
                elif dead != withheld:
                    self.log.warning("watchdog.withheld", workers=list(dead))
                withheld = dead
                next_watchdog = now + wd
            if now >= next_status:
                line = self._status_line()
                if line != last_status:
                    self.notifier.status(line)
                    last_status = line
                next_status = now + STATUS_EVERY_S

    def _wait(self, timeout: float) -> list[int]:
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        if not ready:
            return []
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            return []
        return [b for b in data if b != 0]

    def _fail(self, slot: _Slot) -> int:
        exc = slot.error
        self.log.error(
            "worker.failed", worker=slot.worker.name,
            error=type(exc).__name__ if exc else "ReturnedEarly",
            message=str(exc) if exc else "run() returned while the service was running",
            expected=isinstance(exc, CustodyError | DeviceError),
            traceback=None if isinstance(exc, CustodyError | DeviceError) else slot.trace,
        )  # fmt: skip
        code = self._drain(ExitCode.WORKER_FAILED)
        return code if code != 0 else ExitCode.WORKER_FAILED

    # --- SIGTERM ------------------------------------------------------------------------------
    def _drain(self, code: int) -> int:
        assert self.cfg is not None
        deadline = time.monotonic() + self.cfg.drain_deadline_s
        self.notifier.stopping()
        self.log.info("service.stopping", deadline_s=self.cfg.drain_deadline_s)
        stuck = self._stop_slots(list(self.slots.values()), deadline)
        if stuck:
            self.log.error("drain.deadline_exceeded", workers=stuck)
            return ExitCode.DRAIN_TIMEOUT
        if self.recorder is not None:
            self.recorder.close()  # the writer commits what was queued, then closes
            self.recorder = None
        self.log.info("service.stopped", exit_code=code, seconds=round(
            self.cfg.drain_deadline_s - (deadline - time.monotonic()), 3))  # fmt: skip
        return code

    def _stop_slots(self, slots: list[_Slot], deadline: float) -> list[str]:
        for slot in slots:
            slot.stop.set()
        stuck = []
        for slot in slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
                if slot.thread.is_alive():
                    stuck.append(slot.worker.name)
                    continue
            if slot.error is not None:
                self.log.warning(
                    "worker.stopped_with_error", worker=slot.worker.name,
                    error=type(slot.error).__name__, message=str(slot.error),
                )  # fmt: skip
            else:
                self.log.info("worker.stopped", worker=slot.worker.name)
        return stuck

    # --- SIGHUP -------------------------------------------------------------------------------
    def _reload(self) -> None:
        assert self.cfg is not None
        old = self.cfg
        self.notifier.reloading()
        try:
            new = load_config(self.paths.config)
            running = {name: slot.fingerprint for name, slot in self.slots.items()}
            built, wanted = self._build(new, only=running)
        except (ConfigError, DeviceError, CustodyError, OSError) as exc:
            self.reloads["failed"] += 1
            if isinstance(exc, ConfigError):
                self.log.error(
                    "config.reload_failed", file=exc.source, key=exc.key, reason=exc.reason,
                    action="kept the running configuration",
                )  # fmt: skip
            else:
                self.log.error(
                    "config.reload_failed", file=str(self.paths.config), key="-",
                    reason=str(exc), action="kept the running configuration",
                )  # fmt: skip
            self.notifier.ready(self._status_line())
            return
        ignored = [k for k in RESTART_ONLY if getattr(new, k) != getattr(old, k)]
        if ignored:
            self.log.warning("config.restart_required", file=new.source, keys=ignored)
        # Keep restart-only values as they are in effect; take the rest.
        self.cfg = _merge(new, old, RESTART_ONLY)
        deadline = time.monotonic() + self.cfg.drain_deadline_s
        going = [n for n in self.slots if n in built or n not in wanted]
        stuck = self._stop_slots([self.slots[n] for n in going], deadline)
        if stuck:
            self.log.error("reload.worker_stuck", workers=stuck)
        with self._slots_lock:
            for name in going:
                del self.slots[name]
            for name, (fingerprint, worker) in built.items():
                self.slots[name] = _Slot(worker, fingerprint)
        for name in built:
            self._spawn(self.slots[name])
        if (new.http_host, new.http_port) != (old.http_host, old.http_port):
            self._rebind(new)
        elif self.http is not None:
            self._reread_token(new)
        self.reloads["ok"] += 1
        self.log.info(
            "config.reloaded", file=new.source, restarted=sorted(built), stopped=sorted(
                n for n in going if n not in built), workers=sorted(self.slots),
        )  # fmt: skip
        self.notifier.ready(self._status_line())

    def _rebind(self, cfg: AgentConfig) -> None:
        try:
            server = self._bind(cfg)
        except ConfigError as exc:
            self.log.error("http.rebind_failed", key=exc.key, reason=exc.reason)
            return
        if self.http is not None:
            self.http.stop()
        self.http = server

    def _reread_token(self, cfg: AgentConfig) -> None:
        """A reload takes a new or rotated token file without rebinding the port."""
        assert self.http is not None
        try:
            self.http.access = access_for(cfg, self.paths.root)
        except ConfigError as exc:
            self.log.error(
                "http.token_failed", key=exc.key, reason=exc.reason, action="kept the old token"
            )

    # --- health and metrics (called on HTTP threads) ---------------------------------------
    def health_report(self) -> dict[str, Any]:
        with self._slots_lock:
            slots = dict(self.slots)
        workers: dict[str, Any] = {}
        status = "ok"
        for name, slot in sorted(slots.items()):
            h = slot.worker.health()
            alive = slot.worker.alive
            workers[name] = {"state": h.state, "alive": alive, **h.detail}
            if not alive and h.state != "starting":
                status = "failing"
            elif h.state != "ok" and status == "ok":
                status = "degraded"
        report: dict[str, Any] = {"status": status, "pid": os.getpid(), "workers": workers}
        if self.gauges is not None:
            report["outbox"] = self.gauges.snapshot()
        report["uptime_s"] = round(time.time() - self.started_at, 1)
        return report

    def samples(self) -> Iterator[Sample]:
        with self._slots_lock:
            slots = dict(self.slots)
        if self.gauges is not None:
            yield from self.gauges.samples()
        for name, slot in sorted(slots.items()):
            yield Sample("custody_worker_up", {"worker": name}, float(slot.worker.alive))
            degraded = slot.worker.health().state == "degraded"
            yield Sample("custody_worker_degraded", {"worker": name}, float(degraded))
            yield from slot.worker.metrics()
        for result, n in self.reloads.items():
            yield Sample("custody_service_reloads", {"result": result}, n)
        yield Sample("custody_service_start_timestamp_seconds", {}, self.started_at)

    def _status_line(self) -> str:
        with self._slots_lock:
            slots = list(self.slots.values())
        states = [s.worker.health().state for s in slots]
        ok = sum(1 for s in states if s == "ok")
        line = f"running: {ok}/{len(states)} workers ok"
        degraded = [s.worker.name for s in slots if s.worker.health().state == "degraded"]
        if degraded:
            line += "; degraded: " + ", ".join(degraded)
        return line

    # --- process plumbing -----------------------------------------------------------------------
    def _take_lock(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        path = self.paths.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"{self.paths.root}: another `custody-agent run` is already serving this data "
                f"dir (see {self._service_file})"
            ) from None
        self._lock_fd = fd

    def _install_signals(self) -> dict[int, Any]:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            old[sig] = signal.signal(sig, _ignore_in_python)
        old[-1] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return old

    def _restore_signals(self, old: dict[int, Any]) -> None:
        signal.set_wakeup_fd(old.pop(-1))
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _release(self) -> None:
        if self.recorder is not None:  # start failed half-way, or the drain was cut short
            with contextlib.suppress(CustodyError):
                self.recorder.close()
        if self.http is not None:
            self.http.stop()
        if self.gauges is not None:
            self.gauges.close()
        with contextlib.suppress(FileNotFoundError):
            self._service_file.unlink()
        self.notifier.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _ignore_in_python(signum: int, frame: object) -> None:
    """The work happens in the main loop (set_wakeup_fd delivers the signal number)."""


def _merge(new: AgentConfig, old: AgentConfig, keep: tuple[str, ...]) -> AgentConfig:
    values = {f.name: getattr(old if f.name in keep else new, f.name) for f in fields(new)}
    return AgentConfig(**values)
