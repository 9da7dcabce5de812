"""Perspective rectification: a QR code's square recovered from a photo taken at an angle.

``finder_rectified`` finds the three finder patterns (ISO/IEC 18004 §6.3) in a
thresholded image, estimates the version from their spacing, maps them to where
they sit in an upright symbol (a homography per hypothesis), and also re-draws
each rectified view from one sample per module. ``aruco_rectified`` does the
same from the quadrilateral OpenCV's ArUco-based detector reports.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from firmware_bridge.camera.bounds import Image, Matrix
from firmware_bridge.camera.views import Source, View, adaptive, odd, otsu

__all__ = ["aruco_rectified", "finder_rectified"]

_log = logging.getLogger(__name__)

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


def _finder_homographies(binary: Image) -> Iterator[tuple[int, Matrix]]:
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


def _rectified(gray: Image, version: int, homography: Matrix) -> View:
    size = (17 + 4 * version + 2 * _RECTIFY_QUIET) * _RECTIFY_PPM
    out = cv2.warpPerspective(
        gray, homography, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return View(out, np.linalg.inv(homography))


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


def _resampled(view: View, version: int) -> View:
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
    return View(out, view.to_source)


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


def finder_rectified(s: Source) -> Iterable[View]:
    """Perspective-correct from the finder patterns; each view also re-drawn from samples.

    Small images are upscaled for the contour search: at a pixel or two per
    module, contour areas no longer keep a finder's 49:25:9 proportions.
    """
    factor = max(1, min(4, math.ceil(_FINDER_SEARCH_SIDE / max(s.h, s.w))))
    if factor > 1:
        big = cv2.resize(s.gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        binaries = [adaptive(big, odd(max(15, min(big.shape[:2]) // 8)), 5), otsu(big)]
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
