"""The weighbridge runner on a real outbox: two passes, stored tares, restarts, outcomes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit import verify_outbox
from agent.recorder import Recorder
from agent.workflows.station import Station, StationConfig
from agent.workflows.visits import BOOK_FILE, VisitBook
from custody.envelope import verify_envelope
from firmware_bridge.frames import SealCode, TagRead, WeightReading
from firmware_bridge.transport import FrameRead, PortState, StateChanged
from tests.conftest import Gateway
from tests.test_weighbridge import RULE

TRUCK = "0A1B2C3D4E"


def r(kg: int, stable: bool = True) -> WeightReading:
    return WeightReading(kg, 0, "kg", stable)


def visit(
    station: Station, kg: int, t0: float, *, tag: str | None = TRUCK, seals: tuple[str, ...] = ()
) -> float:
    """A truck drives on, rocks, settles at ``kg`` and drives off; returns the end time."""
    t = t0
    if tag is not None:
        station.on_frame(TagRead("em4100", tag), t)
    for s in seals:
        station.on_frame(SealCode(s, "opaque"), t)
    for reading in [r(0), r(kg // 2, False), r(kg + 300, False), r(kg - 200, False),
                    r(kg), r(kg), r(kg), r(kg), r(kg // 3, False), r(0)]:  # fmt: skip
        t += 0.5
        station.on_frame(reading, t)
    return t


def bodies(rec: Recorder) -> list[dict[str, Any]]:
    out = []
    for e in rec.outbox.events():
        if e.type == "weighing":
            body = dict(verify_envelope(e.envelope, rec.key.public_key).payload.body)
            body["_id"], body["_clear"] = (
                e.event_id,
                {k: v for k, (v, _) in rec.outbox.openings(e.event_id).items()},
            )
            out.append(body)
    return out


@pytest.fixture
def tickets() -> list[str]:
    return []


@pytest.fixture
def station(recorder: Recorder, tickets: list[str]) -> Iterator[Station]:
    s = Station(recorder, StationConfig(RULE), scale="SIM0042", console=tickets.append)
    yield s
    s.close()


def test_two_pass_visit_links_both_passes_and_prints_one_ticket(
    recorder: Recorder, station: Station, tickets: list[str]
) -> None:
    t = visit(station, 15_020, 0.0, seals=("SEAL-000101",))  # arrives empty
    assert tickets == []  # only a completed visit gets a ticket
    visit(station, 41_260, t + 600, seals=("SEAL-000102", "SEAL-000101"))  # leaves loaded

    first, second = bodies(recorder)
    assert first["pass"] == "in" and first["vehicle"] == TRUCK
    assert first["_clear"] == {"gross": 150_200} and first["seals"] == ["SEAL-000101"]
    assert second["pass"] == "out" and second["inbound"] == first["_id"]
    assert second["_clear"] == {"gross": 412_600, "tare": 150_200, "net": 262_400}
    assert second["direction"] == "out"  # it left heavier: material shipped
    assert second["seals"] == ["SEAL-000101", "SEAL-000102"]
    assert second["scale"] == "SIM0042"
    assert len(tickets) == 1
    assert "26 240.0 kg" in tickets[0] and second["_id"].hex() in tickets[0]
    assert first["_id"].hex() in tickets[0]
    assert verify_outbox(recorder.outbox, recorder.key).ok
    # the tare of the visit is now stored for the vehicle, pointing at its evidence
    tare = station.book.stored_tare(TRUCK)
    assert tare is not None and (tare.units, tare.event_id) == (150_200, second["_id"])
    assert station.book.open_visits() == []


def test_stored_tare_weighs_once(recorder: Recorder, tickets: list[str]) -> None:
    photo = hashlib.sha256(b"evidence jpeg").digest()
    s = Station(recorder, StationConfig(RULE, use_stored_tare=True), scale="SIM0042",
                console=tickets.append, photo=lambda: photo)  # fmt: skip
    t = visit(s, 15_000, 0.0)
    t = visit(s, 40_000, t + 60)  # two-pass: the tare gets stored
    visit(s, 42_000, t + 600)  # loaded again: one pass against the stored tare
    s.close()
    *_, out, single = bodies(recorder)
    assert single["pass"] == "single" and single["tare_event"] == out["_id"]
    assert single["_clear"] == {"gross": 420_000, "tare": 150_000, "net": 270_000}
    assert single["direction"] == "out" and "(stored)" in tickets[-1]
    assert single["photo"] == photo and out["photo"] == photo
    assert len(tickets) == 2


def test_pending_inbound_visit_survives_a_restart(gateway: Gateway) -> None:
    rec = gateway.recorder()
    s = Station(rec, StationConfig(RULE), scale="SIM0042", console=lambda _: None)
    t = visit(s, 40_000, 0.0)
    s.close()
    rec.close()  # power cut between the passes

    rec = gateway.recorder()
    try:
        s = Station(rec, StationConfig(RULE), scale="SIM0042", console=lambda _: None)
        assert [v.vehicle for v in s.book.open_visits()] == [TRUCK]
        visit(s, 14_000, t + 3600)
        s.close()
        inbound, outbound = bodies(rec)
        assert outbound["inbound"] == inbound["_id"] and outbound["direction"] == "in"
        assert outbound["_clear"]["net"] == 260_000
    finally:
        rec.close()


def test_restart_with_the_captured_truck_still_on_the_bridge(gateway: Gateway) -> None:
    rec = gateway.recorder()
    s = Station(rec, StationConfig(RULE), scale="SIM0042", console=lambda _: None)
    s.on_frame(TagRead("em4100", TRUCK), 0.0)
    for i, kg in enumerate([20_000, 40_000, 40_000, 40_000, 40_000]):
        s.on_frame(r(kg, i > 0), 0.5 * i)
    s.close()
    rec.close()

    rec = gateway.recorder()
    try:
        s = Station(rec, StationConfig(RULE), scale="SIM0042", console=lambda _: None)
        for i in range(10):  # still on and stable after the restart: no second capture
            s.on_frame(r(40_000), 10 + 0.5 * i)
        s.on_frame(r(0), 20.0)
        s.close()
        assert [b["pass"] for b in bodies(rec)] == ["in"]
        assert VisitBook(gateway.data_dir / BOOK_FILE).pending().captured is False
    finally:
        rec.close()


def test_catch_up_applies_a_weighing_the_book_missed(gateway: Gateway) -> None:
    # A power cut after the outbox commit but before the visit book's: the pass-in is
    # durable only in the outbox. The next start must still know the visit is open.
    rec = gateway.recorder()
    try:
        stored = rec.weighing(gross=401_000, stage="in", vehicle=TRUCK, scale="SIM0042")
        rec.weighing(gross=5_000, manual=True, vehicle="OTHER")  # manual: not ours
        s = Station(rec, StationConfig(RULE), scale="SIM0042", console=lambda _: None)
        (open_visit,) = s.book.open_visits()
        assert (open_visit.inbound, open_visit.units) == (stored.event_id, 401_000)
        assert s.machine.phase == "captured"  # the truck may still be on the bridge
        s.close()
    finally:
        rec.close()


def test_unstable_and_left_unweighed_are_signed_outcomes(
    recorder: Recorder, station: Station
) -> None:
    station.on_frame(TagRead("em4100", TRUCK), 0.0)
    for i in range(30):  # rocks for 15 s (timeout 10 s)
        station.on_frame(r(40_000 + (300 if i % 2 else -300), False), 0.5 * i)
    station.on_frame(r(0), 16.0)
    station.on_frame(r(30_000, False), 20.0)
    station.on_frame(r(0), 21.0)  # the next one drives across
    (unstable, left) = bodies(recorder)
    assert unstable["outcome"] == "unstable" and unstable["vehicle"] == TRUCK
    assert "mass" not in unstable and "sealed" not in unstable
    assert left["outcome"] == "left_unweighed" and "vehicle" not in left
    assert station.metrics.outcomes == {"unstable": 1, "left_unweighed": 1}
    assert verify_outbox(recorder.outbox, recorder.key).ok


def test_zero_drift_is_signed_and_alarmed(recorder: Recorder, station: Station) -> None:
    for i in range(5):
        station.on_frame(r(160), float(i))
    (drift,) = bodies(recorder)
    assert drift["outcome"] == "zero_drift" and drift["zero"] == 1600
    assert [a["kind"] for a in recorder.outbox.active_alarms()] == ["weighbridge_zero_drift"]
    for i in range(5):
        station.on_frame(r(0), 10.0 + i)
    assert recorder.outbox.active_alarms() == []
    assert station.metrics.zero_alarm is False


def test_vehicle_ids_from_scans_and_bad_codes(recorder: Recorder, station: Station) -> None:
    assert station.enter_vehicle("CD-KLZ-4471")
    assert not station.enter_vehicle("CD KLZ/4471")
    station.on_frame(SealCode("VEH:KCB-123X", "opaque"), 0.0)
    assert station.book.pending().vehicle == "KCB-123X"
    station.on_frame(TagRead("wiegand26", "123:45678"), 0.0)
    assert station.book.pending().vehicle == "123-45678"
    assert not station.add_seal("bad\tseal")
    assert station.metrics.rejected_codes == 2


def test_only_the_indicators_own_port_going_down_ends_a_weighing(recorder: Recorder) -> None:
    """Port events name their port by URL; the station knows the indicator's port by its URL
    (not by a reader's name), so the indicator's loss mid-weighing is recorded and an RFID
    reader's is not."""
    scale_url, rfid_url = "/dev/serial/by-id/usb-indicator", "socket://10.0.0.7:4001"
    s = Station(recorder, StationConfig(RULE), scale="SIM0042", scale_port=scale_url)
    try:
        s.on_port_event(StateChanged(scale_url, PortState.OPEN, 0.0))
        for t, reading in enumerate([r(0), r(20_000, False), r(20_100, False)], start=1):
            s.on_port_event(FrameRead(scale_url, reading, float(t)))
        assert s.machine.phase == "settling"
        s.on_port_event(StateChanged(rfid_url, PortState.DOWN, 4.0))
        assert s.metrics.outcomes == {} and s.machine.phase == "settling"
        s.on_port_event(StateChanged(scale_url, PortState.DOWN, 5.0))
        assert s.metrics.outcomes == {"disconnected": 1}
    finally:
        s.close()
    (lost,) = bodies(recorder)
    assert lost["outcome"] == "disconnected" and lost["scale"] == "SIM0042"
