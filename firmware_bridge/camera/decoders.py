"""The decoding libraries: libzbar through pyzbar's ctypes wrapper, and OpenCV's QR detectors.

zbar is called through pyzbar's ctypes wrapper rather than ``pyzbar.decode``:
pyzbar 0.1.9 turns libzbar 0.23's "unknown orientation" (-1, read as an
unsigned 4294967295) into ``ValueError: ... is not a valid ZBarOrientation``
and loses the whole image's results; we never ask for the orientation. The
wrapper also lets us switch zbar's QR decoder to binary mode (the payload bytes
as encoded, not zbar's charset guess, which turns UTF-8 "café" into Big5
mojibake) and read the GS1 modifier (FNC1 in first position), which pyzbar does
not expose. zbar reports a part of a structured-append message as a partial
symbol; parts are not seal codes and are dropped.

OpenCV's ``QRCodeDetector`` raises ``cv2.error`` ("... not implemented") on some
symbols; that view's OpenCV result is dropped and the search goes on. Nothing
else is caught.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Final

import cv2
import numpy as np
from pyzbar import wrapper as _zw

from firmware_bridge.camera.bounds import Image
from firmware_bridge.errors import PortConfigError

__all__ = [
    "DEFAULT_SYMBOLOGIES",
    "QR",
    "ZBAR_NAMES",
    "ZBAR_SYMBOLS",
    "Hit",
    "library_versions",
    "opencv",
    "symbol_set",
    "zbar",
]

_log = logging.getLogger(__name__)

DEFAULT_SYMBOLOGIES: Final = ("QRCODE", "CODE128")

ZBAR_SYMBOLS: Final = {s.name: int(s) for s in _zw.ZBarSymbol if s.value > 1}
ZBAR_NAMES: Final = {v: k for k, v in ZBAR_SYMBOLS.items()}
_FOURCC_Y800: Final = 0x30303859  # "Y800": 8-bit grayscale, one byte per pixel
_ZBAR_MOD_GS1: Final = 1 << 0  # zbar.h zbar_modifier_e ZBAR_MOD_GS1 (FNC1 in first position)
QR: Final = int(_zw.ZBarSymbol.QRCODE)


@dataclass(frozen=True, slots=True)
class Hit:
    symbol: int
    data: bytes
    points: tuple[tuple[float, float], ...]
    gs1: bool
    decoder: str
    text: str | None = None  # the decoder's own text, when it applies the symbol's ECI


_zbar_get_modifiers: Callable[..., int] | None
try:  # zbar >= 0.20; absent from pyzbar's wrapper, same calling convention
    _zbar_get_modifiers = _zw.zbar_function(
        "zbar_symbol_get_modifiers", ctypes.c_uint, ctypes.POINTER(_zw.zbar_symbol)
    )
except AttributeError:  # pragma: no cover - older libzbar
    _zbar_get_modifiers = None


def _zbar_config(name: str) -> tuple[int, int, int] | None:
    """Resolve a zbar config string ("qrcode.binary") with zbar's own parser."""
    sym, cfg, val = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if _zw.zbar_parse_config(
        name.encode(), ctypes.byref(sym), ctypes.byref(cfg), ctypes.byref(val)
    ):
        return None
    return sym.value, cfg.value, val.value


# Binary mode: zbar hands QR payloads over as the bytes encoded (libzbar >= 0.23).
_QR_BINARY: Final = _zbar_config("qrcode.binary")


def zbar(image: Image, symbols: frozenset[int]) -> list[Hit]:
    """Scan with libzbar via pyzbar's ctypes wrapper (no orientation lookup, see module doc)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    hits: list[Hit] = []
    scanner = _zw.zbar_image_scanner_create()
    if not scanner:  # pragma: no cover - allocation failure
        raise MemoryError("zbar_image_scanner_create failed")
    try:
        _zw.zbar_image_scanner_set_config(scanner, 0, int(_zw.ZBarConfig.CFG_ENABLE), 0)
        for sym in symbols:
            _zw.zbar_image_scanner_set_config(scanner, sym, int(_zw.ZBarConfig.CFG_ENABLE), 1)
        if _QR_BINARY is not None:
            _zw.zbar_image_scanner_set_config(scanner, *_QR_BINARY)
        zimage = _zw.zbar_image_create()
        if not zimage:  # pragma: no cover
            raise MemoryError("zbar_image_create failed")
        try:
            _zw.zbar_image_set_format(zimage, _FOURCC_Y800)
            _zw.zbar_image_set_size(zimage, w, h)
            # zbar reads the array in place (no cleanup handler: numpy owns it,
            # and ``image`` outlives the scan).
            _zw.zbar_image_set_data(zimage, image.ctypes.data_as(ctypes.c_void_p), w * h, None)
            if _zw.zbar_scan_image(scanner, zimage) <= 0:
                return hits
            symbol = _zw.zbar_image_first_symbol(zimage)
            while symbol:
                kind = int(symbol.contents.type)
                length = _zw.zbar_symbol_get_data_length(symbol)
                data = ctypes.string_at(_zw.zbar_symbol_get_data(symbol), length)
                n = _zw.zbar_symbol_get_loc_size(symbol)
                points = tuple(
                    (
                        float(_zw.zbar_symbol_get_loc_x(symbol, i)),
                        float(_zw.zbar_symbol_get_loc_y(symbol, i)),
                    )
                    for i in range(n)
                )
                mods = _zbar_get_modifiers(symbol) if _zbar_get_modifiers else 0
                if kind in symbols:
                    hits.append(Hit(kind, data, points, bool(mods & _ZBAR_MOD_GS1), "zbar"))
                symbol = _zw.zbar_symbol_next(symbol)
        finally:
            _zw.zbar_image_destroy(zimage)
    finally:
        _zw.zbar_image_scanner_destroy(scanner)
    return hits


def opencv(image: Image, kind: str) -> list[Hit]:
    """OpenCV's QR detectors; ``kind`` is "opencv", "opencv-aruco" or "opencv-curved"."""
    hits: list[Hit] = []
    try:
        if kind == "opencv-curved":
            text, points, _ = cv2.QRCodeDetector().detectAndDecodeCurved(image)
            found = [(text.encode("utf-8"), points)] if text else []
        else:
            detector = cv2.QRCodeDetectorAruco() if kind == "opencv-aruco" else cv2.QRCodeDetector()
            ok, infos, points_list, _ = detector.detectAndDecodeBytesMulti(image)
            found = []
            if ok and infos:
                found = [(bytes(d), p) for d, p in zip(infos, points_list, strict=False) if d]
    except cv2.error as exc:
        # Known: OpenCV 5 "... mode 13 ... not implemented" on some symbols.
        _log.debug("OpenCV %s failed on a view: %s", kind, str(exc).strip().splitlines()[-1:])
        return hits
    for data, points in found:
        pts = tuple((float(x), float(y)) for x, y in np.asarray(points).reshape(-1, 2))
        hits.append(Hit(QR, data, pts, False, "opencv-aruco" if "aruco" in kind else "opencv"))
    return hits


def symbol_set(symbologies: Iterable[str]) -> frozenset[int]:
    out = set()
    for name in symbologies:
        try:
            out.add(ZBAR_SYMBOLS[name.upper()])
        except KeyError:
            raise PortConfigError(
                f"unknown symbology {name!r}; known: {', '.join(sorted(ZBAR_SYMBOLS))}"
            ) from None
    if not out:
        raise PortConfigError("no symbology enabled")
    return frozenset(out)


def library_versions() -> dict[str, str]:
    """Versions of the decoding stack, for benchmark and support reports."""
    versions = {"opencv": str(cv2.__version__)}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["pyzbar"] = metadata.version("pyzbar")
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["zxing-cpp"] = metadata.version("zxing-cpp")
    # zbar >= 0.23.1 takes a third pointer for the patch level; pyzbar declares two.
    uint_p = ctypes.POINTER(ctypes.c_uint)
    zbar_version = _zw.zbar_function("zbar_version", ctypes.c_int, uint_p, uint_p, uint_p)
    major, minor, patch = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    zbar_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    versions["libzbar"] = f"{major.value}.{minor.value}.{patch.value}"
    return versions
