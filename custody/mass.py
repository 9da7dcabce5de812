"""Masses: the record's integer unit, kilograms as people read and type them, and which
committed mass of a weighing counts toward a site's balance.

A record carries masses as integers of ``MASS_UNIT_G`` grams (0.1 kg), committed with
Pedersen commitments (``custody.commitment``). People read and type kilograms. Converting
is exact or refused: a typed mass finer than the unit is an error, never silently rounded,
because a rounded mass would be signed as if it had been read. Only an instrument's
reading in another unit (an indicator set to pounds) is rounded to the unit, half-even.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from custody.commitment import MASS_UNIT_G, MAX_MASS_UNITS
from custody.errors import InvalidMassError

__all__ = [
    "COUNTED_INPUT_FIELDS",
    "COUNTED_OUTPUT_FIELDS",
    "UNITS_PER_KG",
    "counted_field",
    "format_kg",
    "kg_to_units",
    "reading_to_units",
    "units_to_kg",
]

UNITS_PER_KG = 1000 // MASS_UNIT_G

# A weighing received ("in") counts its net mass when it has one (a truck weighed loaded
# and empty), else the bag's, else the gross (a bag on a platform scale has no tare). A
# weighing shipped ("out") counts only a bag: a truck leaving is weighed to check it, and
# the bags it carries were each counted when they were weighed out.
COUNTED_INPUT_FIELDS = ("net", "bag", "gross")
COUNTED_OUTPUT_FIELDS = ("bag",)


def kg_to_units(kg: str | Decimal | int, *, limit: int = MAX_MASS_UNITS) -> int:
    """Kilograms (as typed by a person) to integer mass units; exact or refused.

    ``limit`` is one weighing's bound by default; a declared stock may use the sums' bound
    (``MAX_SUM_UNITS``). A decimal comma is accepted, as people type it on site.
    """
    text = kg.strip().replace(",", ".") if isinstance(kg, str) else kg
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise InvalidMassError(f"{kg!r} is not a number of kilograms") from exc
    if not value.is_finite() or value < 0:
        raise InvalidMassError(f"mass must be a non-negative number of kilograms, got {kg}")
    units = value * UNITS_PER_KG
    if units != units.to_integral_value():
        raise InvalidMassError(
            f"{kg} kg is finer than the record's resolution of {MASS_UNIT_G / 1000} kg"
        )
    if units > limit:
        raise InvalidMassError(
            f"{kg} kg exceeds the largest recordable mass ({format_kg(limit)} kg)"
        )
    return int(units)


def reading_to_units(kg: Decimal | int) -> int:
    """An instrument's reading in kilograms to mass units, the remainder rounded half-even."""
    return int((Decimal(kg) * UNITS_PER_KG).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def units_to_kg(units: int) -> Decimal:
    """Mass units to kilograms, exactly (one decimal place)."""
    return Decimal(units) / UNITS_PER_KG


def format_kg(units: int, *, group: str = "") -> str:
    """``units`` as kilograms with one decimal, thousands separated by ``group`` if given
    (a printed ticket groups with a space, which no reader mistakes for a decimal mark).
    Negative values occur only for drifts (an empty bridge reading below zero)."""
    sign = "-" if units < 0 else ""
    whole, tenth = divmod(abs(units), UNITS_PER_KG)
    text = f"{whole:,}".replace(",", group) if group else str(whole)
    return f"{sign}{text}.{tenth}"


def counted_field(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(direction, mass field)`` of a weighing that counts toward its site's balance,
    else ``None`` (no direction, no mass, or no field that counts for its direction)."""
    mass = body.get("mass")
    if not isinstance(mass, Mapping) or not mass:
        return None
    direction = body.get("direction")
    fields = {"in": COUNTED_INPUT_FIELDS, "out": COUNTED_OUTPUT_FIELDS}.get(str(direction), ())
    for name in fields:
        if name in mass:
            return str(direction), name
    return None
