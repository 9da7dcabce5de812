"""End-to-end harness for the sync benchmarks: a gateway, a private Mosquitto, a ledger.

Three processes, as in the field, so they can use both cores:

- the **broker**: a private Mosquitto (``tests.brokers.MosquittoBroker``, the
  production template) on free loopback ports, started by the harness;
- the **ledger**: ``custody-ledger run`` as a child process (SQLite store in
  a temp dir, the gateway's key enrolled beforehand);
- the **gateway**: this process. Its outbox is filled *before* the clock
  starts (``fill``), then ``sync.uplink.Uplink`` drains it through
  ``agent.uplink.build_uplink`` exactly as ``custody-agent sync --once`` does.

Wire bytes are read from the kernel, not estimated: ``TCP_INFO``'s
``tcpi_bytes_acked`` on the gateway's MQTT socket is the number of bytes the
broker's TCP stack acknowledged, i.e. every MQTT byte the broker received from
the gateway (fixed headers, topic, properties, PUBACKs, PINGREQs, payloads; TLS
records with ``--tls``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.enrol import initialise
from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.recorder import Recorder
from agent.uplink import build_uplink
from custody.event import EventType
from ledger.keys import PUBLIC_FILE, create_ledger_keys
from ledger.store import LedgerStore
from sync.mqtt import BrokerConfig
from sync.uplink import Uplink, UplinkStats
from tests.brokers import MosquittoBroker, TestPKI

__all__ = [
    "DEVICE_ID",
    "GatewayRun",
    "Site",
    "Stack",
    "drain",
    "fill",
    "make_site",
    "tcp_bytes",
]

DEVICE_ID = "bench-gw-01"
SITE_ID = "BENCH-01"
LEDGER_START_TIMEOUT_S = 30.0
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received are the
# two u64 at offsets 120 and 128 (Linux >= 4.1 / 4.2).
_TCP_INFO_LEN = 136
_BYTES_ACKED_AT = 120


@dataclass(frozen=True)
class Site:
    root: Path
    gateway_dir: Path
    ledger_dir: Path
    device_id: str = DEVICE_ID


def make_site(root: Path) -> Site:
    """Ledger keys, an initialised gateway pinned to them, and its key enrolled at the ledger."""
    site = Site(root, root / "gw", root / "ledger")
    create_ledger_keys(site.ledger_dir, "bench-ledger")
    LedgerStore(site.ledger_dir / "ledger.sqlite").close()
    initialise(
        site.gateway_dir,
        site_id=SITE_ID,
        device_id=DEVICE_ID,
        ledger_key_file=site.ledger_dir / PUBLIC_FILE,
    )
    key = load_device_key(site.gateway_dir / "device.key")
    store = LedgerStore(site.ledger_dir / "ledger.sqlite")
    try:
        store.enroll(DEVICE_ID, SITE_ID, key.public_key, key.kid)
    finally:
        store.close()
    return site


def fill(site: Site, events: int, *, threads: int = 2, lot: str = "LOT-2024-0001") -> int:
    """Capture ``events`` single-bag weighings (mass-bearing: commitment + sealed opening).

    Returns how many records the outbox holds (the boot event included).
    """
    with Recorder(site.gateway_dir, boot_reason="benchmark") as rec:
        done = 0
        lock = threading.Lock()

        def produce(n: int, offset: int) -> None:
            nonlocal done
            pending = []
            for i in range(n):
                bag = 15_000 + (offset + i) % 5_000  # 1,500.0-1,999.9 kg bags
                pending.append(rec.submit(EventType.WEIGHING, {"lot": lot}, masses={"bag": bag}))
                if len(pending) >= 256:
                    for f in pending:
                        f.result()
                    pending.clear()
            for f in pending:
                f.result()
            with lock:
                done += n

        shares = [events // threads + (1 if i < events % threads else 0) for i in range(threads)]
        workers = [
            threading.Thread(target=produce, args=(n, sum(shares[:i])))
            for i, n in enumerate(shares)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return outbox_counts(site)["pending"]


def outbox_counts(site: Site) -> dict[str, int]:
    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        return outbox.counts_by_state()
    finally:
        outbox.close()


def tcp_bytes(sock: socket.socket) -> int:
    """Bytes this socket sent that the peer's TCP stack acknowledged (``tcpi_bytes_acked``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    if len(info) < _BYTES_ACKED_AT + 8:  # pragma: no cover - kernels before 4.1
        raise OSError("this kernel's TCP_INFO has no tcpi_bytes_acked")
    value: int = struct.unpack_from("=Q", info, _BYTES_ACKED_AT)[0]
    return value


@dataclass
class Stack:
    """A private broker and a ``custody-ledger run`` child process for one site."""

    site: Site
    workdir: Path
    tls: bool = False
    broker: MosquittoBroker | None = None
    pki: TestPKI | None = None
    ledger_proc: subprocess.Popen[bytes] | None = None
    # Extra options of ``custody-ledger run`` (e.g. a throughput bench raising the budgets).
    ledger_args: tuple[str, ...] = ()

    def start(self) -> Stack:
        if self.tls:
            self.pki = TestPKI.create(self.workdir / "pki", [self.site.device_id])
        self.broker = MosquittoBroker(
            self.workdir / "mosquitto",
            self.pki,
        ).start()
        self._start_ledger()
        return self

    @property
    def host(self) -> str:
        assert self.broker is not None
        return self.broker.host

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.tls_port if self.tls else self.broker.plain_port

    def url(self, port: int | None = None) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{port or self.port}"

    def _tls_args(self, who: str) -> list[str]:
        if self.pki is None:
            return []
        pair = self.pki.ledger if who == "ledger" else self.pki.device(who)
        return ["--ca-file", str(self.pki.ca_file), "--cert-file", str(pair.cert),
                "--key-file", str(pair.key)]  # fmt: skip

    def gateway_broker(self, port: int | None = None) -> BrokerConfig:
        """The gateway's broker settings (``port`` to go through a proxy instead)."""
        pair = self.pki.device(self.site.device_id) if self.pki is not None else None
        return BrokerConfig(
            url=self.url(port),
            client_id=self.site.device_id,  # the certificate CN (custody_identity.c)
            ca_file=self.pki.ca_file if self.pki is not None else None,
            cert_file=pair.cert if pair is not None else None,
            key_file=pair.key if pair is not None else None,
        )

    def _start_ledger(self) -> None:
        assert self.broker is not None
        log = (self.workdir / "ledger.stderr").open("ab")
        self.ledger_proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(self.site.ledger_dir),
             "run", "--broker", self.url(), *self._tls_args("ledger"),
             "--checkpoint-interval", "300", "--http", "127.0.0.1:0", *self.ledger_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        # Mosquitto drops shared-subscription messages while no subscriber is
        # connected, so wait until the broker logs the ledger's subscription.
        deadline = time.monotonic() + LEDGER_START_TIMEOUT_S
        while "$share/ledger/" not in self.broker.log_text():
            if self.ledger_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ledger did not subscribe:\n{self.ledger_log()[-2000:]}")
            time.sleep(0.05)

    def ledger_log(self) -> str:
        path = self.workdir / "ledger.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.ledger_proc is not None and self.ledger_proc.poll() is None:
            self.ledger_proc.send_signal(signal.SIGTERM)
            try:
                self.ledger_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.ledger_proc.kill()
                self.ledger_proc.wait(timeout=10)
        if self.broker is not None and self.broker.running:
            self.broker.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class GatewayRun:
    seconds: float
    stats: UplinkStats
    counts: dict[str, int]
    wire_bytes: int  # gateway -> broker, TCP_INFO bytes acked, summed over connections
    first_connect_s: float


@contextlib.contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def drain(
    site: Site,
    broker: BrokerConfig,
    *,
    timeout_s: float,
    uplink_options: dict[str, Any] | None = None,
    on_tick: Callable[[Uplink], None] | None = None,
) -> GatewayRun:
    """Drain the gateway's outbox through ``broker`` until every record is acked."""
    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        uplink = build_uplink(site.gateway_dir, outbox, broker, **(uplink_options or {}))
        wire = _WireCounter(uplink)
        t0 = time.monotonic()
        connected_at: list[float] = []

        def tick(_acked: int) -> None:
            if not connected_at and uplink.link.connected:
                connected_at.append(time.monotonic() - t0)
            wire.sample()
            if on_tick is not None:
                on_tick(uplink)

        stats = uplink.run(threading.Event(), until_drained=True, timeout_s=timeout_s,
                           progress=tick)  # fmt: skip
        seconds = time.monotonic() - t0
        return GatewayRun(
            seconds=seconds,
            stats=stats,
            counts=outbox.counts_by_state(),
            wire_bytes=wire.total(),
            first_connect_s=connected_at[0] if connected_at else float("nan"),
        )
    finally:
        outbox.close()


class _WireCounter:
    """Sums ``tcp_bytes`` over the uplink's successive sockets (one per connection)."""

    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self._done = 0  # bytes of sockets already replaced
        self._sock: Any = None
        self._last = 0

    def sample(self) -> None:
        sock = self.uplink.link.client.socket()
        if sock is not self._sock:
            self._done += self._last
            self._sock, self._last = sock, 0
        if sock is None:
            return
        with contextlib.suppress(OSError, ValueError):
            raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_sock", None)
            if raw is not None:
                self._last = tcp_bytes(raw)

    def total(self) -> int:
        return self._done + self._last


def cpu_count() -> int:
    return os.cpu_count() or 1
