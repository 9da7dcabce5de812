"""The enrolment procedure of docs/operations.md, end to end, with the real commands.

Central side: ``custody-ledger init``, ``pki init``, ``pki issue-broker``, ``pki issue-ledger``,
a private Mosquitto on the production config using that CA's files, and ``custody-ledger run``
as a real process. Gateway side: ``custody-agent init`` (signing key, TLS key, CSR), the ledger
registry authority's ``custody-registry enrol``, the ledger operator's ``enroll`` of that entry
+ ``pki issue --csr``, then ``custody-agent enrol`` with what came back.
Records then sync and end acked. Revocation: the registry rejects later records with a reason
the gateway's ``status`` shows, and the broker refuses the gateway's TLS connection once it
reloads the CRL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from agent import enrol
from custody.errors import ConfigError
from ledger.pki import Pki
from tests.brokers import MosquittoBroker, TestPKI
from tests.support import REPO, run_cli


def ledger_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def registry_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.authority_cli", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


@dataclass
class Central:
    data: Path
    pki: Pki
    broker: MosquittoBroker

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.broker.tls_port}"

    def devices(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = json.loads(
            ok(ledger_cli("--data-dir", self.data, "devices", "--json"))
        )
        return rows


class LedgerProcess:
    """``custody-ledger run`` as a real process; SIGTERM on exit."""

    def __init__(self, central: Central) -> None:
        d, pki = central.data, central.pki.directory
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(d), "run",
             "--broker", central.url, "--ca-file", str(pki / "ca.crt"),
             "--cert-file", str(pki / "ledger.crt"), "--key-file", str(pki / "ledger.key"),
             "--http", "127.0.0.1:0"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def __enter__(self) -> LedgerProcess:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        if t is None:
            assert self.proc.returncode == 0, err


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    data = tmp_path / "ledger"
    registry = tmp_path / "registry"
    ok(registry_cli("init", "--name", "consortium-registry", "--dir", registry))
    ok(ledger_cli("--data-dir", data, "init", "--authority", registry / "authority-public.json"))
    ok(ledger_cli("--data-dir", data, "pki", "init"))
    ok(ledger_cli("--data-dir", data, "pki", "issue-broker", "--host", "localhost",
                  "--host", "127.0.0.1"))  # fmt: skip
    ok(ledger_cli("--data-dir", data, "pki", "issue-ledger"))
    pki = Pki(data / "pki")
    with MosquittoBroker(tmp_path / "broker", TestPKI(pki.directory)) as broker:
        yield Central(data, pki, broker)


def enrol_gateway(tmp_path: Path, central: Central, device_id: str, site: str = "KOL-01") -> Path:
    """The documented procedure, step by step (docs/operations.md "Enrol a gateway")."""
    gw = tmp_path / device_id
    # 1. On the gateway: identity, TLS key and CSR.
    out = ok(run_cli("--data-dir", str(gw), "init", "--site", site, "--device", device_id))
    record = json.loads(out)
    record_file = tmp_path / f"{device_id}.json"
    record_file.write_text(out)
    # 2. The registry authority enrols the signing key at its site; the ledger logs its
    #    entry and issues the client certificate from the CSR.
    entry = ok(registry_cli("enrol", record_file, "--site", site,
                            "--dir", central.data.parent / "registry")).splitlines()[0]  # fmt: skip
    ok(ledger_cli("--data-dir", central.data, "enroll", entry))
    cert = ok(ledger_cli("--data-dir", central.data, "pki", "issue", device_id,
                         "--csr", record["csr_file"])).strip()  # fmt: skip
    # 3. Back on the gateway: ledger keys, CA, certificate, broker.
    ok(run_cli("--data-dir", str(gw), "enrol", "--cert-file", cert,
               "--ca-file", str(central.pki.ca_file),
               "--ledger-key", str(central.data / "ledger-public.json"),
               "--broker", central.url))  # fmt: skip
    # Shared subscriptions drop messages while no ledger session exists; resend soon.
    ok(run_cli("--data-dir", str(gw), "config", "set", "sync.ack_timeout_s", "5"))
    ok(run_cli("--data-dir", str(gw), "config", "check"))
    return gw


def record_weighings(gw: Path, n: int, start_kg: int = 40_000) -> None:
    for i in range(n):
        ok(run_cli("--data-dir", str(gw), "record", "weighing", "--gross-kg",
                   str(start_kg + i), "--tare-kg", "14000", "--vehicle", f"CD-{i}"))  # fmt: skip


def status(gw: Path) -> dict[str, object]:
    out: dict[str, object] = json.loads(ok(run_cli("--data-dir", str(gw), "status", "--json")))
    return out


def sync(gw: Path, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_cli("--data-dir", str(gw), "sync", "--once", "--json", "--timeout", str(timeout),
                   *extra)  # fmt: skip


def test_enrolment_procedure_end_to_end(tmp_path: Path, central: Central) -> None:
    gw = enrol_gateway(tmp_path, central, "gw-kol-01")
    record_weighings(gw, 3)  # each command: a boot record and the weighing
    with LedgerProcess(central):
        result = sync(gw)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["acked"] == 6
    assert summary["outbox"]["acked"] == 6
    assert summary["outbox"]["pending"] + summary["outbox"]["sent"] == 0
    (row,) = central.devices()
    assert row["device_id"] == "gw-kol-01"
    assert row["head_seq"] == 6
    assert status(gw)["rejected_reasons"] == {}


def test_revoked_gateway_is_rejected_with_a_reason_then_refused_by_the_broker(
    tmp_path: Path, central: Central
) -> None:
    gw = enrol_gateway(tmp_path, central, "gw-kol-02")
    record_weighings(gw, 1)
    with LedgerProcess(central):
        assert sync(gw).returncode == 0
        revoked = ok(ledger_cli("--data-dir", central.data, "revoke", "gw-kol-02"))
        assert "revoked 1 key(s)" in revoked
        assert "revoked 1 certificate(s)" in revoked
        # The broker has not reloaded the CRL yet: the records get there, the ledger refuses.
        record_weighings(gw, 1)
        result = sync(gw)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["rejected"] == 2
        assert status(gw)["rejected_reasons"] == {"device key revoked": 2}
        text = ok(run_cli("--data-dir", str(gw), "status"))
        assert "REJECTED by the ledger: 2 record(s): device key revoked" in text
        # systemctl reload mosquitto: the TLS connection is refused from now on.
        assert central.broker.pid is not None
        os.kill(central.broker.pid, signal.SIGHUP)
        record_weighings(gw, 1)
        result = sync(gw, timeout=8)
    assert result.returncode == 10  # nothing could be sent
    after = json.loads(result.stdout)
    assert after["acked"] == 0
    assert after["outbox"]["pending"] == 2
    assert "certificate verify failed" in central.broker.log_text()
    assert [r["revoked_ms"] is not None for r in central.devices()] == [True]


def test_enrol_refuses_a_certificate_for_another_gateway(tmp_path: Path, central: Central) -> None:
    gw = tmp_path / "gw"
    ok(run_cli("--data-dir", str(gw), "init", "--site", "KOL-01", "--device", "gw-a"))
    other = central.pki.issue_device("gw-b", None)
    wrong_cn = run_cli("--data-dir", str(gw), "enrol", "--cert-file", str(other),
                       "--ca-file", str(central.pki.ca_file))  # fmt: skip
    assert wrong_cn.returncode == 3
    assert "CN='gw-b'" in wrong_cn.stderr
    # Right CN, but not from this gateway's CSR (its key is elsewhere).
    stolen = central.pki.issue_device("gw-a", None)
    not_ours = run_cli("--data-dir", str(gw), "enrol", "--cert-file", str(stolen),
                       "--ca-file", str(central.pki.ca_file))  # fmt: skip
    assert not_ours.returncode == 3
    assert "tls.key" in not_ours.stderr
    assert 'cert_file = ""' in (gw / "config.toml").read_text()  # nothing was changed


def test_config_set_validates_and_keeps_comments(tmp_path: Path) -> None:
    gw = tmp_path / "gw"
    enrol.initialise(gw, site_id="KOL-01", device_id="gw-a")
    before = (gw / "config.toml").read_text()
    enrol.set_settings(gw / "config.toml", [("sync.broker", "mqtts://h:8883"),
                                            ("sync.window", "8")])  # fmt: skip
    after = (gw / "config.toml").read_text()
    assert 'broker = "mqtts://h:8883"' in after
    assert "window = 8" in after
    assert [line for line in before.splitlines() if line.startswith("#")] == [
        line for line in after.splitlines() if line.startswith("#")
    ]
    for key, value, reason in [
        ("sync.broker", "http://h", "must start with"),
        ("sync.window", "0", "between 1 and 64"),
        ("sync.nope", "1", "unknown setting"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            enrol.set_settings(gw / "config.toml", [(key, value)])
    assert (gw / "config.toml").read_text() == after
    bad = run_cli("--data-dir", str(gw), "config", "set", "sync.window")
    assert bad.returncode == 3
    assert "KEY VALUE" in bad.stderr
