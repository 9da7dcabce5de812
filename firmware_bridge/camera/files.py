"""Image files: bounded reading (size and pixel limits from the header) and batch decoding."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from firmware_bridge.camera import bounds
from firmware_bridge.camera.decode import Decoded, check_passes, decode_image
from firmware_bridge.camera.decoders import DEFAULT_SYMBOLOGIES, symbol_set
from firmware_bridge.camera.passes import DEFAULT_COLLECT_FIRST, DEFAULT_PASSES
from firmware_bridge.errors import CameraError

__all__ = ["FileResult", "decode_file", "decode_files", "image_size", "read_image"]


def read_image(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Load an image file unchanged (alpha and 16-bit kept); ``CameraError`` if unreadable.

    Bounded before decoding: at most ``MAX_FILE_BYTES`` read, and at most
    ``MAX_IMAGE_PIXELS`` decoded when the header (PNG, JPEG, WebP, GIF, BMP)
    tells the size, so a small file cannot inflate into gigabytes.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > bounds.MAX_FILE_BYTES:
            raise CameraError(f"{p}: {size} bytes is over the {bounds.MAX_FILE_BYTES}-byte limit")
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise CameraError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    dims = image_size(data[:_HEADER_PROBE_BYTES].tobytes())
    if dims is not None and dims[0] * dims[1] > bounds.MAX_IMAGE_PIXELS:
        raise CameraError(
            f"{p}: {dims[0]}x{dims[1]} pixels is over the {bounds.MAX_IMAGE_PIXELS}-pixel limit"
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
    symbol_set(symbols)
    check_passes(passes)
    for path in paths:
        try:
            codes = decode_file(
                path, symbologies=symbols, passes=passes, collect_first=collect_first
            )
        except CameraError as exc:
            yield FileResult(os.fspath(path), error=str(exc))
        else:
            yield FileResult(os.fspath(path), tuple(codes))
