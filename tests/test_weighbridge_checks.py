"""What the weighbridge refuses and how it names trucks: the per-visit seal limit, plausible
truck masses, and the vehicle registry, on a real outbox with signed records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.audit import verify_outbox
from agent.recorder import Recorder
from agent.workflows.station import Station, StationConfig
from agent.workflows.vehicles import load_vehicles
from custody.errors import ConfigError
from custody.mass import kg_to_units
from firmware_bridge.frames import SealCode, TagRead
from tests.test_weighbridge import RULE
from tests.test_weighbridge_station import bodies, visit

Events = list[tuple[str, str, dict[str, Any]]]


def sink(events: Events) -> Any:
    def record(level: str, event: str, **fields: Any) -> None:
        events.append((level, event, fields))

    return record


def test_a_visit_takes_at_most_max_seals_and_says_so_once(recorder: Recorder) -> None:
    events: Events = []
    tickets: list[str] = []
    station = Station(
        recorder, StationConfig(RULE, max_seals=3), scale="SIM", console=tickets.append,
        events=sink(events),
    )  # fmt: skip
    try:
        for n in range(10):  # a scanner left reading: ten different codes on one truck
            station.on_frame(SealCode(f"SEAL-{n:03d}", "opaque"), 0.0)
        visit(station, 40_000, 1.0, tag=None)
    finally:
        station.close()
    (weighing,) = bodies(recorder)
    assert weighing["seals"] == ["SEAL-000", "SEAL-001", "SEAL-002"]
    assert station.metrics.outcomes["seal_refused"] == 7
    refused = [f for _, e, f in events if e == "weighbridge.seal_refused"]
    assert len(refused) == 1 and refused[0]["seal"] == "SEAL-003"
    assert "weighbridge.max_seals_per_visit" in refused[0]["reason"]
    assert "Seals (3)" in tickets[0]


@pytest.mark.parametrize(
    ("kg", "why"),
    [(900, "below weighbridge.gross_min_kg = 1500.0 kg"),
     (150_000, "above weighbridge.gross_max_kg = 100000.0 kg")],
)  # fmt: skip
def test_an_implausible_truck_mass_is_a_signed_refusal(
    recorder: Recorder, kg: int, why: str
) -> None:
    events: Events = []
    station = Station(recorder, StationConfig(RULE), scale="SIM", events=sink(events))
    try:
        visit(station, kg, 0.0, tag=None)  # no vehicle id: a single pass, gross only
    finally:
        station.close()
    (refusal,) = bodies(recorder)
    assert refusal["outcome"] == "implausible" and why in refusal["note"]
    assert "mass" not in refusal and "sealed" not in refusal
    assert station.metrics.outcomes == {"implausible": 1}
    (said,) = [f for lvl, e, f in events if e == "weighbridge.implausible" and lvl == "warning"]
    assert why in said["reason"]
    assert verify_outbox(recorder.outbox, recorder.key).ok


def test_an_implausible_tare_refuses_the_second_pass(recorder: Recorder) -> None:
    cfg = StationConfig(RULE, tare_range=(kg_to_units(1500), kg_to_units(20_000)))
    station = Station(recorder, cfg, scale="SIM", console=lambda _: None)
    try:
        t = visit(station, 40_000, 0.0)  # pass in, loaded
        visit(station, 30_000, t + 1)  # pass out: a 30 t "empty" truck
    finally:
        station.close()
    first, second = bodies(recorder)
    assert first["pass"] == "in"
    assert second["outcome"] == "implausible"
    assert "tare 30000.0 kg is above weighbridge.tare_max_kg = 20000.0 kg" in second["note"]


def test_captures_and_outcomes_are_said_with_their_fields(recorder: Recorder) -> None:
    events: Events = []
    station = Station(recorder, StationConfig(RULE), scale="SIM", events=sink(events))
    try:
        visit(station, 40_000, 0.0, tag=None)
    finally:
        station.close()
    (captured,) = [f for _, e, f in events if e == "weighbridge.captured"]
    assert captured["pass"] == "single" and captured["gross_kg"] == "40000.0"
    (ticket,) = [f for _, e, f in events if e == "weighbridge.ticket"]
    assert ticket["gross_kg"] == "40000.0" and ticket["vehicle"] == "(not identified)"


VEHICLES = "tag,plate,haulier\n0a:1b:2c:3d:4e,CD-1234-AB,Kolwezi Haulage\n"


def test_a_registered_tag_names_the_truck_by_plate(recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "vehicles.csv").write_text(VEHICLES)
    registry = load_vehicles(tmp_path / "vehicles.csv")
    tickets: list[str] = []
    station = Station(
        recorder, StationConfig(RULE), scale="SIM", console=tickets.append, vehicles=registry
    )
    try:
        t = visit(station, 40_000, 0.0, tag="0A1B2C3D4E")
        t = visit(station, 15_000, t + 1, tag="0A1B2C3D4E")
        t = visit(station, 38_000, t + 1, tag="FFFF000001")
        visit(station, 14_000, t + 1, tag="FFFF000001")
    finally:
        station.close()
    passes = bodies(recorder)
    assert [b["vehicle"] for b in passes] == ["CD-1234-AB"] * 2 + ["FFFF000001"] * 2
    registered, unknown = tickets
    assert "CD-1234-AB" in registered and "Kolwezi Haulage" in registered
    assert "0A1B2C3D4E" in registered  # the tag, on its own line
    assert "tag FFFF000001 (not registered)" in unknown


@pytest.mark.parametrize(
    ("text", "reason"),
    [("tag,plate\n0A1B2C3D4E,CD 1234 AB\n", "line 2: plate must be"),
     ("0A1B2C3D4E,CD-1\n0a1b2c3d4e,CD-2\n", "line 2: tag 0A1B2C3D4E is listed twice"),
     ("0A1B2C3D4E,CD-1\n0A1B2C3D4F,CD-1\n", "line 2: plate CD-1 is already on line 1"),
     ("0A1B2C3D4E\n", "line 1: expected tag,plate[,haulier], got 1 column(s)"),
     ("zz?,CD-1\n", "line 1: tag 'zz?' is not a tag number")],
)  # fmt: skip
def test_a_bad_vehicles_file_names_the_line(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "vehicles.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"weighbridge\.vehicles") as err:
        load_vehicles(path)
    assert reason in str(err.value) and str(path) in str(err.value)


def test_a_missing_vehicles_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_vehicles(tmp_path / "absent.csv")


def test_tags_are_read_from_the_rfid_reader(recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "vehicles.csv").write_text(VEHICLES)
    events: Events = []
    station = Station(
        recorder, StationConfig(RULE), scale="SIM", events=sink(events),
        vehicles=load_vehicles(tmp_path / "vehicles.csv"),
    )  # fmt: skip
    try:
        for _ in range(5):  # the reader repeats the tag while it is in the field
            station.on_frame(TagRead("em4100", "0A1B2C3D4E"), 0.0)
    finally:
        station.close()
    (said,) = [f for _, e, f in events if e == "weighbridge.vehicle"]
    assert said == {
        "vehicle": "CD-1234-AB", "source": "rfid", "haulier": "Kolwezi Haulage", "registered": True,
    }  # fmt: skip
