"""Errors of the device bridge.

``firmware_bridge`` imports nothing else of ours (ARCHITECTURE.md "Layout"), so
it has its own small tree; the agent maps it into its exit codes.

    DeviceError
    ├── ProtocolError       the device sent something we cannot parse (garbage, bad checksum)
    ├── DisconnectedError   the port went away; the transport retries with backoff
    │   └── PortOpenError   a port that would not open, with the OS reason in words
    ├── PortConfigError     a bad port URL, dialect name or dialect option (not retried)
    │   └── CameraUnavailableError  the camera's libraries (the ``camera`` extra) are not installed
    └── CameraError         an image or video file that cannot be read or decoded as one

pyserial and OS exceptions are translated once, in ``transport``; OpenCV's
``cv2.error`` and unreadable images once, in ``camera`` (a live camera or
stream that cannot be opened or stops is a ``DisconnectedError``).
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every error the device bridge raises."""


class ProtocolError(DeviceError):
    """The device sent bytes that are not a valid frame of its dialect."""


class DisconnectedError(DeviceError):
    """The port disappeared or closed; expected, retried."""


class PortOpenError(DisconnectedError):
    """A port could not be opened; the message names the OS reason in plain words.

    ``must_act`` is true when waiting cannot help (permission denied, not a serial
    device): the service still retries, but a commissioning tool stops and says so.
    """

    def __init__(self, message: str, *, must_act: bool = False) -> None:
        super().__init__(message)
        self.must_act = must_act


class PortConfigError(DeviceError):
    """A port URL, dialect name or dialect option is invalid."""


class CameraError(DeviceError):
    """An image or video file is unreadable (missing, too large, not an image OpenCV decodes)."""


class CameraUnavailableError(PortConfigError):
    """A camera or image decode was asked for, but the optional ``camera`` extra (OpenCV, numpy,
    pyzbar, zxing-cpp) or libzbar is not installed on this machine."""
