"""The serial stream both gateways read, and what the bench measures about processes.

Stream: XK3190-A12 frames (``WG0001234kg3D`` CR LF, device-protocols.md §1.6)
built by the simulator's own encoder (``firmware_bridge.sim.encoders``) and
written to a ``firmware_bridge.sim.runner.PtySink``. The truck scenario repeats
weights (a stable truck holds one value for a dozen frames), which would make
per-reading loss and duplicate counts impossible, so the weight field carries
the reading number instead: reading *n* is *n* kg. Both gateways see the same
bytes; the broker-side witness recovers *n* from what each one publishes.

Process figures come from the kernel: ``/proc/PID/stat`` (CPU), ``/proc/PID/status``
(RSS split into anonymous and file-backed, peers.md §10.3: the peer maps its
SQLite file, which counts in RSS), and ``ss -ti`` for the ``tcpi_bytes_acked``
of the gateway's own sockets to the broker (the counter ``bench/e2e.py`` reads
with ``TCP_INFO`` in-process; ``ss`` reads it for another process).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

from firmware_bridge.frames import WeightReading
from firmware_bridge.protocols.registry import make_parser
from firmware_bridge.sim import encoders
from firmware_bridge.sim.runner import PtySink

__all__ = [
    "DIALECT",
    "ProcSample",
    "Stream",
    "frame_for",
    "parse_ss",
    "proc_sample",
    "reading_of_line",
    "tcp_counters",
]

DIALECT = "xk3190-a12"
MAX_READING = 9_999_999  # seven digits in the A12 weight field


def frame_for(n: int) -> bytes:
    """The frame of reading ``n``: a gross weight of ``n`` kg."""
    if not 0 < n <= MAX_READING:
        raise ValueError(f"reading numbers run 1..{MAX_READING}, got {n}")
    return encoders.xk3190_a12(f"{n:07d}")


def reading_of_line(line: str) -> int | None:
    """The reading number in a serial line as the peer ships it (CR LF stripped), or None.

    Parsed with our XK3190-A12 parser, so a line the peer mangled (a half frame,
    a bad checksum) is not counted as delivered.
    """
    parser = make_parser(DIALECT)
    frames = parser.feed(line.encode("latin-1") + b"\r\n", 0.0)
    for item in frames:
        if isinstance(item, WeightReading) and item.decimals == 0 and item.value > 0:
            return item.value
    return None


@dataclass
class Stream:
    """Writes numbered readings to the pty and remembers when each was offered."""

    sink: PtySink
    next_id: int = 1
    offered: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, count: int, rate: float, stop: threading.Event | None = None) -> list[int]:
        """``count`` readings at ``rate`` per second (0: as fast as the pty takes them)."""
        ids: list[int] = []
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        for _ in range(count):
            if stop is not None and stop.is_set():
                break
            with self._lock:
                n = self.next_id
                self.next_id += 1
                self.offered[n] = time.monotonic()
            self.sink.write(frame_for(n))
            ids.append(n)
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        return ids

    def offer_until(self, stop: threading.Event, rate: float, out: list[int]) -> None:
        """Offer at ``rate`` until ``stop``; ids go into ``out`` (for a thread)."""
        while not stop.is_set():
            out.extend(self.offer(1, 0.0))
            stop.wait(1.0 / rate)


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float
    rss_mb: float
    rss_anon_mb: float
    rss_file_mb: float


def proc_sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (proc(5) fields 14, 15)
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                kb[key] = int(rest.split()[0])
    return ProcSample(
        cpu_s=cpu,
        rss_mb=kb.get("VmRSS", 0) / 1024,
        rss_anon_mb=kb.get("RssAnon", 0) / 1024,
        rss_file_mb=kb.get("RssFile", 0) / 1024,
    )


_SS_SOCKET = re.compile(r"\bino:(\d+)")
_SS_ACKED = re.compile(r"\bbytes_acked:(\d+)")
_SS_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


def parse_ss(text: str) -> dict[int, tuple[int, int]]:
    """``ss -tinHe`` output -> socket inode -> (bytes_acked, bytes_received).

    ``ss`` prints each socket on one line and its TCP info on the next, indented.
    """
    out: dict[int, tuple[int, int]] = {}
    inode: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            m = _SS_SOCKET.search(line)
            inode = int(m.group(1)) if m else None
            continue
        if inode is None:
            continue
        acked = _SS_ACKED.search(line)
        received = _SS_RECEIVED.search(line)
        out[inode] = (
            int(acked.group(1)) if acked else 0,
            int(received.group(1)) if received else 0,
        )
        inode = None
    return out


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def tcp_counters(pid: int, broker_port: int) -> tuple[int, int]:
    """(bytes the broker acked, bytes received from it) over ``pid``'s sockets to the broker."""
    text = subprocess.run(
        ["ss", "-tinHe", "state", "established", "dport", f"= :{broker_port}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    mine = _socket_inodes(pid)
    acked = received = 0
    for inode, (a, r) in parse_ss(text).items():
        if inode in mine:
            acked += a
            received += r
    return acked, received
