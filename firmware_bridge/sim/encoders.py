"""Device output in each dialect's real wire format, for the simulators.

Each function builds the bytes a real device sends, from the manual's frame
description (device-protocols.md section cited per function). The parsers'
tests and the end-to-end tests decode these with the production parsers, so an
encoder that drifts from the manual shows up as a parse failure.
"""

from __future__ import annotations

from functools import reduce

__all__ = [
    "ad_cas",
    "nmea_sentence",
    "rdm6300",
    "scanner_line",
    "toledo_continuous",
    "xk3190_a9",
    "xk3190_a12",
]

STX, ETX, CR, LF = b"\x02", b"\x03", b"\r", b"\n"


def toledo_continuous(
    weight: int,
    *,
    tare: int = 0,
    dp_code: int = 0b010,
    increment: int = 0b01,
    net: bool = False,
    negative: bool = False,
    motion: bool = False,
    out_of_range: bool = False,
    kg: bool = True,
    checksum: bool = True,
) -> bytes:
    """Mettler Toledo Standard Continuous Output (device-protocols.md §1.2).

    ``weight``/``tare`` are the six displayed digits (before the dp/dummy-zero
    code is applied); SWA bits 0-2 = ``dp_code``, bits 3-4 = ``increment``,
    bit 5 = 1. Checksum = 2's complement of the 7-bit sum, STX and CR included.
    """
    if not 0 <= weight <= 999_999 or not 0 <= tare <= 999_999:
        raise ValueError("Toledo continuous carries six digits")
    swa = 0x20 | (increment & 0b11) << 3 | (dp_code & 0b111)
    swb = 0x20 | net | negative << 1 | out_of_range << 2 | motion << 3 | kg << 4
    swc = 0x20
    frame = STX + bytes([swa, swb, swc]) + b"%06d%06d" % (weight, tare) + CR
    if checksum:
        frame += bytes([(-sum(frame)) & 0x7F])
    return frame


def _xor_hex(data: bytes) -> bytes:
    x = reduce(lambda a, b: a ^ b, data, 0)
    return b"%02X" % x


def xk3190_a9(weight: int, *, decimals: int = 0, negative: bool = False) -> bytes:
    """Yaohua XK3190 "continuous format 0" (§1.6): STX sign 6 digits dp XORh XORl ETX.

    XOR over bytes 2..9 (sign, digits, dp), sent as two upper-case hex characters.
    """
    if not 0 <= weight <= 999_999 or not 0 <= decimals <= 4:
        raise ValueError("six digits and 0-4 decimals")
    body = (b"-" if negative else b"+") + b"%06d" % weight + b"%d" % decimals
    return STX + body + _xor_hex(body) + ETX


def xk3190_a12(
    text7: str, *, net: bool = False, overload: bool = False, underload: bool = False
) -> bytes:
    """Yaohua XK3190-A12(E) "WG" format (§1.6): ``WG004.139kg3D`` CR LF.

    ``text7`` is the 7-character weight field incl. decimal point ('-' first when
    negative); the XOR covers bytes 1..11 and is sent as two hex characters.
    Overload/underload: 9 spaces + "OL"/"LO" + XOR + CR LF.
    """
    if overload or underload:
        body = b" " * 9 + (b"OL" if overload else b"LO")
    else:
        if len(text7) != 7:
            raise ValueError("the A12 weight field is 7 characters")
        body = (b"WN" if net else b"WG") + text7.encode("ascii") + b"kg"
    return body + _xor_hex(body) + CR + LF


def ad_cas(
    text: str, *, stable: bool = True, mode: str = "GS", unit: str = "kg", overload: bool = False
) -> bytes:
    """A&D / CAS "ST,GS,+0012.34kg" CR LF (§1.4); ``text`` is the 8-character data field."""
    header = b"OL" if overload else (b"ST" if stable else b"US")
    return header + b"," + mode.encode() + b"," + text.encode("ascii") + unit.encode() + CR + LF


def rdm6300(tag_hex10: str) -> bytes:
    """RDM6300 / EM4100 ASCII (§3.1): STX + 10 hex + XOR checksum (2 hex) + ETX."""
    data = bytes.fromhex(tag_hex10)
    if len(data) != 5:
        raise ValueError("an EM4100 id is 5 bytes (10 hex digits)")
    return STX + tag_hex10.upper().encode() + _xor_hex(data) + ETX


def nmea_sentence(body: str) -> bytes:
    """``$`` + body + ``*`` + XOR of the body as two hex digits + CR LF (NMEA 0183, §5)."""
    return b"$" + body.encode("ascii") + b"*" + _xor_hex(body.encode("ascii")) + CR + LF


def scanner_line(code: str, *, aim: str | None = None) -> bytes:
    """What a serial or keyboard-wedge scanner sends: [AIM id] code CR LF."""
    return (aim or "").encode("ascii") + code.encode("latin-1") + CR + LF
