"""The simulators: wire formats from the manuals, realistic and reproducible scenarios."""

from __future__ import annotations

import random

import pytest

from firmware_bridge.sim import encoders, scenarios
from firmware_bridge.sim.runner import KINDS, PtySink, Simulator, frames_for


# Vectors quoted in ../shared/reference/device-protocols.md, from the manuals cited there.
@pytest.mark.parametrize(
    ("frame", "expected_hex"),
    [
        # §1.2 Toledo continuous, Wildcat manual App. 2: 12 340 kg gross stable.
        (encoders.toledo_continuous(12340), "022a3020303132333430303030303030 0d2d"),
        # §1.2: weighbridge, 20 kg division, dummy zero, net, motion, tare 5 000 kg.
        (
            encoders.toledo_continuous(
                1234, tare=500, dp_code=0b001, increment=0b10, net=True, motion=True
            ),
            "02313920303031323334303030353030 0d18",
        ),
        # §1.6 Yaohua XK3190 continuous format 0: 12 340 kg.
        (encoders.xk3190_a9(12340), "022b30313233343030314603"),
        # §1.6 XK3190-A12(E) manual example "WG004.139kg3D".
        (encoders.xk3190_a12("004.139"), "5747303034 2e313339 6b67 3344 0d0a"),
        # §3.1 RDM6300: fob 0008844356.
        (encoders.rdm6300("100086F444"), "02313030303836463434343236 03"),
        # §5 NMEA, pynmea2's test vector (checksum 6D).
        (
            encoders.nmea_sentence(
                "GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000"
            ),
            (
                b"$GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000*6D\r\n"
            ).hex(),
        ),
    ],
)
def test_encoders_reproduce_the_manual_frames(frame: bytes, expected_hex: str) -> None:
    assert frame == bytes.fromhex(expected_hex.replace(" ", ""))


def test_a_truck_visit_ramps_rocks_settles_and_leaves() -> None:
    samples = list(scenarios.truck_visits(random.Random(5), trucks=1))
    stable_loaded = [s for s in samples if s.stable and s.kg > 1000]
    assert stable_loaded, "the truck settles"
    gross = stable_loaded[0].kg
    assert all(s.kg == gross for s in stable_loaded)
    assert gross % 20 == 0 and 28_000 <= gross <= 48_000
    first_stable = samples.index(stable_loaded[0])
    assert any(not s.stable and s.kg > gross / 2 for s in samples[:first_stable])  # motion first
    assert samples[-1].kg == 0 and samples[-1].event == "leave"
    assert [s.event for s in samples if s.event] == ["arrive", "stable", "leave"]


def test_scenarios_are_reproducible_by_seed() -> None:
    a = list(scenarios.truck_visits(random.Random(9), trucks=3))
    b = list(scenarios.truck_visits(random.Random(9), trucks=3))
    c = list(scenarios.truck_visits(random.Random(10), trucks=3))
    assert a == b and a != c


def test_overload_is_injected_on_request() -> None:
    samples = list(scenarios.truck_visits(random.Random(1), trucks=2, overload_every=2))
    assert any(s.overload for s in samples)


def test_seal_codes_carry_valid_gs1_check_digits() -> None:
    gen = scenarios.seal_codes(random.Random(2))
    for _ in range(20):
        code = next(gen)
        assert code.startswith("00") and len(code) == 20
        digits = code[2:]
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
        assert (10 - total % 10) % 10 == int(digits[-1])


# MT-SICS is request/response: covered by the responder test below.
STREAMING = [(k, d) for k, ds in KINDS.items() for d in ds if d != "mt-sics"]


@pytest.mark.parametrize(("kind", "dialect"), STREAMING)
def test_every_simulated_stream_starts(kind: str, dialect: str) -> None:
    gen = frames_for(kind, dialect, random.Random(1))
    frames = [next(gen) for _ in range(30)]
    assert all(isinstance(f, bytes) and f for f in frames)


def test_unknown_dialect_for_a_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="known"):
        Simulator("rfid", "toledo-continuous", PtySink())


def test_mt_sics_responder_answers_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import threading

    sink = PtySink()
    sim = Simulator("scale", "mt-sics", sink, rate=50, seed=4)
    thread = threading.Thread(target=sim.run, kwargs={"duration": 5.0}, daemon=True)
    thread.start()
    fd = os.open(sink.slave_path, os.O_RDWR | os.O_NOCTTY)
    try:
        replies = []
        for command in (b"SI\r\n", b"@\r\n", b"XYZ\r\n", b"Z\r\n"):
            os.write(fd, command)
            buf = b""
            while not buf.endswith(b"\r\n"):
                buf += os.read(fd, 64)
            replies.append(buf)
        assert replies[0].startswith((b"S S ", b"S D ", b"S +")) and replies[0].endswith(b"kg\r\n")
        assert replies[1] == b'I4 A "SIM0042"\r\n'
        assert replies[2] == b"ES\r\n"
        assert replies[3] in (b"Z A\r\n", b"Z I\r\n")
    finally:
        sim.stop()
        thread.join(5)
        os.close(fd)
        sink.close()
