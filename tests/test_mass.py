"""The mass domain rules every package shares (``custody.mass``) and unverified envelope
decoding (``custody.envelope.peek``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.balance import counted
from custody import cbor
from custody.commitment import MAX_MASS_UNITS, MAX_SUM_UNITS
from custody.envelope import MAX_ENVELOPE_BYTES, EventSigner, peek, peek_payload
from custody.errors import DecodeError, InvalidMassError, SchemaError
from custody.event import EventType
from custody.mass import (
    counted_field,
    format_kg,
    kg_to_units,
    reading_to_units,
    units_to_kg,
)
from tests.test_envelope import KEY, forge, make_payload, standard_protected


@pytest.mark.parametrize(
    ("typed", "units"),
    [("0", 0), ("12.3", 123), ("12,3", 123), (" 7 ", 70), (Decimal("0.1"), 1), (42, 420)],
)
def test_typed_kilograms_convert_exactly(typed: str | Decimal | int, units: int) -> None:
    assert kg_to_units(typed) == units


@pytest.mark.parametrize("typed", ["12.34", "0.05", "-1", "NaN", "Infinity", "ten", "", "1e-2"])
def test_a_typed_mass_that_cannot_be_recorded_exactly_is_refused(typed: str) -> None:
    with pytest.raises(InvalidMassError):
        kg_to_units(typed)


def test_the_limit_is_one_weighing_unless_a_sum_is_allowed() -> None:
    over = units_to_kg(MAX_MASS_UNITS + 1)
    with pytest.raises(InvalidMassError, match="largest recordable mass"):
        kg_to_units(over)
    assert kg_to_units(over, limit=MAX_SUM_UNITS) == MAX_MASS_UNITS + 1


@given(st.integers(min_value=-(10**9), max_value=MAX_SUM_UNITS))
def test_format_and_parse_round_trip(units: int) -> None:
    text = format_kg(units)
    assert Decimal(text) == units_to_kg(units)
    if units >= 0:
        assert kg_to_units(text, limit=MAX_SUM_UNITS) == units


def test_grouped_format_separates_thousands() -> None:
    assert format_kg(1_234_567, group=" ") == "123 456.7"
    assert format_kg(-15) == "-1.5"
    assert format_kg(9) == "0.9"


@pytest.mark.parametrize(
    ("kg", "units"),
    [(Decimal("12.34"), 123), (Decimal("12.35"), 124), (Decimal("12.25"), 122), (3, 30)],
)
def test_an_instrument_reading_rounds_half_even(kg: Decimal, units: int) -> None:
    assert reading_to_units(kg) == units


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"direction": "in", "mass": {"gross": 1, "tare": 2, "net": 3}}, ("in", "net")),
        ({"direction": "in", "mass": {"bag": 1, "gross": 2}}, ("in", "bag")),
        ({"direction": "in", "mass": {"gross": 1}}, ("in", "gross")),
        ({"direction": "out", "mass": {"bag": 1}}, ("out", "bag")),
        ({"direction": "out", "mass": {"gross": 1, "tare": 2, "net": 3}}, None),
        ({"mass": {"net": 1}}, None),
        ({"direction": "in", "mass": {}}, None),
        ({"direction": "in"}, None),
        ({"direction": "sideways", "mass": {"bag": 1}}, None),
    ],
)
def test_which_mass_counts(body: dict[str, object], expected: tuple[str, str] | None) -> None:
    assert counted_field(body) == expected
    openings = {name: (len(name), b"") for name in ("gross", "tare", "net", "bag")}
    direction, units = counted(body, openings)
    assert (direction, units) == (("", 0) if expected is None else (expected[0], len(expected[1])))


def test_peek_reads_the_payload_without_checking_the_signature() -> None:
    env = EventSigner(KEY).sign(make_payload(EventType.SEAL_SCAN))
    assert peek_payload(env.cose) == env.payload
    tampered = bytearray(env.cose)
    tampered[-1] ^= 1  # the signature's last byte
    assert peek_payload(bytes(tampered)) == env.payload


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor.encode([1, 2, 3]),
        forge(standard_protected(), cbor.encode({"v": 1}))[1:],  # tag 18 missing
        forge(standard_protected(), cbor.encode([1, 2])),
        b"\xd2" + b"\x00" * (MAX_ENVELOPE_BYTES + 1),
    ],
)
def test_peek_refuses_what_is_not_a_signed_map(data: bytes) -> None:
    with pytest.raises(DecodeError):
        peek(data)


def test_peek_payload_checks_the_schema() -> None:
    with pytest.raises(SchemaError):
        peek_payload(forge(standard_protected(), cbor.encode({"v": 1})))
