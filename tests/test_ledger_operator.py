"""What the ledger operator sees, with the real commands: rejections and their reasons on both
ends, a broker that cannot be reached, TLS files that cannot work, the data directory, the
store location, and a lot summary produced from the command lines alone.

The central side is tests/test_enrolment.py's: a private TLS Mosquitto on the production
configuration with the CA of ``custody-ledger pki``, and ``custody-ledger run`` as a process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.recorder import Recorder
from custody.keys import DeviceKey, LedgerKeyPair
from custody.mass import kg_to_units, units_to_kg
from lab.lots import mine_a_lot
from ledger import paths
from ledger.cli import build_parser
from ledger.intake import Intake, IntakeResult
from ledger.pki import Pki
from ledger.service import LedgerService
from ledger.store import LedgerStore
from ledger.stores import open_store
from sync.mqtt import BrokerConfig
from tests.brokers import MosquittoBroker, TestPKI
from tests.support import REPO, run_cli
from tests.test_enrolment import (
    Central,
    enrol_gateway,
    ledger_cli,
    ok,
    record_weighings,
    registry_cli,
)

CONFIG_EXIT = 3
UNACKED_EXIT = 10
# How long a line of the ledger's log may take to appear before the test gives up (a hang
# guard, not a measurement).
LINE_WAIT_S = 60.0


@pytest.fixture(name="central")
def central_side(tmp_path: Path) -> Iterator[Central]:
    """tests/test_enrolment.py's central side: registry, ledger, CA and a TLS broker on it."""
    data, registry = tmp_path / "ledger", tmp_path / "registry"
    ok(registry_cli("init", "--name", "consortium-registry", "--dir", registry))
    ok(ledger_cli("--data-dir", data, "init", "--authority", registry / "authority-public.json"))
    ok(ledger_cli("--data-dir", data, "pki", "init"))
    ok(ledger_cli("--data-dir", data, "pki", "issue-broker", "--host", "localhost",
                  "--host", "127.0.0.1"))  # fmt: skip
    ok(ledger_cli("--data-dir", data, "pki", "issue-ledger"))
    pki = Pki(data / "pki")
    with MosquittoBroker(tmp_path / "broker", TestPKI(pki.directory)) as broker:
        yield Central(data, pki, broker)


class Ledger:
    """``custody-ledger run`` as a process whose stderr (its log) the test reads line by line."""

    def __init__(self, *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", *map(str, args)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, text: str) -> str:
        """The first log line (read so far or next) containing ``text``."""
        for line in self.lines:
            if text in line:
                return line
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + LINE_WAIT_S
        while time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                continue
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return line
        raise AssertionError(f"no log line with {text!r}; the log:\n" + "\n".join(self.lines))

    def http(self) -> str:
        """host:port of its /metrics and /healthz, from its start line."""
        line = self.wait_for("/healthz on ")
        return line.rsplit("/healthz on ", 1)[1].rstrip(")\n")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, rest = self.proc.communicate(timeout=60)
        self.lines.extend(rest.splitlines())
        assert self.proc.returncode == 0, "\n".join(self.lines)
        return "\n".join(self.lines)


@contextmanager
def ledger_run(side: Central, *extra: str) -> Iterator[Ledger]:
    pki = side.pki.directory
    ledger = Ledger(
        "--data-dir", side.data, "run", "--broker", side.url,
        "--ca-file", pki / "ca.crt", "--cert-file", pki / "ledger.crt",
        "--key-file", pki / "ledger.key", "--http", "127.0.0.1:0", *extra,
    )  # fmt: skip
    try:
        yield ledger
    finally:
        if ledger.proc.poll() is None:
            ledger.proc.kill()
            ledger.proc.communicate(timeout=30)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - http:// built here
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- rejections -------------------------------------------------------------------------------
def test_a_rejected_record_is_explained_by_the_gateway_the_log_the_cli_and_metrics(
    tmp_path: Path, central: Central
) -> None:
    gw = enrol_gateway(tmp_path, central, "gw-kol-01")
    # The gateway seals its masses to another (a trial) ledger's key: the ledger cannot open
    # them and rejects the records, the case that used to show only as "rejected 0".
    ok(ledger_cli("--data-dir", tmp_path / "trial", "init", "--ledger-id", "trial"))
    trial = json.loads((tmp_path / "trial" / "ledger-public.json").read_text())
    pinned_file = gw / "ledger.json"
    pinned = json.loads(pinned_file.read_text())
    pinned["sealing_key"] = trial["sealing_key"]
    pinned_file.write_text(json.dumps(pinned))
    record_weighings(gw, 2)
    with ledger_run(central, "--log-format", "json") as ledger:
        http = ledger.http()
        # The record after the two rejected ones cannot be logged (its predecessor never
        # will be): the sync ends unacked, saying why.
        sync = run_cli("--data-dir", str(gw), "sync", "--timeout", "15")
        assert sync.returncode == UNACKED_EXIT, sync.stdout + sync.stderr
        assert "rejected 2, still unacked 1" in sync.stdout
        assert "REJECTED by the ledger: 2 record(s): mass: " in sync.stdout, sync.stdout
        # One line for the batch, as JSON with the device and the reasons as fields.
        line = json.loads(ledger.wait_for("record(s) from gw-kol-01: "))
        assert line["level"] == "WARNING" and line["logger"] == "ledger.service"
        assert line["device_id"] == "gw-kol-01" and line["rejected"] == 2
        assert line["reasons"] == "2x mass: sealed opening does not open with the ledger key"
        status, metrics = get(f"http://{http}/metrics")
        assert status == 200
        name = 'custody_ledger_device_last_seen_timestamp_seconds{device="gw-kol-01"}'
        seen = [ln for ln in metrics.splitlines() if ln.startswith(name)]
        assert len(seen) == 1 and float(seen[0].split()[-1]) > 1.7e9
        ledger.stop()
    listed = ok(ledger_cli("--data-dir", central.data, "rejections"))
    rows = [ln for ln in listed.splitlines() if "gw-kol-01" in ln]
    assert len(rows) == 2 and all("mass: " in r for r in rows), listed
    assert [" ".join(r.split()[2:4]) for r in rows] == ["seq 2", "seq 4"]  # the weighings
    by_device = ["rejections", "--device", "gw-kol-01", "--json"]
    as_json = json.loads(ok(ledger_cli("--data-dir", central.data, *by_device)))
    assert [r["device_id"] for r in as_json] == ["gw-kol-01"] * 2
    assert all(r["reason"].startswith("mass: ") and r["count"] == 1 for r in as_json)
    assert ok(ledger_cli("--data-dir", central.data, "rejections", "--device", "gw-other")) == (
        "no rejections of gw-other\n"
    )
    later = ok(ledger_cli("--data-dir", central.data, "rejections", "--since", "2999-01-01"))
    assert later == "no rejections since 2999-01-01\n"
    bad = ledger_cli("--data-dir", central.data, "rejections", "--since", "yesterday")
    assert bad.returncode == CONFIG_EXIT and "--since" in bad.stderr


# --- the broker and the ledger's TLS files ----------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_broker_is_logged_with_the_reason_and_the_next_try(tmp_path: Path) -> None:
    ok(ledger_cli("--data-dir", tmp_path / "l", "init"))
    url = f"mqtt://127.0.0.1:{_closed_port()}"
    ledger = Ledger("--data-dir", tmp_path / "l", "run", "--broker", url, "--http", "127.0.0.1:0")
    try:
        http = ledger.http()
        first = ledger.wait_for("(attempt 1, next in 1 s)")
        assert f"cannot connect to {url}: ConnectionRefusedError" in first
        assert "ERROR" in first
        ledger.wait_for("(attempt 2, next in 2 s)")
        status, body = get(f"http://{http}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "degraded"
        assert any(p.startswith(f"cannot connect to {url}: ") for p in health["problems"])
        ledger.stop()
    finally:
        if ledger.proc.poll() is None:
            ledger.proc.kill()
            ledger.proc.communicate(timeout=30)


@pytest.fixture
def ledger_pki(tmp_path: Path) -> Path:
    data = tmp_path / "ledger"
    ok(ledger_cli("--data-dir", data, "init"))
    ok(ledger_cli("--data-dir", data, "pki", "init"))
    ok(ledger_cli("--data-dir", data, "pki", "issue-ledger"))
    ok(ledger_cli("--data-dir", data, "pki", "issue-broker", "--host", "localhost"))
    ok(ledger_cli("--data-dir", data, "pki", "issue", "gw-kol-01"))
    return data


def _run_with(data: Path, cert: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return ledger_cli(
        "--data-dir", data, "run", "--broker", f"mqtts://localhost:{_closed_port()}",
        "--ca-file", data / "pki" / "ca.crt", "--cert-file", cert, "--key-file", key,
        "--http", "off",
    )  # fmt: skip


def test_a_key_that_is_not_the_certificates_is_refused_naming_both_files(
    ledger_pki: Path,
) -> None:
    pki = ledger_pki / "pki"
    result = _run_with(ledger_pki, pki / "ledger.crt", pki / "broker.key")
    assert result.returncode == CONFIG_EXIT
    assert "Traceback" not in result.stderr
    assert f"{pki / 'ledger.crt'} and {pki / 'broker.key'}" in result.stderr
    assert "the key does not belong to the certificate" in result.stderr


def test_a_gateway_certificate_in_the_ledgers_place_is_refused(ledger_pki: Path) -> None:
    pki = ledger_pki / "pki"
    device = pki / "devices"
    result = _run_with(ledger_pki, device / "gw-kol-01.crt", device / "gw-kol-01.key")
    assert result.returncode == CONFIG_EXIT, result.stderr
    assert "is the certificate of 'gw-kol-01', not the ledger's (CN=ledger)" in result.stderr
    assert "custody.acl" in result.stderr
    broker = _run_with(ledger_pki, pki / "broker.crt", pki / "broker.key")
    assert broker.returncode == CONFIG_EXIT
    assert "not the ledger's" in broker.stderr  # CN localhost


# --- where the ledger keeps its data ----------------------------------------------------------
def test_the_default_data_dir_is_the_ledgers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "var" / "lib" / "custody" / "ledger"
    monkeypatch.setattr(paths, "SYSTEM_DATA_DIR", system)
    monkeypatch.delenv("CUSTODY_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.resolve_data_dir() == tmp_path / "xdg" / "custody" / "ledger"
    system.mkdir(parents=True)
    assert paths.resolve_data_dir() == system
    assert paths.SYSTEM_DATA_DIR.parent != paths.SYSTEM_DATA_DIR  # not the gateway's own
    # The real command, without --data-dir: the per-user default, never the gateway's.
    env = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "init"], capture_output=True, text=True,
        cwd=REPO, env=env, timeout=120, check=False,
    )  # fmt: skip
    if Path("/var/lib/custody/ledger").is_dir():
        pytest.skip(
            "/var/lib/custody/ledger exists here, so it is the default, not the per-user one"
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "home" / "custody" / "ledger" /
                                        "ledger-public.json")  # fmt: skip


def test_a_store_url_of_another_database_is_refused(tmp_path: Path) -> None:
    ok(ledger_cli("--data-dir", tmp_path / "l", "init"))
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(tmp_path / "l"),
         "--db", "mysql://x", "devices"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == CONFIG_EXIT
    assert "unknown store scheme mysql://" in result.stderr
    assert "SQLite file path" in result.stderr and "postgresql://" in result.stderr
    assert not (tmp_path / "mysql:").exists()  # no SQLite file made of the URL


def test_enrol_is_the_command_and_enroll_its_alias() -> None:
    parser = build_parser()
    enrol = parser.parse_args(["enrol", "entry.cose"])
    enroll = parser.parse_args(["enroll", "entry.cose"])
    assert enrol.func is enroll.func
    assert enrol.record == enroll.record == "entry.cose"


# --- a lot summary from the command lines -----------------------------------------------------
def test_a_lot_summary_from_the_command_lines_alone(tmp_path: Path, central: Central) -> None:
    lot = "LOT-2026-0101"
    mine = enrol_gateway(tmp_path, central, "gw-mine-01", site="MINE-01")
    refiner = enrol_gateway(tmp_path, central, "gw-ref-01", site="REFINER-01")
    # The mine's ore, bags and checkpoints are not the point: lab.lots records them.
    with Recorder(mine, boot_reason="test") as rec:
        bags = mine_a_lot(rec, random.Random(7), lot, "MINE-01", 2, 2, (1, 4),
                          (9_000, 16_000), 50_000)  # fmt: skip
    tare = kg_to_units("14150")
    gross_kg = str(units_to_kg(sum(bags) + tare))
    recorded = json.loads(ok(run_cli(
        "--data-dir", str(refiner), "record", "weighing", "--gross-kg", gross_kg,
        "--tare-kg", "14150", "--lot", lot, "--direction", "in", "--vehicle", "CD-1", "--json",
    )))  # fmt: skip
    assert recorded["type"] == "weighing" and recorded["mass_kg"]["tare"] == "14150"
    with ledger_run(central) as ledger:
        for gw in (mine, refiner):
            result = run_cli("--data-dir", str(gw), "sync", "--timeout", "120")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "REJECTED" not in result.stdout
        ledger.stop()
    # The registry is complete up to after the last record: a heartbeat entry.
    entry = ok(registry_cli("heartbeat", "--dir", tmp_path / "registry")).splitlines()[0]
    ok(ledger_cli("--data-dir", central.data, "registry", "add", entry))
    bundle = tmp_path / f"{lot}.cbor"
    summary = json.loads(ok(ledger_cli("--data-dir", central.data, "summary", "--lot", lot,
                                       "--out", bundle, "--json")))  # fmt: skip
    assert summary["total_kg"] == float(units_to_kg(sum(bags)))
    assert summary["refiner"] == "REFINER-01"
    verdict = subprocess.run(
        [sys.executable, "-m", "ledger.verify.cli", str(bundle),
         "--ledger-key", str(central.data / "ledger-public.json"),
         "--registry-key", str(tmp_path / "registry" / "authority-public.json")],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "ACCEPTED" in verdict.stdout
    # Without --direction the same weighing is no receipt: the choices are in and out only.
    wrong = run_cli("--data-dir", str(refiner), "record", "weighing", "--gross-kg", "1",
                    "--direction", "sideways")  # fmt: skip
    assert wrong.returncode == 2 and "--direction" in wrong.stderr


# --- the deploy files and the operations guide agree ------------------------------------------
DEPLOY = REPO / "deploy"


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def test_the_guide_installs_the_ledgers_tls_files_where_ledger_env_names_them() -> None:
    env = _env_file(DEPLOY / "systemd" / "ledger.env")
    guide = (REPO / "docs" / "operations.md").read_text()
    installs = dict(
        (Path(dest).name, (Path(src).name, dest))
        for src, dest in re.findall(r"^\s+install -m \d+ (?:-g \w+ )?(\S+)\s+(\S+)$", guide, re.M)
    )
    for key, source in (("LEDGER_CA_FILE", "ca.crt"), ("LEDGER_CERT_FILE", "ledger.crt"),
                        ("LEDGER_KEY_FILE", "ledger.key")):  # fmt: skip
        path = env[key]
        assert path.startswith("/etc/custody/tls/"), (key, path)  # install.sh makes tls/
        assert installs.get(Path(path).name) == (source, path), f"{key}={path} not installed"
    assert "$L/pki/ca.crt`, `ledger.crt`" not in guide  # the old, contradicting instruction


def test_the_ledger_default_data_dir_is_the_units_and_install_shs() -> None:
    unit = (DEPLOY / "systemd" / "custody-ledger.service").read_text()
    assert f"Environment=LEDGER_DATA_DIR={paths.SYSTEM_DATA_DIR}\n" in unit
    install = (DEPLOY / "install.sh").read_text()
    assert 'install -d -m 0750 "$data/ledger"' in install


def test_the_broker_config_says_it_is_installed_as_a_drop_in() -> None:
    conf = (DEPLOY / "mosquitto" / "custody.conf").read_text()
    header = conf.split("\n\n", 1)[0]  # what render-dropin.sh leaves out
    assert "WHOLE" not in header and "drop-in" in header
    assert "render-dropin.sh" in header and "conf.d/custody.conf" in header
    install = (DEPLOY / "install.sh").read_text()
    assert 'render-dropin.sh" --etc' in install and "conf.d/custody.conf" in install


# --- the store's queries behind `rejections` and the backlog gauge, on both databases ---------
@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


def test_rejections_filter_by_device_and_time_and_waiting_counts_per_device(
    store_location: str,
) -> None:
    key_a, key_b = DeviceKey.generate(), DeviceKey.generate()
    store = open_store(store_location)
    try:
        store.enroll("gw-a", "KOL-01", key_a.public_key, key_a.kid)
        store.enroll("gw-b", "KOL-01", key_b.public_key, key_b.kid)
        with store.transaction():
            store.record_rejection("gw-a", key_a.kid, 2, b"\x01" * 32, "mass: first")
            store.record_rejection("gw-b", None, None, None, "unknown device key", count=7)
            store.record_rejection("gw-a", key_a.kid, 3, b"\x02" * 32, "chain: second")
            for seq in (5, 6, 7):
                store.wait(key_a.kid, seq, b"envelope")
        every = store.rejection_list()
        assert [(r.device_id, r.seq, r.reason, r.count) for r in every] == [
            ("gw-a", 2, "mass: first", 1), ("gw-b", None, "unknown device key", 7),
            ("gw-a", 3, "chain: second", 1),
        ]  # fmt: skip
        assert every[0].kid == key_a.kid and every[1].event_id is None
        assert [r.seq for r in store.rejection_list("gw-a")] == [2, 3]
        assert [r.reason for r in store.rejection_list(limit=1)] == ["chain: second"]  # newest
        assert store.rejection_list(since_ms=every[-1].received_ms + 1) == []
        assert len(store.rejection_list("gw-b", since_ms=every[0].received_ms)) == 1
        assert store.waiting_by_device() == {"gw-a": 3}
    finally:
        store.close()


def test_rejection_lines_are_limited_per_device_and_count_what_they_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    store = LedgerStore(tmp_path / "ledger.sqlite")
    service = LedgerService(
        Intake(store, LedgerKeyPair.generate("limits")),
        BrokerConfig(url="mqtt://127.0.0.1:1", client_id="ledger"),
        clock=lambda: now[0],
    )
    batch = IntakeResult(rejected=1, envelopes=3, details=Counter({"unknown device key": 1}))
    try:
        with caplog.at_level(logging.WARNING, logger="ledger.service"):
            for device, at in (("gw-a", 0.0), ("gw-a", 1.0), ("gw-b", 2.0), ("gw-a", 5.0),
                               ("gw-a", 10.0 + 0.5)):  # fmt: skip
                now[0] = 1000.0 + at
                service._log_rejections(device, batch)
    finally:
        store.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected 1 of 3 record(s) from gw-a: 1x unknown device key",
        "rejected 1 of 3 record(s) from gw-b: 1x unknown device key",
        "rejected 1 of 3 record(s) from gw-a: 1x unknown device key (2 more batch(es) with "
        "rejections in the 10 s before)",
    ]
