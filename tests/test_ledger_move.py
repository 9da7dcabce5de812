"""Moving a gateway from a trial ledger to the real one (docs/operations.md, "Move a gateway to
another ledger"), with the real commands against two real ledgers, each with its own registry
authority, CA and Mosquitto.

The gateway is enrolled with the trial ledger and syncs some records; one more stays unsent.
``init --replace`` then refuses (naming the unsent records) until ``--abandon-unsynced``, and
while the service lock is held; once it runs, the old identity and outbox are archived and
still verify, the new identity enrols with the real ledger and syncs from seq 1, and the real
ledger receives nothing sealed to the trial ledger's key (it would reject such an opening).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ledger.pki import Pki
from tests.brokers import MosquittoBroker, TestPKI
from tests.support import REPO, run_cli
from tests.test_enrolment import (
    Central,
    LedgerProcess,
    enrol_gateway,
    ledger_cli,
    ok,
    record_weighings,
    registry_cli,
    status,
    sync,
)


@contextmanager
def ledger(root: Path, ledger_id: str) -> Iterator[Central]:
    """A ledger, its registry authority (``root/registry``), its CA and its broker."""
    data, registry = root / "ledger", root / "registry"
    ok(registry_cli("init", "--name", f"{ledger_id}-registry", "--dir", registry))
    ok(ledger_cli("--data-dir", data, "init", "--ledger-id", ledger_id,
                  "--authority", registry / "authority-public.json"))  # fmt: skip
    ok(ledger_cli("--data-dir", data, "pki", "init"))
    ok(ledger_cli("--data-dir", data, "pki", "issue-broker", "--host", "localhost",
                  "--host", "127.0.0.1"))  # fmt: skip
    ok(ledger_cli("--data-dir", data, "pki", "issue-ledger"))
    pki = Pki(data / "pki")
    with MosquittoBroker(root / "broker", TestPKI(pki.directory)) as broker:
        yield Central(data, pki, broker)


def test_a_gateway_moves_from_the_trial_ledger_to_the_real_one(tmp_path: Path) -> None:
    with ExitStack() as stack:
        trial = stack.enter_context(ledger(tmp_path / "trial", "trial"))
        real = stack.enter_context(ledger(tmp_path / "real", "real"))
        gw = enrol_gateway(tmp_path / "trial", trial, "gw-kol-01")
        ok(run_cli("--data-dir", str(gw), "config", "set", "weighbridge.window_s", "4.5"))
        record_weighings(gw, 2)
        with LedgerProcess(trial):
            assert json.loads(sync(gw).stdout)["acked"] == 4
        record_weighings(gw, 1)  # a boot and a weighing the trial ledger never gets
        old_key = (gw / "device.key").read_bytes()
        real_key = str(real.data / "ledger-public.json")
        replace = ("--data-dir", str(gw), "init", "--replace", "--ledger-key", real_key)

        # Unsent records: refused, naming them; nothing moved.
        refused = run_cli(*replace)
        assert refused.returncode == 6, refused.stderr
        assert "2 record(s) the ledger 'trial' has not acknowledged" in refused.stderr
        assert "(1 boot, 1 weighing)" in refused.stderr
        assert "--abandon-unsynced" in refused.stderr
        assert not (gw / "archive").exists()
        assert (gw / "device.key").read_bytes() == old_key

        # The service holds the data directory: refused, naming it.
        with open(gw / "service.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            busy = run_cli(*replace, "--abandon-unsynced")
        assert busy.returncode == 6
        assert "`custody-agent run` is using this data directory" in busy.stderr
        assert (gw / "device.key").read_bytes() == old_key

        moved = run_cli(*replace, "--abandon-unsynced")
        assert moved.returncode == 0, moved.stderr
        new = json.loads(moved.stdout)
        assert new["abandoned"] == {"boot": 1, "weighing": 1}
        assert new["old_ledger_id"] == "trial"
        assert new["device_id"] == "gw-kol-01"
        assert new["site_id"] == "KOL-01"
        assert "custody-registry enrol" in moved.stderr
        assert "custody-ledger enroll" in moved.stderr

        # The archive is the whole old identity, and its records still verify.
        archive = Path(new["archive"])
        assert archive.parent == gw / "archive"
        assert archive.name.endswith("-trial")
        assert (archive / "device.key").read_bytes() == old_key
        for name in ("outbox.sqlite", "config.toml", "ledger.json", "tls.key", "tls.crt"):
            assert (archive / name).exists(), name
        verified = run_cli("--data-dir", str(archive), "events", "verify")
        assert verified.returncode == 0, verified.stderr
        assert "ok: 6 event(s)" in verified.stdout

        # The new identity: new key, the real ledger pinned, settings kept but sync.* reset.
        assert (gw / "device.key").read_bytes() != old_key
        assert json.loads((gw / "ledger.json").read_text())["ledger_id"] == "real"
        config = (gw / "config.toml").read_text()
        assert "window_s = 4.5" in config
        assert "ack_timeout_s = 5" in config
        assert 'broker = ""' in config
        assert trial.url not in config
        assert not (gw / "tls.crt").exists()
        assert status(gw)["events"] == {"acked": 0, "pending": 0, "rejected": 0, "sent": 0}

        # Enrol with the real ledger as a new gateway: authority, ledger, certificate.
        record_file = tmp_path / "moved.json"
        record_file.write_text(moved.stdout)
        registry = tmp_path / "real" / "registry"
        entry = ok(registry_cli("enrol", record_file, "--site", "KOL-01", "--dir", registry))
        entry = entry.splitlines()[0]
        ok(ledger_cli("--data-dir", real.data, "enroll", entry))
        cert = ok(ledger_cli("--data-dir", real.data, "pki", "issue", "gw-kol-01",
                             "--csr", new["csr_file"])).strip()  # fmt: skip
        # The trial's CA and ledger key are refused: the gateway pins the real ledger now.
        wrong = run_cli("--data-dir", str(gw), "enrol", "--cert-file", cert,
                        "--ca-file", str(trial.pki.ca_file))  # fmt: skip
        assert wrong.returncode == 3
        ok(run_cli("--data-dir", str(gw), "enrol", "--cert-file", cert,
                   "--ca-file", str(real.pki.ca_file), "--ledger-key", real_key,
                   "--broker", real.url))  # fmt: skip

        record_weighings(gw, 2)
        with LedgerProcess(real):
            result = sync(gw)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["acked"] == 4
        assert summary["rejected"] == 0
        assert status(gw)["rejected_reasons"] == {}
        # The real ledger holds the new chain from seq 1 and nothing else; the trial's
        # records stay the trial's.
        (row,) = real.devices()
        assert row["device_id"] == "gw-kol-01"
        assert row["head_seq"] == 4
        assert row["kid"] == new["kid"]
        (trial_row,) = trial.devices()
        assert trial_row["head_seq"] == 4


def _ledger_keys(root: Path, ledger_id: str) -> str:
    ok(ledger_cli("--data-dir", root, "init", "--ledger-id", ledger_id))
    return str(root / "ledger-public.json")


def test_replace_is_refused_while_the_service_runs(tmp_path: Path) -> None:
    trial, real = _ledger_keys(tmp_path / "trial", "trial"), _ledger_keys(tmp_path / "real", "real")
    gw = tmp_path / "gw"
    ok(run_cli("--data-dir", str(gw), "init", "--site", "KOL-01", "--device", "gw-a",
               "--ledger-key", trial))  # fmt: skip
    ok(run_cli("--data-dir", str(gw), "config", "set", "service.http_port", "0"))
    key = (gw / "device.key").read_bytes()
    notify = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths are short (unix(7))
    address = os.path.join(notify, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(60)
        service = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "--data-dir", str(gw), "run"],
            cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": address},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while b"READY=1" not in listener.recv(4096):
                pass
            busy = run_cli("--data-dir", str(gw), "init", "--replace", "--ledger-key", real,
                           "--abandon-unsynced")  # fmt: skip
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)
    shutil.rmtree(notify)
    assert busy.returncode == 6
    assert "`custody-agent run` is using this data directory" in busy.stderr
    assert (gw / "device.key").read_bytes() == key
    assert not (gw / "archive").exists()
    # Stopped: it goes through (the service's boot record is abandoned, never sent).
    moved = run_cli("--data-dir", str(gw), "init", "--replace", "--ledger-key", real,
                    "--abandon-unsynced")  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["abandoned"] == {"boot": 1}


def test_replace_misuse_is_refused_with_the_reason(tmp_path: Path) -> None:
    trial = _ledger_keys(tmp_path / "trial", "trial")
    gw = tmp_path / "gw"
    fresh = run_cli("--data-dir", str(gw), "init", "--replace", "--ledger-key", trial)
    assert fresh.returncode == 5  # storage: no identity to replace
    assert "not an initialised gateway" in fresh.stderr
    no_ids = run_cli("--data-dir", str(gw), "init")
    assert no_ids.returncode == 3
    assert "--site" in no_ids.stderr
    ok(run_cli("--data-dir", str(gw), "init", "--site", "KOL-01", "--device", "gw-a",
               "--ledger-key", trial))  # fmt: skip
    again = run_cli("--data-dir", str(gw), "init", "--site", "KOL-01", "--device", "gw-a")
    assert again.returncode == 3
    assert "--replace --ledger-key FILE" in again.stderr
    no_key = run_cli("--data-dir", str(gw), "init", "--replace")
    assert no_key.returncode == 3
    assert "the new ledger's public-key file" in no_key.stderr
    stray = run_cli("--data-dir", str(gw), "init", "--abandon-unsynced")
    assert stray.returncode == 3
    same = run_cli("--data-dir", str(gw), "init", "--replace", "--ledger-key", trial)
    assert same.returncode == 3
    assert "already pins" in same.stderr
    assert "keys rotate" in same.stderr
    assert not (gw / "archive").exists()


def test_a_replace_cut_short_is_finished_by_running_it_again(tmp_path: Path) -> None:
    trial, real = _ledger_keys(tmp_path / "trial", "trial"), _ledger_keys(tmp_path / "real", "real")
    gw = tmp_path / "gw"
    ok(run_cli("--data-dir", str(gw), "init", "--site", "KOL-01", "--device", "gw-a",
               "--ledger-key", trial))  # fmt: skip
    record_weighings(gw, 1)
    # A power cut after the outbox moved, before config.toml and device.key did.
    first = gw / "archive" / "20260301T061500Z-trial"
    first.mkdir(parents=True)
    (gw / "outbox.sqlite").rename(first / "outbox.sqlite")
    moved = run_cli("--data-dir", str(gw), "init", "--replace", "--ledger-key", real)
    assert moved.returncode == 0, moved.stderr
    second = Path(json.loads(moved.stdout)["archive"])
    assert second != first
    assert (second / "device.key").exists()
    assert (second / "config.toml").exists()
    # The two halves together are the old data directory: its records still verify.
    (second / "outbox.sqlite").symlink_to(first / "outbox.sqlite")
    verified = run_cli("--data-dir", str(second), "events", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "ok: 2 event(s)" in verified.stdout
