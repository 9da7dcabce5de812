"""zxing-cpp: the reference decoder for decode rate, as one more decoder behind the passes.

zxing-cpp locates and samples codes itself (finder patterns, perspective,
rotation, inversion, downscaling), so one call on the plain grayscale image
does what several of our views do for zbar. Text comes from zxing-cpp in
``TextMode.Plain``: the payload decoded by the symbol's ECI, or else by the same
UTF-8 / Shift_JIS / ISO-8859-1 guess as ``charset`` (ours copies zxing's rule).
``raw`` is the payload bytes as encoded. ``gs1`` is zxing-cpp's GS1 content
type (FNC1 in first position), as zbar's modifier.

zxing-cpp reads each part of a structured-append message as a code of its
own and its Python binding does not say which symbols are parts. zbar drops
parts (they are not seal codes), so this module does too: a part's data
bit stream starts with the structured-append mode indicator 0011 (ISO/IEC 18004
§7.4.2, §8), read from the symbol's module matrix after unmasking.

Nothing is caught: zxing-cpp raises only for an image it cannot take, and
``decode_image`` hands it a contiguous 8-bit grayscale array.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import zxingcpp

from firmware_bridge.camera.bounds import Image
from firmware_bridge.camera.decoders import QR, ZBAR_NAMES, ZBAR_SYMBOLS, Hit

__all__ = ["read"]

_F = zxingcpp.BarcodeFormat
# zbar's symbology names (ours) -> zxing-cpp formats; symbologies zxing-cpp lacks stay zbar's.
_FORMATS: Final[dict[str, zxingcpp.BarcodeFormat]] = {
    "QRCODE": _F.QRCode,
    "CODE128": _F.Code128,
    "CODE39": _F.Code39,
    "CODE93": _F.Code93,
    "CODABAR": _F.Codabar,
    "EAN13": _F.EAN13,
    "EAN8": _F.EAN8,
    "UPCA": _F.UPCA,
    "UPCE": _F.UPCE,
    "I25": _F.ITF,
    "DATABAR": _F.DataBar,
    "DATABAR_EXP": _F.DataBarExp,
    "PDF417": _F.PDF417,
}
_SYMBOLS: Final = {fmt: ZBAR_SYMBOLS[name] for name, fmt in _FORMATS.items()}

# Data mask conditions by mask pattern reference (ISO/IEC 18004 §7.8.2, Table 10):
# a module at (row i, column j) is inverted where the condition holds.
_MASKS: Final[tuple[Callable[[int, int], bool], ...]] = (
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
)
_STRUCTURED_APPEND: Final = (0, 0, 1, 1)  # mode indicator (ISO/IEC 18004 §7.4.1, Table 2)


def read(image: Image, symbols: frozenset[int]) -> list[Hit]:
    """Codes zxing-cpp reads in ``image`` among ``symbols``; structured-append parts dropped."""
    formats = [_FORMATS[n] for s in symbols if (n := ZBAR_NAMES[s]) in _FORMATS]
    if not formats:
        return []
    barcodes = zxingcpp.read_barcodes(
        np.ascontiguousarray(image, dtype=np.uint8),
        formats=zxingcpp.BarcodeFormats(formats),
        text_mode=zxingcpp.TextMode.Plain,
    )
    hits: list[Hit] = []
    for code in barcodes:
        symbol = _SYMBOLS[code.format]
        if symbol == QR and _structured_append_part(code):
            continue
        p = code.position
        corners = (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
        hits.append(
            Hit(
                symbol,
                code.bytes,
                tuple((float(c.x), float(c.y)) for c in corners),
                code.content_type == zxingcpp.ContentType.GS1,
                "zxing-cpp",
                text=code.text,
            )
        )
    return hits


def _structured_append_part(code: zxingcpp.Barcode) -> bool:
    """True when the QR symbol's data starts with the structured-append mode indicator.

    The first data bits sit in the bottom-right corner, read upwards in a
    two-module column, right module first (ISO/IEC 18004 §7.7.3); no function
    pattern of any version covers those four modules.
    """
    extra = code.extra
    if not isinstance(extra, dict) or "DataMask" not in extra:
        return False
    matrix = np.asarray(code.to_image(scale=1, add_quiet_zones=False))
    n = int(matrix.shape[0])
    mask = _MASKS[int(extra["DataMask"]) % 8]
    bits = tuple(
        int(matrix[r, c] < 128) ^ int(mask(r, c)) for r in (n - 1, n - 2) for c in (n - 1, n - 2)
    )
    return bits == _STRUCTURED_APPEND
