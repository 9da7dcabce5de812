"""A 10-minute-equivalent soak of ``custody-agent run``: trucks at a high rate, broker outages.

The clock is accelerated by configuration, not by patching: the simulated
indicator streams 50 frames/s instead of 10 and trucks follow each other with
a fraction of a second of empty bridge, so a truck visit takes about 1.3 s
instead of the ~10 s of ``python -m bench service`` (and much more on a real
site); ``weighbridge.window_s`` shrinks with the hold, and the checkpoint
worker signs every 2 s instead of hourly. About 75 s of wall time then weigh
as many trucks as ten minutes at the benchmark's pace.

Everything is real: the service is a child process with the indicator, an
RFID reader and a scanner on pseudo-terminals (``bench.service.SiteSimulator``),
a private TLS Mosquitto and ``custody-ledger run`` (``bench.e2e.Stack``). The
broker is stopped and restarted three times while trucks keep coming.

Checked: RSS stays flat (a leak check with a generous margin, not a timing
threshold), every record is acked (outbox ``pending = sent = 0``) and the
ledger's log holds each of the gateway's events exactly once, records captured
while the broker was down among them; the outbox passes SQLite's integrity
check and ``custody-agent events verify``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.outbox import Outbox
from bench.e2e import Stack, make_site
from bench.service import SiteSimulator, configure_gateway, rss_mb, set_settings
from ledger.store import LedgerStore
from tests.support import run_cli
from tests.test_service import ServiceProcess, service, wait_until

SOAK_S = 75.0
WARMUP_S = 8.0  # imports, first TLS connection, first captures: not part of the trend
OUTAGES_AT = (15.0, 35.0, 55.0)  # seconds into the soak
OUTAGE_S = 5.0
RSS_GROWTH_LIMIT_MB = 15.0  # last-third median over first-third median: a leak, not noise
RSS_EVERY_S = 0.5


def captured(svc: ServiceProcess) -> float:
    return svc.metric("custody_captures_total", workflow="weighbridge", outcome="captured") or 0.0


def drained(svc: ServiceProcess) -> bool:
    pending = svc.metric("custody_outbox_events", state="pending")
    return pending == 0 and svc.metric("custody_outbox_events", state="sent") == 0


def outage(svc: ServiceProcess, stack: Stack) -> tuple[float, float]:
    """Stop the broker for OUTAGE_S while trucks keep coming; (captures at stop, at restart)."""
    assert stack.broker is not None
    before = captured(svc)
    stack.broker.stop()  # the site's uplink goes down
    wait_until(lambda: svc.health()["status"] == "degraded", "degraded health")
    time.sleep(OUTAGE_S)
    # Trucks kept coming: some were captured while nothing could be sent.
    wait_until(lambda: captured(svc) > before, "a capture during the outage")
    during = captured(svc)
    stack.broker.restart()
    return before, during


@pytest.mark.slow
def test_soak_with_broker_outages_keeps_rss_flat_and_acks_every_capture(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    sim = SiteSimulator(tmp_path, rate=50.0, gap_s=0.2, seed=11)
    rss: list[tuple[float, float]] = []  # (seconds into the soak, MiB)
    outage_captures: list[tuple[float, float]] = []  # captured count at broker stop, restart
    with Stack(site, tmp_path, tls=True) as stack:
        assert stack.broker is not None
        configure_gateway(
            site, stack, {
                **sim.settings,
                "weighbridge.window_s": "0.1",  # the hold is 12 frames = 0.24 s at 50 frames/s
                "service.checkpoint_interval_s": "2",
            },
        )  # fmt: skip
        with service(site.gateway_dir) as svc:
            svc.wait_event("service.ready")
            wait_until(lambda: svc.health()["status"] == "ok", "a healthy service")
            pid = svc.proc.pid
            t0 = time.monotonic()
            sim.start()
            try:
                outages = list(OUTAGES_AT)
                next_rss = t0
                while (elapsed := time.monotonic() - t0) < SOAK_S:
                    assert svc.proc.poll() is None, svc.log_text()[-3000:]
                    if time.monotonic() >= next_rss:
                        rss.append((elapsed, rss_mb(pid)))
                        next_rss += RSS_EVERY_S
                    if outages and elapsed >= outages[0]:
                        outages.pop(0)
                        outage_captures.append(outage(svc, stack))
                    time.sleep(0.05)
                assert svc.health()["status"] == "ok"  # every worker, ports included
            finally:
                sim.stop()  # the ptys close: the weighbridge's ports go down from here
            # The checkpoint worker would keep signing: stop it (a reload) so that "all
            # acked" has a fixed end, then wait for the last records to be acked.
            set_settings(site.gateway_dir, {"service.checkpoint_interval_s": "0"})
            svc.signal(signal.SIGHUP)
            assert svc.wait_event("config.reloaded")["stopped"] == ["checkpoint"]
            wait_until(lambda: drained(svc), "every record acked after the soak", timeout=180)
            captures = captured(svc)
            acked = svc.metric("custody_outbox_events", state="acked")
            assert (svc.metric("custody_sync_reconnects_total") or 0) >= len(OUTAGES_AT)
            assert svc.health()["workers"]["sync"]["state"] == "ok"
            assert svc.terminate() == 0, svc.log_text()[-3000:]

    # Memory: flat after the warm-up. A leak of a few KiB per truck over ~60 trucks, or
    # of every record sent, would show as a steady climb; allocator noise does not.
    steady = [mb for at, mb in rss if at >= WARMUP_S]
    third = len(steady) // 3
    first, last = statistics.median(steady[:third]), statistics.median(steady[-third:])
    assert last - first <= RSS_GROWTH_LIMIT_MB, f"RSS {first:.1f} -> {last:.1f} MiB: {steady}"

    assert len(outage_captures) == len(OUTAGES_AT)
    assert captures >= len(sim.trucks) // 2 > 0  # the soak weighed trucks, not just time

    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        assert outbox.integrity_ok()
        counts = outbox.counts_by_state()
        stored = [e.event_id for e in outbox.events()]
    finally:
        outbox.close()
    assert counts.get("pending", 0) == counts.get("sent", 0) == 0
    assert counts["acked"] == acked == len(stored)

    with contextlib.closing(LedgerStore(site.ledger_dir / "ledger.sqlite")) as store:
        logged = [e.event_id for e in store.events(site.device_id)]
        assert store.integrity_ok()
    assert not [e for e, n in Counter(logged).items() if n > 1]  # exactly once
    assert set(logged) == set(stored)

    listed = run_cli("--data-dir", str(site.gateway_dir), "events", "list", "--json")
    weighings = [e for e in json.loads(listed.stdout) if e["type"] == "weighing"]
    assert sum(1 for e in weighings if "gross" in e["mass_kg"]) == captures
    verified = run_cli("--data-dir", str(site.gateway_dir), "events", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
