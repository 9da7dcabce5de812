"""Scale indicator dialects: sans-I/O parsers and request encoders (STYLE.md §1, §2).

Theory of operation
-------------------
Each class turns the bytes of one indicator family into ``WeightReading`` and
``CommandReply`` frames (``frames.py``) plus ``FrameError`` items for bytes it
had to skip. "§x.y" below is a section of ``device-protocols.md``, which quotes
the manual pages; each rule carries its citation.

There are two framings:

* **Line dialects** (MT-SICS, SMA, A&D/CAS, XK3190-A12, regex) build on
  ``LineParser``: a frame ends at CR or LF, so the byte after a terminator is
  the start marker. A line longer than ``max_line`` is dropped up to the next
  terminator and counted.
* **Marker dialects** (Toledo continuous, XK3190-A9) send fixed-length frames
  that start with STX (or '='). A checksum byte may be any value, CR included,
  so these frames are not lines. ``_MarkerParser`` keeps at most one partial
  frame (less than ``max_frame`` bytes), reports the bytes before a start
  marker as garbage, and on a malformed frame drops up to the next start
  marker.

Weights are integers in the indicator's resolution with their decimals and
unit, never floats. No parser raises for device bytes. Bad options raise
``PortConfigError`` when the parser is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from operator import xor
from typing import ClassVar

from firmware_bridge.errors import PortConfigError
from firmware_bridge.frames import CommandReply, WeightMode, WeightReading
from firmware_bridge.protocols.base import (
    DeviceKind,
    Dialect,
    FrameError,
    LineParser,
    ParserStats,
    SerialDefaults,
)

__all__ = [
    "DIALECTS",
    "AdCasParser",
    "MtSicsParser",
    "RegexParser",
    "SmaParser",
    "ToledoContinuousParser",
    "Xk3190A9Parser",
    "Xk3190A12Parser",
    "mt_sics_request",
    "sma_request",
    "xk3190_request",
]

STX, ETX, LF, CR = 0x02, 0x03, 0x0A, 0x0D

# WeightReading's units (frames.py). Anything else (oz, ct, PC, %) is reported
# as a FrameError: it is not a mass we can record.
_UNITS = frozenset({"kg", "g", "t", "lb"})
_MAX_DECIMALS = 6  # WeightReading accepts 0..6
# A garbage run is reported with at most this many of its bytes; stats count all.
_MAX_ERROR_RAW = 256
_NO_FLAGS: frozenset[str] = frozenset()
_UNREPORTED = frozenset({"stability_unreported"})

_NUMBER = re.compile(r"([+-]?) *([0-9]*)(?:\.([0-9]*))?")


def _number(text: str) -> tuple[int, int]:
    """Signed decimal text ("-0012.340", "  5.025") -> (value, decimals): (-12340, 3)."""
    m = _NUMBER.fullmatch(text.strip(" "))
    if m is None:
        raise ValueError(f"not a weight: {text!r}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if not whole and not frac:
        raise ValueError(f"not a weight: {text!r}")
    if len(frac) > _MAX_DECIMALS:
        raise ValueError(f"more than {_MAX_DECIMALS} decimals: {text!r}")
    value = int(whole + frac)
    return (-value if sign == "-" else value), len(frac)


def _unit(text: str) -> str:
    unit = text.strip(" ").lower()
    if unit not in _UNITS:
        raise ValueError(f"unsupported unit {text.strip()!r}")
    return unit


def _hex_byte(two: bytes) -> int:
    """Two ASCII hex digits (the XK3190 XOR, §1.6) -> 0..255; anything else is a ValueError."""
    if len(two) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in two):
        raise ValueError(f"checksum field is not two hex digits: {two!r}")
    return int(two, 16)


def _xor(data: bytes) -> int:
    return reduce(xor, data, 0)


def _option_unit(dialect: str, name: str, unit: object) -> None:
    if not isinstance(unit, str) or unit not in _UNITS:
        raise PortConfigError(
            f"dialect {dialect}: option {name} must be one of {', '.join(sorted(_UNITS))}, "
            f"got {unit!r}"
        )


def _option_max_line(dialect: str, value: object, shortest: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < shortest:
        raise PortConfigError(
            f"dialect {dialect}: option max_line must be an integer >= {shortest} "
            f"(the longest frame), got {value!r}"
        )


# --- MT-SICS (§1.1) ------------------------------------------------------------------------
_SICS_TOKEN = re.compile(r'"[^"]*"|\S+')  # §1.1: parameters split by spaces, text is quoted
_SICS_COMMAND = re.compile(r"[A-Z][A-Z0-9]*")  # §1.1: commands are upper-case ASCII
_SICS_PARAM = re.compile(r"[!-~]+")
_SICS_ERRORS = frozenset({"ES", "ET", "EL"})  # §1.1.1 "General errors", the whole reply line
# §1.1.1: the statuses each documented command replies with. I (not executable)
# and L (logical error, InstrumentKit's error-code vectors, §1.1.4) apply to all.
# The spec's stable weight is "S S", so "S A" is refused, as are InstrumentKit's
# "T A" and '@ A "…"' (§1.1.4: the @ reply is I4 A, T answers T S).
_SICS_ANY = frozenset("ABSDIL+-")
_SICS_REPLIES: dict[str, frozenset[str]] = {
    "S": frozenset("SDI+-L"),
    "Z": frozenset("AI+-L"),
    "ZI": frozenset("SDI+-L"),
    "T": frozenset("SI+-L"),
    "TI": frozenset("SDI+-L"),
    "TA": frozenset("AI+-L"),
    "TAC": frozenset("AIL"),
    "I0": frozenset("ABIL"),
    "I1": frozenset("AIL"),
    "I2": frozenset("AIL"),
    "I3": frozenset("AIL"),
    "I4": frozenset("AIL"),
}
_SIX1_FIELDS = 15  # §1.1.2: SIX1 s 0 z r R 0 0 0 1 m gross net tare unit


def mt_sics_request(command: str, *params: str | int, text: str | None = None) -> bytes:
    """One MT-SICS command line (§1.1 "Line rules").

    Upper-case command, parameters separated by one space, a text parameter in
    double quotes, CR LF: ``mt_sics_request("SI") == b"SI\\r\\n"``,
    ``mt_sics_request("D", text="LOAD TRUCK") == b'D "LOAD TRUCK"\\r\\n'``.
    ``@`` (reset) is the one command that is not a letter (§1.1.1).
    """
    if command != "@" and not _SICS_COMMAND.fullmatch(command):
        raise ValueError(f"MT-SICS commands are upper-case ASCII, got {command!r}")
    parts = [command]
    for param in params:
        if isinstance(param, bool):
            raise ValueError("MT-SICS parameters are words or integers, not booleans")
        word = str(param)
        if not _SICS_PARAM.fullmatch(word) or '"' in word:
            raise ValueError(f"MT-SICS parameter must be printable ASCII, no space: {word!r}")
        parts.append(word)
    if text is not None:
        if not (text.isascii() and text.isprintable()) or '"' in text:
            raise ValueError(f"MT-SICS text must be printable ASCII without quotes: {text!r}")
        parts.append(f'"{text}"')
    return (" ".join(parts) + "\r\n").encode("ascii")


@dataclass(kw_only=True)
class MtSicsParser(LineParser):
    """Mettler Toledo MT-SICS replies (§1.1): request/response lines ending in CR LF.

    Weight replies of ``S``/``SI``/``SIR``/``SR`` (``S S``, ``S D``, ``S +``,
    ``S -``) and the IND terminals' ``SIX1`` (§1.1.2) become ``WeightReading``;
    every other documented reply (``Z A``, ``T S …``, ``I4 A "…"``, ``ES``…)
    becomes a ``CommandReply`` with the quotes removed from text values.
    ``S +``/``S -`` carry no unit: they report the unit of the last weight seen,
    else ``default_unit``. ``max_line`` stays at the base default (512): the
    longest SICS replies are the I0/I2 text lines, well under 100 bytes.
    """

    dialect: ClassVar[str] = "mt-sics"
    default_unit: str = "kg"
    _last_unit: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        _option_max_line(self.dialect, self.max_line, 32)
        _option_unit(self.dialect, "default_unit", self.default_unit)

    request = staticmethod(mt_sics_request)

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        if not line.isascii():
            raise ValueError("MT-SICS replies are ASCII (§1.1)")
        tokens: list[str] = _SICS_TOKEN.findall(line.decode("ascii"))
        if not tokens:
            raise ValueError("blank MT-SICS line")
        command = tokens[0]
        if len(tokens) == 1:
            if command in _SICS_ERRORS:  # §1.1.1 ES syntax, ET transmission, EL logical error
                return CommandReply(command, "", (), self.dialect, line)
            raise ValueError(f"{command!r} is not an MT-SICS reply (§1.1.1)")
        if not _SICS_COMMAND.fullmatch(command):
            raise ValueError(f"{command!r} is not an MT-SICS command (§1.1)")
        status = tokens[1]
        if command == "SIX1":
            return self._six1(tokens, line)
        if status not in _SICS_REPLIES.get(command, _SICS_ANY):
            raise ValueError(f"{command} {status} is not an MT-SICS reply (§1.1.1, §1.1.4)")
        if command == "S":
            if status == "S" or status == "D":
                return self._weight(tokens, line)
            if status == "+" or status == "-":  # §1.1.1 overload / underload, no value
                return WeightReading(
                    0, 0, self._last_unit or self.default_unit, False,
                    WeightMode.UNKNOWN, status == "+", status == "-",
                    dialect=self.dialect, raw=line,
                )  # fmt: skip
        values = tuple(t[1:-1] if len(t) > 1 and t[0] == t[-1] == '"' else t for t in tokens[2:])
        return CommandReply(command, status, values, self.dialect, line)

    def _weight(self, tokens: list[str], line: bytes) -> WeightReading:
        # §1.1: "<ID> <Status> <WeightValue> <Unit>"; split on runs of spaces, not columns.
        if len(tokens) != 4:
            raise ValueError("an MT-SICS weight reply is S <status> <value> <unit> (§1.1)")
        value, decimals = _number(tokens[2])
        unit = _unit(tokens[3])
        self._last_unit = unit
        # S/SI do not say whether a tare is active, hence mode UNKNOWN.
        return WeightReading(
            value, decimals, unit, tokens[1] == "S", WeightMode.UNKNOWN,
            dialect=self.dialect, raw=line,
        )  # fmt: skip

    def _six1(self, tokens: list[str], line: bytes) -> object:
        """IND terminal ``SIX1`` (§1.1.2): status, centre of zero, gross, net, tare, unit."""
        status = tokens[1]
        if len(tokens) == 2:
            if status == "+" or status == "-":  # §1.1.2 out of range
                return WeightReading(
                    0, 0, self._last_unit or self.default_unit, False,
                    WeightMode.UNKNOWN, status == "+", status == "-",
                    dialect=self.dialect, raw=line,
                )  # fmt: skip
            if status == "I" or status == "/":  # §1.1.2 failure
                return CommandReply("SIX1", status, (), self.dialect, line)
        if len(tokens) != _SIX1_FIELDS or status not in ("S", "D") or tokens[3] not in ("Z", "N"):
            raise ValueError("malformed SIX1 reply (§1.1.2)")
        gross, decimals = _number(tokens[11])
        tare, tare_decimals = _number(tokens[13])
        if tare_decimals > decimals:
            raise ValueError("SIX1 tare has more decimals than the gross (§1.1.2)")
        unit = _unit(tokens[14])
        self._last_unit = unit
        return WeightReading(
            gross, decimals, unit, status == "S", WeightMode.GROSS,
            center_of_zero=tokens[3] == "Z", dialect=self.dialect, raw=line,
            tare=tare * 10 ** (decimals - tare_decimals),
        )  # fmt: skip


# --- SMA SCP-0499 (§1.3) -------------------------------------------------------------------
_SMA_COMMANDS = frozenset("WHPQRSZTMCDABIN\x1b")  # §1.3 command table (<ESC> = abort)
_SMA_TARE = re.compile(r"[0-9]{6}\.[0-9]{3}")  # §1.3 preset tare T<xxxxxx.xxx>
_SMA_STATUS = frozenset(" ZOUETIe")
# §1.3: for E/I/T the weight field is dashes; Cardinal's 'e' = weight not displayed.
_SMA_ERRORS = {
    "E": "zero error",
    "T": "tare error",
    "I": "initial zero error",
    "e": "weight not displayed",
}
_SMA_MODES = {
    "G": (WeightMode.GROSS, False),
    "N": (WeightMode.NET, False),
    "T": (WeightMode.TARE, False),  # the reply to M (return tare)
    "g": (WeightMode.GROSS, True),  # high resolution (reply to H/Q/S)
    "n": (WeightMode.NET, True),
}
_SMA_HIRES = frozenset({"high_resolution"})


def sma_request(command: str, tare: str | None = None) -> bytes:
    """An SMA command ``<LF>c<CR>`` (§1.3); ``tare`` makes the preset tare ``T<xxxxxx.xxx>``."""
    if len(command) != 1 or command not in _SMA_COMMANDS:
        raise ValueError(f"not an SMA SCP-0499 command: {command!r}")
    data = ""
    if tare is not None:
        if command != "T" or not _SMA_TARE.fullmatch(tare):
            raise ValueError(f"preset tare is T with xxxxxx.xxx, got {command!r} {tare!r}")
        data = tare
    return b"\n" + (command + data).encode("ascii") + b"\r"


@dataclass(kw_only=True)
class SmaParser(LineParser):
    """SMA SCP-0499 levels 1 & 2 replies (§1.3): ``<LF> s r n m f <10 weight> <3 unit> <CR>``.

    The standard reply is 18 bytes between LF and CR; ``max_line`` is 64 to
    allow vendor padding while bounding a line that never ends. A reply of 16 or
    17 bytes (unit without its trailing spaces) is accepted. Error statuses
    E/T/I/e become a ``CommandReply`` (command "", status = the status char).
    The about/info/diagnostic replies (A/B/I/N/D) have no layout in §1.3 and
    come out as ``FrameError``.
    """

    dialect: ClassVar[str] = "sma"
    max_line: int = 64

    def __post_init__(self) -> None:
        _option_max_line(self.dialect, self.max_line, 18)

    request = staticmethod(sma_request)

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        if not 16 <= len(line) <= 18:
            raise ValueError("an SMA reply is s r n m f, 10 weight and 3 unit characters (§1.3)")
        text = line.decode("ascii")
        status, rng, mode_char, motion = text[0], text[1], text[2], text[3]
        if status not in _SMA_STATUS:
            raise ValueError(f"unknown SMA status {status!r} (§1.3)")
        if status in _SMA_ERRORS:
            return CommandReply("", status, (_SMA_ERRORS[status],), self.dialect, line)
        if not rng.isdigit() or mode_char not in _SMA_MODES or motion not in " M":
            raise ValueError("bad SMA range/mode/motion field (§1.3)")
        mode, hires = _SMA_MODES[mode_char]
        weight = text[5:15]
        if status in "OU" and not any(c.isdigit() for c in weight):
            value, decimals = 0, 0  # over/under capacity without digits
        else:
            value, decimals = _number(weight)
        return WeightReading(
            value, decimals, _unit(text[15:]), motion == " ", mode,
            status == "O", status == "U", status == "Z", self.dialect, line,
            flags=(_SMA_HIRES | {f"range={rng}"}) if hires else frozenset({f"range={rng}"}),
        )  # fmt: skip


# --- A&D / CAS (§1.4) ----------------------------------------------------------------------
# §1.4 header 1: ST stable, US unstable, OL out of range (AD-4404 writes LO), QT
# (balances, counting) stable.
_AD_HEADERS = {b"ST": True, b"QT": True, b"US": False, b"OL": None, b"LO": None}
# §1.4 header 2: AD-4404/CAS GS/NT/TR, AD-4329A "G ", "N ", "T ", "PT" (preset tare).
_AD_MODES = {
    b"GS": WeightMode.GROSS,
    b"G ": WeightMode.GROSS,
    b"NT": WeightMode.NET,
    b"N ": WeightMode.NET,
    b"TR": WeightMode.TARE,
    b"T ": WeightMode.TARE,
    b"PT": WeightMode.TARE,
}
_AD_COMPARATOR = frozenset({b"LO", b"OK", b"HI", b"--"})  # §1.4 GC series
_AD_DATA = re.compile(rb" *([+-]?) *([0-9]*(?:\.[0-9]*)?) *([A-Za-z%]+) *")


@dataclass(kw_only=True)
class AdCasParser(LineParser):
    """A&D indicators and balances, CAS CI/NT (§1.4): ``ST,GS,+0012.34kg`` CR LF.

    Fields are split on commas: header 1, then optionally the mode (GS/NT/TR
    or the AD-4329A forms), the GC comparator (LO/OK/HI/--) and the CAS device
    id + lamp byte, then sign, digits, decimal point and unit. The longest
    frame is CAS's 22 bytes with CR LF; ``max_line`` is 64.
    """

    dialect: ClassVar[str] = "ad-cas"
    max_line: int = 64

    def __post_init__(self) -> None:
        _option_max_line(self.dialect, self.max_line, 20)

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        parts = line.split(b",")
        if not 2 <= len(parts) <= 4 or parts[0] not in _AD_HEADERS:
            raise ValueError("not an A&D/CAS line: ST|US|OL,…,<weight><unit> (§1.4)")
        stable = _AD_HEADERS[parts[0]]
        mode = WeightMode.UNKNOWN  # balances (ST,+00123.45 g) do not say
        flags: set[str] = set()
        zero: bool | None = None
        for part in parts[1:-1]:
            if part in _AD_MODES and mode is WeightMode.UNKNOWN:
                mode = _AD_MODES[part]
                if part == b"PT":
                    flags.add("preset_tare")
            elif part in _AD_COMPARATOR:
                flags.add("comparator=" + part.decode("ascii"))
            elif len(part) == 2 and 0x30 <= part[0] <= 0x7E and part[1] & 0x80:
                # §1.4 CAS: device id byte, lamp byte b7=1, b6 stable, b4 hold,
                # b3 printer, b2 gross, b1 tare, b0 zero.
                lamp = part[1]
                flags.add("device=" + chr(part[0]))
                if lamp & 0x10:
                    flags.add("hold")
                if lamp & 0x08:
                    flags.add("printer")
                zero = bool(lamp & 0x01)
            else:
                raise ValueError(f"unknown A&D/CAS field {part!r} (§1.4)")
        m = _AD_DATA.fullmatch(parts[-1])
        if m is None:
            raise ValueError("A&D/CAS data is sign, digits with a point, unit (§1.4)")
        sign, digits, unit = m.group(1), m.group(2), m.group(3).decode("ascii")
        negative = sign == b"-"
        if stable is None and not digits.strip(b"."):
            value, decimals = 0, 0  # §1.4 out of range: digits replaced by spaces
        else:
            value, decimals = _number(digits.decode("ascii"))
            if negative:
                value = -value
        return WeightReading(
            value, decimals, _unit(unit), bool(stable), mode,
            stable is None and not negative, stable is None and negative,
            zero, self.dialect, line, flags=frozenset(flags) if flags else _NO_FLAGS,
        )  # fmt: skip


# --- Yaohua XK3190-A12 "WG" (§1.6) ---------------------------------------------------------
@dataclass(kw_only=True)
class Xk3190A12Parser(LineParser):
    """XK3190-A12/A12E ``WG004.139kg3D`` CR LF (§1.6), 15 bytes with CR LF.

    'W', G/N, 7 characters with the point ('-' first when negative), "kg", the
    XOR of bytes 1..11 as two hex characters. Overload/underload lines are 9
    spaces + OL/LO + XOR and carry no unit: they report ``unit``. The format has
    no motion flag, so ``stable`` is False with flag "stability_unreported".
    ``max_line`` is 32 (a 13-byte frame before CR LF).
    """

    dialect: ClassVar[str] = "xk3190-a12"
    max_line: int = 32
    unit: str = "kg"

    def __post_init__(self) -> None:
        _option_max_line(self.dialect, self.max_line, 13)
        _option_unit(self.dialect, "unit", self.unit)

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        if len(line) != 13:
            raise ValueError("an XK3190-A12 frame is 13 bytes before CR LF (§1.6)")
        if _xor(line[:11]) != _hex_byte(line[11:13]):  # §1.6 XOR of bytes 1..11
            raise ValueError("checksum mismatch (XOR of bytes 1..11, §1.6)")
        head = line[:2]
        if head == b"WG" or head == b"WN":
            value, decimals = _number(line[2:9].decode("ascii"))
            return WeightReading(
                value, decimals, _unit(line[9:11].decode("ascii")), False,
                WeightMode.GROSS if head == b"WG" else WeightMode.NET,
                dialect=self.dialect, raw=line, flags=_UNREPORTED,
            )  # fmt: skip
        if line[:9] == b"         " and line[9:11] in (b"OL", b"LO"):
            return WeightReading(
                0, 0, self.unit, False, WeightMode.UNKNOWN, line[9:11] == b"OL",
                line[9:11] == b"LO", dialect=self.dialect, raw=line, flags=_UNREPORTED,
            )  # fmt: skip
        raise ValueError("an XK3190-A12 frame starts WG/WN or 9 spaces + OL/LO (§1.6)")


# --- Regex (anything else) -----------------------------------------------------------------
_REGEX_GROUPS = frozenset(
    {"value", "sign", "unit", "mode", "stable", "motion", "overload", "underload", "zero"}
)
_DEFAULT_MODES = {
    "G": "gross", "GS": "gross", "GR": "gross", "N": "net", "NT": "net", "T": "tare", "TR": "tare",
}  # fmt: skip


@dataclass(kw_only=True)
class RegexParser(LineParser):
    """A configurable line dialect for indicators with no parser of their own.

    ``pattern`` must match the whole line (terminators excluded; bytes are
    read as Latin-1, so ``\\x02`` matches STX) and has a named group
    ``value``. Optional groups: ``sign`` ("-" negates), ``unit`` (mapped by
    ``units`` first, then kg/g/t/lb case-insensitively; without it the reading
    has ``unit``), ``mode`` (mapped by ``modes``), ``stable`` or ``motion`` (a
    non-empty match sets the flag; without either, ``assume_stable``),
    ``overload``, ``underload``, ``zero`` (centre of zero). ``decimals`` is the
    implied decimal places of a value written without a point.
    """

    dialect: ClassVar[str] = "regex"
    pattern: str = ""
    decimals: int = 0
    unit: str = "kg"
    units: Mapping[str, str] | None = None
    modes: Mapping[str, str] | None = None
    assume_stable: bool = False
    _regex: re.Pattern[str] = field(init=False, repr=False)
    _units: dict[str, str] = field(init=False, repr=False)
    _modes: dict[str, WeightMode] = field(init=False, repr=False)
    _groups: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        name = self.dialect
        _option_max_line(name, self.max_line, 1)
        if not isinstance(self.pattern, str) or not self.pattern:
            raise PortConfigError(
                f"dialect {name}: option pattern (a regular expression with a named group "
                "'value') is required"
            )
        try:
            self._regex = re.compile(self.pattern)
        except re.error as exc:
            raise PortConfigError(f"dialect {name}: pattern does not compile: {exc}") from None
        self._groups = frozenset(self._regex.groupindex)
        if "value" not in self._groups:
            raise PortConfigError(f"dialect {name}: pattern needs a named group 'value'")
        unknown = self._groups - _REGEX_GROUPS
        if unknown:
            raise PortConfigError(
                f"dialect {name}: unknown named groups {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_REGEX_GROUPS))}"
            )
        if (
            not isinstance(self.decimals, int)
            or isinstance(self.decimals, bool)
            or not 0 <= self.decimals <= _MAX_DECIMALS
        ):
            raise PortConfigError(f"dialect {name}: decimals must be 0..6, got {self.decimals!r}")
        _option_unit(name, "unit", self.unit)
        if not isinstance(self.assume_stable, bool):
            raise PortConfigError(f"dialect {name}: assume_stable must be true or false")
        self._units = {}
        for key, unit in _mapping(name, "units", self.units).items():
            _option_unit(name, f"units[{key!r}]", unit)
            self._units[key] = unit
        self._modes = {}
        for key, mode in _mapping(name, "modes", self.modes, _DEFAULT_MODES).items():
            try:
                self._modes[key] = WeightMode(mode)
            except ValueError:
                raise PortConfigError(
                    f"dialect {name}: modes[{key!r}] must be one of "
                    f"{', '.join(m.value for m in WeightMode)}, got {mode!r}"
                ) from None

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        m = self._regex.fullmatch(line.decode("latin-1"))
        if m is None:
            raise ValueError("line does not match the configured pattern")
        groups = self._groups
        overload = "overload" in groups and bool(m.group("overload"))
        underload = "underload" in groups and bool(m.group("underload"))
        text = m.group("value") or ""
        if (overload or underload) and not any(c.isdigit() for c in text):
            value, decimals = 0, self.decimals
        else:
            value, decimals = _number(text)
            if "." not in text:
                decimals = self.decimals
        if "sign" in groups and (m.group("sign") or "").strip() == "-":
            value = -value
        unit = self.unit
        if "unit" in groups and m.group("unit") is not None:
            key = m.group("unit").strip()
            unit = self._units.get(key) or _unit(key)
        mode = WeightMode.UNKNOWN
        if "mode" in groups and m.group("mode") is not None:
            mode = self._modes.get(m.group("mode").strip(), WeightMode.UNKNOWN)
        if "stable" in groups:
            stable = bool(m.group("stable"))
        elif "motion" in groups:
            stable = not m.group("motion")
        else:
            stable = self.assume_stable
        zero = bool(m.group("zero")) if "zero" in groups else None
        return WeightReading(
            value, decimals, unit, stable, mode, overload, underload, zero, self.dialect, line
        )


def _mapping(
    dialect: str, name: str, value: object, default: Mapping[str, str] | None = None
) -> dict[str, str]:
    if value is None:
        return dict(default or {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PortConfigError(f"dialect {dialect}: {name} must map strings to strings")
    return dict(value)


# --- marker-framed dialects ----------------------------------------------------------------
@dataclass(kw_only=True)
class _MarkerParser:
    """Fixed-length frames that begin with a start marker (STX, '=').

    ``_buf`` holds at most one partial frame, fewer than ``max_frame`` bytes,
    between calls. Subclasses implement ``_next_start`` and ``_frame_at``,
    which returns ``(-1, None)`` when the frame at ``p`` is not complete yet
    (only while fewer than ``max_frame`` bytes are there), or ``(end, item)``:
    a frame, or a reason string for the bytes ``[p, end)`` it drops.
    """

    dialect: ClassVar[str] = "marker"
    max_frame: ClassVar[int] = 1
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytes = field(default=b"", repr=False)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (fewer than ``max_frame``)."""
        return len(self._buf)

    def _view(self, buf: bytes) -> bytes:
        return buf

    def _next_start(self, view: bytes, pos: int) -> int:  # pragma: no cover
        raise NotImplementedError

    def _frame_at(self, view: bytes, raw: bytes, p: int) -> tuple[int, object]:  # pragma: no cover
        raise NotImplementedError

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        out: list[object] = []
        buf = self._buf + bytes(data)
        view = self._view(buf)
        n = len(buf)
        pos = 0
        while pos < n:
            start = self._next_start(view, pos)
            if start != pos:  # bytes before a start marker: resync, count them
                stop = n if start < 0 else start
                self._drop(out, "bytes outside a frame (no start marker)", buf[pos:stop])
                pos = stop
                continue
            end, item = self._frame_at(view, buf, pos)
            if end < 0:
                break  # incomplete: keep it (fewer than max_frame bytes)
            if isinstance(item, str):
                self._drop(out, item, buf[pos:end])
            else:
                self.stats.frames += 1
                out.append(item)
            pos = end
        self._buf = buf[pos:]
        return out

    def _drop(self, out: list[object], reason: str, raw: bytes) -> None:
        self.stats.errors += 1
        self.stats.dropped_bytes += len(raw)
        if "checksum" in reason:
            self.stats.checksum_errors += 1
        out.append(FrameError(reason, raw[:_MAX_ERROR_RAW]))


_NEED: tuple[int, object] = (-1, None)


# --- Mettler Toledo Standard Continuous Output (§1.2) --------------------------------------
_STRIP_PARITY = bytes(i & 0x7F for i in range(256))  # §1.2: bit 7 is parity in 7E1 setups
# §1.2 SWA b4 b3: increment size.
_INCREMENT = {0b01: 1, 0b10: 2, 0b11: 5}
# §1.2 SWC b0-b2: 000 = lb/kg per SWB b4, 001 g, 010 t; 011 oz, 111 ton/none are
# not masses we record (or are ambiguous); the rest are undefined.
_SWC_UNITS = {0b001: "g", 0b010: "t"}
_SWC_REFUSED = {0b011: "oz", 0b111: "ton or no units (Ohaus)"}


@dataclass(kw_only=True)
class ToledoContinuousParser(_MarkerParser):
    """Mettler Toledo Standard Continuous Output (§1.2).

    ``STX SWA SWB SWC <6 weight digits> <6 tare digits> CR [CHK]``, or the
    "short" form without the tare (Cardinal 225): the CR at byte 11 or 17
    tells which. ``max_frame`` is 18, the frame with checksum (§1.2). CHK is
    the two's complement of the 7-bit sum of all bytes from STX to CR.

    ``checksum``: True (always sent), False (never), or None (default): detect
    it. Undecided, the byte after CR is the checksum when it matches, the next
    frame when it is STX (no checksum: decided from then on), else a checksum
    error; a match that is not STX decides "checksum". Undecided, a frame is
    emitted when the byte after its CR arrives (the next frame, about 1/7 s at
    the Wildcat's update rate). Bit 7 (parity) is masked off every byte; ``raw``
    keeps the bytes as received.
    """

    dialect: ClassVar[str] = "toledo-continuous"
    max_frame: ClassVar[int] = 18
    checksum: bool | None = None

    def __post_init__(self) -> None:
        if self.checksum not in (None, True, False):
            raise PortConfigError(
                f"dialect {self.dialect}: checksum must be true, false or unset (detect), "
                f"got {self.checksum!r}"
            )

    def _view(self, buf: bytes) -> bytes:
        return buf.translate(_STRIP_PARITY)

    def _next_start(self, view: bytes, pos: int) -> int:
        return view.find(b"\x02", pos)

    def _bad(self, view: bytes, p: int, reason: str) -> tuple[int, object]:
        nxt = view.find(b"\x02", p + 1)
        return (len(view) if nxt < 0 else nxt), reason

    def _frame_at(self, view: bytes, raw: bytes, p: int) -> tuple[int, object]:
        n = len(view)
        if n - p < 11:
            return _NEED
        if view[p + 10] == CR:
            end = p + 11  # short format, no tare field
        elif n - p < 17:
            return _NEED
        elif view[p + 16] == CR:
            end = p + 17
        else:
            return self._bad(view, p, "no CR after the weight or the tare (§1.2)")
        body = view[p:end]
        # §1.2: SWA bit 5 is always 1 and bit 6 always 0; SWC bit 5 is 1.
        if body[1] & 0x60 != 0x20 or not body[3] & 0x20:
            return self._bad(view, p, "status words fail their fixed bits (§1.2)")
        if not body[4:-1].isdigit():
            return self._bad(view, p, "weight/tare fields are not digits (§1.2)")
        if self.checksum is not False:
            if n <= end:
                return _NEED
            expected = -sum(body) & 0x7F  # §1.2: two's complement of the 7-bit sum
            got = view[end]
            if got == expected:
                if expected != STX or self.checksum:
                    end += 1
                    self.checksum = True
                # else: STX is both the checksum and a next frame; keep it, decide later
            elif got == STX and self.checksum is None:
                self.checksum = False  # the next frame follows the CR: no checksum
            elif got == STX:
                return end, "checksum missing (next frame follows the CR, §1.2)"
            else:
                return end + 1, f"checksum mismatch: got 0x{got:02X}, expected 0x{expected:02X}"
        try:
            return end, self._decode(body, raw[p:end])
        except ValueError as exc:
            return end, str(exc)

    def _decode(self, body: bytes, raw: bytes) -> WeightReading:
        swa, swb, swc = body[1], body[2], body[3]
        # §1.2 SWA b0-b2: 000 ×100, 001 ×10, 010 ×1, 011 ×0.1 … 111 ×0.00001.
        code = swa & 0x07
        scale, decimals = (10 ** (2 - code), 0) if code <= 2 else (1, code - 2)
        increment = _INCREMENT.get((swa >> 3) & 0x03)
        units = swc & 0x07
        if units == 0:
            unit = "kg" if swb & 0x10 else "lb"  # §1.2 SWB b4: 0 lb, 1 kg
        elif units in _SWC_UNITS:
            unit = _SWC_UNITS[units]
        else:
            name = _SWC_REFUSED.get(units, "undefined")
            raise ValueError(f"SWC unit code {units:03b} ({name}) is not a mass we record (§1.2)")
        negative = bool(swb & 0x02)  # SWB b1
        out_of_range = bool(swb & 0x04)  # SWB b2: over capacity or under zero
        flags: set[str] = set()
        if out_of_range:
            flags.add("out_of_range")
        if swb & 0x40:
            flags.add("zero_not_captured")  # SWB b6: power-up, not yet zeroed
        if swc & 0x08:
            flags.add("print_request")  # SWC b3
        if swc & 0x10:
            flags.add("expanded")  # SWC b4: expanded ×10
        value = int(body[4:10]) * scale
        return WeightReading(
            -value if negative else value, decimals, unit,
            not swb & 0x08,  # SWB b3: motion
            WeightMode.NET if swb & 0x01 else WeightMode.GROSS,  # SWB b0
            # One bit for both: the sign tells over capacity from under zero.
            out_of_range and not negative, out_of_range and negative,
            None,  # §1.2 has no centre-of-zero bit
            self.dialect, raw,
            tare=int(body[10:16]) * scale if len(body) == 17 else None,
            division=increment * scale if increment else None,
            flags=frozenset(flags) if flags else _NO_FLAGS,
        )  # fmt: skip


# --- Yaohua XK3190-A9 family (§1.6) --------------------------------------------------------
_A9_START = re.compile(rb"[\x02=]")
_REVERSED = re.compile(rb"[0-9.\-]{8}")


def xk3190_request(address: str = "A", command: str = "B") -> bytes:
    """XK3190 command mode (A23P/DS3, §1.6): STX addr cmd XORh XORl ETX.

    ``xk3190_request() == bytes.fromhex("024142303303")``: read gross from address A.
    """
    if len(address) != 1 or not "A" <= address <= "Z" or len(command) != 1:
        raise ValueError("an XK3190 address is one letter A-Z and a command one character")
    body = (address + command).encode("ascii")
    return b"\x02" + body + b"%02X" % _xor(body) + b"\x03"


@dataclass(kw_only=True)
class Xk3190A9Parser(_MarkerParser):
    """Yaohua XK3190-A9/A23P/A26 (§1.6). Three frames, told apart by their first bytes.

    * Continuous format 0: ``STX sign <6 digits> dp XORh XORl ETX`` (12 bytes),
      XOR over bytes 2..9, dp = decimal places '0'..'4'.
    * Command-mode reply: ``STX addr cmd sign <6 digits> dp XORh XORl ETX``
      (14 bytes), XOR over addr..dp; command B (read gross) is a gross weight.
    * Formats 1/2: ``=`` + 8 characters, the weight reversed (least significant
      first, sign last), e.g. ``=00.1000-`` is -1.00.

    ``max_frame`` is 14. None of these carries a unit (``unit`` option) or a
    motion flag: ``stable`` is False with flag "stability_unreported".
    """

    dialect: ClassVar[str] = "xk3190-a9"
    max_frame: ClassVar[int] = 14
    unit: str = "kg"

    def __post_init__(self) -> None:
        _option_unit(self.dialect, "unit", self.unit)

    request = staticmethod(xk3190_request)

    def _next_start(self, view: bytes, pos: int) -> int:
        m = _A9_START.search(view, pos)
        return -1 if m is None else m.start()

    def _bad(self, view: bytes, p: int, reason: str) -> tuple[int, object]:
        nxt = self._next_start(view, p + 1)
        return (len(view) if nxt < 0 else nxt), reason

    def _frame_at(self, view: bytes, raw: bytes, p: int) -> tuple[int, object]:
        n = len(view)
        if view[p] == 0x3D:  # '=': formats 1/2, 9 bytes
            if n - p < 9:
                return _NEED
            body = view[p + 1 : p + 9]
            if not _REVERSED.fullmatch(body):
                return self._bad(view, p, "reversed '=' frame has other than digits, '.', '-'")
            try:
                value, decimals = _number(body[::-1].decode("ascii"))
            except ValueError as exc:
                return p + 9, str(exc)
            return p + 9, self._reading(value, decimals, WeightMode.UNKNOWN, raw[p : p + 9])
        if n - p < 2:
            return _NEED
        second = view[p + 1]
        if second == 0x2B or second == 0x2D:  # '+'/'-': continuous format 0
            size, data = 12, p + 1
        elif 0x41 <= second <= 0x5A:  # address letter: command-mode reply
            size, data = 14, p + 3
        else:
            return self._bad(view, p, "STX not followed by a sign or an address (§1.6)")
        if n - p < size:
            return _NEED
        end = p + size
        if view[end - 1] != ETX:
            return self._bad(view, p, "no ETX at the end of the frame (§1.6)")
        sign, digits, dp = view[data], view[data + 1 : data + 7], view[data + 7]
        if sign not in b"+-" or not digits.isdigit() or not 0x30 <= dp <= 0x34:
            return self._bad(view, p, "bad sign, digits or decimal places (§1.6)")
        try:
            expected = _hex_byte(view[end - 3 : end - 1])
        except ValueError as exc:
            return end, str(exc)
        got = _xor(view[p + 1 : end - 3])
        if got != expected:
            return end, f"checksum mismatch: XOR 0x{got:02X}, frame says 0x{expected:02X}"
        value = -int(digits) if sign == 0x2D else int(digits)
        if size == 12:
            return end, self._reading(value, dp - 0x30, WeightMode.UNKNOWN, raw[p:end])
        # Command mode: 'B' reads the gross (§1.6); the address tells bus devices apart.
        mode = WeightMode.GROSS if view[p + 2] == 0x42 else WeightMode.UNKNOWN
        flags = _UNREPORTED | {"device=" + chr(second)}
        return end, self._reading(value, dp - 0x30, mode, raw[p:end], flags)

    def _reading(
        self,
        value: int,
        decimals: int,
        mode: WeightMode,
        raw: bytes,
        flags: frozenset[str] = _UNREPORTED,
    ) -> WeightReading:
        return WeightReading(
            value, decimals, self.unit, False, mode, dialect=self.dialect, raw=raw, flags=flags
        )


# --- registry ------------------------------------------------------------------------------
DIALECTS: list[Dialect] = [
    Dialect(
        name="mt-sics",
        kind=DeviceKind.SCALE,
        description=(
            "Mettler Toledo MT-SICS request/response (balances, IND terminals): S/SI/SIR "
            "weights, Z/T/@/I* replies, ES/ET/EL; many balances also use Xon/Xoff"
        ),
        factory=MtSicsParser,
        serial=SerialDefaults(9600, 8, "N", 1),  # §1.1 "Serial defaults" (Janelia README)
        manual=(
            "Mettler Toledo MT-SICS Reference Manual (11780711; §2.1.2.1 weight replies, "
            "§2.1.3 errors); device-protocols.md §1.1"
        ),
    ),
    Dialect(
        name="toledo-continuous",
        kind=DeviceKind.SCALE,
        description=(
            "Mettler Toledo Standard Continuous Output: STX, SWA/SWB/SWC, weight, tare, CR, "
            "optional checksum (IND terminals, Keli, Ohaus Defender)"
        ),
        factory=ToledoContinuousParser,
        serial=SerialDefaults(9600, 7, "E", 1),  # §1.2 "usually 7 data bits, even parity"
        manual=(
            "Mettler Toledo Wildcat Technical Manual Appendix 2, Tables 6-8 to 6-11; "
            "device-protocols.md §1.2"
        ),
    ),
    Dialect(
        name="sma",
        kind=DeviceKind.SCALE,
        description=(
            "SMA SCP-0499 levels 1 & 2: <LF>cmd<CR> requests, <LF> s r n m f weight unit <CR> "
            "replies (Avery Weigh-Tronix, Cardinal, Minebea, Fairbanks)"
        ),
        factory=SmaParser,
        serial=SerialDefaults(9600, 8, "N", 1),  # §1.3 Minebea PR 5215: fixed 8N1
        manual=(
            "SMA Standard Scale Serial Communication Protocol Levels #1 and #2 (SCP-0499, "
            "Mod 1 2005); Sartorius PR 5211 §5.3-5.4; device-protocols.md §1.3"
        ),
    ),
    Dialect(
        name="ad-cas",
        kind=DeviceKind.SCALE,
        description=(
            'A&D indicators and balances, CAS CI/NT: "ST,GS,+0012.34kg" CR LF '
            "(A&D balances default to 2400 7E1, CAS to 9600)"
        ),
        factory=AdCasParser,
        serial=SerialDefaults(2400, 7, "E", 1),  # §1.4/§0: A&D default 2400 7E1
        manual=(
            "A&D AD-4404 specifications p.82, AD-4329A p.35, EK-i p.30; CAS CI-600D p.74, "
            "CI-400 p.103; device-protocols.md §1.4"
        ),
    ),
    Dialect(
        name="xk3190-a9",
        kind=DeviceKind.SCALE,
        description=(
            "Yaohua XK3190-A9/A23P/A26 continuous format 0 (STX sign 6 digits dp XOR ETX), "
            "'=' reversed formats and command-mode replies; baud 1200-9600 selectable"
        ),
        factory=Xk3190A9Parser,
        serial=SerialDefaults(9600, 8, "N", 1),  # §1.6: 1200-9600 selectable (A26 bAUd)
        manual="Yaohua XK3190-A23P manual p.23/p.26, XK3190-A26 p.12; device-protocols.md §1.6",
    ),
    Dialect(
        name="xk3190-a12",
        kind=DeviceKind.SCALE,
        description=(
            'Yaohua XK3190-A12/A12E "WG004.139kg3D" CR LF with XOR; baud 1200-9600 selectable'
        ),
        factory=Xk3190A12Parser,
        serial=SerialDefaults(9600, 8, "N", 1),  # §1.6: 1200-9600 selectable
        manual="Yaohua XK3190-A12E manual p.13; device-protocols.md §1.6",
    ),
    Dialect(
        name="regex",
        kind=DeviceKind.SCALE,
        description=(
            "any line-based indicator: a configured pattern with named groups value, sign, "
            "unit, mode, stable/motion, overload/underload, zero; implied decimals"
        ),
        factory=RegexParser,
        serial=SerialDefaults(9600, 8, "N", 1),
        manual="the indicator's own manual (e.g. device-protocols.md §1.5 formats)",
    ),
]
