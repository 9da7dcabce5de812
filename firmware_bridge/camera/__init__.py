"""Camera: read QR and Code 128 seal codes from images, files, cameras and streams.

This package is the only part of the project that imports ``cv2``, ``pyzbar`` or
``zxingcpp``.
Its public names are re-exported here; the modules are one concern each:

- ``charset``: the payload's text (UTF-8, Shift_JIS or ISO-8859-1, as zxing guesses)
- ``bounds``: the memory limits, and grayscale normalisation
- ``zxing``: zxing-cpp, the first decoder tried
- ``decoders``: libzbar (through pyzbar's ctypes wrapper) and OpenCV's QR detectors
- ``views``: an image to decode plus the matrix back to source pixels
- ``rectify``: perspective correction from OpenCV's detector
- ``passes``: the named decode passes and their measured default order
- ``decode``: ``decode_image``, running the passes over one image
- ``files``: bounded image-file reading and batch decoding
- ``evidence``: a frame kept as JPEG bytes with their SHA-256
- ``debounce``: one report per code while it stays in view
- ``source``: frames from a camera, a file or a network stream

Theory of operation
-------------------
``decode_image`` runs an ordered list of *passes* over one grayscale image. The
first ``collect_first`` passes always run and their codes are collected; after
them, the first pass that reads anything ends the search (``exhaustive=True``
runs them all). A pass builds one or more *views* of the image and hands each to
a decoder: zxing-cpp, zbar, or one of OpenCV's QR detectors. Every view carries the 3x3
matrix back to source pixels, so a code's polygon is in the coordinates of the
image passed in.

Memory is bounded: files over ``MAX_FILE_BYTES`` or (by their header) over
``MAX_IMAGE_PIXELS`` are refused before decoding, an input larger than
``MAX_SIDE`` is downscaled first, upscaling passes only apply up to
``UPSCALE_MAX_SIDE``, evidence JPEGs are at most ``EVIDENCE_MAX_SIDE``, the
debouncer holds at most ``max_entries`` codes, and a live capture keeps
OpenCV's buffer at one frame. The limits live in ``bounds`` and are read from
there at call time (patch ``camera.bounds``, not this package, to lower one).
"""

from __future__ import annotations

# First: a plain error when the optional libraries are missing (see _extra).
from firmware_bridge.camera import _extra  # noqa: F401
from firmware_bridge.camera.bounds import (
    MAX_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_SIDE,
    UPSCALE_MAX_SIDE,
    to_gray,
)
from firmware_bridge.camera.charset import payload_text
from firmware_bridge.camera.debounce import Debouncer
from firmware_bridge.camera.decode import Decoded, decode_image
from firmware_bridge.camera.decoders import DEFAULT_SYMBOLOGIES, library_versions
from firmware_bridge.camera.evidence import (
    EVIDENCE_MAX_SIDE,
    EVIDENCE_QUALITY,
    Evidence,
    encode_evidence,
)
from firmware_bridge.camera.files import (
    FileResult,
    decode_file,
    decode_files,
    image_size,
    read_image,
)
from firmware_bridge.camera.passes import (
    DEFAULT_COLLECT_FIRST,
    DEFAULT_PASSES,
    FAST_PASSES,
    PASSES,
)
from firmware_bridge.camera.source import CameraSource, Frame

__all__ = [
    "DEFAULT_COLLECT_FIRST",
    "DEFAULT_PASSES",
    "DEFAULT_SYMBOLOGIES",
    "EVIDENCE_MAX_SIDE",
    "EVIDENCE_QUALITY",
    "FAST_PASSES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_SIDE",
    "PASSES",
    "UPSCALE_MAX_SIDE",
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
