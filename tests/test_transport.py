"""Transport end to end: simulator -> pty/TCP -> PortReader -> parser, with real faults."""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.frames import TagRead, WeightReading
from firmware_bridge.protocols.registry import dialect, make_parser
from firmware_bridge.sim import encoders
from firmware_bridge.sim.runner import Faults, PtySink, Simulator, TcpSink
from firmware_bridge.transport import (
    Backoff,
    FrameRead,
    FrameSkipped,
    PortEvent,
    PortReader,
    PortState,
    StateChanged,
)

DEADLINE_S = 10.0


def fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.2, rng=random.Random(7))


def wait_for(
    reader: PortReader, predicate: Callable[[PortEvent], bool], timeout: float = DEADLINE_S
) -> list[PortEvent]:
    """Collect events until one satisfies ``predicate`` (fails at the deadline)."""
    seen: list[PortEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = reader.out.get(timeout=0.05)
        except queue.Empty:
            continue
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"deadline passed; saw {seen[-10:]}")


def reading(e: PortEvent) -> WeightReading | None:
    return e.frame if isinstance(e, FrameRead) and isinstance(e.frame, WeightReading) else None


def weighs(value: int) -> Callable[[PortEvent], bool]:
    return lambda e: (r := reading(e)) is not None and r.value == value


def weights(events: list[PortEvent]) -> list[int]:
    return [r.value for e in events if (r := reading(e)) is not None]


def is_state(state: PortState) -> Callable[[PortEvent], bool]:
    return lambda e: isinstance(e, StateChanged) and e.state is state


def test_pty_unplug_and_replug_loses_no_frame_sent_after_reconnect(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB-scale"
    sink = PtySink(link)
    reader = PortReader(
        str(link), lambda: make_parser("xk3190-a9"), settings=dialect("xk3190-a9").serial,
        backoff=fast_backoff(),
    ).start()  # fmt: skip
    try:
        wait_for(reader, is_state(PortState.OPEN))
        for w in range(1, 51):
            sink.write(encoders.xk3190_a9(w * 20))
        got = wait_for(reader, weighs(1000))
        assert weights(got) == [w * 20 for w in range(1, 51)]
        sink.write(b"\x00\x01garbage" + encoders.xk3190_a9(1020))  # noise before a frame
        wait_for(reader, weighs(1020))
        dropped_before = reader.counters.dropped_bytes
        assert dropped_before > 0

        # Unplug in the middle of a frame: the reader sees the device vanish.
        half = encoders.xk3190_a9(99_999)[:6]
        sink.write(half)
        sink.unplug()
        wait_for(reader, is_state(PortState.DOWN))
        assert reader.alive

        sink.replug()  # the adapter comes back under the same name
        wait_for(reader, is_state(PortState.OPEN))
        for w in range(51, 101):
            sink.write(encoders.xk3190_a9(w * 20))
        got = wait_for(reader, weighs(2000))
        assert weights(got) == [w * 20 for w in range(51, 101)]  # none lost, no ghost of the half
        assert reader.counters.reconnects == 1
        assert reader.counters.frames == 101
        # A new connection's parser starts at zero; the counter goes on from the old one's.
        assert reader.counters.dropped_bytes >= dropped_before
        assert reader.alive
    finally:
        reader.stop()
        sink.close()


def test_simulated_weighbridge_over_pty_with_noise_and_bad_checksums(tmp_path: Path) -> None:
    sink = PtySink(tmp_path / "ttyS-sim")
    sim = Simulator(
        "scale", "toledo-continuous", sink, rate=0, seed=3,
        faults=Faults(noise=0.1, bad_checksum=0.1),
    )  # fmt: skip
    reader = PortReader(
        sink.path, lambda: make_parser("toledo-continuous"),
        settings=dialect("toledo-continuous").serial, backoff=fast_backoff(),
    ).start()  # fmt: skip
    try:
        wait_for(reader, is_state(PortState.OPEN))
        sim.run(frames=400)
        deadline = time.monotonic() + DEADLINE_S
        events: list[PortEvent] = []
        while reader.counters.bytes_in < sim.stats.bytes:
            assert time.monotonic() < deadline, (reader.counters, sim.stats)
            time.sleep(0.01)
        while True:
            try:
                events.append(reader.out.get_nowait())
            except queue.Empty:
                break
        frames = [r for e in events if (r := reading(e)) is not None]
        errors = [e.error for e in events if isinstance(e, FrameSkipped)]
        assert sim.stats.corrupted > 10 and sim.stats.noise_bursts > 10
        # Every frame the simulator sent intact comes out; damaged ones are reported.
        assert len(frames) >= 400 - sim.stats.corrupted - sim.stats.noise_bursts
        assert errors and reader.counters.checksum_errors > 0
        assert any(f.stable for f in frames) and any(not f.stable for f in frames)
    finally:
        reader.stop()
        sink.close()


def test_tcp_serial_server_reconnects_after_the_peer_drops(tmp_path: Path) -> None:
    sink = TcpSink()
    reader = PortReader(sink.path, lambda: make_parser("xk3190-a9"), backoff=fast_backoff()).start()
    try:
        wait_for(reader, is_state(PortState.OPEN))
        deadline = time.monotonic() + DEADLINE_S
        while sink._accept() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.write(encoders.xk3190_a9(4200))
        wait_for(reader, weighs(4200))
        assert sink._client is not None
        sink._client.close()  # the serial-over-IP box drops the connection
        sink._client = None
        wait_for(reader, is_state(PortState.DOWN))
        wait_for(reader, is_state(PortState.OPEN))
        while sink._accept() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.write(encoders.xk3190_a9(4300))
        wait_for(reader, weighs(4300))
        assert reader.counters.reconnects >= 1
    finally:
        reader.stop()
        sink.close()


def test_a_device_that_is_not_there_yet_is_retried_until_it_appears(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB-later"
    reader = PortReader(str(link), lambda: make_parser("rdm6300"), backoff=fast_backoff()).start()
    try:
        wait_for(reader, is_state(PortState.DOWN))
        deadline = time.monotonic() + DEADLINE_S
        while reader.counters.open_failures < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.counters.open_failures >= 3 and reader.alive
        sink = PtySink(link)  # plugged in
        try:
            wait_for(reader, is_state(PortState.OPEN))
            sink.write(encoders.rdm6300("0A1B2C3D4E"))
            got = wait_for(reader, lambda e: isinstance(e, FrameRead))
            last = got[-1]
            assert isinstance(last, FrameRead) and isinstance(last.frame, TagRead)
            assert last.frame.tag_id == "0A1B2C3D4E"
        finally:
            sink.close()
    finally:
        reader.stop()


def test_bad_url_fails_once_and_is_not_retried() -> None:
    reader = PortReader("nosuchscheme://x", lambda: make_parser("nmea")).start()
    try:
        wait_for(reader, is_state(PortState.FAILED))
        assert "nosuchscheme" in (reader.last_error or "")
        assert reader.counters.open_failures == 0
    finally:
        reader.stop()


def test_a_slow_consumer_costs_counted_drops_never_unbounded_memory(tmp_path: Path) -> None:
    sink = PtySink(tmp_path / "ttyS-fast")
    out: queue.Queue[PortEvent] = queue.Queue(maxsize=4)
    reader = PortReader(
        sink.path, lambda: make_parser("xk3190-a9"), out=out, put_timeout=0.001,
        backoff=fast_backoff(),
    ).start()  # fmt: skip
    try:
        wait_for(reader, is_state(PortState.OPEN))  # pyserial flushes input on open
        sink.write(b"".join(encoders.xk3190_a9(w) for w in range(200)))
        deadline = time.monotonic() + DEADLINE_S
        while reader.counters.frames + reader.counters.queue_drops < 200:
            assert time.monotonic() < deadline, reader.counters
            time.sleep(0.01)
        assert reader.counters.queue_drops > 0
        assert out.qsize() <= 4
    finally:
        reader.stop()
        sink.close()


@pytest.mark.parametrize("attempts", [1, 5, 30])
def test_backoff_is_capped_and_jittered(attempts: int) -> None:
    b = Backoff(initial=0.5, maximum=8.0, rng=random.Random(attempts))
    delays = [b.next_delay() for _ in range(attempts)]
    for i, d in enumerate(delays):
        cap = min(8.0, 0.5 * 2**i)
        assert cap / 2 <= d <= cap
    b.reset()
    assert b.next_delay() <= 0.5
