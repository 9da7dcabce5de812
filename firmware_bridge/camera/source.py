"""Frames from cameras, video and image files, and network streams (STYLE.md §6, §7).

A thin shell over ``cv2.VideoCapture``: no threads, no decoding. A live capture
keeps OpenCV's buffer at one frame (the latest frame, not a backlog).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy.typing as npt

from firmware_bridge.camera import bounds
from firmware_bridge.camera.bounds import Image
from firmware_bridge.camera.files import read_image
from firmware_bridge.errors import CameraError, DisconnectedError, PortConfigError

__all__ = ["CameraSource", "Frame"]


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
        max_side: int = bounds.MAX_SIDE,
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
