"""The ledger intake's status page, read in a real headless Chromium (tests/browser.py).

``custody-ledger run`` serves it over a store holding a device's records, a rejection and
a dead letter whose text is written to attack the page; the test asserts on the DOM
Chromium built and that a screenshot is not blank.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.identity import load_device_key
from custody.event import EventType
from ledger.intake import Intake
from ledger.keys import load_ledger_keypair
from ledger.page import LedgerPage
from ledger.store import LedgerStore, Store
from ledger.stores import open_store
from sync.batch import encode_batch
from tests.browser import IMG_SEAL, SCRIPT_SEAL, Dom, dump_dom, get, needs_chromium, screenshot
from tests.conftest import Gateway
from tests.support import REPO, wait_until


# --- the ledger -------------------------------------------------------------------------------
class LedgerProcess:
    """``custody-ledger run`` with its broker down: the page reads the store, not the link."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "--data-dir", str(data_dir), "run",
             "--broker", "mqtt://127.0.0.1:1", "--http", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def url(self) -> str:
        def found() -> str | None:
            for line in list(self.lines):
                m = re.search(r"on (127\.0\.0\.1:\d+)\)", line)
                if m:
                    return f"http://{m.group(1)}"
            assert self.proc.poll() is None, "".join(self.lines)
            return None

        return str(wait_until(found, "the ledger's HTTP address"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def fill(store: Store, gateway: Gateway, ledger_dir: Path) -> None:
    """A device's records (hostile seals put in a lot), a rejected forgery and a dead letter
    whose text is written to attack the page."""
    key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(gateway.device_id, gateway.site_id, key.public_key, key.kid)
    rec = gateway.recorder()
    try:
        for seal in (SCRIPT_SEAL, IMG_SEAL):
            rec.seal_scan(seal, lot="LOT-7")
        bags = {"lot": "LOT-7", "children": [SCRIPT_SEAL, IMG_SEAL], "action": "ADD"}
        rec.record(EventType.AGGREGATION, bags)
        rec.seal_scan("SEAL-LAST", lot="LOT-7")
        envelopes = [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]
    finally:
        rec.close()
    intake = Intake(store, load_ledger_keypair(ledger_dir))
    logged = intake.ingest(gateway.device_id, encode_batch(gateway.device_id, envelopes[:-1]))
    assert logged.rejected == 0
    forged = bytearray(envelopes[-1])
    forged[-1] ^= 0x01  # the signature no longer verifies
    batch = encode_batch(gateway.device_id, [bytes(forged)])
    assert intake.ingest(gateway.device_id, batch).rejected
    store.record_dead_letter(
        gateway.device_id, f"custody/v1/dev/{gateway.device_id}/events", b"<b>junk</b>",
        "not a batch: <script>alert(3)</script>", keep=10,
    )  # fmt: skip
    intake.close()


def check_devices_and_lots(dom: Dom, gateway: Gateway) -> None:
    devices = dom.rows("devices")
    assert [d[0] for d in devices] == [gateway.device_id], devices
    device = devices[0]
    assert device[2] == "enrolled" and device[3] == "4", device  # boot, 2 scans, aggregation
    assert device[4] != "\u2014" and device[6] == "1", device  # last seen; one rejection
    assert "signature does not verify" in device[7], device  # the newest rejection's reason
    lots = dom.rows("lots")
    assert [lot[:4] for lot in lots] == [["LOT-7", gateway.device_id, "2", "no"]], lots


@pytest.fixture
def ledger_run(gateway: Gateway, ledger_dir: Path) -> Iterator[LedgerProcess]:
    """``custody-ledger run`` over a store that ``fill`` filled."""
    store = LedgerStore(ledger_dir / "ledger.sqlite")
    fill(store, gateway, ledger_dir)
    store.close()
    proc = LedgerProcess(ledger_dir)
    try:
        yield proc
    finally:
        proc.close()


def test_the_page_reads_the_same_from_postgresql(
    pg_dsn: str, gateway: Gateway, ledger_dir: Path
) -> None:
    store = open_store(pg_dsn)
    try:
        fill(store, gateway, ledger_dir)
    finally:
        store.close()
    dom = Dom(LedgerPage(lambda: open_store(pg_dsn))().decode())
    check_devices_and_lots(dom, gateway)
    assert dom.rows("alarms")[0][0] == "dead letter"


@needs_chromium
def test_the_ledger_page_shows_devices_alarms_and_lots_with_hostile_text_as_text(
    ledger_run: LedgerProcess, gateway: Gateway, tmp_path: Path
) -> None:
    url = ledger_run.url() + "/"
    dom = Dom(dump_dom(tmp_path / "profile", url))
    assert {"devices", "alarms", "lots"} <= dom.ids
    check_devices_and_lots(dom, gateway)
    alarms = dom.rows("alarms")
    assert alarms[0][0] == "dead letter" and "<script>alert(3)</script>" in alarms[0][2]
    assert dom.elements("script") == [] and dom.elements("b") == []
    assert not any("onerror" in a for _, a in dom.tags)

    width, height, colours = screenshot(tmp_path / "profile", url, tmp_path / "ledger.png")
    assert (width, height) == (1024, 768)
    assert len(colours) > 16, f"the screenshot has {len(colours)} colours: blank?"


def test_with_a_token_file_the_ledger_page_and_metrics_need_it(
    ledger_dir: Path, tmp_path: Path
) -> None:
    LedgerStore(ledger_dir / "ledger.sqlite").close()
    token = "ledger-" + os.urandom(12).hex()
    token_file = tmp_path / "http.token"
    token_file.write_text(token + "\n")
    proc = LedgerProcess(ledger_dir, "--http-token-file", str(token_file))
    try:
        base = proc.url()
        for path in ("/", "/metrics", "/healthz"):
            assert get(base + path)[0] == 401, path
        code, body = get(base + "/", {"Authorization": f"Bearer {token}"})
        assert code == 200 and b'id="devices"' in body
    finally:
        proc.close()


def test_a_short_ledger_token_file_is_refused_at_start(ledger_dir: Path, tmp_path: Path) -> None:
    LedgerStore(ledger_dir / "ledger.sqlite").close()
    token_file = tmp_path / "http.token"
    token_file.write_text("short\n")
    proc = LedgerProcess(ledger_dir, "--http-token-file", str(token_file))
    try:
        assert proc.proc.wait(60) != 0
        proc.close()
        text = "".join(proc.lines)
        assert "--http-token-file" in text and "at least 16 characters" in text, text
    finally:
        proc.close()
