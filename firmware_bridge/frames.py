"""Typed, frozen frames that parsers produce (STYLE.md §3).

Values are normalised at construction: a weight is an integer in the
indicator's own resolution plus its number of decimals and unit, never a
float; ids are canonical strings. Each frame keeps the raw bytes it came from,
for evidence and for debugging a field installation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "FRAME_TYPES",
    "CommandReply",
    "Frame",
    "GpsFix",
    "SealCode",
    "TagRead",
    "WeightMode",
    "WeightReading",
]

_UNIT_TO_KG = {
    "kg": Decimal(1),
    "g": Decimal("0.001"),
    "t": Decimal(1000),
    "lb": Decimal("0.45359237"),
}


class WeightMode(StrEnum):
    GROSS = "gross"
    NET = "net"
    TARE = "tare"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class WeightReading:
    """One weight the indicator reported.

    ``value`` is signed and in units of 10^-decimals ``unit`` (e.g. value 41260,
    decimals 0, unit "kg"; or value 1502500, decimals 3, unit "kg").
    ``stable`` is the indicator's own no-motion flag (OIML R76 stability is
    decided later by the workflow over several readings).
    """

    value: int
    decimals: int
    unit: str
    stable: bool
    mode: WeightMode = WeightMode.GROSS
    overload: bool = False
    underload: bool = False
    center_of_zero: bool | None = None
    dialect: str = ""
    raw: bytes = field(default=b"", repr=False)
    # Set by the dialects that report them (None/empty otherwise), masses in ``value``'s units:
    # the tare the indicator reported with this reading (Toledo continuous, SICS SIX1),
    # the display division when the indicator states it (Toledo SWA increment size),
    # and dialect status flags that have no field of their own, e.g. "print_request",
    # "zero_not_captured", "stability_unreported", "range=1" (see protocols/scales.py).
    tare: int | None = None
    division: int | None = None
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise ValueError("weight value must be an integer")
        if self.tare is not None and (
            not isinstance(self.tare, int) or isinstance(self.tare, bool)
        ):
            raise ValueError("tare must be an integer")
        if self.division is not None and (
            not isinstance(self.division, int)
            or isinstance(self.division, bool)
            or self.division < 1
        ):
            raise ValueError("division must be a positive integer")
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"decimals must be 0..6, got {self.decimals}")
        if self.unit not in _UNIT_TO_KG:
            raise ValueError(f"unknown weight unit {self.unit!r}")

    @property
    def kg(self) -> Decimal:
        """The reading in kilograms, exactly (Decimal)."""
        return Decimal(self.value).scaleb(-self.decimals) * _UNIT_TO_KG[self.unit]


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A scale's reply to a command that is not a weight (MT-SICS Z/T/@/I*, errors)."""

    command: str  # e.g. "Z", "T", "I4", "ES"
    status: str  # dialect status code, e.g. "A", "I", "+", "-", "" for ES/ET/EL
    values: tuple[str, ...] = ()
    dialect: str = ""
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class TagRead:
    """An RFID read: ``kind`` em4100 / wiegand26 / epc; ``tag_id`` canonical text."""

    kind: str
    tag_id: str  # EM4100: 10 upper-case hex digits; Wiegand: "FC:CN"; EPC: upper-case hex
    uri: str | None = None  # EPC pure-identity URI when decodable (TDS)
    rssi: int | None = None
    antenna: int | None = None
    dialect: str = ""
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class SealCode:
    """A scanned seal/label code: GS1 element string, GS1 Digital Link, or opaque."""

    text: str
    kind: str  # "gs1" | "digital_link" | "opaque"
    elements: tuple[tuple[str, str], ...] = ()  # (AI, value) in scan order
    symbology: str | None = None
    dialect: str = ""
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class GpsFix:
    """NMEA GGA/RMC: UTC time of day (and date from RMC), position, fix quality."""

    sentence: str  # "GGA" | "RMC"
    utc_time: str | None  # "hhmmss.ss" as sent
    utc_date: str | None  # "ddmmyy" (RMC only)
    latitude: Decimal | None
    longitude: Decimal | None
    fix_quality: int  # GGA quality 0..8; RMC: 1 when status A, else 0
    satellites: int | None = None
    valid: bool = False
    dialect: str = "nmea"
    raw: bytes = field(default=b"", repr=False)


# Everything a dialect parser completes (besides ``FrameError`` for skipped garbage).
Frame = WeightReading | CommandReply | TagRead | SealCode | GpsFix
FRAME_TYPES = (WeightReading, CommandReply, TagRead, SealCode, GpsFix)
