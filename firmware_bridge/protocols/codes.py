"""Seal and label codes: barcode-scanner lines and the classifier shared with the camera.

Theory of operation: a scanner (serial, or a keyboard wedge whose keystrokes
the transport turns into bytes) sends one decoded symbol per line, optionally
prefixed with its AIM symbology identifier (ISO/IEC 15424: ``]`` + code
character + modifier, e.g. ``]C1`` GS1-128, ``]d2`` GS1 DataMatrix, ``]Q3`` GS1
QR). ``ScannerLineParser`` bounds and splits the lines; ``classify_code`` (a
pure function the camera decoder calls too) decides what the text is:

``gs1``
    a GS1 element string (GS1 General Specifications §3 AI table, §7.8
    concatenation: FNC1 transmitted as ASCII GS 0x1D ends a variable-length
    field; fields whose AI prefix is in the predefined-length table need no
    separator), or the same written in the human-readable interpretation
    ``(AI)value(AI)value`` (§4.15) as printed under a barcode and typed from
    it. Values are checked against the AI's format (every AI of
    §3.2 except 8043), GTIN/SSCC/GLN/GRAI/GSRN/… check digits with the GS1 mod-10
    algorithm (§7.9.1) and the YYMMDD dates of AIs 11-17, 4326 and 7006
    (§7.12). The GS1 Barcode Syntax Dictionary's further lint rules (country
    codes, 0/1 flags, date-times) are not applied. ``text`` is the canonical
    human-readable form ``(01)…(10)…`` (§4.15).
``digital_link``
    an http(s) URI whose path holds a GS1 primary key and its value (GS1
    Digital Link URI Syntax 1.2 §4); path qualifiers and query AIs are parsed
    into ``elements`` with the same validation (a GTIN-8/12/13 is zero-padded
    to 14 digits, as GS1's syntax engine does); ``text`` is the URI as scanned.
``opaque``
    anything else that is printable: a plain seal serial, a vendor URL.

Decision on malformed GS1: a code that *declares*
itself GS1 and fails validation (bad check digit, bad format, unknown AI) is a
``ProtocolError`` from ``classify_code`` and a ``FrameError`` from the parser,
never an opaque seal: recording a mis-scanned key as a seal id would put a
wrong identity into the custody chain. A code declares itself GS1 when it has a
GS1 AIM identifier (]C1 ]e0 ]d2 ]Q3 ]J1, or ]E0/]E4 for EAN/UPC GTINs), contains
GS (FNC1), starts with a bracketed AI such as ``(00)`` (the human-readable form:
nothing else writes an AI in brackets, so it is checked as strictly as a code
with its AIM identifier: every AI known, every value in its AI's format and
length, every check digit and date right), or is an http(s) URI with a
primary-key AI segment followed by a value in that AI's format. Undeclared
text (a scanner not set to send AIM identifiers, or plain Code 128) is
classified ``gs1`` only if it parses completely *and* its first AI carries a
check digit that verifies; otherwise it is ``opaque``: numeric seal serials
(ISO 17712 seals, iTSCi bag tags, device-protocols.md §4.4) must not be
rejected just because they start with "00" or "01". Turn on AIM identifiers in
the scanner to get strict checking.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import ClassVar
from urllib.parse import unquote, unquote_plus, urlsplit

from firmware_bridge.errors import ProtocolError
from firmware_bridge.frames import SealCode
from firmware_bridge.protocols.base import DeviceKind, Dialect, LineParser, SerialDefaults

__all__ = [
    "AI_FORMATS",
    "DIALECTS",
    "GS",
    "PREDEFINED_LENGTH",
    "ScannerLineParser",
    "classify_code",
    "gs1_check_digit",
    "parse_digital_link",
    "parse_element_string",
    "parse_hri",
]

GS = "\x1d"  # FNC1 as transmitted by scanners (GS1 General Specifications §7.8)

# ISO/IEC 15424 symbology identifiers meaning "this is a GS1 element string"
# (ISO/IEC 15424; GS1 General Specifications §5 lists them per GS1 symbology).
_GS1_ELEMENT_SYMBOLOGIES = frozenset({"]C1", "]e0", "]d2", "]Q3", "]J1"})
# EAN/UPC: the data is a GTIN-8/12/13 (]E4 = EAN-8, ]E0 = EAN-13/UPC-A).
_GTIN_SYMBOLOGIES = frozenset({"]E0", "]E4"})
_AIM_RE = re.compile(r"\][A-Za-z][0-9A-Za-z]")

# GS1 General Specifications §7.8.5, Figure 7.8.5-2: AI prefixes whose
# element strings have a predefined total length (AI included), so no FNC1
# separator follows them. Every other AI must be terminated by FNC1 (GS)
# unless it is the last in the string.
PREDEFINED_LENGTH: dict[str, int] = {
    "00": 20, "01": 16, "02": 16, "03": 16, "04": 18,
    "11": 8, "12": 8, "13": 8, "14": 8, "15": 8, "16": 8, "17": 8, "18": 8, "19": 8,
    "20": 4,
    "31": 10, "32": 10, "33": 10, "34": 10, "35": 10, "36": 10,
    "41": 16,
}  # fmt: skip

# GS1 General Specifications §3.2 (AI table), in the GS1 Barcode Syntax
# Dictionary notation: Nn fixed digits, N..n up to n digits, X = CSET 82,
# Y = CSET 39, Z = CSET 64, [...] optional. A bracket class like 31[0-6][0-5]
# expands to every AI it matches. Flags: "cd" = the whole value ends in a mod-10
# check digit; "cdN" = its first N digits do; "date" = YYMMDD.
_AI_TABLE = """
00 N2+N18 cd
01 N2+N14 cd
02 N2+N14 cd
03 N2+N14 cd
10 N2+X..20
11 N2+N6 date
12 N2+N6 date
13 N2+N6 date
15 N2+N6 date
16 N2+N6 date
17 N2+N6 date
20 N2+N2
21 N2+X..20
22 N2+X..20
235 N3+X..28
240 N3+X..30
241 N3+X..30
242 N3+N..6
243 N3+X..20
250 N3+X..30
251 N3+X..30
253 N3+N13[+X..17] cd13
254 N3+X..20
255 N3+N13[+N..12] cd13
30 N2+N..8
31[0-6][0-5] N4+N6
32[0-9][0-5] N4+N6
33[0-7][0-5] N4+N6
34[0-9][0-5] N4+N6
35[0-7][0-5] N4+N6
36[0-9][0-5] N4+N6
37 N2+N..8
39[02][0-9] N4+N..15
39[13][0-9] N4+N3+N..15
394[0-3] N4+N4
395[0-5] N4+N6
400 N3+X..30
401 N3+X..30
402 N3+N17 cd
403 N3+X..30
41[0-7] N3+N13 cd
420 N3+X..20
421 N3+N3+X..9
422 N3+N3
423 N3+N3+N..12
424 N3+N3
425 N3+N3+N..12
426 N3+N3
427 N3+X..3
430[0-1] N4+X..35
430[2-6] N4+X..70
4307 N4+X2
4308 N4+X..30
4309 N4+N20
431[0-1] N4+X..35
431[2-6] N4+X..70
4317 N4+X2
4318 N4+X..20
4319 N4+X..30
4320 N4+X..35
432[1-3] N4+N1
432[4-5] N4+N10
4326 N4+N6 date
433[0-3] N4+N6+[-]
7001 N4+N13
7002 N4+X..30
7003 N4+N10
7004 N4+N..4
7005 N4+X..12
7006 N4+N6 date
7007 N4+N6[+N6]
7008 N4+X..3
7009 N4+X..10
7010 N4+X..2
7011 N4+N6[+N4]
702[0-2] N4+X..20
7023 N4+X..30
703[0-9] N4+N3+X..27
7040 N4+N1+X3
7041 N4+X..4
71[0-7] N3+X..20
723[0-9] N4+X2+X..28
7240 N4+X..20
7241 N4+N2
7242 N4+X..25
7250 N4+N8
7251 N4+N12
7252 N4+N1
725[3-4] N4+X..40
7255 N4+X..10
7256 N4+X..90
7257 N4+X..70
7258 N4+N1+X1+N1
7259 N4+X..40
8001 N4+N14
8002 N4+X..20
8003 N4+N14[+X..16] cd14
8004 N4+X..30
8005 N4+N6
8006 N4+N14+N2+N2 cd14
8007 N4+X..34
8008 N4+N8[+N..4]
8009 N4+X..50
8010 N4+Y..30
8011 N4+N..12
8012 N4+X..20
8013 N4+X..25
8014 N4+X..25
8017 N4+N18 cd
8018 N4+N18 cd
8019 N4+N..10
8020 N4+X..25
8026 N4+N14+N2+N2 cd14
8030 N4+Z..90
8040 N4+N15
8041 N4+N15
8042 N4+N32
8110 N4+X..70
8111 N4+N4
8112 N4+X..70
8200 N4+X..70
90 N2+X..30
9[1-9] N2+X..90
"""

# GS1 General Specifications §7.11: CSET 82, CSET 39, CSET 64 (Figures 7.11-1..3).
_CHARSETS = {
    "N": r"[0-9]",
    "X": r"[!\"%-?A-Z_a-z]",  # ! " % & ' ( ) * + , - . / 0-9 : ; < = > ? A-Z _ a-z
    "Y": r"[#\-/0-9A-Z]",
    "Z": r"[\-0-9A-Z_a-z=]",
}
_FORMAT_TOKEN = re.compile(r"\[\+?|\]|\+|-|([NXYZ])(\.\.)?(\d+)")


@dataclass(frozen=True, slots=True)
class _AISpec:
    ai: str
    format: str  # as in the GS1 Barcode Syntax Dictionary, e.g. "N4+N14[+X..16]"
    pattern: re.Pattern[str]
    check_digits: int  # leading digits of the value that end in a check digit (0 = none)
    date: bool


def _format_regex(fmt: str) -> re.Pattern[str]:
    _, _, data = fmt.partition("+")  # first component is the AI itself
    out: list[str] = []
    for m in _FORMAT_TOKEN.finditer(data):
        tok = m.group(0)
        if tok.startswith("["):
            out.append("(?:")
        elif tok == "]":
            out.append(")?")
        elif tok == "-":
            out.append("-")
        elif m.group(1):
            cls, var, n = _CHARSETS[m.group(1)], m.group(2), m.group(3)
            out.append(f"{cls}{{1,{n}}}" if var else f"{cls}{{{n}}}")
    return re.compile("".join(out))


def _expand(pattern: str) -> list[str]:
    pieces = re.findall(r"\[[^\]]+\]|\d", pattern)
    options: list[list[str]] = []
    for p in pieces:
        if p.startswith("["):
            lo_hi = p[1:-1]
            if "-" in lo_hi:
                lo, hi = lo_hi.split("-")
                options.append([str(d) for d in range(int(lo), int(hi) + 1)])
            else:
                options.append(list(lo_hi))
        else:
            options.append([p])
    return ["".join(combo) for combo in itertools.product(*options)]


def _build_table() -> dict[str, _AISpec]:
    table: dict[str, _AISpec] = {}
    for line in _AI_TABLE.strip().splitlines():
        pattern, fmt, *flags = line.split()
        check = 0
        for flag in flags:
            if flag.startswith("cd"):
                check = int(flag[2:]) if flag != "cd" else -1
        regex = _format_regex(fmt)
        for ai in _expand(pattern):
            if ai in table:
                raise RuntimeError(f"AI {ai} defined twice")
            if int(fmt[1]) != len(ai):
                raise RuntimeError(f"AI {ai}: format {fmt} has the wrong AI length")
            table[ai] = _AISpec(ai, fmt, regex, check, "date" in flags)
    return table


_AIS = _build_table()
AI_FORMATS: dict[str, str] = {ai: spec.format for ai, spec in _AIS.items()}


def gs1_check_digit(payload: str) -> int:
    """GS1 mod-10 check digit for the digits before it (General Specifications §7.9.1).

    Weights 3, 1, 3, … from the rightmost payload digit; check = (10 - sum mod 10) mod 10.
    """
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return (10 - total % 10) % 10


_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _check_date(ai: str, value: str) -> None:
    # §7.12: YYMMDD; DD "00" means the last day of the month. Feb 29 is
    # accepted when YY % 4 == 0 (the century is chosen by the reader's clock,
    # §7.12 sliding window, which a sans-I/O parser does not have).
    month, day = int(value[2:4]), int(value[4:6])
    if not 1 <= month <= 12:
        raise ProtocolError(f"AI ({ai}) date {value}: month {month:02d} is not 01..12")
    last = _DAYS[month - 1] if month != 2 or int(value[:2]) % 4 == 0 else 28
    if day > last:
        raise ProtocolError(f"AI ({ai}) date {value}: day {day:02d} is past the month's end")


def _validate(ai: str, value: str) -> str:
    spec = _AIS[ai]
    if not spec.pattern.fullmatch(value):
        raise ProtocolError(f"AI ({ai}) value {value!r} does not match format {spec.format}")
    if spec.check_digits:
        digits = value if spec.check_digits < 0 else value[: spec.check_digits]
        expected = gs1_check_digit(digits[:-1])
        if int(digits[-1]) != expected:
            raise ProtocolError(
                f"AI ({ai}) check digit wrong: expected {expected}, got {digits[-1]} "
                "(GS1 mod-10 checksum)"
            )
    if spec.date:
        _check_date(ai, value)
    return value


def _lookup_ai(data: str, pos: int) -> str:
    for n in (2, 3, 4):  # no AI is a prefix of another (§3.2; a test checks our table)
        ai = data[pos : pos + n]
        if len(ai) == n and ai in _AIS:
            return ai
    raise ProtocolError(f"unknown GS1 Application Identifier at {data[pos : pos + 4]!r}")


def parse_element_string(data: str) -> tuple[tuple[str, str], ...]:
    """Split and validate an unbracketed GS1 element string (FNC1 = GS).

    Raises ``ProtocolError`` for an unknown AI, a value outside its format, a
    wrong check digit or date, a truncated fixed-length field, or an AI that
    repeats with a different value (§4.14 rules on AI combinations).
    """
    pos = 1 if data.startswith(GS) else 0  # a transmitted leading FNC1 is tolerated
    pairs: list[tuple[str, str]] = []
    while pos < len(data):
        ai = _lookup_ai(data, pos)
        pos += len(ai)
        total = PREDEFINED_LENGTH.get(ai[:2])
        if total is not None:
            size = total - len(ai)
            value = data[pos : pos + size]
            if len(value) < size:
                raise ProtocolError(f"AI ({ai}) value truncated: needs {size} characters")
            pos += size
            if data.startswith(GS, pos):
                pos += 1  # a redundant FNC1 after a fixed-length field is harmless
        else:
            end = data.find(GS, pos)
            end = len(data) if end < 0 else end
            value = data[pos:end]
            pos = end + 1 if end < len(data) else end
        pairs.append((ai, value))
    return _checked(pairs)


def _checked(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Validate each (AI, value) and drop exact repeats; an AI repeating with a
    different value is an error (§4.14 rules on AI combinations)."""
    elements: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for ai, value in pairs:
        _validate(ai, value)
        if seen.get(ai, value) != value:
            raise ProtocolError(f"AI ({ai}) repeats with a different value")
        if ai not in seen:
            seen[ai] = value
            elements.append((ai, value))
    if not elements:
        raise ProtocolError("empty GS1 element string")
    return tuple(elements)


# §4.15: the human-readable interpretation puts each AI in round brackets before its
# value. An AI is 2 to 4 digits (§3.2).
_HRI_AI = re.compile(r"\((\d{2,4})\)")
_HRI_START = re.compile(r"\s*\(\d{2,4}\)")


def parse_hri(text: str) -> tuple[tuple[str, str], ...]:
    """Split and validate a GS1 element string written as ``(AI)value(AI)value``.

    The same checks as ``parse_element_string`` (known AI, the value's format and
    length, check digit, date, repeats), and the whole text must be AI/value pairs:
    spaces around a bracketed AI are ignored (labels print them, people type them),
    anything else outside a pair is an error. A value holding ``(`` + digits + ``)``
    cannot be told from the next AI in this form; GS1 labels avoid it (§4.15).
    """
    parts = _HRI_AI.split(text.strip())
    if parts[0]:
        raise ProtocolError(f"GS1 text must start with a bracketed AI such as (01): {text!r}")
    pairs: list[tuple[str, str]] = []
    for ai, raw in _pairs(parts[1:]):
        if ai not in _AIS:
            raise ProtocolError(f"unknown GS1 Application Identifier ({ai})")
        value = raw.strip(" ")
        if not value:
            raise ProtocolError(f"AI ({ai}) has no value")
        pairs.append((ai, value))
    return _checked(pairs)


# GS1 Digital Link URI Syntax 1.2 §4 (Table of primary keys and key
# qualifiers): each primary key with the qualifier sequences allowed after it,
# in order (a qualifier may be omitted, never reordered).
_DL_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "01": (("22", "10", "21"), ("235",)),
    "8006": (("22", "10", "21"),),
    "8010": (("8011",),),
    "414": (("254",), ("7040",)),
    "415": (("8020",),),
    "417": (("7040",),),
    "8017": (("8019",),),
    "8018": (("8019",),),
    "8004": (("7040",),),
    "00": (),
    "253": (),
    "255": (),
    "401": (),
    "402": (),
    "8003": (),
    "8013": (),
}
_DIGITS = re.compile(r"[0-9]+")


def _dl_value(ai: str, raw: str) -> str:
    # Zero-suppressed GTIN-8/12/13 are padded to 14 digits, as resolvers do
    # (the GS1 syntax engine's DL example "?01=9520123456788" and biip both
    # pad; the engine wants an opt-in flag for the path, we always accept:
    # leading zeros do not change the mod-10 check digit).
    if ai in ("01", "02") and _DIGITS.fullmatch(raw) and len(raw) in (8, 12, 13):
        return raw.zfill(14)
    return raw


def _unquote_path(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise ProtocolError(f"path segment {segment!r} is not UTF-8 after unescaping") from None


def _dl_start(segments: list[str]) -> int | None:
    for i, seg in enumerate(segments[:-1]):
        if seg in _DL_KEYS:
            try:
                value = _dl_value(seg, _unquote_path(segments[i + 1]))
            except ProtocolError:
                continue
            if _AIS[seg].pattern.fullmatch(value):
                return i
    return None


def parse_digital_link(uri: str) -> tuple[tuple[str, str], ...] | None:
    """Elements of a GS1 Digital Link URI; ``None`` when ``uri`` is not one.

    Not one = not http(s), no host, or no path segment that is a primary-key
    AI followed by a value in that AI's format. Once it is one, everything is
    validated and any fault raises ``ProtocolError``: qualifiers out of order or
    not allowed for the key, a trailing "/", an AI in the query that belongs in
    the path, duplicate or empty query AIs, unknown numeric query keys; non-
    numeric query parameters and the fragment are ignored (DL 1.2 §4, and the
    accept/reject cases of gs1-syntax-engine, device-protocols.md §4.2).
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    segments = parts.path.split("/")[1:]
    start = _dl_start(segments)
    if start is None:
        return None
    path = segments[start:]
    if len(path) % 2 or any(not s for s in path):
        raise ProtocolError("Digital Link path must be AI/value pairs (no empty or trailing '/')")
    key = path[0]
    elements: list[tuple[str, str]] = []
    qualifiers: list[str] = []
    for ai, raw in _pairs(path):
        if ai not in _AIS:
            raise ProtocolError(f"unknown AI {ai!r} in the Digital Link path")
        value = _validate(ai, _dl_value(ai, _unquote_path(raw)))
        if elements:
            qualifiers.append(ai)
        elements.append((ai, value))
    allowed = _DL_KEYS[key]
    if qualifiers and not any(_is_subsequence(qualifiers, seq) for seq in allowed):
        raise ProtocolError(
            f"qualifiers {'/'.join(qualifiers)} not allowed (in this order) after key ({key})"
        )
    path_ais = {key, *(q for seq in allowed for q in seq)}
    seen = {ai for ai, _ in elements}
    for param in parts.query.split("&") if parts.query else ():
        name, _, raw = param.partition("=")
        name = unquote_plus(name)
        if not _DIGITS.fullmatch(name):
            continue  # non-AI parameters are passed through by resolvers, ignored here
        if name not in _AIS:
            raise ProtocolError(f"unknown AI ({name}) in the Digital Link query")
        if name in path_ais:
            raise ProtocolError(f"AI ({name}) belongs in the Digital Link path, not the query")
        if name in seen:
            raise ProtocolError(f"AI ({name}) appears twice in the Digital Link")
        value = unquote_plus(raw)
        if not value:
            raise ProtocolError(f"AI ({name}) has an empty value in the Digital Link query")
        elements.append((name, _validate(name, _dl_value(name, value))))
        seen.add(name)
    return tuple(elements)


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    return [(items[i], items[i + 1]) for i in range(0, len(items), 2)]


def _is_subsequence(items: list[str], sequence: tuple[str, ...]) -> bool:
    it = iter(sequence)
    return all(any(x == y for y in it) for x in items)


def _hri(elements: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"({ai}){value}" for ai, value in elements)


_URL_RE = re.compile(r"https?://", re.IGNORECASE)


def classify_code(text: str, symbology: str | None = None) -> SealCode:
    """Classify decoded barcode/QR text as ``gs1``, ``digital_link`` or ``opaque``.

    ``symbology`` is whatever the decoder knows (an AIM identifier such as
    "]Q1", or a decoder's own name such as "QRCODE", stored as given). An AIM
    identifier at the start of ``text`` is removed and takes precedence.
    Raises ``ProtocolError`` for empty or non-printable text and for malformed
    GS1 (see the module docstring for when text counts as GS1).
    """
    payload = text
    m = _AIM_RE.match(payload)
    if m:
        symbology = m.group(0)
        payload = payload[m.end() :]
    payload = payload.strip(" \t\r\n")
    if not payload:
        raise ProtocolError("empty code")

    if _HRI_START.match(payload) and symbology not in _GTIN_SYMBOLOGIES:
        elements = parse_hri(payload)
        return SealCode(text=_hri(elements), kind="gs1", elements=elements, symbology=symbology)
    if symbology in _GS1_ELEMENT_SYMBOLOGIES or GS in payload:
        elements = parse_element_string(payload)
        return SealCode(text=_hri(elements), kind="gs1", elements=elements, symbology=symbology)
    if symbology in _GTIN_SYMBOLOGIES:
        if not (_DIGITS.fullmatch(payload) and len(payload) in (8, 12, 13)):
            raise ProtocolError(f"{symbology} data is not a GTIN-8/12/13: {payload!r}")
        elements = (("01", _validate("01", payload.zfill(14))),)
        return SealCode(text=_hri(elements), kind="gs1", elements=elements, symbology=symbology)
    if _URL_RE.match(payload):
        link = parse_digital_link(payload)
        if link is not None:
            return SealCode(text=payload, kind="digital_link", elements=link, symbology=symbology)
    elif payload[:1].isdigit():
        try:
            elements = parse_element_string(payload)
        except ProtocolError:
            elements = ()
        if elements and _AIS[elements[0][0]].check_digits:
            return SealCode(text=_hri(elements), kind="gs1", elements=elements, symbology=symbology)
    if not payload.isprintable():
        raise ProtocolError("code contains non-printable characters")
    return SealCode(text=payload, kind="opaque", symbology=symbology)


@dataclass
class ScannerLineParser(LineParser):
    """Line-oriented barcode scanner (serial or keyboard wedge) -> ``SealCode``.

    Lines end in CR, LF or CR LF; blank lines are ignored; the payload must be
    UTF-8. A line that is not a valid code becomes a ``FrameError`` (GS1 check
    digit failures also count in ``stats.checksum_errors``).
    """

    dialect: ClassVar[str] = "scanner-line"
    # A QR Code holds at most 2953 bytes (version 40-L, ISO/IEC 18004:2015
    # Table 7), the largest symbol a seal scanner reads; 4096 covers that plus
    # an AIM prefix while bounding a line that never ends.
    max_line: int = 4096

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("scanner line is not UTF-8") from None
        if not text.strip(" \t"):
            return None
        try:
            code = classify_code(text)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from exc
        return replace(code, dialect=self.dialect, raw=line)


DIALECTS: list[Dialect] = [
    Dialect(
        name="scanner-line",
        kind=DeviceKind.SCANNER,
        description="Barcode/QR scanner sending one code per CR/LF line, AIM identifiers optional",
        factory=ScannerLineParser,
        serial=SerialDefaults(baudrate=9600),
        manual=(
            "GS1 General Specifications §3 (AIs), §7.8 (FNC1), §7.9 (check digits); "
            "GS1 Digital Link URI Syntax 1.2; ISO/IEC 15424 (device-protocols.md §4)"
        ),
    ),
]
