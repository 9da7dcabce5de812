"""``decode_image``: run the passes over one image until a code is read.

The first ``collect_first`` passes always run and their codes are collected;
after them, the first pass that reads anything ends the search
(``exhaustive=True`` runs them all). Codes are deduplicated by symbology and
text, the first read kept, and their polygons mapped back to the pixels of the
image passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from firmware_bridge.camera import zxing
from firmware_bridge.camera.bounds import Matrix, bounded_gray
from firmware_bridge.camera.charset import opencv_text, payload_text
from firmware_bridge.camera.decoders import (
    DEFAULT_SYMBOLOGIES,
    QR,
    ZBAR_NAMES,
    opencv,
    symbol_set,
    zbar,
)
from firmware_bridge.camera.passes import DEFAULT_COLLECT_FIRST, DEFAULT_PASSES, PASSES, Decoder
from firmware_bridge.camera.views import Source, View
from firmware_bridge.errors import PortConfigError

__all__ = ["Decoded", "check_passes", "decode_image"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """One code read from an image.

    ``text`` is the payload as text (see ``charset`` for the character set
    rule) and ``raw`` the bytes the decoder returned: the exact payload for zbar;
    OpenCV reports non-UTF-8 payloads transcoded from ISO-8859-1 to UTF-8.
    ``gs1`` is True when the symbol starts with FNC1 (GS1-128, GS1 QR), which
    zbar and zxing-cpp report. ``polygon`` is in pixels of the image that was decoded;
    ``found_by`` names the pass and ``decoder`` the library that read it.
    """

    symbology: str  # zbar's name: "QRCODE", "CODE128", "EAN13", ...
    text: str
    raw: bytes = field(default=b"", repr=False)
    gs1: bool = False
    polygon: tuple[tuple[int, int], ...] = ()
    decoder: str = "zbar"  # "zbar" | "zxing-cpp" | "opencv" | "opencv-aruco"
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


def check_passes(passes: Iterable[str]) -> None:
    """``PortConfigError`` naming the unknown ones when ``passes`` are not all registered."""
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise PortConfigError(f"unknown decode pass(es) {unknown}; known: {', '.join(PASSES)}")


def _polygon(
    points: Sequence[tuple[float, float]], to_source: Matrix, scale: float
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
    symbols = symbol_set(symbologies)
    check_passes(passes)
    gray, scale = bounded_gray(image)
    source = Source(gray)
    found: dict[tuple[str, str], Decoded] = {}
    for done, name in enumerate(passes, 1):
        spec = PASSES[name]
        if spec.qr_only and QR not in symbols:
            continue
        for view in spec.views(source):
            for decoder in spec.decoders:
                for item in _decode_view(view, decoder, symbols, scale, name):
                    found.setdefault(item.key, item)
        if found and done >= collect_first and not exhaustive:
            break
    return list(found.values())


def _decode_view(
    view: View, decoder: Decoder, symbols: frozenset[int], scale: float, pass_name: str
) -> Iterator[Decoded]:
    if decoder == "zbar":
        hits = zbar(view.image, symbols)
    elif decoder == "zxing-cpp":
        hits = zxing.read(view.image, symbols)
    elif QR in symbols:
        hits = opencv(view.image, decoder)
    else:
        hits = []
    for hit in hits:
        symbology = ZBAR_NAMES.get(hit.symbol, str(hit.symbol))
        if hit.text is not None:
            text = hit.text
        elif hit.decoder == "zbar":
            text = payload_text(hit.data, symbology)
        else:
            text = opencv_text(hit.data)
        yield Decoded(
            symbology=symbology,
            text=text,
            raw=hit.data,
            gs1=hit.gs1,
            polygon=_polygon(hit.points, view.to_source, scale),
            decoder=hit.decoder,
            found_by=pass_name,
        )
