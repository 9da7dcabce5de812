"""Camera: read QR and Code 128 seal codes from images, files, cameras and streams.

This is the only module of the project that imports ``cv2`` or ``pyzbar``.

Theory of operation
-------------------
``decode_image`` runs an ordered list of *passes* over one grayscale image. The
first ``collect_first`` passes always run and their codes are collected; after
them, the first pass that reads anything ends the search (``exhaustive=True``
runs them all). A pass builds one or more *views* of the image (scaled,
thresholded, inverted, perspective-rectified from the finder patterns or
OpenCV's detector, re-drawn from module samples) and hands each to a decoder:
zbar, or one of OpenCV's QR detectors. Every view carries the 3x3 matrix back
to source pixels, so a code's polygon is in the coordinates of the image passed
in. The order and content of ``DEFAULT_PASSES`` come from measurement on the
zxing-cpp sample photographs (``python -m bench qr --per-pass``): cheap passes
that read most images first, expensive rescue passes last.

zbar is called through pyzbar's ctypes wrapper rather than ``pyzbar.decode``:
pyzbar 0.1.9 turns libzbar 0.23's "unknown orientation" (-1, read as an
unsigned 4294967295) into ``ValueError: ... is not a valid ZBarOrientation``
and loses the whole image's results; we never ask for the orientation. The
wrapper also lets us switch zbar's QR decoder to binary mode (the payload bytes
as encoded, not zbar's charset guess, which turns UTF-8 "café" into Big5
mojibake) and read the GS1 modifier (FNC1 in first position), which pyzbar does
not expose. Text is then decoded like zxing does: UTF-8 when valid, Shift_JIS
when the bytes clearly are, else ISO-8859-1 (QR's default character set, ECI
000003 in ISO/IEC 18004). zbar reports a part of a structured-append message as
a partial symbol; parts are not seal codes and are dropped.

OpenCV's ``QRCodeDetector`` raises ``cv2.error`` ("... not implemented") on some
symbols; that view's OpenCV result is dropped and the search goes on. Nothing
else is caught.

Memory is bounded: files over ``MAX_FILE_BYTES`` or (by their header) over
``MAX_IMAGE_PIXELS`` are refused before decoding, an input larger than
``MAX_SIDE`` is downscaled first, upscaling passes only apply up to
``UPSCALE_MAX_SIDE``, evidence JPEGs are at most ``EVIDENCE_MAX_SIDE``, the
debouncer holds at most ``max_entries`` codes, and a live capture keeps
OpenCV's buffer at one frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from pyzbar import wrapper as _zw

from firmware_bridge.errors import CameraError, DisconnectedError, PortConfigError

__all__ = [
    "DEFAULT_COLLECT_FIRST",
    "DEFAULT_PASSES",
    "DEFAULT_SYMBOLOGIES",
    "FAST_PASSES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_SIDE",
    "PASSES",
    "CameraSource",
    "Debouncer",
    "Decoded",
    "Evidence",
    "FileResult",
    "Frame",
    "decode_file",
    "decode_files",
    "decode_image",
    "encode_evidence",
    "image_size",
    "library_versions",
    "payload_text",
    "read_image",
    "to_gray",
]

_log = logging.getLogger(__name__)

# OpenCV 5 ships type stubs whose arrays are "integer or floating": pixels and
# matrices are typed loosely here and their dtypes enforced at the edges.
Image = npt.NDArray[Any]  # uint8, one channel unless said otherwise
_Matrix = npt.NDArray[Any]  # float64, 3x3

# Bounds (STYLE.md §2). A 12 MP phone photo is 4000 px on its long side; codes
# on a seal stay readable at half that, and a grayscale 2560x2560 view is
# 6.5 MB, of which a pass holds a few at a time.
MAX_SIDE: Final = 2560
# Upscaling helps small, low-resolution codes (1-2 px per module); above this
# size it only costs time and memory (measured: no sample larger than this
# needed it).
UPSCALE_MAX_SIDE: Final = 800
# A photo or a short clip, not an archive: refuse before reading it.
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
# Refused before decoding (from the file header): 64 MP, a 48 MP phone photo
# fits; as BGRA that is 256 MiB, the most one decode may allocate. OpenCV's own
# limit (OPENCV_IO_MAX_IMAGE_PIXELS) is 2^30.
MAX_IMAGE_PIXELS: Final = 64 * 1024 * 1024

DEFAULT_SYMBOLOGIES: Final = ("QRCODE", "CODE128")

_ZBAR_SYMBOLS: Final = {s.name: int(s) for s in _zw.ZBarSymbol if s.value > 1}
_ZBAR_NAMES: Final = {v: k for k, v in _ZBAR_SYMBOLS.items()}
_FOURCC_Y800: Final = 0x30303859  # "Y800": 8-bit grayscale, one byte per pixel
_ZBAR_MOD_GS1: Final = 1 << 0  # zbar.h zbar_modifier_e ZBAR_MOD_GS1 (FNC1 in first position)
_QR: Final = int(_zw.ZBarSymbol.QRCODE)


# --- value objects -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decoded:
    """One code read from an image.

    ``text`` is the payload as text (see the module docstring for the charset
    rule) and ``raw`` the bytes the decoder returned: the exact payload for zbar;
    OpenCV reports non-UTF-8 payloads transcoded from ISO-8859-1 to UTF-8.
    ``gs1`` is True when the symbol starts with FNC1 (GS1-128, GS1 QR), which
    only zbar reports. ``polygon`` is in pixels of the image that was decoded;
    ``found_by`` names the pass and ``decoder`` the library that read it.
    """

    symbology: str  # zbar's name: "QRCODE", "CODE128", "EAN13", ...
    text: str
    raw: bytes = field(default=b"", repr=False)
    gs1: bool = False
    polygon: tuple[tuple[int, int], ...] = ()
    decoder: str = "zbar"  # "zbar" | "opencv" | "opencv-aruco"
    found_by: str = ""

    def __post_init__(self) -> None:
        if not self.symbology:
            raise ValueError("symbology must not be empty")
        if not isinstance(self.text, str):
            raise TypeError("text must be a str")

    @property
    def rect(self) -> tuple[int, int, int, int] | None:
        """Bounding box ``(left, top, width, height)`` of ``polygon``, if known."""
        if not self.polygon:
            return None
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)

    @property
    def key(self) -> tuple[str, str]:
        """What makes two reads the same code: symbology and text."""
        return self.symbology, self.text


@dataclass(frozen=True, slots=True)
class Evidence:
    """A frame encoded as JPEG, with the SHA-256 of exactly those bytes."""

    jpeg: bytes = field(repr=False)
    sha256: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if hashlib.sha256(self.jpeg).hexdigest() != self.sha256:
            raise ValueError("sha256 does not match the JPEG bytes")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame: BGR or grayscale pixels, its index and capture time."""

    image: Image = field(repr=False)
    index: int
    captured_at: float  # the source's clock (monotonic by default)
    source: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


# --- text ----------------------------------------------------------------------------------
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


def _opencv_text(data: bytes) -> str:
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


# --- image normalisation ------------------------------------------------------------------
def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise CameraError("not an image (empty or not a numpy array)")
    if image.dtype not in (np.uint8, np.uint16):
        raise CameraError(f"unsupported pixel type {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise CameraError(f"unsupported image shape {image.shape}")


def to_gray(image: npt.NDArray[Any]) -> Image:
    """8-bit single-channel view of a grayscale, BGR or BGRA (alpha over white) image."""
    _check_image(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        gray = image
    elif image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        # Transparent pixels are paper, not ink: composite over white.
        alpha = image[:, :, 3:4].astype(np.uint16)
        bgr = (image[:, :, :3] * alpha + 255 * (255 - alpha)) // 255
        gray = cv2.cvtColor(bgr.astype(np.uint8), cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(gray)


def _bounded_gray(image: npt.NDArray[Any]) -> tuple[Image, float]:
    """Grayscale, downscaled first to at most MAX_SIDE; and the factor applied."""
    _check_image(image)
    side = max(image.shape[:2])
    if side <= MAX_SIDE:
        return to_gray(image), 1.0
    f = MAX_SIDE / side
    return to_gray(cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)), f


# --- views: an image to decode plus the way back to source pixels --------------------------
@dataclass(frozen=True, slots=True)
class _View:
    image: Image
    to_source: _Matrix  # 3x3, view pixel -> source pixel


_IDENTITY: Final = np.eye(3)


def _scaled(image: Image, f: float, interpolation: int, to_source: _Matrix) -> _View:
    out = cv2.resize(image, None, fx=f, fy=f, interpolation=interpolation)
    back = np.diag([image.shape[1] / out.shape[1], image.shape[0] / out.shape[0], 1.0])
    return _View(out, to_source @ back)


def _rotated(image: Image, quarter_turns: int) -> _View:
    """Counter-clockwise by 90 degrees times ``quarter_turns``."""
    h, w = image.shape[:2]
    out = np.ascontiguousarray(np.rot90(image, quarter_turns))
    k = quarter_turns % 4
    # Where view pixel (x, y) came from in the source.
    back = {
        0: np.eye(3),
        1: np.array([[0.0, -1.0, w - 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        2: np.array([[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0], [0.0, 0.0, 1.0]]),
        3: np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, h - 1.0], [0.0, 0.0, 1.0]]),
    }[k]
    return _View(out, back)


def _padded(image: Image, pad: int, to_source: _Matrix) -> _View:
    out = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    shift = np.array([[1.0, 0.0, -pad], [0.0, 1.0, -pad], [0.0, 0.0, 1.0]])
    return _View(out, to_source @ shift)


def _otsu(image: Image) -> Image:
    return cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _adaptive(image: Image, block: int, c: int) -> Image:
    return cv2.adaptiveThreshold(
        image, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c
    )


class _Source:
    """The grayscale input of one ``decode_image`` call, with derived images cached."""

    def __init__(self, gray: Image) -> None:
        self.gray = gray
        self.h, self.w = int(gray.shape[0]), int(gray.shape[1])

    @property
    def small(self) -> bool:
        return max(self.h, self.w) <= UPSCALE_MAX_SIDE

    @cached_property
    def otsu(self) -> Image:
        return _otsu(self.gray)

    @cached_property
    def adaptive(self) -> Image:
        return _adaptive(self.gray, _odd(max(15, min(self.h, self.w) // 8)), 5)


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


# --- decoders ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Hit:
    symbol: int
    data: bytes
    points: tuple[tuple[float, float], ...]
    gs1: bool
    decoder: str


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


def _zbar(image: Image, symbols: frozenset[int]) -> list[_Hit]:
    """Scan with libzbar via pyzbar's ctypes wrapper (no orientation lookup, see module doc)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    hits: list[_Hit] = []
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
                    hits.append(_Hit(kind, data, points, bool(mods & _ZBAR_MOD_GS1), "zbar"))
                symbol = _zw.zbar_symbol_next(symbol)
        finally:
            _zw.zbar_image_destroy(zimage)
    finally:
        _zw.zbar_image_scanner_destroy(scanner)
    return hits


def _opencv(image: Image, kind: str) -> list[_Hit]:
    """OpenCV's QR detectors; ``kind`` is "opencv", "opencv-aruco" or "opencv-curved"."""
    hits: list[_Hit] = []
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
        hits.append(_Hit(_QR, data, pts, False, "opencv-aruco" if "aruco" in kind else "opencv"))
    return hits


# --- perspective: rectify from the three finder patterns (ISO/IEC 18004 §6.3) -------------
_FINDER_MODULE_CORNERS: Final = np.array([[0, 0], [7, 0], [7, 7], [0, 7]], np.float64)
_RECTIFY_PPM: Final = 6  # pixels per module of the rectified view
_RECTIFY_QUIET: Final = 4  # modules of quiet zone around it, as ISO/IEC 18004 requires
_MAX_FINDERS: Final = 8  # candidates kept per image: C(8,3) = 56 triples at most
_MAX_RECTIFY_VERSION: Final = 40
_MAX_RECTIFICATIONS: Final = 6  # (finder triple, version) hypotheses tried per image
_FINDER_SEARCH_SIDE: Final = 160  # smaller images are upscaled (up to 4x) to find finders


def _finder_candidates(binary: Image) -> list[npt.NDArray[np.float64]]:
    """Quadrilaterals of dark-light-dark nested squares with finder-like area ratios.

    A finder pattern is a 7x7 dark ring, a 5x5 light ring and a 3x3 dark core:
    areas 49:25:9, so the outer/middle ratio is about 2 and middle/core about 2.8.
    Perspective and blur move those, hence the wide bounds.
    """
    contours, hierarchy = cv2.findContours(255 - binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    tree = hierarchy[0]
    found: list[tuple[float, npt.NDArray[np.float64]]] = []
    for i, contour in enumerate(contours):
        area = cv2.contourArea(contour)
        child = tree[i][2]
        if area < 36 or child < 0 or tree[child][2] < 0:
            continue
        area_mid = cv2.contourArea(contours[child])
        area_core = cv2.contourArea(contours[tree[child][2]])
        if area_mid <= 0 or area_core <= 0:
            continue
        if not (1.3 < area / area_mid < 3.2 and 1.6 < area_mid / area_core < 5.0):
            continue
        quad = cv2.approxPolyDP(contour, 0.08 * cv2.arcLength(contour, True), True)
        if len(quad) != 4 or not cv2.isContourConvex(quad):
            continue
        found.append((area, quad.reshape(4, 2).astype(np.float64)))
    found.sort(key=lambda t: -t[0])
    return [q for _, q in found[:_MAX_FINDERS]]


def _corners_in_code_frame(
    quad: npt.NDArray[np.float64], u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64] | None:
    """Order a finder's corners as top-left, top-right, bottom-right, bottom-left of the code."""
    basis = np.array([u, v]).T
    if abs(np.linalg.det(basis)) < 1e-6:
        return None
    inv = np.linalg.inv(basis)
    center = quad.mean(axis=0)
    ordered: list[npt.NDArray[np.float64] | None] = [None] * 4
    for p in quad:
        a, b = inv @ (p - center)
        ordered[{(False, False): 0, (True, False): 1, (True, True): 2, (False, True): 3}[
            (bool(a > 0), bool(b > 0))
        ]] = p  # fmt: skip
    if any(p is None for p in ordered):
        return None
    return np.array(ordered, np.float64)


def _finder_homographies(binary: Image) -> Iterator[tuple[int, _Matrix]]:
    """(version, homography source -> rectified view) for plausible finder-pattern triples."""
    finders = _finder_candidates(binary)
    for triple in itertools.combinations(finders, 3):
        centers = [q.mean(axis=0) for q in triple]
        # The top-left finder is the one at the right angle (within 60 degrees of it:
        # perspective bends the angle).
        cosines = [
            _cos_angle(centers[(i + 1) % 3] - centers[i], centers[(i + 2) % 3] - centers[i])
            for i in range(3)
        ]
        best = int(np.argmin(cosines))
        if cosines[best] > 0.5:
            continue
        tl, p, q = best, (best + 1) % 3, (best + 2) % 3
        a, b = centers[p] - centers[tl], centers[q] - centers[tl]
        tr, bl = (p, q) if a[0] * b[1] - a[1] * b[0] > 0 else (q, p)  # image y points down
        u, v = centers[tr] - centers[tl], centers[bl] - centers[tl]
        quads = [_corners_in_code_frame(triple[i], u, v) for i in (tl, tr, bl)]
        if any(qd is None for qd in quads):
            continue
        module = float(np.mean([_quad_side(qd) for qd in quads if qd is not None])) / 7
        if module < 1.0:
            continue
        modules = (float(np.linalg.norm(u)) + float(np.linalg.norm(v))) / 2 / module + 7
        estimate = round((modules - 17) / 4)
        src = np.concatenate([qd for qd in quads if qd is not None])
        for version in sorted(
            {estimate, estimate - 1, estimate + 1}, key=lambda ver: abs(ver - estimate)
        ):
            if not 1 <= version <= _MAX_RECTIFY_VERSION:
                continue
            n = 17 + 4 * version
            dst = np.concatenate(
                [
                    _FINDER_MODULE_CORNERS,
                    _FINDER_MODULE_CORNERS + np.array([n - 7, 0]),
                    _FINDER_MODULE_CORNERS + np.array([0, n - 7]),
                ]
            )
            dst = (dst + _RECTIFY_QUIET) * _RECTIFY_PPM
            homography, _ = cv2.findHomography(src, dst, 0)
            if homography is not None:
                yield version, homography


def _cos_angle(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 or nb < 1e-9:
        return 1.0
    return abs(float(np.dot(a, b))) / (na * nb)


def _quad_side(q: npt.NDArray[np.float64]) -> float:
    return float(np.mean([np.linalg.norm(q[(i + 1) % 4] - q[i]) for i in range(4)]))


def _rectified(gray: Image, version: int, homography: _Matrix) -> _View:
    size = (17 + 4 * version + 2 * _RECTIFY_QUIET) * _RECTIFY_PPM
    out = cv2.warpPerspective(
        gray, homography, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return _View(out, np.linalg.inv(homography))


def _alignment_centres(version: int) -> list[int]:
    """Row/column centres of the alignment patterns (ISO/IEC 18004 Annex E, Table E.1).

    The table follows a rule: first at 6, last at size - 7, the rest evenly
    spaced by an even step (26 for version 32, the one exception).
    """
    if version == 1:
        return []
    count = version // 7 + 2
    step = 26 if version == 32 else (version * 4 + count * 2 + 1) // (count * 2 - 2) * 2
    size = 17 + 4 * version
    return [6, *sorted(size - 7 - i * step for i in range(count - 1))]


def _function_patterns(version: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(mask, dark) of the modules fixed by the version: finders with their separators,
    timing patterns, alignment patterns, the dark module (ISO/IEC 18004 §6.3)."""
    n = 17 + 4 * version
    mask = np.zeros((n, n), bool)
    dark = np.zeros((n, n), bool)
    mask[6, :] = mask[:, 6] = True
    dark[6, ::2] = dark[::2, 6] = True
    ring = np.zeros((7, 7), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    ring[2:5, 2:5] = True
    for r, c in ((0, 0), (0, n - 7), (n - 7, 0)):
        mask[max(r - 1, 0) : r + 8, max(c - 1, 0) : c + 8] = True
        dark[max(r - 1, 0) : r + 8, max(c - 1, 0) : c + 8] = False
        dark[r : r + 7, c : c + 7] = ring
    small = np.zeros((5, 5), bool)
    small[[0, -1], :] = small[:, [0, -1]] = True
    small[2, 2] = True
    centres = _alignment_centres(version)
    for r in centres:
        for c in centres:
            if (r, c) in ((6, 6), (6, n - 7), (n - 7, 6)):
                continue  # that corner holds a finder pattern
            mask[r - 2 : r + 3, c - 2 : c + 3] = True
            dark[r - 2 : r + 3, c - 2 : c + 3] = small
    mask[n - 8, 8] = dark[n - 8, 8] = True  # the dark module
    return mask, dark


def _resampled(view: _View, version: int) -> _View:
    """Re-draw a rectified code from one sample per module: an ideal symbol for zbar.

    Each module is read at its centre (3x3 blur) and thresholded with Otsu over
    all module samples; the modules the version fixes (finders, timing,
    alignment patterns) are drawn as the standard has them, which also repairs
    symbols printed without alignment patterns. What the sampling gets wrong in
    the data is left to the symbol's Reed-Solomon error correction.
    """
    n = 17 + 4 * version
    centres = ((np.arange(n) + _RECTIFY_QUIET + 0.5) * _RECTIFY_PPM).astype(np.intp)
    samples = cv2.GaussianBlur(view.image, (3, 3), 0)[np.ix_(centres, centres)]
    threshold, _ = cv2.threshold(samples, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    dark = samples <= threshold
    mask, fixed = _function_patterns(version)
    dark[mask] = fixed[mask]
    canvas = np.full((n + 2 * _RECTIFY_QUIET, n + 2 * _RECTIFY_QUIET), 255, np.uint8)
    canvas[_RECTIFY_QUIET : _RECTIFY_QUIET + n, _RECTIFY_QUIET : _RECTIFY_QUIET + n] = np.where(
        dark, 0, 255
    )
    out = cv2.resize(
        canvas, None, fx=_RECTIFY_PPM, fy=_RECTIFY_PPM, interpolation=cv2.INTER_NEAREST
    )
    return _View(out, view.to_source)


def _aruco_rectified(gray: Image) -> Iterator[_View]:
    """Views rectified from the quadrilateral OpenCV's ArUco-based detector finds."""
    try:
        ok, points = cv2.QRCodeDetectorAruco().detectMulti(gray)
    except cv2.error as exc:
        _log.debug("OpenCV detectMulti failed: %s", str(exc).strip().splitlines()[-1:])
        return
    if not ok or points is None:
        return
    side, margin = 400.0, 40.0
    dst = np.array(
        [
            [margin, margin],
            [margin + side, margin],
            [margin + side, margin + side],
            [margin, margin + side],
        ],
        np.float64,
    )
    for quad in np.asarray(points, np.float64).reshape(-1, 4, 2):
        homography = cv2.getPerspectiveTransform(quad.astype(np.float32), dst.astype(np.float32))
        size = int(side + 2 * margin)
        out = cv2.warpPerspective(
            gray, homography, (size, size), flags=cv2.INTER_CUBIC, borderValue=255
        )
        yield _View(out, np.linalg.inv(homography))


# --- passes --------------------------------------------------------------------------------
_Decoder = str  # "zbar" | "opencv" | "opencv-aruco" | "opencv-curved"


@dataclass(frozen=True, slots=True)
class _Pass:
    name: str
    views: Callable[[_Source], Iterable[_View]]
    decoders: tuple[_Decoder, ...] = ("zbar",)
    qr_only: bool = False  # skipped when QR is not among the symbologies asked for


def _v_plain(s: _Source) -> Iterable[_View]:
    yield _View(s.gray, _IDENTITY)


def _v_upscale2(s: _Source) -> Iterable[_View]:
    if s.small:
        yield _scaled(s.gray, 2.0, cv2.INTER_CUBIC, _IDENTITY)


def _v_half(s: _Source) -> Iterable[_View]:
    if min(s.h, s.w) >= 120:
        yield _scaled(s.gray, 0.5, cv2.INTER_AREA, _IDENTITY)


def _v_otsu(s: _Source) -> Iterable[_View]:
    yield _View(s.otsu, _IDENTITY)


def _v_adaptive(s: _Source) -> Iterable[_View]:
    yield _View(s.adaptive, _IDENTITY)


def _v_blur(s: _Source) -> Iterable[_View]:
    yield _View(cv2.GaussianBlur(s.gray, (5, 5), 0), _IDENTITY)


def _v_inverted(s: _Source) -> Iterable[_View]:
    yield _View(255 - s.gray, _IDENTITY)


def _v_quiet_zone(s: _Source) -> Iterable[_View]:
    """A code cropped to its edge (no quiet zone): add white, upscale pixel art."""
    view = _View(s.gray, _IDENTITY)
    if s.small:
        f = max(1, round(600 / max(s.h, s.w)))
        if f > 1:
            view = _scaled(s.gray, f, cv2.INTER_NEAREST, _IDENTITY)
    yield _padded(view.image, max(8, max(view.image.shape) // 10), view.to_source)


def _v_rotations(s: _Source) -> Iterable[_View]:
    for k in (1, 2, 3):
        yield _rotated(s.gray, k)


def _v_dots(s: _Source) -> Iterable[_View]:
    """Dot-style modules: halve, then thicken the ink (3x3 min filter) so dots touch."""
    if min(s.h, s.w) >= 120:
        half = _scaled(s.gray, 0.5, cv2.INTER_AREA, _IDENTITY)
        yield _View(cv2.erode(half.image, np.ones((3, 3), np.uint8)), half.to_source)


def _v_finder_rectified(s: _Source) -> Iterable[_View]:
    """Perspective-correct from the finder patterns; each view also re-drawn from samples.

    Small images are upscaled for the contour search: at a pixel or two per
    module, contour areas no longer keep a finder's 49:25:9 proportions.
    """
    factor = max(1, min(4, math.ceil(_FINDER_SEARCH_SIDE / max(s.h, s.w))))
    if factor > 1:
        big = cv2.resize(s.gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        binaries = [_adaptive(big, _odd(max(15, min(big.shape[:2]) // 8)), 5), _otsu(big)]
    else:
        binaries = [s.adaptive, s.otsu]
    to_search = np.diag([float(factor), float(factor), 1.0])
    tried = 0
    for binary in binaries:
        for version, homography in _finder_homographies(binary):
            view = _rectified(s.gray, version, homography @ to_search)
            yield view
            yield _resampled(view, version)
            tried += 1
            if tried >= _MAX_RECTIFICATIONS:
                return


def _v_aruco_rectified(s: _Source) -> Iterable[_View]:
    yield from _aruco_rectified(s.gray)


def _v_plain_and_upscale15(s: _Source) -> Iterable[_View]:
    yield _View(s.gray, _IDENTITY)
    if s.small:
        yield _scaled(s.gray, 1.5, cv2.INTER_CUBIC, _IDENTITY)


PASSES: Final[dict[str, _Pass]] = {
    p.name: p
    for p in (
        _Pass("plain", _v_plain),
        _Pass("upscale2", _v_upscale2),
        _Pass("half", _v_half),
        _Pass("otsu", _v_otsu),
        _Pass("adaptive", _v_adaptive),
        _Pass("blur", _v_blur),
        _Pass("inverted", _v_inverted),
        _Pass("quiet-zone", _v_quiet_zone),
        _Pass("rotations", _v_rotations),
        _Pass("dots", _v_dots, qr_only=True),
        _Pass("finder-rectified", _v_finder_rectified, qr_only=True),
        _Pass("aruco-rectified", _v_aruco_rectified, qr_only=True),
        _Pass("opencv", _v_plain, ("opencv",), qr_only=True),
        _Pass("opencv-upscale2", _v_upscale2, ("opencv",), qr_only=True),
        _Pass("opencv-aruco", _v_plain, ("opencv-aruco",), qr_only=True),
        _Pass("opencv-aruco-upscale2", _v_upscale2, ("opencv-aruco",), qr_only=True),
        _Pass("opencv-curved", _v_plain_and_upscale15, ("opencv-curved",), qr_only=True),
    )
}

# Order and content measured on the zxing-cpp samples (``python -m bench qr``,
# which also reports what each pass reads on its own). The first two always run
# (``DEFAULT_COLLECT_FIRST``): the upscaled view reads a second, nested code
# that the plain view misses, at about 7 ms more per image (median). After
# that, cheap passes first, the perspective and OpenCV rescues last. The other
# registered passes (adaptive, quiet-zone, rotations, plain OpenCV detectors)
# read nothing these do not; they stay available by name.
DEFAULT_PASSES: Final[tuple[str, ...]] = (
    "plain",
    "upscale2",
    "half",
    "otsu",
    "dots",
    "blur",
    "inverted",
    "aruco-rectified",
    "finder-rectified",
    "opencv-curved",
)
DEFAULT_COLLECT_FIRST: Final = 2
# For live video, where the next frame is the retry: full-size and half-size zbar only.
FAST_PASSES: Final[tuple[str, ...]] = ("plain", "half")


# --- decoding ------------------------------------------------------------------------------
def _symbols(symbologies: Iterable[str]) -> frozenset[int]:
    out = set()
    for name in symbologies:
        try:
            out.add(_ZBAR_SYMBOLS[name.upper()])
        except KeyError:
            raise PortConfigError(
                f"unknown symbology {name!r}; known: {', '.join(sorted(_ZBAR_SYMBOLS))}"
            ) from None
    if not out:
        raise PortConfigError("no symbology enabled")
    return frozenset(out)


def _polygon(
    points: Sequence[tuple[float, float]], to_source: _Matrix, scale: float
) -> tuple[tuple[int, int], ...]:
    if not points:
        return ()
    pts = np.array(points, np.float64).reshape(-1, 1, 2)
    mapped = cv2.perspectiveTransform(pts, to_source).reshape(-1, 2) / scale
    hull = cv2.convexHull(mapped.astype(np.float32)).reshape(-1, 2)
    return tuple((round(float(x)), round(float(y))) for x, y in hull)


def decode_image(
    image: npt.NDArray[Any],
    *,
    symbologies: Iterable[str] = DEFAULT_SYMBOLOGIES,
    passes: Sequence[str] = DEFAULT_PASSES,
    collect_first: int = DEFAULT_COLLECT_FIRST,
    exhaustive: bool = False,
) -> list[Decoded]:
    """Read every code in ``image`` (grayscale, BGR or BGRA, ``uint8`` or ``uint16``).

    The first ``collect_first`` of ``passes`` always run; after them, the first
    pass that finds anything ends the search (``exhaustive`` runs every pass).
    Codes are deduplicated by symbology and text, the first read kept. Raises
    ``CameraError`` for something that is not an image, ``PortConfigError`` for
    an unknown symbology or pass name; finding nothing returns ``[]``.
    """
    symbols = _symbols(symbologies)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise PortConfigError(f"unknown decode pass(es) {unknown}; known: {', '.join(PASSES)}")
    gray, scale = _bounded_gray(image)
    source = _Source(gray)
    found: dict[tuple[str, str], Decoded] = {}
    for done, name in enumerate(passes, 1):
        spec = PASSES[name]
        if spec.qr_only and _QR not in symbols:
            continue
        for view in spec.views(source):
            for decoder in spec.decoders:
                for item in _decode_view(view, decoder, symbols, scale, name):
                    found.setdefault(item.key, item)
        if found and done >= collect_first and not exhaustive:
            break
    return list(found.values())


def _decode_view(
    view: _View, decoder: _Decoder, symbols: frozenset[int], scale: float, pass_name: str
) -> Iterator[Decoded]:
    if decoder == "zbar":
        hits = _zbar(view.image, symbols)
    elif _QR in symbols:
        hits = _opencv(view.image, decoder)
    else:
        hits = []
    for hit in hits:
        symbology = _ZBAR_NAMES.get(hit.symbol, str(hit.symbol))
        if hit.decoder == "zbar":
            text = payload_text(hit.data, symbology)
        else:
            text = _opencv_text(hit.data)
        yield Decoded(
            symbology=symbology,
            text=text,
            raw=hit.data,
            gs1=hit.gs1,
            polygon=_polygon(hit.points, view.to_source, scale),
            decoder=hit.decoder,
            found_by=pass_name,
        )


def read_image(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Load an image file unchanged (alpha and 16-bit kept); ``CameraError`` if unreadable.

    Bounded before decoding: at most ``MAX_FILE_BYTES`` read, and at most
    ``MAX_IMAGE_PIXELS`` decoded when the header (PNG, JPEG, WebP, GIF, BMP)
    tells the size, so a small file cannot inflate into gigabytes.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CameraError(f"{p}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit")
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise CameraError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    dims = image_size(data[:_HEADER_PROBE_BYTES].tobytes())
    if dims is not None and dims[0] * dims[1] > MAX_IMAGE_PIXELS:
        raise CameraError(
            f"{p}: {dims[0]}x{dims[1]} pixels is over the {MAX_IMAGE_PIXELS}-pixel limit"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:
        raise CameraError(f"{p}: OpenCV cannot decode it: {str(exc).strip()}") from exc
    if image is None or image.size == 0:
        raise CameraError(f"{p}: not a readable image (OpenCV could not decode it)")
    return image


_HEADER_PROBE_BYTES: Final = 64 * 1024  # JPEG EXIF/ICC segments come before the frame header
_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def image_size(header: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, JPEG, WebP, GIF or BMP file, else None."""
    h = header
    if h[:8] == b"\x89PNG\r\n\x1a\n" and h[12:16] == b"IHDR" and len(h) >= 24:
        return int.from_bytes(h[16:20], "big"), int.from_bytes(h[20:24], "big")
    if h[:6] in (b"GIF87a", b"GIF89a") and len(h) >= 10:
        return int.from_bytes(h[6:8], "little"), int.from_bytes(h[8:10], "little")
    if h[:2] == b"BM" and len(h) >= 26:
        width = int.from_bytes(h[18:22], "little", signed=True)
        return abs(width), abs(int.from_bytes(h[22:26], "little", signed=True))
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP" and len(h) >= 30:
        chunk = h[12:16]
        if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key-frame start code
            return int.from_bytes(h[26:28], "little") & 0x3FFF, int.from_bytes(
                h[28:30], "little"
            ) & 0x3FFF
        if chunk == b"VP8L":  # lossless: 14-bit width-1, 14-bit height-1
            bits = int.from_bytes(h[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":  # extended: 24-bit canvas width-1, height-1
            return int.from_bytes(h[24:27], "little") + 1, int.from_bytes(h[27:30], "little") + 1
        return None
    if h[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(h):
            if h[i] != 0xFF:
                return None
            marker = h[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # no length field
                i += 2
                continue
            if marker in _JPEG_SOF:
                return int.from_bytes(h[i + 7 : i + 9], "big"), int.from_bytes(
                    h[i + 5 : i + 7], "big"
                )
            i += 2 + int.from_bytes(h[i + 2 : i + 4], "big")
    return None


def decode_file(
    path: str | os.PathLike[str],
    *,
    symbologies: Iterable[str] = DEFAULT_SYMBOLOGIES,
    passes: Sequence[str] = DEFAULT_PASSES,
    collect_first: int = DEFAULT_COLLECT_FIRST,
    exhaustive: bool = False,
) -> list[Decoded]:
    """``decode_image`` on an image file; ``CameraError`` when the file is not a readable image."""
    return decode_image(
        read_image(path),
        symbologies=symbologies,
        passes=passes,
        collect_first=collect_first,
        exhaustive=exhaustive,
    )


@dataclass(frozen=True, slots=True)
class FileResult:
    """What ``decode_files`` made of one file: its codes, or why it could not be read."""

    path: str
    codes: tuple[Decoded, ...] = ()
    error: str | None = None  # CameraError message when the file is not a readable image

    @property
    def ok(self) -> bool:
        return self.error is None


def decode_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    symbologies: Iterable[str] = DEFAULT_SYMBOLOGIES,
    passes: Sequence[str] = DEFAULT_PASSES,
    collect_first: int = DEFAULT_COLLECT_FIRST,
) -> Iterator[FileResult]:
    """Decode files one by one; an unreadable image is a result with ``error``, not a raise.

    Symbologies and passes are checked before the first file, so a bad option
    still raises ``PortConfigError`` at once rather than once per file.
    """
    symbols = tuple(symbologies)
    _symbols(symbols)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise PortConfigError(f"unknown decode pass(es) {unknown}; known: {', '.join(PASSES)}")
    for path in paths:
        try:
            codes = decode_file(
                path, symbologies=symbols, passes=passes, collect_first=collect_first
            )
        except CameraError as exc:
            yield FileResult(os.fspath(path), error=str(exc))
        else:
            yield FileResult(os.fspath(path), tuple(codes))


def library_versions() -> dict[str, str]:
    """Versions of the decoding stack, for benchmark and support reports."""
    versions = {"opencv": str(cv2.__version__)}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["pyzbar"] = metadata.version("pyzbar")
    # zbar >= 0.23.1 takes a third pointer for the patch level; pyzbar declares two.
    uint_p = ctypes.POINTER(ctypes.c_uint)
    zbar_version = _zw.zbar_function("zbar_version", ctypes.c_int, uint_p, uint_p, uint_p)
    major, minor, patch = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    zbar_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    versions["libzbar"] = f"{major.value}.{minor.value}.{patch.value}"
    return versions


# --- evidence ------------------------------------------------------------------------------
EVIDENCE_MAX_SIDE: Final = 1920
EVIDENCE_QUALITY: Final = 90


def encode_evidence(
    image: npt.NDArray[Any], *, quality: int = EVIDENCE_QUALITY, max_side: int = EVIDENCE_MAX_SIDE
) -> Evidence:
    """Encode a frame as baseline JPEG (downscaled to ``max_side``) and hash those bytes.

    The hash is of the bytes returned, so it is stable for the stored evidence;
    re-encoding the same pixels with the same libjpeg gives the same bytes, but
    the evidence is the bytes, not the pixels.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise CameraError("not an image (empty or not a numpy array)")
    if image.dtype != np.uint8:
        image = to_gray(image)
    side = max(image.shape[:2])
    if side > max_side:
        f = max_side / side
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("OpenCV could not encode the frame as JPEG")
    jpeg = buf.tobytes()
    return Evidence(
        jpeg, hashlib.sha256(jpeg).hexdigest(), int(image.shape[1]), int(image.shape[0])
    )


# --- debouncing ----------------------------------------------------------------------------
class Debouncer:
    """Report a code once while it stays in view.

    A code is reported when it has not been seen for ``window_s`` seconds; every
    sighting restarts its window, so a seal held in front of the camera for a
    minute is one report, and shown again after ``window_s`` of absence it is a
    new one. Time comes from ``now`` or the injected ``clock`` (never slept on).
    At most ``max_entries`` codes are remembered; the least recently seen is
    forgotten first (it would be reported again if it came back).
    """

    def __init__(
        self,
        window_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1024,
    ) -> None:
        if not window_s > 0 or not math.isfinite(window_s):
            raise ValueError(f"window_s must be a positive number, got {window_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._last_seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.suppressed = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last_seen)

    def admit(self, key: tuple[str, str] | str, now: float | None = None) -> bool:
        """Record a sighting of ``key``; True when it should be reported."""
        t = self._clock() if now is None else now
        k = ("", key) if isinstance(key, str) else key
        last = self._last_seen.pop(k, None)
        self._last_seen[k] = t
        self._expire(t)
        if last is not None and t - last < self.window_s:
            self.suppressed += 1
            return False
        return True

    def filter(self, codes: Iterable[Decoded], now: float | None = None) -> list[Decoded]:
        """The codes among ``codes`` to report now (each key at most once per call)."""
        t = self._clock() if now is None else now
        out: list[Decoded] = []
        keys: set[tuple[str, str]] = set()
        for code in codes:
            if code.key in keys:
                continue
            keys.add(code.key)
            if self.admit(code.key, t):
                out.append(code)
        return out

    def _expire(self, now: float) -> None:
        while self._last_seen:
            key, seen = next(iter(self._last_seen.items()))
            if now - seen >= self.window_s or len(self._last_seen) > self.max_entries:
                del self._last_seen[key]
                if now - seen < self.window_s:
                    self.evicted += 1
            else:
                break


# --- capture -------------------------------------------------------------------------------
_IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
)
_STREAM_SCHEMES: Final = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


class CameraSource:
    """Frames from a camera, a video or image file, or a network stream (STYLE.md §6, §7).

    ``url`` is a device index (``0``, ``"0"``, ``"/dev/video0"``), a file path or
    ``file://`` URL (an image file yields its one frame; a video its frames), or
    an ``rtsp://``/``http(s)://`` stream. A thin shell over ``cv2.VideoCapture``:
    no threads, no decoding. Frames larger than ``max_side`` are downscaled.

    Errors: a file that cannot be opened is ``CameraError``; a camera or stream
    that cannot be opened or stops delivering is ``DisconnectedError`` (the
    supervisor retries); a file simply ends (``read`` returns None).
    """

    def __init__(
        self,
        url: str | int | os.PathLike[str],
        *,
        max_side: int = MAX_SIDE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.max_side = max_side
        self._clock = clock
        self.kind, self._target = _classify_source(url)
        self._capture: Any = None
        self._still: npt.NDArray[Any] | None = None
        self._index = 0
        self.frames_read = 0

    @property
    def live(self) -> bool:
        return self.kind in ("device", "stream")

    def open(self) -> None:
        if self._capture is not None or self._still is not None:
            return
        if self.kind == "image":
            self._still = read_image(str(self._target))
            return
        if self.kind == "video":
            path = Path(str(self._target))
            if not path.is_file():
                raise CameraError(f"{path}: no such video file")
        try:
            capture = cv2.VideoCapture(self._target)
        except cv2.error as exc:
            raise self._open_error(str(exc).strip()) from exc
        if not capture.isOpened():
            capture.release()
            raise self._open_error("OpenCV cannot open it")
        if self.live:
            # Latest frame, not a backlog: bounded memory and no stale frames.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture

    def _open_error(self, reason: str) -> CameraError | DisconnectedError:
        message = f"{self.kind} {self.url!r}: {reason}"
        return DisconnectedError(message) if self.live else CameraError(message)

    def read(self) -> Frame | None:
        """The next frame, or None when a file source is exhausted."""
        self.open()
        if self._still is not None:
            if self._index > 0:
                return None
            return self._frame(self._still)
        try:
            ok, image = self._capture.read()
        except cv2.error as exc:
            raise DisconnectedError(f"{self.kind} {self.url!r}: {str(exc).strip()}") from exc
        if not ok or image is None:
            if self.live:
                raise DisconnectedError(f"{self.kind} {self.url!r}: no frame")
            return None
        return self._frame(image)

    def _frame(self, image: npt.NDArray[Any]) -> Frame:
        side = max(image.shape[:2])
        if side > self.max_side:
            f = self.max_side / side
            image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        frame = Frame(image, self._index, self._clock(), str(self.url))
        self._index += 1
        self.frames_read += 1
        return frame

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        """Iterate frames until the file ends or ``limit`` frames were read."""
        while limit is None or self._index < limit:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._still = None

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _classify_source(url: str | int | os.PathLike[str]) -> tuple[str, Any]:
    """("device" | "stream" | "image" | "video", what cv2.VideoCapture / imread takes)."""
    if isinstance(url, bool):
        raise PortConfigError(f"not a camera source: {url!r}")
    if isinstance(url, int):
        if url < 0:
            raise PortConfigError(f"camera index must be >= 0, got {url}")
        return "device", url
    text = os.fspath(url)
    if text.isdigit():
        return "device", int(text)
    if text.startswith("/dev/video") and text[len("/dev/video") :].isdigit():
        return "device", int(text[len("/dev/video") :])
    if text.lower().startswith(_STREAM_SCHEMES):
        return "stream", text
    if text.startswith("file://"):
        text = text[len("file://") :]
    if not text:
        raise PortConfigError("empty camera source")
    kind = "image" if Path(text).suffix.lower() in _IMAGE_SUFFIXES else "video"
    return kind, text
