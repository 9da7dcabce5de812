"""NMEA 0183 GNSS sentences: GGA and RMC -> ``GpsFix``.

Theory of operation: NMEA 0183 is line-oriented (``LineParser`` splits on
CR/LF and bounds the line). A sentence is ``$`` + talker (2) + type (3) +
``,fields`` + ``*hh`` (NMEA 0183 v4.10 §5.3); ``hh`` is the XOR of every
character between ``$`` and ``*``. ``$`` is reserved (§5.1), so every ``$`` resyncs
the parser: noise or a cut-off sentence before it is reported as one
``FrameError`` and the new sentence is parsed normally.

Decisions: the checksum is required (pynmea2 makes it optional; every
receiver we target sends it and a fix without one cannot be trusted), and it is
verified before the sentence structure, so any corrupted character counts in
``stats.checksum_errors``; other well-formed sentences (GSV, GSA, VTG,
TXT, proprietary $P…) are ignored, counted per type in ``ignored`` and not as
errors, because receivers send them by default; GGA/RMC from talkers outside
``talkers`` are ignored the same way. Latitude/longitude are ``Decimal``
degrees (negative for S/W), computed exactly from ddmm.mmmm and rounded to
``COORD_PLACES`` decimals, far below any receiver's resolution.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import ClassVar

from firmware_bridge.frames import GpsFix
from firmware_bridge.protocols.base import (
    DeviceKind,
    Dialect,
    FrameError,
    LineParser,
    SerialDefaults,
)

__all__ = [
    "COORD_PLACES",
    "DIALECTS",
    "GNSS_TALKERS",
    "NMEA_MAX_SENTENCE",
    "NmeaParser",
    "nmea_checksum",
    "nmea_sentence",
]

# NMEA 0183 v4.10 §5.3: at most 82 characters including "$" and the closing
# CR LF, i.e. 80 before the terminator. Longer lines are not NMEA and are
# dropped as overflows (the receiver is misconfigured or the baud rate wrong).
NMEA_MAX_SENTENCE = 80

# GNSS talker identifiers (NMEA 0183 v4.10): GPS, combined GNSS,
# GLONASS, Galileo, BeiDou (GB and the older BD), QZSS, NavIC.
GNSS_TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI"})

COORD_PLACES = 10  # 1e-10 degree is about 11 micrometres
_QUANTUM = Decimal(1).scaleb(-COORD_PLACES)

_START = re.compile(rb"(\$)")
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
_SENTENCE = re.compile(rb"\$([A-Z0-9]{2,6}),([\x20-\x7e]*)\*[0-9A-Fa-f]{2}")
_LAT = re.compile(r"(\d{2})(\d{2}(?:\.\d+)?)")
_LON = re.compile(r"(\d{3})(\d{2}(?:\.\d+)?)")
_TIME = re.compile(r"(\d{2})(\d{2})(\d{2})(?:\.\d+)?")
_DATE = re.compile(r"(\d{2})(\d{2})(\d{2})")


def nmea_checksum(body: str | bytes) -> int:
    """XOR of every character between ``$`` and ``*`` (§5.3.1)."""
    data = body.encode("ascii") if isinstance(body, str) else body
    check = 0
    for b in data:
        check ^= b
    return check


def nmea_sentence(body: str) -> bytes:
    """``$body*hh\\r\\n`` for a body like ``GPGGA,…`` (for simulators and tests)."""
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode("ascii")


def _coord(
    value: str, hemi: str, pattern: re.Pattern[str], limit: int, hemis: str
) -> Decimal | None:
    if not value and not hemi:
        return None  # no fix: the receiver sends empty fields
    m = pattern.fullmatch(value)
    if m is None or hemi not in hemis:
        raise ValueError(f"bad coordinate {value!r},{hemi!r}")
    degrees, minutes = int(m[1]), Decimal(m[2])
    if minutes >= 60 or degrees > limit or (degrees == limit and minutes):
        raise ValueError(f"coordinate out of range: {value!r}")
    result = (Decimal(degrees) + minutes / 60).quantize(_QUANTUM, ROUND_HALF_EVEN)
    return -result if hemi == hemis[1] else result


def _time(value: str) -> str | None:
    if not value:
        return None
    m = _TIME.fullmatch(value)
    # hh 00-23, mm 00-59, ss 00-60 (a leap second is allowed).
    if m is None or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 60:
        raise ValueError(f"bad UTC time {value!r}")
    return value


def _date(value: str) -> str | None:
    if not value:
        return None
    m = _DATE.fullmatch(value)
    if m is None or not 1 <= int(m[1]) <= 31 or not 1 <= int(m[2]) <= 12:
        raise ValueError(f"bad date {value!r}")
    return value


def _int(value: str, what: str) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"bad {what} {value!r}")
    return int(value)


@dataclass
class NmeaParser(LineParser):
    """NMEA 0183 GGA and RMC -> ``GpsFix``; other valid sentences are counted in ``ignored``."""

    dialect: ClassVar[str] = "nmea"
    max_line: int = NMEA_MAX_SENTENCE
    talkers: frozenset[str] = GNSS_TALKERS
    ignored: Counter[str] = field(default_factory=Counter)

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        # "$" is reserved as the sentence start (§5.1): on every "$" the parser
        # resyncs, reporting any partial line before it (noise, or a sentence
        # cut short) as one FrameError, then splits lines on CR/LF as usual.
        out: list[object] = []
        for part in _START.split(data):
            if not part:
                continue
            if part == b"$":
                if self._buf:
                    noise = bytes(self._buf)
                    self._buf.clear()
                    self.stats.errors += 1
                    self.stats.dropped_bytes += len(noise)
                    out.append(FrameError("bytes before a sentence's '$'", noise))
                self._overflowing = False
            out += super().feed(part, now)
        return out

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        # The checksum is verified before anything else, so that any corrupted
        # character (even in the address) is counted as a checksum error.
        if not line.startswith(b"$"):
            raise ValueError("not an NMEA sentence (no '$')")
        star = line.rfind(b"*")
        if star < 0 or not _HEX2.fullmatch(line[star + 1 :]):
            raise ValueError("sentence has no *hh check field (required)")
        stated = int(line[star + 1 :], 16)
        computed = nmea_checksum(line[1:star])
        if computed != stated:
            raise ValueError(
                f"checksum mismatch: computed {computed:02X}, sentence says {stated:02X}"
            )
        m = _SENTENCE.fullmatch(line)
        if m is None:
            raise ValueError("not an NMEA sentence ($ address , fields * hh)")
        address = m[1].decode("ascii")
        talker, kind = address[:2], address[2:]
        if kind not in ("GGA", "RMC") or talker not in self.talkers:
            self.ignored[address] += 1
            return None
        fields = m[2].decode("ascii").split(",")
        try:
            if kind == "GGA":
                return self._gga(fields, line)
            return self._rmc(fields, line)
        except (IndexError, InvalidOperation):
            raise ValueError(f"malformed {address} fields") from None

    def _gga(self, f: list[str], raw: bytes) -> GpsFix:
        # GGA: time, lat, N/S, lon, E/W, quality, satellites, HDOP, alt, M, sep, M, age, station
        if len(f) < 14:
            raise ValueError(f"GGA has {len(f)} fields, expected 14")
        quality = _int(f[5], "fix quality")
        if quality is None or quality > 8:  # 0 invalid … 8 simulator (v4.10)
            raise ValueError(f"bad GGA fix quality {f[5]!r}")
        lat = _coord(f[1], f[2], _LAT, 90, "NS")
        lon = _coord(f[3], f[4], _LON, 180, "EW")
        return GpsFix(
            sentence="GGA",
            utc_time=_time(f[0]),
            utc_date=None,
            latitude=lat,
            longitude=lon,
            fix_quality=quality,
            satellites=_int(f[6], "satellite count"),
            valid=quality > 0 and lat is not None and lon is not None,
            dialect=self.dialect,
            raw=raw,
        )

    def _rmc(self, f: list[str], raw: bytes) -> GpsFix:
        # RMC: time, status A/V, lat, N/S, lon, E/W, speed, course, date, magvar, E/W
        # [, mode (v2.3) [, nav status (v4.1)]]
        if len(f) < 11:
            raise ValueError(f"RMC has {len(f)} fields, expected at least 11")
        status = f[1]
        if status not in ("A", "V"):
            raise ValueError(f"bad RMC status {status!r}")
        # v2.3 mode indicator "N" = data not valid, even if status says A.
        mode_ok = len(f) < 12 or f[11] != "N"
        lat = _coord(f[2], f[3], _LAT, 90, "NS")
        lon = _coord(f[4], f[5], _LON, 180, "EW")
        valid = status == "A" and mode_ok and lat is not None and lon is not None
        return GpsFix(
            sentence="RMC",
            utc_time=_time(f[0]),
            utc_date=_date(f[8]),
            latitude=lat,
            longitude=lon,
            fix_quality=1 if status == "A" else 0,
            valid=valid,
            dialect=self.dialect,
            raw=raw,
        )


DIALECTS: list[Dialect] = [
    Dialect(
        name="nmea",
        kind=DeviceKind.GPS,
        description="NMEA 0183 GNSS receiver: GGA and RMC sentences",
        factory=NmeaParser,
        # NMEA 0183 specifies 4800 baud; nearly every current module (u-blox,
        # MediaTek, Quectel) ships at 9600 8N1, which is the default here.
        serial=SerialDefaults(baudrate=9600),
        manual="NMEA 0183 v4.10 §5.3 sentence format, GGA/RMC (device-protocols.md §5)",
    ),
]
