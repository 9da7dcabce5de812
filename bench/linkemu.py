"""A TCP proxy that behaves like a field link: rate, delay, loss stalls and outages.

This kernel has ``tbf`` but not ``netem``, so the link sits in user space
between the gateway and the broker. Each direction of each connection is a
FIFO pipe modelled like a bottleneck link:

- **rate**: bytes leave at ``rate_bps / 8`` per second, one ``mss``-sized
  segment after the other (a token bucket with a one-segment burst), in both
  directions independently (full duplex);
- **delay**: a segment is delivered ``rtt_s / 2`` after it left;
- **loss as stalls**: each segment is "lost" with probability ``loss``; TCP
  would retransmit it after about an RTO, and everything behind it waits
  (head-of-line blocking), so delivery of that segment and of every later one
  is held back by ``stall_s``. The link keeps sending meanwhile (SACK and
  fast retransmit keep the pipe busy), so a sender with enough data in flight
  loses no throughput to a stall, and one without it does;
- **buffer**: at most ``buffer_bytes`` accepted but not yet delivered per
  direction, about two bandwidth-delay products: beyond it the proxy stops
  reading, and the sender's TCP backs up as it would behind a real link;
- **outages**: every ``outage_every_s`` (first at ``outage_phase_s``) the link
  is cut for ``outage_s``: every connection is aborted (data in flight is
  lost) and new connections are accepted and dropped at once until it ends.

Real TCP on a 1 % lossy 600 ms path does worse than this model (Mathis et al.
1997 put Reno near ``MSS / RTT * 1.22 / sqrt(p)``, ~30 KB/s there); the model
stands for a link whose modem retransmits, which VSAT terminals do.

Runs an asyncio loop in its own thread; ``LinkEmulator(...).start()`` returns
once it listens on ``port``. A seeded RNG makes the stalls reproducible.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["PROFILES", "LinkEmulator", "LinkStats", "Profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    rate_bps: int  # each direction
    rtt_s: float
    loss: float  # per segment
    stall_s: float  # how long a lost segment holds everything behind it (about an RTO)
    outage_every_s: float = 0.0  # 0: no outages
    outage_s: float = 0.0
    outage_phase_s: float = 0.0  # when the first outage starts
    mss: int = 1460

    @property
    def bytes_per_s(self) -> float:
        return self.rate_bps / 8

    @property
    def buffer_bytes(self) -> int:
        return max(16 * 1024, int(2 * self.bytes_per_s * self.rtt_s) + 16 * 1024)


# RTO = SRTT + max(G, 4 RTTVAR) with the 200 ms floor Linux uses (RFC 6298 §2): about
# 1 s on a 600 ms satellite path, 0.6 s on 2G. The 2G outage starts 60 s into a run
# so that a run of a few minutes sees one.
PROFILES: dict[str, Profile] = {
    "vsat": Profile("vsat", 512_000, 0.600, 0.01, 1.0),
    "edge2g": Profile("edge2g", 64_000, 0.300, 0.03, 0.6, 300.0, 30.0, 60.0),
}


@dataclass
class LinkStats:
    connections: int = 0
    refused: int = 0  # connections dropped because the link was down
    cuts: int = 0  # connections aborted by an outage
    outages: int = 0
    stalls: int = 0
    up_bytes: int = 0  # delivered client -> server
    down_bytes: int = 0  # delivered server -> client


@dataclass
class _Pipe:
    """One direction of one connection."""

    rate: float
    delay: float
    mss: int
    limit: int
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    queued: int = 0
    link_free_at: float = 0.0
    last_delivery: float = 0.0
    eof: bool = False
    closed: bool = False  # the writing side has gone (cut): stop reading
    more: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)


class LinkEmulator:
    def __init__(
        self,
        target: tuple[str, int],
        profile: Profile,
        *,
        host: str = "127.0.0.1",
        seed: int = 1,
        scheduled_outages: bool = True,
    ) -> None:
        self.target = target
        self.profile = profile
        self.host = host
        self.port = 0
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._scheduled = scheduled_outages and profile.outage_every_s > 0
        self._down_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._t0 = 0.0
        self._schedule_task: asyncio.Task[None] | None = None

    # --- control, from any thread -----------------------------------------------------
    def start(self) -> LinkEmulator:
        self._thread = threading.Thread(target=self._run, name="linkemu", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("link emulator did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def outage(self, seconds: float) -> None:
        """Cut the link now for ``seconds`` (what the schedule does, on demand)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._cut, seconds)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
            self._ready.set()
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        """Close the listener, abort every connection and wait for every task to end."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._schedule_task is not None:
            self._schedule_task.cancel()
        # Aborted connections end by themselves (EOF on both sides) within the
        # longest pending delay; cancelling them would make asyncio's stream
        # callback log the cancellation as an error.
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        if tasks:  # asyncio.wait raises ValueError on an empty set
            await asyncio.wait(tasks, timeout=5)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._t0 = time.monotonic()
        if self._scheduled:
            self._schedule_task = asyncio.get_running_loop().create_task(self._schedule())

    async def _schedule(self) -> None:
        p = self.profile
        await asyncio.sleep(p.outage_phase_s)
        while True:
            self._cut(p.outage_s)
            await asyncio.sleep(p.outage_every_s)

    def _cut(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds
        self.stats.outages += 1
        for w in list(self._writers):
            self.stats.cuts += 1
            w.transport.abort()
        self._writers.clear()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.stats.refused += 1
            c_writer.transport.abort()
            return
        # A small receive buffer on our side, so the sender's data waits in its
        # own socket (as behind a slow link) rather than in a loopback buffer.
        sock = c_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((c_writer, s_writer))
        p = self.profile
        up = _Pipe(p.bytes_per_s, p.rtt_s / 2, p.mss, p.buffer_bytes)
        down = _Pipe(p.bytes_per_s, p.rtt_s / 2, p.mss, p.buffer_bytes)
        # Each direction ends at EOF after delivering what it holds (a half-close
        # passes through); an abort on either side (an outage) ends both.
        await asyncio.gather(
            self._direction(c_reader, up, s_writer, upstream=True),
            self._direction(s_reader, down, c_writer, upstream=False),
            return_exceptions=True,
        )
        for w in (c_writer, s_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _direction(
        self, reader: asyncio.StreamReader, pipe: _Pipe, writer: asyncio.StreamWriter, *,
        upstream: bool,
    ) -> None:  # fmt: skip
        writing = asyncio.create_task(self._write(pipe, writer, upstream=upstream))
        try:
            await self._read(reader, pipe)
            pipe.eof = True
            pipe.more.set()
            await writing
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        finally:
            writing.cancel()

    async def _read(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        while True:
            while pipe.queued >= pipe.limit and not pipe.closed:
                pipe.room.clear()
                await pipe.room.wait()
            data = b"" if pipe.closed else await reader.read(pipe.mss * 8)
            if not data:
                return
            now = time.monotonic()
            for i in range(0, len(data), pipe.mss):
                segment = data[i : i + pipe.mss]
                start = max(now, pipe.link_free_at)
                pipe.link_free_at = start + len(segment) / pipe.rate
                due = max(pipe.link_free_at + pipe.delay, pipe.last_delivery)
                if self._rng.random() < self.profile.loss:
                    due += self.profile.stall_s
                    self.stats.stalls += 1
                pipe.last_delivery = due
                pipe.queue.append((due, segment))
                pipe.queued += len(segment)
            pipe.more.set()

    async def _write(self, pipe: _Pipe, writer: asyncio.StreamWriter, *, upstream: bool) -> None:
        try:
            await self._deliver(pipe, writer, upstream=upstream)
        finally:
            pipe.closed = True
            pipe.room.set()

    async def _deliver(self, pipe: _Pipe, writer: asyncio.StreamWriter, *, upstream: bool) -> None:
        while True:
            while not pipe.queue:
                if pipe.eof:
                    return
                pipe.more.clear()
                await pipe.more.wait()
            due, segment = pipe.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            pipe.queue.popleft()
            pipe.queued -= len(segment)
            pipe.room.set()
            if writer.transport.is_closing():
                return  # cut: what was in flight is lost
            writer.write(segment)
            await writer.drain()
            if upstream:
                self.stats.up_bytes += len(segment)
            else:
                self.stats.down_bytes += len(segment)
