"""Memory bounds (STYLE.md §2) and the grayscale normalisation every decode starts from.

Files over ``MAX_FILE_BYTES`` or (by their header) over ``MAX_IMAGE_PIXELS`` are
refused before decoding (``files``), an input larger than ``MAX_SIDE`` is
downscaled first, and upscaling views only apply up to ``UPSCALE_MAX_SIDE``.
Other modules read these limits as ``bounds.NAME`` at call time, so a test can
lower one with ``monkeypatch.setattr(bounds, NAME, ...)``.
"""

from __future__ import annotations

from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from firmware_bridge.errors import CameraError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_SIDE",
    "UPSCALE_MAX_SIDE",
    "Image",
    "Matrix",
    "bounded_gray",
    "check_image",
    "to_gray",
]

# OpenCV 5 ships type stubs whose arrays are "integer or floating": pixels and
# matrices are typed loosely here and their dtypes enforced at the edges.
Image = npt.NDArray[Any]  # uint8, one channel unless said otherwise
Matrix = npt.NDArray[Any]  # float64, 3x3

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


def check_image(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise CameraError("not an image (empty or not a numpy array)")
    if image.dtype not in (np.uint8, np.uint16):
        raise CameraError(f"unsupported pixel type {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise CameraError(f"unsupported image shape {image.shape}")


def to_gray(image: npt.NDArray[Any]) -> Image:
    """8-bit single-channel view of a grayscale, BGR or BGRA (alpha over white) image."""
    check_image(image)
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


def bounded_gray(image: npt.NDArray[Any]) -> tuple[Image, float]:
    """Grayscale, downscaled first to at most MAX_SIDE; and the factor applied."""
    check_image(image)
    side = max(image.shape[:2])
    if side <= MAX_SIDE:
        return to_gray(image), 1.0
    f = MAX_SIDE / side
    return to_gray(cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)), f
