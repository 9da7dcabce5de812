"""The weighbridge cycle as a table: every transition, stability, timeouts, zero drift."""

from __future__ import annotations

import pytest

from agent.workflows.weighbridge import (
    TABLE,
    Captured,
    IllegalTransition,
    Outcome,
    Phase,
    Signal,
    StabilityRule,
    VehicleOff,
    VehicleOn,
    Weighbridge,
    ZeroDrift,
    ZeroRestored,
    reading_units,
)
from custody.errors import SchemaError
from custody.event import BODY_SCHEMAS, EventType
from firmware_bridge.frames import WeightReading

# 500 kg on-threshold, 3 readings within 20 kg over 1 s, 10 s to settle, 100 kg zero limit
# (mass units of 100 g).
RULE = StabilityRule(
    on_threshold=5000, stable_readings=3, tolerance=200, window_s=1.0,
    unstable_timeout_s=10.0, zero_drift_limit=1000,
)  # fmt: skip


def r(kg: int, stable: bool = True, **kw: object) -> WeightReading:
    return WeightReading(kg, 0, "kg", stable, **kw)  # type: ignore[arg-type]


def run(samples: list[tuple[float, WeightReading]], wb: Weighbridge | None = None) -> list[str]:
    """Feed (time, reading) pairs; return the outputs as short strings."""
    wb = wb or Weighbridge(RULE)
    out: list[str] = []
    for t, reading in samples:
        for o in wb.feed(reading, t):
            out.append(_name(o))
    return out


def _name(o: object) -> str:
    if isinstance(o, Captured):
        return f"captured {o.units // 10} kg"
    if isinstance(o, Outcome):
        return o.kind
    if isinstance(o, ZeroDrift):
        return f"zero_drift {o.units // 10} kg"
    if isinstance(o, ZeroRestored):
        return "zero_ok"
    return {VehicleOn: "on", VehicleOff: "off"}[type(o)]


def seq(start: float, step: float, *readings: WeightReading) -> list[tuple[float, WeightReading]]:
    return [(start + i * step, x) for i, x in enumerate(readings)]


# --- table-driven scenarios -------------------------------------------------------------
DRIVE_ON = [r(0), r(8000, False), r(30000, False), r(40100, False), r(39900, False)]
SETTLE = [r(40000), r(40020), r(40000), r(40000)]
DRIVE_OFF = [r(20000, False), r(0)]

SCENARIOS = {
    # drives on, rocks, settles: one capture at the last stable reading, then off
    "clean visit": (DRIVE_ON + SETTLE + DRIVE_OFF, ["on", "captured 40000 kg", "off"]),
    # a stable period that lasts: still one capture
    "one capture per stable period": (
        DRIVE_ON + SETTLE * 5 + DRIVE_OFF,
        ["on", "captured 40000 kg", "off"],
    ),
    # a stable flag but readings wandering beyond the tolerance: never stable
    "wandering readings": (
        [*DRIVE_ON, r(40000), r(40300), r(40000), r(40300), r(40000), *DRIVE_OFF],
        ["on", "left_unweighed", "off"],
    ),
    # the indicator flags motion in between: the window restarts
    "motion flag resets the window": (
        [*DRIVE_ON, r(40000), r(40000), r(40000, False), r(40000), r(40000), *DRIVE_OFF],
        ["on", "left_unweighed", "off"],
    ),
    "overload, then back in range and stable": (
        [*DRIVE_ON, r(0, False, overload=True), *SETTLE, *DRIVE_OFF],
        ["on", "overload", "captured 40000 kg", "off"],
    ),
    "drives across without stopping": (
        [r(0), r(9000, False), r(20000, False), r(3000, False), r(0)],
        ["on", "left_unweighed", "off"],
    ),
}


@pytest.mark.parametrize(("samples", "expected"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenarios(samples: list[WeightReading], expected: list[str]) -> None:
    assert run(seq(0.0, 0.5, *samples)) == expected


def test_rocking_truck_gets_unstable_then_a_late_stable_period_is_captured() -> None:
    rocking = [r(40000 + (300 if i % 2 else -300), False) for i in range(30)]  # 15 s
    samples = seq(0.0, 0.5, *DRIVE_ON, *rocking, *SETTLE, *DRIVE_OFF)
    assert run(samples) == ["on", "unstable", "captured 40000 kg", "off"]


def test_never_stable_indicator_times_out_on_tick_alone() -> None:
    wb = Weighbridge(RULE)
    assert [_name(o) for o in wb.feed(r(40000, False), 100.0)] == ["on"]
    assert wb.tick(109.9) == []  # the indicator goes silent: time alone must time out
    assert [_name(o) for o in wb.tick(110.0)] == ["unstable"]
    assert wb.tick(200.0) == [] and wb.phase is Phase.UNSTABLE  # once
    assert [_name(o) for o in wb.feed(r(0), 201.0)] == ["off"]
    assert wb.counts == {"unstable": 1}


def test_window_must_span_the_configured_seconds() -> None:
    # Three stable readings 0.1 s apart do not span 1 s: no capture until the 1 s mark.
    wb = Weighbridge(RULE)
    outs = run(seq(0.0, 0.1, r(40000), r(40000), r(40000), r(40000)), wb)
    assert outs == ["on"] and wb.phase is Phase.SETTLING
    assert [_name(o) for o in wb.feed(r(40000), 1.0)] == ["captured 40000 kg"]


def test_stability_unreported_dialects_rely_on_the_window() -> None:
    xk = [r(40000, False, flags=frozenset({"stability_unreported"})) for _ in range(4)]
    assert run(seq(0.0, 0.5, *xk)) == ["on", "captured 40000 kg"]


def test_disconnect_while_settling_is_recorded_and_settling_restarts() -> None:
    wb = Weighbridge(RULE)
    run(seq(0.0, 0.5, *DRIVE_ON, r(40000)), wb)
    assert [_name(o) for o in wb.disconnect(3.0)] == ["disconnected"]
    assert wb.phase is Phase.SETTLING
    # the window restarted: three fresh readings over 1 s are needed again
    assert run(seq(5.0, 0.5, *SETTLE), wb) == ["captured 40000 kg"]


def test_disconnect_after_capture_changes_nothing() -> None:
    wb = Weighbridge(RULE)
    run(seq(0.0, 0.5, *DRIVE_ON, *SETTLE), wb)
    assert wb.disconnect(9.0) == [] and wb.phase is Phase.CAPTURED


def test_restart_with_a_captured_vehicle_on_the_bridge_does_not_capture_it_again() -> None:
    wb = Weighbridge(RULE, phase=Phase.CAPTURED)
    assert run(seq(0.0, 0.5, *SETTLE, *SETTLE, *DRIVE_OFF), wb) == ["off"]


def test_zero_drift_alarms_once_past_the_limit_and_clears() -> None:
    wb = Weighbridge(RULE)
    drifting = [r(60), r(90), r(120), r(120), r(120), r(120), r(140)]
    assert run(seq(0.0, 1.0, *drifting), wb) == ["zero_drift 120 kg"]
    assert wb.zero_alarmed and wb.zero_units == 1400
    assert run(seq(10.0, 1.0, r(20), r(20), r(20)), wb) == ["zero_ok"]
    # a passer-by (motion) never alarms
    assert run(seq(20.0, 1.0, *[r(400, False)] * 5), wb) == []


def test_negative_zero_drift_alarms_too() -> None:
    assert run(seq(0.0, 1.0, *[r(-150)] * 3)) == ["zero_drift -150 kg"]


def test_two_trucks_back_to_back() -> None:
    visit = DRIVE_ON + SETTLE + DRIVE_OFF
    out = run(seq(0.0, 0.5, *visit, *visit))
    assert out == ["on", "captured 40000 kg", "off"] * 2


def test_pound_indicators_round_to_the_record_unit() -> None:
    assert reading_units(WeightReading(88185, 0, "lb", True)) == 400_000  # 39 999.9 kg


# --- the table itself --------------------------------------------------------------------------
def test_table_walk_every_pair_is_declared_or_illegal() -> None:
    impossible = {
        # below/above the threshold is EMPTY/ON only while idle, OFF/MOTION/STABLE only when on
        *((p, s) for p in Phase if p is not Phase.IDLE for s in (Signal.EMPTY, Signal.ON)),
        *((Phase.IDLE, s) for s in (Signal.OFF, Signal.MOTION, Signal.STABLE)),
    }
    for phase in Phase:
        for signal in Signal:
            assert ((phase, signal) in TABLE) != ((phase, signal) in impossible), (phase, signal)
    for phase, signal in impossible:
        wb = Weighbridge(RULE, phase=phase)
        with pytest.raises(IllegalTransition):
            wb._step(signal, 0.0, [])
    # every phase is reachable and every non-idle phase can get back to idle
    assert {nxt for nxt, _ in TABLE.values()} == set(Phase)
    assert all(TABLE[(p, Signal.OFF)][0] is Phase.IDLE for p in Phase if p is not Phase.IDLE)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        StabilityRule(0, 3, 0, 1.0, 10.0, 0)
    with pytest.raises(ValueError, match="timeout"):
        StabilityRule(1, 3, 0, 1.0, 0.0, 0)


# --- the signed body of an outcome -------------------------------------------------------------
def test_an_outcome_weighing_carries_no_mass() -> None:
    schema = BODY_SCHEMAS[EventType.WEIGHING]
    body = {"outcome": "unstable", "scale": "SIM0042", "pass": "in"}
    assert schema.validate(body, EventType.WEIGHING) == body
    with pytest.raises(SchemaError, match="carries no 'mass'"):
        schema.validate(body | {"mass": {"gross": bytes(32)}}, EventType.WEIGHING)
    with pytest.raises(SchemaError, match="missing 'mass'"):
        schema.validate({"scale": "x"}, EventType.WEIGHING)
    with pytest.raises(SchemaError, match="one of"):
        schema.validate({"outcome": "guessed"}, EventType.WEIGHING)
    with pytest.raises(SchemaError, match="integer"):
        schema.validate({"outcome": "zero_drift", "zero": 1.5}, EventType.WEIGHING)
