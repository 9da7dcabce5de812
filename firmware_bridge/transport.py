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
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import serial

from firmware_bridge.errors import DisconnectedError, PortConfigError
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
    "open_port",
]

QUEUE_MAX = 1024
READ_CHUNK = 4096
READ_TIMEOUT_S = 0.1


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
    """Open a pyserial port by URL with a dialect's line settings; translate errors."""
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
        raise PortConfigError(f"{url}: {exc}") from exc
    except (serial.SerialException, OSError) as exc:
        raise DisconnectedError(f"{url}: cannot open: {exc}") from exc


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
                self._down(str(exc))
                continue
            except PortConfigError as exc:
                self.last_error = str(exc)
                self._set_state(PortState.FAILED)
                return  # configuration errors are not retried; the supervisor reports
            with self._lock:
                self._port = port
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
