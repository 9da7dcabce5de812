"""Views: an image to hand to a decoder, plus the 3x3 matrix back to source pixels.

Every view a pass builds (scaled, thresholded, rotated, padded, rectified)
carries the way back, so a code's polygon is reported in the coordinates of the
image passed to ``decode_image``. ``Source`` is that image in grayscale, with the
derived images several passes share computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

import cv2
import numpy as np

from firmware_bridge.camera import bounds
from firmware_bridge.camera.bounds import Image, Matrix

__all__ = ["IDENTITY", "Source", "View", "adaptive", "odd", "otsu", "padded", "rotated", "scaled"]


@dataclass(frozen=True, slots=True)
class View:
    image: Image
    to_source: Matrix  # 3x3, view pixel -> source pixel


IDENTITY: Final = np.eye(3)


def scaled(image: Image, f: float, interpolation: int, to_source: Matrix) -> View:
    out = cv2.resize(image, None, fx=f, fy=f, interpolation=interpolation)
    back = np.diag([image.shape[1] / out.shape[1], image.shape[0] / out.shape[0], 1.0])
    return View(out, to_source @ back)


def rotated(image: Image, quarter_turns: int) -> View:
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
    return View(out, back)


def padded(image: Image, pad: int, to_source: Matrix) -> View:
    out = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    shift = np.array([[1.0, 0.0, -pad], [0.0, 1.0, -pad], [0.0, 0.0, 1.0]])
    return View(out, to_source @ shift)


def otsu(image: Image) -> Image:
    return cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def adaptive(image: Image, block: int, c: int) -> Image:
    return cv2.adaptiveThreshold(
        image, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c
    )


class Source:
    """The grayscale input of one ``decode_image`` call, with derived images cached."""

    def __init__(self, gray: Image) -> None:
        self.gray = gray
        self.h, self.w = int(gray.shape[0]), int(gray.shape[1])

    @property
    def small(self) -> bool:
        return max(self.h, self.w) <= bounds.UPSCALE_MAX_SIDE

    @cached_property
    def otsu(self) -> Image:
        return otsu(self.gray)

    @cached_property
    def adaptive(self) -> Image:
        return adaptive(self.gray, odd(max(15, min(self.h, self.w) // 8)), 5)


def odd(n: int) -> int:
    return n if n % 2 else n + 1
