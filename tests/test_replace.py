"""Replacing a broken gateway: its unsynced outbox, recovered from the SD card, is sent by the
replacement with ``custody-agent sync --from-db FILE`` (docs/operations.md).

The old gateway recorded, rotated its key (two chains in the file) and died before syncing.
The replacement is enrolled under its own id; it sends the old file with a certificate the CA
issues for the OLD id, and the ledger logs every record under the old device. With the
replacement's own certificate the broker's ACL refuses the old device's topic.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from custody.event import SEQ_STRIDE
from tests.support import run_cli
from tests.test_enrolment import (
    Central,
    LedgerProcess,
    central,
    enrol_gateway,
    ledger_cli,
    ok,
    record_weighings,
)

__all__ = ["central"]  # the fixture, re-used


def _recover_outbox(old_gw: Path, to: Path) -> Path:
    """Copy the outbox as an operator would from the mounted card (with its WAL, if any)."""
    to.mkdir()
    for suffix in ("", "-wal"):
        src = old_gw / f"outbox.sqlite{suffix}"
        if src.exists():
            shutil.copy2(src, to / f"outbox.sqlite{suffix}")
    return to / "outbox.sqlite"


def test_replacement_sends_the_broken_gateways_outbox(tmp_path: Path, central: Central) -> None:
    old = enrol_gateway(tmp_path, central, "gw-old")
    record_weighings(old, 2)
    ok(run_cli("--data-dir", str(old), "keys", "rotate"))
    record_weighings(old, 1, start_kg=39_000)
    # The old gateway dies here, nothing synced. Its card is read on a laptop.
    recovered = _recover_outbox(old, tmp_path / "card")
    shutil.rmtree(old)
    new = enrol_gateway(tmp_path, central, "gw-new")
    # A certificate for the old id: its TLS key went with the card... or use the card's own
    # tls.key/tls.crt when they survived. Here the CA makes one for the recovery.
    cert = ok(ledger_cli("--data-dir", central.data, "pki", "issue", "gw-old")).strip()
    key = cert.removesuffix(".crt") + ".key"
    with LedgerProcess(central):
        refused = run_cli("--data-dir", str(new), "sync", "--from-db", str(recovered),
                          "--timeout", "30")  # fmt: skip
        assert refused.returncode != 0
        assert "refused" in refused.stderr
        result = run_cli("--data-dir", str(new), "sync", "--from-db", str(recovered),
                         "--cert-file", cert, "--key-file", key, "--json",
                         "--timeout", "90")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["device_id"] == "gw-old"
    # 2 weighings (4 records) + rotate (boot, the chain's closing checkpoint, key_rotation)
    # under the old key; 2 under the new.
    assert summary["acked"] == 9
    assert summary["outbox"]["acked"] == 9
    heads = {
        r["kid"]: int(str(r["head_seq"])) for r in central.devices() if r["device_id"] == "gw-old"
    }
    # The old key's chain ends with its closing checkpoint (seq padded to 2^20) and rotation.
    assert sorted(heads.values()) == [2, SEQ_STRIDE + 1]
    # The replacement's own outbox is untouched: it recorded nothing and sent nothing.
    status = json.loads(ok(run_cli("--data-dir", str(new), "status", "--json")))
    assert status["events"]["acked"] == 0
    # Running it again sends nothing more (the file remembers its acks).
    again = run_cli("--data-dir", str(new), "sync", "--from-db", str(recovered), "--json",
                    "--cert-file", cert, "--key-file", key, "--timeout", "5")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["acked"] == 0


def test_from_db_refuses_the_gateways_own_outbox(tmp_path: Path, central: Central) -> None:
    gw = enrol_gateway(tmp_path, central, "gw-a")
    result = run_cli("--data-dir", str(gw), "sync", "--from-db", str(gw / "outbox.sqlite"))
    assert result.returncode == 3
    assert "own outbox" in result.stderr
    missing = run_cli("--data-dir", str(gw), "sync", "--from-db", str(tmp_path / "nope.sqlite"))
    assert missing.returncode == 3
