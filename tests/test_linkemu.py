"""The benchmark's link emulator (bench/linkemu.py) behaves like the link it claims to be.

Behaviour, not speed: bytes arrive intact and in order through stalls, never
before their one-way delay, an outage cuts live connections and refuses new
ones until it ends. The only rate check is a lower bound that load cannot
break (an emulated link may be slower than asked on a busy machine, never
faster).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.linkemu import LinkEmulator, Profile


class EchoServer:
    """Echoes every byte back on each connection, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _profile(rate_bps: int = 8_000_000, **kw: float) -> Profile:
    args: dict[str, float] = {"rtt_s": 0.0, "loss": 0.0, "stall_s": 0.0, **kw}
    return Profile(
        "test", rate_bps, args["rtt_s"], args["loss"], args["stall_s"],
        outage_every_s=args.get("outage_every_s", 0.0), outage_s=args.get("outage_s", 0.0),
        outage_phase_s=args.get("outage_phase_s", 0.0),
    )  # fmt: skip


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_bytes_arrive_intact_and_in_order_through_stalls(echo: EchoServer) -> None:
    # Half the segments "lost": each holds everything behind it back by 20 ms.
    with LinkEmulator(("127.0.0.1", echo.port), _profile(loss=0.5, stall_s=0.02)) as link:
        data = os.urandom(200_000)
        with socket.create_connection(("127.0.0.1", link.port)) as sock:
            sender = threading.Thread(target=sock.sendall, args=(data,))
            sender.start()
            back = _recv_exactly(sock, len(data))
            sender.join()
    assert back == data
    assert link.stats.stalls > 50  # ~2 x 137 segments, half of them stalled


def test_nothing_arrives_before_its_one_way_delay_and_order_is_kept(echo: EchoServer) -> None:
    rtt = 0.4
    with LinkEmulator(("127.0.0.1", echo.port), _profile(rtt_s=rtt)) as link:
        with socket.create_connection(("127.0.0.1", link.port)) as sock:
            sent = time.monotonic()
            for i in range(5):
                sock.sendall(bytes([i]) * 10)
            back = _recv_exactly(sock, 50)
            elapsed = time.monotonic() - sent
    assert back == b"".join(bytes([i]) * 10 for i in range(5))
    assert elapsed >= rtt  # there and back again: two one-way delays at least


def test_rate_is_a_ceiling(echo: EchoServer) -> None:
    # 40 kB at 160 kbit/s (20 kB/s) each way cannot take less than 2 s, whatever the load.
    with LinkEmulator(("127.0.0.1", echo.port), _profile(rate_bps=160_000)) as link:
        with socket.create_connection(("127.0.0.1", link.port)) as sock:
            start = time.monotonic()
            threading.Thread(target=sock.sendall, args=(bytes(40_000),), daemon=True).start()
            assert _recv_exactly(sock, 40_000) == bytes(40_000)
            elapsed = time.monotonic() - start
    assert elapsed >= 2.0 * 0.95  # one segment of burst
    assert link.stats.up_bytes == link.stats.down_bytes == 40_000


def test_an_outage_cuts_connections_refuses_new_ones_then_recovers(echo: EchoServer) -> None:
    with LinkEmulator(("127.0.0.1", echo.port), _profile()) as link:
        live = socket.create_connection(("127.0.0.1", link.port))
        live.sendall(b"hello")
        assert _recv_exactly(live, 5) == b"hello"

        link.outage(1.0)
        deadline = time.monotonic() + 5
        while not link.down and time.monotonic() < deadline:
            time.sleep(0.01)
        # The live connection is cut: reading ends (EOF or reset), nothing is echoed.
        live.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert live.recv(10) == b""
        live.close()
        assert link.stats.cuts >= 2  # both halves of the proxied connection

        # During the outage a new connection is accepted and dropped at once.
        with socket.create_connection(("127.0.0.1", link.port)) as during:
            during.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert during.recv(10) == b""
        assert link.stats.refused >= 1

        deadline = time.monotonic() + 5
        while link.down:
            assert time.monotonic() < deadline, "the outage did not end"
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", link.port)) as after:
            after.sendall(b"back")
            assert _recv_exactly(after, 4) == b"back"
    assert link.stats.outages == 1
    assert echo.accepted == 2  # before and after; never during the outage


def test_scheduled_outages_follow_the_profile(echo: EchoServer) -> None:
    profile = _profile(outage_every_s=0.5, outage_s=0.2, outage_phase_s=0.1)
    with LinkEmulator(("127.0.0.1", echo.port), profile) as link:
        deadline = time.monotonic() + 10
        while link.stats.outages < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert link.stats.outages >= 2
