"""The text of a code's payload: the character set rule zxing uses.

zbar is run in binary mode (see ``decoders``), so it hands over the payload bytes
as encoded; they are decoded like zxing does: UTF-8 when valid, Shift_JIS when
the bytes clearly are, else ISO-8859-1 (QR's default character set, ECI 000003
in ISO/IEC 18004). OpenCV transcodes non-UTF-8 payloads itself, which
``opencv_text`` undoes before applying the same rule.
"""

from __future__ import annotations

__all__ = ["opencv_text", "payload_text"]


def _is_shift_jis_text(raw: bytes) -> bool:
    """zxing's rule (StringUtils.guessEncoding): Shift_JIS when it decodes and looks Japanese.

    Valid Shift_JIS that also reads as ISO-8859-1 is taken as Shift_JIS only
    with a run of 3 or more double-byte or half-width katakana characters, a
    run of exactly 2 katakana, or when at least 10% of the bytes would be odd
    Latin-1 symbols (0xA0-0xBF, the multiplication and division signs).
    """
    try:
        raw.decode("shift_jis")
    except UnicodeDecodeError:
        return False
    iso_possible = not any(0x80 <= b <= 0x9F for b in raw)
    katakana = double = max_katakana = max_double = 0
    iso_high_other = sum(1 for b in raw if 0xA0 <= b < 0xC0 or b in (0xD7, 0xF7))
    i = 0
    while i < len(raw):
        b = raw[i]
        if 0xA1 <= b <= 0xDF:  # half-width katakana, one byte
            katakana += 1
            double = 0
            max_katakana = max(max_katakana, katakana)
            i += 1
        elif b >= 0x80:  # lead byte of a double-byte character
            double += 1
            katakana = 0
            max_double = max(max_double, double)
            i += 2
        else:
            katakana = double = 0
            i += 1
    if max_katakana >= 3 or max_double >= 3:
        return True
    if not iso_possible:
        return True
    return max_katakana == 2 or iso_high_other * 10 >= len(raw)


def payload_text(raw: bytes, symbology: str = "QRCODE") -> str:
    """The payload as text: UTF-8 if valid, Shift_JIS (QR only) when it clearly is, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if symbology == "QRCODE" and _is_shift_jis_text(raw):
        return raw.decode("shift_jis")
    return raw.decode("latin-1")


def opencv_text(data: bytes) -> str:
    # OpenCV passes UTF-8 payloads through and transcodes anything else from
    # ISO-8859-1 to UTF-8 (so Shift_JIS arrives as Latin-1 mojibake): undo
    # that, then apply the same charset rule as for zbar's raw bytes.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return payload_text(data)
    if text.isascii() or max(map(ord, text)) > 0xFF:
        return text
    return payload_text(text.encode("latin-1"))
