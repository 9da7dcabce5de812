"""Serial ports by URL, one reader thread per port, frames into a bounded queue.

The only module that imports pyserial (ARCHITECTURE.md "Layout"). A port is a
URL (STYLE.md §6): a device path such as ``/dev/serial/by-id/usb-FTDI_...``,
``socket://host:4001`` (serial-over-IP boxes), ``rfc2217://host:port``,
``loop://`` or ``spy://PORT`` for field debugging; the same code path serves
tests, simulators and production.

Theory of operation. ``PortReader`` owns one thread:

    connecting ──open ok──▶ open ──read error / EOF──▶ down ──backoff──▶ connecting
         │                                                  ▲
         └───────────────open failed────────────────────────┘

While open it reads whatever bytes are available, feeds the dialect's
sans-I/O parser, and puts each frame (``FrameRead``), each ``FrameError``
(``FrameSkipped``) and each change of ``PortState`` (``StateChanged``) on the
output queue: ``PortEvent`` is that closed union of typed values, so a
consumer matches on types, never on strings.

When the device vanishes (USB unplugged, pty closed, TCP reset) the
error is translated once into ``DisconnectedError``, counted, and the port is
reopened after a capped, jittered exponential backoff. The parser is reset on
reconnect (a half frame from before the unplug is dropped and counted).

The output queue is bounded (``QUEUE_MAX``); when the consumer is behind, the
reader waits up to ``put_timeout`` and then drops that frame and counts it in
``queue_drops``: a blocked serial reader would let the OS buffer overflow and
lose bytes silently, which is worse.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import queue
import random
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import serial

from firmware_bridge.errors import DisconnectedError, PortConfigError, PortOpenError
from firmware_bridge.frames import FRAME_TYPES, Frame
from firmware_bridge.protocols.base import FrameError, Parser, SerialDefaults

__all__ = [
    "QUEUE_MAX",
    "Backoff",
    "FrameRead",
    "FrameSkipped",
    "PortCounters",
    "PortEvent",
    "PortReader",
    "PortState",
    "StateChanged",
    "capture",
    "is_pseudo_terminal",
    "open_port",
    "port_holders",
]

QUEUE_MAX = 1024
READ_CHUNK = 4096
READ_TIMEOUT_S = 0.1
# The last bytes a reader saw, kept so a commissioning tool can show them and guess the
# dialect: 4 KiB holds dozens of lines of any supported dialect and bounds the copy.
RECENT_MAX = 4096
_SCHEMES = "a device path (/dev/serial/by-id/...), socket://HOST:PORT, rfc2217://HOST:PORT, loop://"


class PortState(StrEnum):
    """Where a reader is in its cycle (module doc)."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    OPEN = "open"
    DOWN = "down"  # lost or not openable; retried after a backoff
    FAILED = "failed"  # a URL pyserial refuses: not retried


@dataclass(frozen=True, slots=True)
class FrameRead:
    """A frame the port's parser completed; ``at`` is the monotonic time it was read."""

    port: str
    frame: Frame
    at: float


@dataclass(frozen=True, slots=True)
class FrameSkipped:
    """Bytes the port's parser skipped as garbage (counted, never raised)."""

    port: str
    error: FrameError
    at: float


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The port entered ``state``."""

    port: str
    state: PortState
    at: float


# What a port reader reports (``port`` is the reader's name, its URL unless named otherwise).
PortEvent = FrameRead | FrameSkipped | StateChanged


@dataclass
class PortCounters:
    bytes_in: int = 0
    frames: int = 0
    frame_errors: int = 0
    dropped_bytes: int = 0
    checksum_errors: int = 0
    reconnects: int = 0
    open_failures: int = 0
    queue_drops: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (retry delays in seconds)."""

    initial: float = 0.2
    maximum: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self._attempt = 0


def open_port(url: str, settings: SerialDefaults, timeout: float = READ_TIMEOUT_S) -> Any:
    """Open a pyserial port by URL with a dialect's line settings; translate errors.

    A URL pyserial does not know is a ``PortConfigError``; a port that will not open is a
    ``PortOpenError`` whose message names the OS reason (``explain_open_failure``).
    """
    try:
        return serial.serial_for_url(
            url,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=timeout,
            write_timeout=1.0,
        )
    except ValueError as exc:  # bad URL scheme or parameters: not worth retrying
        scheme, sep, _ = url.partition("://")
        if sep and "not known" in str(exc):
            raise PortConfigError(
                f"{url}: unsupported URL scheme {scheme + '://'!r}; use {_SCHEMES} or spy://PORT"
            ) from exc
        raise PortConfigError(f"{url}: {exc}") from exc
    except (serial.SerialException, OSError) as exc:
        reason, must_act = explain_open_failure(url, exc)
        raise PortOpenError(f"{url}: cannot open: {reason}", must_act=must_act) from exc


def explain_open_failure(url: str, exc: BaseException) -> tuple[str, bool]:
    """Why ``url`` did not open, in words, and whether an operator must act (waiting won't do).

    pyserial's messages mix its own wording with the OS's; for a device path the file itself
    is looked at, so a missing device, a regular file and a permission problem each say so.
    """
    code = getattr(exc, "errno", None)
    if "://" in url:
        text = re.sub(r"\[Errno \d+\] ", "", str(exc).removeprefix(f"Could not open port {url}: "))
        if "Connection refused" in text:
            text += " (is the serial server on, and listening on that port?)"
        return text or repr(exc), False
    try:
        st = os.stat(url)
    except FileNotFoundError:
        return (
            "no such device (nothing at that path: is the cable plugged in? "
            "`ls -l /dev/serial/by-id/` lists the serial devices present)",
            False,
        )
    except OSError as err:
        return f"{err.strerror or err}", False
    if not stat.S_ISCHR(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "a regular file"
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            what = "not a character device"
        return f"not a serial device ({url} is {what})", True
    if code in (errno.EACCES, errno.EPERM):
        group = _group_name(st.st_gid)
        return (
            f"permission denied ({stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{group}; "
            f"add the user that runs custody-agent to group {group!r}: "
            f"sudo usermod -aG {group} USER, then log in again)",
            True,
        )
    if code == errno.EBUSY:
        holders = ", ".join(f"pid {pid} ({name})" for pid, name in port_holders(url))
        return f"device busy (held by {holders or 'another process'})", False
    if code is None and "Inappropriate ioctl" in str(exc):
        return f"not a serial device ({url} does not accept serial line settings)", True
    return str(exc), False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def port_holders(path: str) -> list[tuple[int, str]]:
    """(pid, command name) of the processes that have ``path`` open, as far as /proc shows us.

    Unprivileged users see only their own processes; that is the cheap answer, not a full one.
    """
    target = os.path.realpath(path)
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for pid in pids:
            with contextlib.suppress(OSError):
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                        found.append((pid, f.read().strip()))
    return found


# Most bytes ``capture`` keeps: a few seconds of any dialect at 115200 baud is well below.
CAPTURE_MAX = 64 * 1024


def capture(
    url: str,
    settings: SerialDefaults,
    seconds: float,
    *,
    request: bytes = b"",
    request_every: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> bytes:
    """Open ``url`` with ``settings``, read raw bytes for ``seconds`` (at most ``CAPTURE_MAX``).

    With ``request``, send it every ``request_every`` seconds: a request/response device
    (MT-SICS, SMA) says nothing until asked.
    """
    port = open_port(url, settings)
    data = bytearray()
    deadline = clock() + seconds
    next_request = clock()
    try:
        while clock() < deadline and len(data) < CAPTURE_MAX:
            try:
                if request and clock() >= next_request:
                    port.write(request)
                    next_request = clock() + request_every
                chunk = port.read(max(1, min(READ_CHUNK, port.in_waiting or 1)))
            except (serial.SerialException, OSError) as exc:
                raise DisconnectedError(f"{url}: read failed: {exc}") from exc
            data += chunk
    finally:
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()
    return bytes(data[:CAPTURE_MAX])


def is_pseudo_terminal(url: str) -> bool:
    """True for a pty slave (/dev/pts/N or a link to one): it ignores baud rate and parity."""
    if "://" in url:
        return False
    try:
        st = os.stat(url)
    except OSError:
        return False
    # Linux: Unix98 pty slaves are majors 136-143 (Documentation/admin-guide/devices.txt).
    return stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143


class PortReader:
    """Reads one port into a bounded queue, reconnecting when the device vanishes."""

    def __init__(
        self,
        url: str,
        parser_factory: Callable[[], Parser],
        *,
        settings: SerialDefaults | None = None,
        out: queue.Queue[PortEvent] | None = None,
        backoff: Backoff | None = None,
        put_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.name = name or url
        self.settings = settings or SerialDefaults()
        self.out: queue.Queue[PortEvent] = out if out is not None else queue.Queue(QUEUE_MAX)
        self.counters = PortCounters()
        self.state = PortState.STOPPED
        self.last_error: str | None = None
        self.open_error: DisconnectedError | None = None  # the latest failure to open
        self.ever_opened = False
        self._recent = bytearray()  # the last RECENT_MAX bytes read (``recent_bytes``)
        self._parser_factory = parser_factory
        self._parser = parser_factory()
        # What earlier parsers (one per connection) counted: the counters are cumulative
        # over the reader's life, as Prometheus counters must be.
        self._carried_dropped = 0
        self._carried_checksum = 0
        self._backoff = backoff or Backoff()
        self._put_timeout = put_timeout
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Any = None
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> PortReader:
        self._thread = threading.Thread(target=self._run, name=f"port:{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()
        self._set_state(PortState.STOPPED)

    def recent_bytes(self) -> bytes:
        """A copy of the last bytes read (at most ``RECENT_MAX``), oldest first."""
        with self._lock:
            return bytes(self._recent)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def write(self, data: bytes) -> None:
        """Send a request to the device (e.g. an MT-SICS ``S`` command)."""
        with self._lock:
            port = self._port
        if port is None:
            raise DisconnectedError(f"{self.name}: not connected")
        try:
            port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.name}: write failed: {exc}") from exc

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            self._set_state(PortState.CONNECTING)
            try:
                port = open_port(self.url, self.settings)
            except DisconnectedError as exc:
                self.counters.open_failures += 1
                self.open_error = exc
                self._down(str(exc))
                continue
            except PortConfigError as exc:
                self.last_error = str(exc)
                self._set_state(PortState.FAILED)
                return  # configuration errors are not retried; the supervisor reports
            with self._lock:
                self._port = port
            self.ever_opened = True
            if not first:
                self.counters.reconnects += 1
            first = False
            self._carried_dropped += self._parser.stats.dropped_bytes
            self._carried_checksum += self._parser.stats.checksum_errors
            self._parser = self._parser_factory()  # drop any half frame from before
            self._backoff.reset()
            self._set_state(PortState.OPEN)
            try:
                self._read_until_error(port)
            except DisconnectedError as exc:
                self._close()
                self._down(str(exc))
        self._close()

    def _read_until_error(self, port: Any) -> None:
        while not self._stop.is_set():
            try:
                data = port.read(max(1, min(READ_CHUNK, port.in_waiting or 1)))
            except (serial.SerialException, OSError) as exc:
                raise DisconnectedError(f"{self.name}: read failed: {exc}") from exc
            except TypeError as exc:  # pyserial on a closed fd raises TypeError in in_waiting
                raise DisconnectedError(f"{self.name}: port closed: {exc}") from exc
            if not data:
                continue
            self.counters.bytes_in += len(data)
            with self._lock:
                self._recent += data
                del self._recent[: max(0, len(self._recent) - RECENT_MAX)]
            now = self._clock()
            for item in self._parser.feed(data, now):
                self._emit(item, now)
            stats = self._parser.stats
            self.counters.dropped_bytes = self._carried_dropped + stats.dropped_bytes
            self.counters.checksum_errors = self._carried_checksum + stats.checksum_errors

    def _emit(self, item: object, now: float) -> None:
        event: PortEvent
        if isinstance(item, FrameError):
            self.counters.frame_errors += 1
            event = FrameSkipped(self.name, item, now)
        elif isinstance(item, FRAME_TYPES):
            self.counters.frames += 1
            event = FrameRead(self.name, item, now)
        else:  # a parser bug, not device trouble: it ends this thread and the supervisor sees it
            raise TypeError(f"{self.name}: parser returned {type(item).__name__}, not a frame")
        try:
            self.out.put(event, timeout=self._put_timeout)
        except queue.Full:
            self.counters.queue_drops += 1

    def _down(self, reason: str) -> None:
        self.last_error = reason
        self._set_state(PortState.DOWN)
        self._stop.wait(self._backoff.next_delay())

    def _set_state(self, state: PortState) -> None:
        if state == self.state:
            return
        self.state = state
        with contextlib.suppress(queue.Full):
            self.out.put_nowait(StateChanged(self.name, state, self._clock()))

    def _close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
