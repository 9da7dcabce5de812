"""The camera's libraries are an optional extra; importing this module checks they are there.

OpenCV, numpy, pyzbar and zxing-cpp are the ``camera`` extra: a gateway without a camera does
not install them (docs/operations.md "Roles"). The package imports this module before any
module that imports them, so asking for a camera without them is one plain
``CameraUnavailableError`` naming the fix instead of a ModuleNotFoundError traceback from deep
inside.
"""

from __future__ import annotations

from firmware_bridge.errors import CameraUnavailableError

_INSTALL_HINT = (
    "install the camera extra: pip install 'cobalt-custody[camera]', "
    "or deploy/install.sh --role gateway+camera"
)
try:
    import cv2  # noqa: F401
    import numpy  # noqa: F401
    import zxingcpp  # noqa: F401
except ModuleNotFoundError as exc:
    raise CameraUnavailableError(
        f"the camera needs OpenCV, numpy, pyzbar and zxing-cpp, and this install lacks "
        f"{exc.name!r}: {_INSTALL_HINT}"
    ) from None
try:
    from pyzbar import wrapper as _zbar  # noqa: F401  # loads libzbar through ctypes
except ModuleNotFoundError as exc:
    raise CameraUnavailableError(
        f"the camera needs pyzbar, and this install lacks {exc.name!r}: {_INSTALL_HINT}"
    ) from None
except ImportError as exc:  # pyzbar is there, its shared library is not
    raise CameraUnavailableError(
        f"the camera needs the zbar library ({exc}): install the Debian package libzbar0 "
        "(deploy/install.sh --role gateway+camera does)"
    ) from None
