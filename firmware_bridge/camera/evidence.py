"""Evidence: a frame kept as JPEG bytes with their SHA-256, at most ``EVIDENCE_MAX_SIDE``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from firmware_bridge.camera.bounds import to_gray
from firmware_bridge.errors import CameraError

__all__ = ["EVIDENCE_MAX_SIDE", "EVIDENCE_QUALITY", "Evidence", "encode_evidence"]


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
