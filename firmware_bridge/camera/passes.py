"""The decode passes: named (views, decoders) pairs, and the default order measured on photos.

A pass builds one or more views of the image (scaled, thresholded, inverted,
perspective-rectified) and hands each to its decoders: zxing-cpp, zbar or one
of OpenCV's QR detectors. The order and content of ``DEFAULT_PASSES`` come from measurement on
the zxing-cpp sample photographs (``python -m bench qr --per-pass``): cheap
passes that read most images first, expensive rescue passes last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from firmware_bridge.camera.rectify import aruco_rectified
from firmware_bridge.camera.views import IDENTITY, Source, View, padded, rotated, scaled

__all__ = ["DEFAULT_COLLECT_FIRST", "DEFAULT_PASSES", "FAST_PASSES", "PASSES", "Decoder", "Pass"]

Decoder = str  # "zbar" | "zxing-cpp" | "opencv" | "opencv-aruco" | "opencv-curved"


@dataclass(frozen=True, slots=True)
class Pass:
    name: str
    views: Callable[[Source], Iterable[View]]
    decoders: tuple[Decoder, ...] = ("zbar",)
    qr_only: bool = False  # skipped when QR is not among the symbologies asked for


def _v_plain(s: Source) -> Iterable[View]:
    yield View(s.gray, IDENTITY)


def _v_upscale2(s: Source) -> Iterable[View]:
    if s.small:
        yield scaled(s.gray, 2.0, cv2.INTER_CUBIC, IDENTITY)


def _v_half(s: Source) -> Iterable[View]:
    if min(s.h, s.w) >= 120:
        yield scaled(s.gray, 0.5, cv2.INTER_AREA, IDENTITY)


def _v_otsu(s: Source) -> Iterable[View]:
    yield View(s.otsu, IDENTITY)


def _v_adaptive(s: Source) -> Iterable[View]:
    yield View(s.adaptive, IDENTITY)


def _v_blur(s: Source) -> Iterable[View]:
    yield View(cv2.GaussianBlur(s.gray, (5, 5), 0), IDENTITY)


def _v_inverted(s: Source) -> Iterable[View]:
    yield View(255 - s.gray, IDENTITY)


def _v_quiet_zone(s: Source) -> Iterable[View]:
    """A code cropped to its edge (no quiet zone): add white, upscale pixel art."""
    view = View(s.gray, IDENTITY)
    if s.small:
        f = max(1, round(600 / max(s.h, s.w)))
        if f > 1:
            view = scaled(s.gray, f, cv2.INTER_NEAREST, IDENTITY)
    yield padded(view.image, max(8, max(view.image.shape) // 10), view.to_source)


def _v_rotations(s: Source) -> Iterable[View]:
    for k in (1, 2, 3):
        yield rotated(s.gray, k)


def _v_dots(s: Source) -> Iterable[View]:
    """Dot-style modules: halve, then thicken the ink (3x3 min filter) so dots touch."""
    if min(s.h, s.w) >= 120:
        half = scaled(s.gray, 0.5, cv2.INTER_AREA, IDENTITY)
        yield View(cv2.erode(half.image, np.ones((3, 3), np.uint8)), half.to_source)


def _v_plain_and_upscale15(s: Source) -> Iterable[View]:
    yield View(s.gray, IDENTITY)
    if s.small:
        yield scaled(s.gray, 1.5, cv2.INTER_CUBIC, IDENTITY)


PASSES: Final[dict[str, Pass]] = {
    p.name: p
    for p in (
        Pass("zxing-cpp", _v_plain, ("zxing-cpp",)),
        Pass("plain", _v_plain),
        Pass("upscale2", _v_upscale2),
        Pass("half", _v_half),
        Pass("otsu", _v_otsu),
        Pass("adaptive", _v_adaptive),
        Pass("blur", _v_blur),
        Pass("inverted", _v_inverted),
        Pass("quiet-zone", _v_quiet_zone),
        Pass("rotations", _v_rotations),
        Pass("dots", _v_dots, qr_only=True),
        Pass("aruco-rectified", aruco_rectified, qr_only=True),
        Pass("opencv", _v_plain, ("opencv",), qr_only=True),
        Pass("opencv-upscale2", _v_upscale2, ("opencv",), qr_only=True),
        Pass("opencv-aruco", _v_plain, ("opencv-aruco",), qr_only=True),
        Pass("opencv-aruco-upscale2", _v_upscale2, ("opencv-aruco",), qr_only=True),
        Pass("opencv-curved", _v_plain_and_upscale15, ("opencv-curved",), qr_only=True),
    )
}

# Order and content measured on the zxing-cpp samples (``python -m bench qr``,
# which also reports what each pass reads on its own). zxing-cpp runs first and
# alone when it reads anything (``DEFAULT_COLLECT_FIRST``): it reads more of the
# photographs than all the zbar and OpenCV passes together, both codes of a QR
# nested in a QR, and Code 128 with FNC4, in about a millisecond. The zbar and
# OpenCV passes after it are rescues for what it misses (a few wrinkled or
# low-contrast prints): cheap ones first, OpenCV's last. Figures are in
# bench/qr.py. The other registered passes (adaptive, quiet-zone, rotations,
# plain OpenCV detectors) read nothing these do not; they stay available by name.
DEFAULT_PASSES: Final[tuple[str, ...]] = (
    "zxing-cpp",
    "plain",
    "upscale2",
    "half",
    "otsu",
    "dots",
    "blur",
    "inverted",
    "aruco-rectified",
    "opencv-curved",
)
DEFAULT_COLLECT_FIRST: Final = 1
# For live video, where the next frame is the retry: full-size and half-size zbar only.
FAST_PASSES: Final[tuple[str, ...]] = ("plain", "half")
