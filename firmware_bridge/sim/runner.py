"""Simulated devices on a pseudo-terminal, a TCP port or any pyserial URL.

``Simulator`` turns a scenario into the device's real byte stream (via
``encoders``) and writes it to a sink at a set rate:

- ``PtySink``: a pseudo-terminal pair; the agent opens the slave path as if it
  were ``/dev/ttyUSB0``. With ``link`` it keeps a stable symlink to the slave
  (like ``/dev/serial/by-id/...``), so ``unplug()``/``replug()`` can simulate a
  USB adapter pulled out and put back: the old pty is closed (the reader gets
  EIO) and a new one appears under the same name.
- ``TcpSink``: listens like a serial-over-IP box; the agent connects with
  ``socket://host:port``.
- MT-SICS is request/response: the simulator answers ``S``, ``SI``, ``Z``,
  ``T``, ``@`` and ``I4`` from the current sample, and sends ``ES`` otherwise.

A simulated scale drives trucks over the bridge at a real truck's pace
(``scenarios.REAL_TRUCK``: several seconds standing still), whatever the frame
rate; ``truck=scenarios.Phases(...)`` paces them by frame count instead, for
tests that step the stream frame by frame. At ``rate=0`` (as fast as the sink
takes bytes) there is no clock to pace by, so the compact ``Phases()`` apply.

Faults are injected on request: noise bytes between frames, a flipped bit in
a frame (bad checksum), and a frame cut in half by an unplug.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from firmware_bridge.protocols.base import SerialDefaults
from firmware_bridge.sim import encoders, scenarios

__all__ = [
    "KINDS",
    "Faults",
    "PortSink",
    "PtySink",
    "SimStats",
    "Simulator",
    "TcpSink",
    "frames_for",
]

KINDS = {
    "scale": ("toledo-continuous", "xk3190-a9", "xk3190-a12", "ad-cas", "mt-sics"),
    "rfid": ("rdm6300",),
    "scanner": ("scanner-line",),
    "gps": ("nmea",),
}
# Kolwezi, DRC (DOMAIN.md): where the simulated GPS sits.
_LAT, _LON = -10.7167, 25.4667


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def read_available(self) -> bytes: ...
    def close(self) -> None: ...


@dataclass
class Faults:
    noise: float = 0.0  # probability of garbage bytes before a frame
    bad_checksum: float = 0.0  # probability of a flipped bit inside a frame


@dataclass
class SimStats:
    frames: int = 0
    bytes: int = 0
    noise_bursts: int = 0
    corrupted: int = 0
    requests: int = 0


class PtySink:
    """A pseudo-terminal the agent can open like a serial port."""

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self._master = -1
        self._slave = -1
        self.slave_path = ""
        self.replug()

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.slave_path

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as on a wire
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            os.replace(tmp, self.link)

    def unplug(self) -> None:
        """Close both ends: a reader on the slave gets EIO, like a pulled USB adapter."""
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def write(self, data: bytes) -> None:
        if self._master < 0:
            return  # unplugged: the bytes go nowhere, as on a real unplugged cable
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], 1.0)
                continue
            except OSError:
                return
            view = view[n:]

    def read_available(self) -> bytes:
        if self._master < 0:
            return b""
        ready, _, _ = select.select([self._master], [], [], 0)
        if not ready:
            return b""
        try:
            return os.read(self._master, 4096)
        except OSError:
            return b""

    def close(self) -> None:
        self.unplug()


class TcpSink:
    """A listening TCP port, like a serial-over-IP box (one client at a time)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = socket.create_server((host, port))
        self._server.setblocking(False)
        self.host, self.port = self._server.getsockname()[:2]
        self._client: socket.socket | None = None

    @property
    def path(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _accept(self) -> socket.socket | None:
        if self._client is None:
            with contextlib.suppress(BlockingIOError):
                self._client, _ = self._server.accept()
        return self._client

    def write(self, data: bytes) -> None:
        client = self._accept()
        if client is None:
            return
        try:
            client.sendall(data)
        except OSError:
            client.close()
            self._client = None

    def read_available(self) -> bytes:
        client = self._accept()
        if client is None:
            return b""
        ready, _, _ = select.select([client], [], [], 0)
        if not ready:
            return b""
        try:
            data = client.recv(4096)
        except OSError:
            data = b""
        if not data:
            client.close()
            self._client = None
        return data

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._server.close()


class PortSink:
    """Any pyserial URL, e.g. a real serial port wired to a gateway on the bench."""

    def __init__(self, url: str) -> None:
        from firmware_bridge.transport import open_port  # the only pyserial user

        self.url = url
        self._port = open_port(url, SerialDefaults())

    @property
    def path(self) -> str:
        return self.url

    def write(self, data: bytes) -> None:
        self._port.write(data)

    def read_available(self) -> bytes:
        waiting = self._port.in_waiting
        return bytes(self._port.read(waiting)) if waiting else b""

    def close(self) -> None:
        self._port.close()


def _scale_frame(dialect: str, s: scenarios.Sample) -> bytes:
    kg = s.kg
    neg = kg < 0
    if dialect == "toledo-continuous":
        return encoders.toledo_continuous(
            min(abs(kg), 999_999), negative=neg, motion=not s.stable, out_of_range=s.overload
        )
    if dialect == "xk3190-a9":
        return encoders.xk3190_a9(min(abs(kg), 999_999), negative=neg)
    if dialect == "xk3190-a12":
        if s.overload:
            return encoders.xk3190_a12("", overload=True)
        field_ = ("-" if neg else "") + f"{abs(kg):0{7 - neg}d}"
        return encoders.xk3190_a12(field_)
    if dialect == "ad-cas":
        return encoders.ad_cas(
            ("-" if neg else "+") + f"{abs(kg):07d}", stable=s.stable, overload=s.overload
        )
    raise ValueError(f"no continuous stream for dialect {dialect}")


def _sics_weight(s: scenarios.Sample, immediate: bool) -> bytes:
    if s.overload:
        return b"S +\r\n"
    if not s.stable and not immediate:
        return b"S I\r\n"
    status = b"S" if s.stable else b"D"
    return b"S " + status + b"%11s kg\r\n" % (b"%d" % s.kg)


def frames_for(
    kind: str, dialect: str, rng: random.Random, phases: scenarios.Phases | None = None
) -> Iterator[bytes]:
    """The continuous byte stream of a simulated device, one frame at a time."""
    if kind == "scale":
        for sample in scenarios.truck_visits(rng, phases=phases):
            yield _scale_frame(dialect, sample)
    elif kind == "rfid":
        for tag in scenarios.tag_ids(rng):
            for _ in range(5):  # RDM6300 repeats about every 50 ms while the tag is in the field
                yield encoders.rdm6300(tag)
    elif kind == "scanner":
        for code in scenarios.seal_codes(rng, gs1=rng.random() < 0.5):
            yield encoders.scanner_line(code)
    elif kind == "gps":
        t = 0
        while True:
            hhmmss = time.strftime("%H%M%S", time.gmtime(time.time() + t))
            ddmmyy = time.strftime("%d%m%y", time.gmtime(time.time() + t))
            lat = f"{int(abs(_LAT)):02d}{abs(_LAT) % 1 * 60:07.4f}"
            lon = f"{int(_LON):03d}{_LON % 1 * 60:07.4f}"
            pos = f"{lat},S,{lon},E"
            yield encoders.nmea_sentence(f"GPGGA,{hhmmss}.00,{pos},1,08,0.9,1430.0,M,,M,,")
            yield encoders.nmea_sentence(f"GPRMC,{hhmmss}.00,A,{pos},0.0,0.0,{ddmmyy},,,A")
            t += 1
    else:
        raise ValueError(f"unknown device kind {kind!r}; known: {', '.join(KINDS)}")


@dataclass
class Simulator:
    """Writes a device's stream to a sink at ``rate`` frames per second."""

    kind: str
    dialect: str
    sink: Sink
    rate: float = 10.0
    seed: int = 1
    faults: Faults = field(default_factory=Faults)
    truck: scenarios.TruckTiming | scenarios.Phases = scenarios.REAL_TRUCK
    stats: SimStats = field(default_factory=SimStats)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.dialect not in KINDS.get(self.kind, ()):
            raise ValueError(
                f"no {self.kind} simulator for dialect {self.dialect!r}; "
                f"known: {', '.join(KINDS.get(self.kind, ()))}"
            )
        self.rng = random.Random(self.seed)
        self._current = scenarios.Sample(0, True)

    @property
    def phases(self) -> scenarios.Phases:
        """A truck visit in frames at this simulator's rate."""
        if isinstance(self.truck, scenarios.Phases):
            return self.truck
        if self.rate <= 0:
            return scenarios.Phases()
        return scenarios.Phases.lasting(self.truck, self.rate)

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, duration: float | None = None, frames: int | None = None) -> SimStats:
        """Run until ``stop()``, ``duration`` seconds or ``frames`` frames."""
        if self.dialect == "mt-sics":
            return self._serve_sics(duration)
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        deadline = None if duration is None else time.monotonic() + duration
        next_at = time.monotonic()
        for frame in frames_for(self.kind, self.dialect, self.rng, self.phases):
            if self._stop.is_set() or (frames is not None and self.stats.frames >= frames):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            data = self._with_faults(frame)
            self.sink.write(data)
            self.stats.frames += 1
            self.stats.bytes += len(data)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        return self.stats

    def _with_faults(self, frame: bytes) -> bytes:
        out = frame
        if self.faults.bad_checksum and self.rng.random() < self.faults.bad_checksum:
            i = self.rng.randrange(1, max(2, len(frame) - 3))
            out = frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1 :]
            self.stats.corrupted += 1
        if self.faults.noise and self.rng.random() < self.faults.noise:
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 12)))
            out = noise + out
            self.stats.noise_bursts += 1
        return out

    def _serve_sics(self, duration: float | None) -> SimStats:
        """Answer MT-SICS requests from the current sample of a truck scenario."""
        samples = scenarios.truck_visits(self.rng, phases=self.phases)
        deadline = None if duration is None else time.monotonic() + duration
        step = 1.0 / self.rate if self.rate > 0 else 0.1
        next_sample = time.monotonic()
        pending = b""
        while not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if time.monotonic() >= next_sample:
                self._current = next(samples)
                next_sample += step
            pending += self.sink.read_available()
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self.stats.requests += 1
                self.sink.write(self._with_faults(self._sics_reply(line.strip())))
                self.stats.frames += 1
            self._stop.wait(0.005)
        return self.stats

    def _sics_reply(self, command: bytes) -> bytes:
        s = self._current
        if command == b"S":
            return _sics_weight(s, immediate=False)
        if command in (b"SI", b"SIR"):
            return _sics_weight(s, immediate=True)
        if command == b"Z":
            return b"Z A\r\n" if s.stable else b"Z I\r\n"
        if command == b"T":
            return b"T S %10d kg\r\n" % s.kg if s.stable else b"T I\r\n"
        if command in (b"@", b"I4"):
            return b'I4 A "SIM0042"\r\n'
        return b"ES\r\n"
