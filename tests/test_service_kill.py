"""``custody-agent run`` under SIGKILL while the weighbridge captures and records sync.

SIGKILL cannot be caught: no drain, no flush, the outbox and the visit book
are left as the kernel found them. The service runs as a child process with
the indicator, an RFID reader and a scanner on pseudo-terminals
(``bench.service.SiteSimulator``, trucks at an accelerated pace), a private TLS
Mosquitto and ``custody-ledger run`` (``bench.e2e.Stack``). Meanwhile this
test process writes seal scans into the same outbox (two processes, one
outbox), so the sync worker is always mid-drain. It is killed three times, each
time while the ledger has acked some of those records and not others, with a
truck at a different point of its visit (driving on, holding still, leaving),
and restarted.

Checked after each kill: the outbox passes SQLite's integrity check and
``custody-agent events verify``, and every capture the service had counted is
in it. At the end: every event ever seen in the outbox is still there with
its seq, seqs have no gap, everything is acked and the ledger's log holds each
event exactly once, and no truck was captured twice (the captured readings are
a subsequence of the trucks the simulator played: a truck captured again
after a restart would repeat its reading).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.recorder import Recorder
from bench.e2e import Site, Stack, make_site
from bench.service import SiteSimulator, Truck, configure_gateway
from custody.envelope import verify_envelope
from custody.event import EventType
from custody.mass import units_to_kg
from ledger.store import LedgerStore
from tests.support import run_cli
from tests.test_service import ServiceProcess, service, wait_until

# The truck's phase at each kill: driving on (and rocking); holding still right
# after its capture (the restart is usually quicker than the rest of the hold,
# so the new process finds a captured truck still on the bridge: it must not
# capture it again); driving off / empty bridge.
KILL_PHASES = (("arrive",), ("stable",), ("leave", "idle"))
# The truck stands still this much longer than the scenario's 12 frames, so that it
# is still there when the service comes back.
HOLD_S = 4.0


def captured(svc: ServiceProcess) -> int:
    value = svc.metric("custody_captures_total", workflow="weighbridge", outcome="captured")
    return int(value or 0)


def outbox_snapshot(site: Site) -> tuple[dict[bytes, int], dict[str, int], bool]:
    """({event id: seq}, counts by state, SQLite integrity ok) read from another process."""
    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        ids = {e.event_id: e.seq for e in outbox.events()}
        return ids, outbox.counts_by_state(), outbox.integrity_ok()
    finally:
        outbox.close()


def captured_readings(site: Site) -> list[Decimal]:
    """The indicator reading (kg) behind each weighbridge capture, in outbox order.

    A pass ``in`` or ``single`` records the reading as gross; a pass ``out``
    records the heavier and lighter of its two readings, so its own reading is
    gross + tare minus the reading of its inbound pass.
    """
    key = load_device_key(site.gateway_dir / "device.key")
    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        readings: list[Decimal] = []
        reading_of: dict[bytes, int] = {}
        for e in outbox.iter_chain(key.kid):
            if e.type != EventType.WEIGHING:
                continue
            body = verify_envelope(e.envelope, key.public_key).payload.body
            if "pass" not in body:  # an outcome (unstable, ...) or a manual weighing
                continue
            m = {name: units for name, (units, _) in outbox.openings(e.event_id).items()}
            reading = m["gross"]
            if body["pass"] == "out":
                reading = m["gross"] + m["tare"] - reading_of[bytes(body["inbound"])]
            reading_of[e.event_id] = reading
            readings.append(units_to_kg(reading))
        return readings
    finally:
        outbox.close()


def is_subsequence(readings: list[Decimal], trucks: list[Truck]) -> bool:
    """Each reading matches a later truck than the one before: no truck is used twice."""
    played = iter(Decimal(t.gross_kg) for t in trucks if t.stable_at is not None)
    return all(any(r == g for g in played) for r in readings)


@contextlib.contextmanager
def seal_scans(site: Site) -> Iterator[threading.Event]:
    """Seal scans from this process into the service's outbox until the event is set."""
    stop = threading.Event()
    rec = Recorder(site.gateway_dir, boot_reason="test")

    def write() -> None:
        # Batches of 20 every 0.1 s: the sync keeps up, but a batch is often in flight.
        n = 0
        while not stop.wait(0.1):
            for _ in range(20):
                rec.seal_scan(f"SEAL-K{n:06d}")
                n += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(60)
        rec.close()


def healthy(svc: ServiceProcess) -> None:
    svc.wait_event("service.ready")
    wait_until(lambda: svc.health()["status"] == "ok", "a healthy service (ports, sync)")
    wait_until(lambda: captured(svc) >= 1, "a capture by this service process")


def kill_mid_drain(
    svc: ServiceProcess, sim: SiteSimulator, site: Site, phases: tuple[str, ...]
) -> int:
    """SIGKILL once the ledger acked some new records but not all, with the truck in
    ``phases``; the captures the service had counted by then."""
    base = svc.metric("custody_outbox_events", state="acked") or 0

    at_arrival: dict[int, int] = {}  # truck number -> captures when it drove on

    def mid_drain() -> bool:
        phase, trucks, n = sim.phase, sim.snapshot(), captured(svc)
        if not trucks or phase not in (*phases, "arrive"):
            return False
        at_arrival.setdefault(trucks[-1].number, n if phase == "arrive" else -1)
        if phase not in phases:
            return False
        if phase == "stable" and not n > at_arrival[trucks[-1].number] >= 0:
            return False  # this truck is not captured yet (or we did not see it arrive)
        acked = svc.metric("custody_outbox_events", state="acked") or 0
        pending = svc.metric("custody_outbox_events", state="pending") or 0
        sent = svc.metric("custody_outbox_events", state="sent") or 0
        return acked > base and pending + sent > 0 and sim.phase == phase

    with seal_scans(site):
        wait_until(mid_drain, f"the sync mid-drain with the truck in {phases}")
        counted = captured(svc)
        svc.proc.kill()  # SIGKILL: no handler runs, nothing is flushed
        assert svc.wait_exit() == -9
    return counted


@pytest.mark.slow
def test_sigkill_while_capturing_and_syncing_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    sim = SiteSimulator(tmp_path, rate=50.0, gap_s=0.2, hold_s=HOLD_S, seed=23)
    seen: dict[bytes, int] = {}  # every event id any snapshot saw, with its seq
    in_flight: list[int] = []  # pending + sent found in the outbox right after each kill
    with Stack(site, tmp_path, tls=True) as stack:
        configure_gateway(site, stack, {**sim.settings, "weighbridge.window_s": "0.5"})
        sim.start()
        try:
            for phases in KILL_PHASES:
                with service(site.gateway_dir) as svc:
                    healthy(svc)
                    counted = kill_mid_drain(svc, sim, site, phases)
                ids, counts, intact = outbox_snapshot(site)
                assert intact
                in_flight.append(counts.get("pending", 0) + counts.get("sent", 0))
                verified = run_cli("--data-dir", str(site.gateway_dir), "events", "verify")
                assert verified.returncode == 0, verified.stdout + verified.stderr
                # Whatever the service had counted as captured was durable before it was counted.
                assert len(captured_readings(site)) >= counted
                for event_id, seq in seen.items():
                    assert ids.get(event_id) == seq  # nothing durable disappeared or moved
                seen.update(ids)

            # The last restart: back to healthy, catches up and keeps capturing.
            with service(site.gateway_dir) as svc:
                healthy(svc)
                health = svc.health()
                assert health["workers"]["weighbridge"]["state"] == "ok"
                assert health["workers"]["sync"]["connected"] is True

                def drained() -> bool:
                    pending = svc.metric("custody_outbox_events", state="pending")
                    return pending == 0 and svc.metric("custody_outbox_events", state="sent") == 0

                wait_until(drained, "every record acked after the kills", timeout=180)
                sim.stop()  # no more trucks; nothing else writes
                wait_until(drained, "the last captures acked", timeout=180)
                assert svc.terminate() == 0, svc.log_text()[-3000:]
        finally:
            sim.stop()

    # The kills hit a sync in progress, not an idle outbox.
    assert any(in_flight), in_flight

    ids, counts, intact = outbox_snapshot(site)
    assert intact and counts.get("pending", 0) == counts.get("sent", 0) == 0
    for event_id, seq in seen.items():
        assert ids.get(event_id) == seq
    by_kid: dict[bytes, list[int]] = {}
    outbox = Outbox.open(site.gateway_dir / "outbox.sqlite", check=None, create=False)
    try:
        for e in outbox.events():
            by_kid.setdefault(e.kid, []).append(e.seq)
    finally:
        outbox.close()
    for seqs in by_kid.values():  # one device key: the service's and this process's writes
        seqs.sort()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat

    with contextlib.closing(LedgerStore(site.ledger_dir / "ledger.sqlite")) as store:
        logged = [e.event_id for e in store.events(site.device_id)]
        assert store.integrity_ok()
    assert not [e for e, n in Counter(logged).items() if n > 1]  # each exactly once
    assert set(logged) == set(ids)

    readings = captured_readings(site)
    assert len(readings) >= len(KILL_PHASES) + 1  # every service process captured
    assert is_subsequence(readings, sim.snapshot()), (readings, sim.snapshot())
    verified = run_cli("--data-dir", str(site.gateway_dir), "events", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
