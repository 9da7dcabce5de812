"""Perspective rectification from the quadrilateral OpenCV's ArUco-based QR detector reports.

The view is the code warped to an upright square with a white margin; the
inverse homography maps its polygon back to source pixels. (A hand-written
finder-pattern search, homography and module resampler used to sit here too;
zxing-cpp, the first decode pass, locates and samples perspective-distorted
codes itself, and the benchmark showed that pass read nothing more once
zxing-cpp ran first, so it was removed.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import cv2
import numpy as np

from firmware_bridge.camera.views import Source, View

__all__ = ["aruco_rectified"]

_log = logging.getLogger(__name__)


def aruco_rectified(s: Source) -> Iterator[View]:
    """Views rectified from the quadrilateral OpenCV's ArUco-based detector finds."""
    gray = s.gray
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
        yield View(out, np.linalg.inv(homography))
