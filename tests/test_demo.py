"""``make demo`` end to end: keys, offline capture, TLS broker, ledger acks, a proven log entry,
a lot summary verified by custody-verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.demo import main
from ledger.cli import STORE_FILE
from ledger.store import LedgerStore
from tests.support import REPO


def test_demo_runs_the_whole_path_and_proves_the_last_record(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.demo", "--data-dir", str(tmp_path / "demo")],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "acked 19, rejected 0, still unacked 0" in out  # the mine's gateway
    assert "pending 0, sent 0, acked 19, rejected 0" in out
    assert "acked 3, rejected 0, still unacked 0" in out  # the refiner's
    assert "is entry 18 of the signed log" in out
    assert "ACCEPTED: lot LOT-2026-0042: 4507.5 kg from 1 registered site(s) (KOL-01)" in out
    assert out.rstrip().splitlines()[-1].startswith("demo OK")
    # The ledger's database really holds the records (not just the demo's say-so).
    store = LedgerStore(tmp_path / "demo" / "ledger" / STORE_FILE)
    try:
        assert store.log_size() == 19 + 3
    finally:
        store.close()


def test_demo_refuses_a_tls_broker_url_without_the_private_pki(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--broker", "mqtts://127.0.0.1:8883", "--data-dir", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert not (tmp_path / "d").exists()
