"""Private Mosquitto brokers and a throwaway PKI for integration tests.

Theory of operation. ``TestPKI.create`` runs ``deploy/pki/make-test-pki.sh`` (the same script an
operator would use for a lab) into a directory and hands out the paths. ``MosquittoBroker``
renders the production template ``deploy/mosquitto/custody.conf`` for a temp dir: the TLS
listener moves to a free loopback port with the test PKI's files, persistence and the log go into
the temp dir, the ACL is the production ``deploy/mosquitto/custody.acl``, the identity plugin is
built from ``deploy/mosquitto/custody_identity.c`` (``identity_plugin``: once per source version,
cached under ``build/``), and a plain anonymous listener is added on a second free loopback port
for tests that only need a broker. Every other line of the template is used unchanged, so the
tests exercise the production settings (queue limits, per-listener security, the client id bound
to the certificate, each device's publish budget). The broker runs in the foreground as a child
process; waits are deadline-based (a TCP connect probe), and ``stop``/``kill``/``restart`` inject
faults while keeping ports and the persistence directory.

Running as root (CI): Mosquitto drops privileges to user ``mosquitto`` unless the config says
``user root``, and then cannot write its persistence file into a root-owned temp dir
(ARCHITECTURE.md "Real components"), so the rendered config says ``user root`` when we are root.

Fixtures built on this live in ``tests/conftest.py`` ("MQTT broker fixtures"); ``tests/brokers.py``
imports no pytest so that benchmarks and scripts can use it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
CONF_TEMPLATE = REPO / "deploy" / "mosquitto" / "custody.conf"
ACL_FILE = REPO / "deploy" / "mosquitto" / "custody.acl"
PKI_SCRIPT = REPO / "deploy" / "pki" / "make-test-pki.sh"
PLUGIN_SOURCE = REPO / "deploy" / "mosquitto" / "custody_identity.c"
PLUGIN_BUILD_SCRIPT = REPO / "deploy" / "mosquitto" / "build-plugin.sh"
PLUGIN_CACHE = REPO / "build" / "mosquitto"

LOOPBACK = "127.0.0.1"
# Device certificates issued up front by TestPKI.create; others are issued on first use.
DEFAULT_DEVICE_IDS = ("dev-a", "dev-b", "gw-kol-01")
# Mosquitto starts in tens of milliseconds; the margin is for loaded CI machines.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """Mosquitto did not start or stop as asked; the message carries the tail of its log."""


class PKIError(RuntimeError):
    """make-test-pki.sh failed; the message carries its stderr."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel's choice; racy by nature, see start())."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    """The broker executable: on PATH, or Debian's /usr/sbin (not on a non-root PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError("mosquitto not found: run deploy/ensure-debian-packages.sh")
    return found


def identity_plugin() -> Path:
    """The identity plugin built from this checkout's source, built on first use.

    The file name carries a hash of the source and the build script, so an edit builds a new one
    and concurrent test runs share a finished build (build-plugin.sh renames it into place).
    """
    digest = hashlib.sha256()
    for source in (PLUGIN_SOURCE, PLUGIN_BUILD_SCRIPT):
        digest.update(source.read_bytes())
    target = PLUGIN_CACHE / f"custody_identity-{digest.hexdigest()[:16]}.so"
    if not target.is_file():
        result = subprocess.run(
            [str(PLUGIN_BUILD_SCRIPT), str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"{PLUGIN_BUILD_SCRIPT.name} failed: {result.stderr.strip()}")
    return target


# --- PKI ---


@dataclass(frozen=True, slots=True)
class CertKey:
    """A PEM certificate and its PEM private key (0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TestPKI:
    """Paths of a PKI made by deploy/pki/make-test-pki.sh (layout documented in the script)."""

    __test__ = False  # not a test class, although its name starts with "Test"

    directory: Path

    @classmethod
    def create(cls, directory: Path, device_ids: Iterable[str] = DEFAULT_DEVICE_IDS) -> TestPKI:
        pki = cls(Path(directory))
        pki._run_script(list(device_ids))
        return pki

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_file(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def broker(self) -> CertKey:
        return CertKey(self.directory / "broker.crt", self.directory / "broker.key")

    @property
    def ledger(self) -> CertKey:
        """The ledger intake's client certificate (CN=ledger, the ACL's ``user ledger``)."""
        return CertKey(self.directory / "ledger.crt", self.directory / "ledger.key")

    def device(self, device_id: str) -> CertKey:
        """A device client certificate with CN=device_id, issued by the script on first use."""
        pair = CertKey(
            self.directory / "devices" / f"{device_id}.crt",
            self.directory / "devices" / f"{device_id}.key",
        )
        if not (pair.cert.is_file() and pair.key.is_file()):
            self._run_script([device_id])
        return pair

    def client_context(self, identity: CertKey | None) -> ssl.SSLContext:
        """A client TLS context that trusts this CA, presents ``identity`` and checks strictly.

        VERIFY_X509_STRICT is Python 3.13's default for create_default_context; setting it here
        keeps the test certificates acceptable to newer Pythons too.
        """
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        if identity is not None:
            context.load_cert_chain(identity.cert, identity.key)
        return context

    def _run_script(self, device_ids: list[str]) -> None:
        result = subprocess.run(
            [str(PKI_SCRIPT), str(self.directory), *device_ids],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise PKIError(f"{PKI_SCRIPT.name} exited {result.returncode}: {result.stderr.strip()}")


# --- Config ---

_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def render_config(
    template: str,
    *,
    pki: TestPKI | None,
    tls_port: int,
    plain_port: int,
    persistence_dir: Path,
    log_file: Path,
    acl_file: Path = ACL_FILE,
    host: str = LOOPBACK,
    run_as_root: bool = False,
    extra_global: str = "",
    plugin_file: Path | None = None,
) -> str:
    """The production template with the test substitutions described in the module docstring.

    Each directive the tests override must appear in the template, so that a renamed or deleted
    setting fails here instead of silently running the tests against Mosquitto's defaults.
    ``pki=None`` drops the TLS listener (everything from the template's first ``listener`` line).
    ``plugin_file`` is the identity plugin (default: ``identity_plugin()``, built when needed).
    """
    replacements = {
        "persistence_location": f"persistence_location {persistence_dir}",
        "log_dest": f"log_dest file {log_file}",
        "log_type": "log_type all",
        "listener": f"listener {tls_port} {host}",
        "acl_file": f"acl_file {acl_file}",
    }
    seen: set[str] = set()
    out = [
        "# Rendered by tests/brokers.py from deploy/mosquitto/custody.conf; do not edit.",
        *(["user root"] if run_as_root else []),
    ]
    for line in template.splitlines():
        directive = line.split(" ", 1)[0] if line and not line.startswith("#") else ""
        if directive and pki is not None:
            line = (
                line.replace("@CA_FILE@", str(pki.ca_file))
                .replace("@CERT_FILE@", str(pki.broker.cert))
                .replace("@KEY_FILE@", str(pki.broker.key))
                .replace("@CRL_FILE@", str(pki.crl_file))
            )
            if "@PLUGIN_FILE@" in line:
                plugin_file = plugin_file or identity_plugin()
                line = line.replace("@PLUGIN_FILE@", str(plugin_file))
        if directive == "listener":
            if pki is None:
                break
            if "listener" in seen:
                raise BrokerError("custody.conf has several listeners; tests expect one")
            if extra_global:
                out.append(extra_global.rstrip("\n"))
        if directive in replacements:
            if directive not in seen:
                out.append(replacements[directive])
            seen.add(directive)
            continue
        out.append(line)
    if pki is None:
        seen.update({"listener", "acl_file"})
        if extra_global:
            out.append(extra_global.rstrip("\n"))
    missing = set(replacements) - seen
    if missing:
        raise BrokerError(f"custody.conf lacks the directives {sorted(missing)}")
    out += ["", "# Plain loopback listener for local-only tests.", f"listener {plain_port} {host}"]
    out.append("allow_anonymous true")
    text = "\n".join(out) + "\n"
    settings = "\n".join(line for line in out if not line.startswith("#"))
    leftover = sorted(set(_PLACEHOLDER.findall(settings)))
    if leftover:
        raise BrokerError(f"unknown placeholders in custody.conf: {leftover}")
    return text


# --- Broker ---


class MosquittoBroker:
    """A private Mosquitto in ``workdir``: TLS + ACL listener (when given a PKI) and a plain one.

    ``with MosquittoBroker(tmp, pki) as broker:`` starts it and stops it. ``host``, ``tls_port``
    and ``plain_port`` are where clients connect; they stay the same across ``restart()``.
    """

    def __init__(
        self,
        workdir: Path,
        pki: TestPKI | None = None,
        *,
        acl_file: Path = ACL_FILE,
        template: Path = CONF_TEMPLATE,
        extra_global: str = "",
        host: str = LOOPBACK,
    ) -> None:
        self.workdir = Path(workdir)
        self.pki = pki
        self.host = host
        self.acl_file = acl_file
        self.template = template
        self.extra_global = extra_global
        self.config_path = self.workdir / "mosquitto.conf"
        self.persistence_dir = self.workdir / "persistence"
        self.log_path = self.workdir / "mosquitto.log"
        self.stderr_path = self.workdir / "mosquitto.stderr"
        self.plain_port = 0
        self.tls_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # Lifecycle

    def start(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        """Start and wait until every listener accepts TCP connections.

        Ports come from free_port(), so another process can take one between the check and
        Mosquitto's bind; the first start then retries with new ports (restart() never does).
        """
        if self.running:
            raise BrokerError("already running")
        first_start = self.plain_port == 0
        for attempt in range(3):
            if first_start:
                self.plain_port = free_port(self.host)
                self.tls_port = free_port(self.host) if self.pki is not None else 0
                self._write_config()
            try:
                self._spawn_and_wait(timeout)
                return self
            except BrokerError:
                if first_start and attempt < 2 and "Address already in use" in self.log_text():
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, as systemd does: Mosquitto writes its persistence file and exits."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGKILL: a crash. Nothing since the last persistence snapshot survives."""
        return self._signal(signal.SIGKILL, timeout)

    def restart(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        """Stop (if running) and start again on the same ports with the same persistence dir."""
        if self.running:
            self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def log_text(self) -> str:
        """Mosquitto's log file followed by its stderr (where config errors go)."""
        files = (self.log_path, self.stderr_path)
        return "\n".join(p.read_text(errors="replace") for p in files if p.exists())

    def __enter__(self) -> MosquittoBroker:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.running:
            self.stop()  # kills it and raises when SIGTERM is ignored

    # Internals

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(exist_ok=True)
        text = render_config(
            self.template.read_text(),
            pki=self.pki,
            tls_port=self.tls_port,
            plain_port=self.plain_port,
            persistence_dir=self.persistence_dir,
            log_file=self.log_path,
            acl_file=self.acl_file,
            host=self.host,
            run_as_root=os.geteuid() == 0,
            extra_global=self.extra_global,
        )
        self.config_path.write_text(text)

    def _spawn_and_wait(self, timeout: float) -> None:
        # Appended to, like Mosquitto's own log file: log_text() spans restarts.
        with self.stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.workdir,
            )
        ports = [p for p in (self.plain_port, self.tls_port) if p]
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(f"mosquitto exited {code} at start:\n{self._log_tail()}")
            if all(self._accepts(port) for port in ports):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise BrokerError(f"mosquitto not listening after {timeout} s:\n{self._log_tail()}")
            # Pause by waiting on the process, which also notices an early exit.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=min(0.02, remaining))

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _signal(self, signum: signal.Signals, timeout: float) -> int:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise BrokerError("not running")
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
            raise BrokerError(f"mosquitto ignored {signum.name} for {timeout} s") from None
        finally:
            self._proc = None if proc.poll() is not None else proc
        return code

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
