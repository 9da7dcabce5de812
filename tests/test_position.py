"""Where a capture was taken: the signed ``pos`` field (docs/protocol.md §2), the GNSS
clock's freshness rule, the recorder adding it to captures only, and its EPCIS form."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent.clock import GpsClock, GpsPosition
from agent.recorder import Recorder
from custody.envelope import verify_envelope
from custody.epcis import Locations, decode_source, epcis_document, geo_uri
from custody.errors import SchemaError
from custody.event import BODY_SCHEMAS, EventType
from firmware_bridge.frames import GpsFix
from tests.test_epcis import assert_hash_ids_match_reference, schema_errors, validator  # noqa: F401

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KOLWEZI = GpsFix("RMC", "120000.00", "010531", Decimal("-10.70576"), Decimal("25.390945"), 9,
                 valid=True)  # fmt: skip


@pytest.mark.parametrize(
    "pos", [{"lat": 0, "lon": 0}, {"lat": -900000000, "lon": 1800000000}, {"lat": 1, "lon": -1}]
)
def test_a_position_within_the_globe_is_a_valid_field(pos: dict[str, int]) -> None:
    for type_ in (EventType.SEAL_SCAN, EventType.AGGREGATION):
        body: dict[str, Any] = {
            EventType.SEAL_SCAN: {"seal": "SEAL-1"},
            EventType.AGGREGATION: {"lot": "L-1", "children": ["SEAL-1"], "action": "ADD"},
        }[type_]
        assert BODY_SCHEMAS[type_].validate({**body, "pos": pos}, type_)["pos"] == pos


@pytest.mark.parametrize(
    "pos",
    [
        {"lat": 900000001, "lon": 0},
        {"lat": 0, "lon": -1800000001},
        {"lat": -10.7, "lon": 25.4},
        {"lat": True, "lon": 0},
        {"lat": 0},
        {"lat": 0, "lon": 0, "alt": 1200},
        [0, 0],
        "geo:0,0",
    ],
)
def test_a_position_off_the_globe_or_not_exact_is_refused(pos: Any) -> None:
    with pytest.raises(SchemaError, match="pos"):
        BODY_SCHEMAS[EventType.SEAL_SCAN].validate({"seal": "S", "pos": pos}, EventType.SEAL_SCAN)


def test_degrees_round_half_even_to_the_signed_unit() -> None:
    assert GpsPosition(Decimal("-10.70576"), Decimal("25.390945"), 9, 0.0).signed() == {
        "lat": -107057600,
        "lon": 253909450,
    }
    assert GpsPosition(Decimal("0.00000005"), Decimal("-0.00000015"), None, 0.0).signed() == {
        "lat": 0,
        "lon": -2,
    }


def test_a_position_is_fresh_for_the_holdover_only(recorder: Recorder) -> None:
    mono = [100.0]
    clock = GpsClock(recorder.clock, earliest_valid_ms=0, monotonic=lambda: mono[0])
    assert clock.fresh_position() is None  # no fix yet
    clock.observe(GpsFix("RMC", None, None, None, None, None, valid=False), 100.0)
    assert clock.fresh_position() is None  # a fix without a position says nothing
    clock.observe(KOLWEZI, 100.0)
    mono[0] = 100.0 + clock.holdover_s
    fresh = clock.fresh_position()
    assert fresh is not None and fresh.latitude == Decimal("-10.70576")
    mono[0] += 0.001
    assert clock.fresh_position() is None


def test_captures_sign_the_position_and_system_records_do_not(recorder: Recorder) -> None:
    mono = [5.0]
    recorder.clock = clock = GpsClock(
        recorder.clock, earliest_valid_ms=0, monotonic=lambda: mono[0]
    )
    clock.observe(KOLWEZI, 5.0)
    scan = recorder.seal_scan("SEAL-POS-1")
    weighing = recorder.weighing(gross=180_000, tare=150_000, direction="in", stage="out")
    bagging = recorder.record(
        EventType.AGGREGATION, {"lot": "LOT-1", "children": ["SEAL-POS-1"], "action": "ADD"}
    )
    checkpoint = recorder.checkpoint()
    mono[0] += clock.holdover_s + 1  # the receiver went quiet: no position is claimed
    stale = recorder.seal_scan("SEAL-POS-2")

    def body(event: Any) -> dict[str, Any]:
        return dict(verify_envelope(event.envelope, recorder.key.public_key).payload.body)

    where = {"lat": -107057600, "lon": 253909450}
    assert [body(e).get("pos") for e in (scan, weighing, bagging)] == [where] * 3
    assert "pos" not in body(checkpoint)
    assert "pos" not in body(stale)


def test_the_epcis_export_gives_the_position_as_a_geo_uri(
    recorder: Recorder,
    validator: Any,  # noqa: F811
) -> None:
    recorder.clock = clock = GpsClock(recorder.clock, earliest_valid_ms=0)
    clock.observe(KOLWEZI, time.monotonic())
    scan = recorder.seal_scan("SEAL-POS-3")
    doc = epcis_document([decode_source(scan.envelope)], Locations(), creation_ms=0).document
    [event] = doc["epcisBody"]["eventList"]
    assert event["cbc:position"] == "geo:-10.7057600,25.3909450"
    assert schema_errors(validator, doc) == []
    assert_hash_ids_match_reference(doc)


def test_the_documented_example_position_is_recomputed() -> None:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r'`\{"lat": (-?\d+), "lon": (-?\d+)\}` is `(geo:[^`]+)`', text)
    assert m, "docs/protocol.md lost its pos example"
    assert geo_uri({"lat": int(m[1]), "lon": int(m[2])}) == m[3]
