"""Scale parser throughput: frames per second for each dialect in ``protocols.scales``.

For each dialect a stream of about ``--mb`` MB of realistic frames is built
first: trucks driving on and off a weighbridge, the weight ramping in 20 kg
steps while in motion and holding stable in between, in that dialect's wire
format. The stream is cut into ``--chunk``-byte pieces (4 KiB, a typical serial
read) and fed to a fresh parser; the clock covers only the ``feed`` calls.
Measured per dialect, median of ``--runs`` runs:

- ``frames_per_s``: frames the parser returned per second of feeding.
- ``mb_per_s``: the same run in stream megabytes (10^6 bytes) per second.
- ``errors``: ``FrameError`` items (0 for a correct generator and parser).

The target, ``>= 50,000 frames/s``, is for the line dialects (MT-SICS, SMA,
A&D/CAS, XK3190-A12, regex); the marker dialects are reported against the
same number. A truck scale updates about 10 times a second, so the target is a
budget for CPU, not for keeping up with one port.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bench.machine import machine
from firmware_bridge.protocols import registry
from firmware_bridge.protocols.rfid import wiegand26_bits
from firmware_bridge.sim.runner import frames_for

__all__ = ["SUMMARY", "TARGET_FRAMES_PER_S", "add_arguments", "render", "run"]

SUMMARY = "parser throughput: frames/s per dialect on a ~10 MB stream fed in 4 KiB chunks"

TARGET_FRAMES_PER_S = 50_000
LINE_DIALECTS = frozenset(
    {"mt-sics", "sma", "ad-cas", "xk3190-a12", "regex", "scanner-line", "nmea", "wiegand26-text"}
)

# A Rice Lake RLWS stream (device-protocols.md §1.5) read through the regex dialect.
REGEX_OPTIONS: dict[str, Any] = {
    "pattern": (
        r"\x02(?P<sign>[ -])(?P<value>[ 0-9.]{7,8})(?P<unit>[LKGT])(?P<mode>[GN])"
        r"(?:(?P<motion>M)|(?P<overload>O)|(?P<zero>Z)|[ I])"
    ),
    "units": {"L": "lb", "K": "kg", "G": "g", "T": "t"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mb", type=_positive_float, default=10.0, help="stream size per dialect in MB (10)"
    )
    parser.add_argument(
        "--chunk", type=_positive, default=4096, help="bytes per feed call (default 4096)"
    )
    parser.add_argument(
        "--runs", type=_positive, default=3, help="runs per dialect; the median is quoted (3)"
    )
    parser.add_argument(
        "--dialect",
        action="append",
        choices=sorted(_GENERATORS),
        help="only this dialect (repeatable; default: all)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.mb * 1_000_000)
    chunk: int = args.chunk
    runs: int = args.runs
    names = sorted(args.dialect or _GENERATORS)
    dialects = registry.all_dialects()
    results: dict[str, Any] = {}
    for name in names:
        options = REGEX_OPTIONS if name == "regex" else {}
        stream, sent = _stream(name, size)
        pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
        factory = dialects[name].factory
        timings = [_feed(factory, options, pieces) for _ in range(runs)]
        seconds = statistics.median(t["seconds"] for t in timings)
        frames = timings[0]["frames"]
        fps = round(frames / seconds, 1)
        results[name] = {
            "frames_per_s": fps,
            "mb_per_s": round(len(stream) / seconds / 1e6, 2),
            "frames": frames,
            "frames_sent": sent,
            "errors": timings[0]["errors"],
            "bytes": len(stream),
            "line_dialect": name in LINE_DIALECTS,
            "meets_target": fps >= TARGET_FRAMES_PER_S,
            "runs_frames_per_s": [round(frames / t["seconds"], 1) for t in timings],
        }
    return {
        "benchmark": "parsers",
        "target": {"frames_per_s": TARGET_FRAMES_PER_S, "applies_to": sorted(LINE_DIALECTS)},
        "dialects": results,
        "meets_targets": all(r["meets_target"] for n, r in results.items() if n in LINE_DIALECTS),
        "parameters": {"mb": args.mb, "chunk": chunk, "runs": runs},
        "machine": machine(),
    }


def render(result: Mapping[str, Any]) -> str:
    target = result["target"]["frames_per_s"]
    lines = [f"{'dialect':<20}{'frames/s':>12}{'MB/s':>8}{'frames':>10}{'errors':>8}  target  ok"]
    for name, r in result["dialects"].items():
        bound = f">= {target:,}" if r["line_dialect"] else "(marker)"
        ok = "yes" if r["meets_target"] else "NO"
        lines.append(
            f"{name:<20}{r['frames_per_s']:>12,.0f}{r['mb_per_s']:>8.2f}{r['frames']:>10}"
            f"{r['errors']:>8}  {bound}  {ok}"
        )
    p = result["parameters"]
    m = result["machine"]
    lines.append("")
    lines.append(f"parameters: {p['mb']} MB per dialect, {p['chunk']}-byte feeds, {p['runs']} runs")
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('python', '?')}"
    )
    return "\n".join(lines)


# --- runs ---------------------------------------------------------------------------------
def _feed(
    factory: Callable[..., Any], options: Mapping[str, Any], pieces: list[bytes]
) -> dict[str, Any]:
    parser = factory(**options)
    feed = parser.feed
    t0 = time.perf_counter()
    for piece in pieces:
        feed(piece)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "frames": parser.stats.frames, "errors": parser.stats.errors}


def _stream(name: str, size: int) -> tuple[bytes, int]:
    """About ``size`` bytes of ``name`` frames and how many frames that is."""
    frames: list[bytes] = []
    total = 0
    for frame in _GENERATORS[name](_truck_profile()):
        frames.append(frame)
        total += len(frame)
        if total >= size:
            break
    return b"".join(frames), len(frames)


def _truck_profile() -> Iterator[tuple[int, bool]]:
    """(kg, stable) forever: an empty bridge, a truck driving on, parked, driving off."""
    while True:
        for _ in range(50):
            yield 0, True
        for kg in range(20, 42_001, 20):  # 20 kg division (DOMAIN.md: 10-20 kg)
            yield kg, False
        for _ in range(300):
            yield 42_000, True
        for kg in range(41_980, -1, -20):
            yield kg, False


def _xor_hex(data: bytes) -> bytes:
    x = 0
    for b in data:
        x ^= b
    return b"%02X" % x


def _mt_sics(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, stable in profile:  # SIR stream (§1.1.1), 10-character right-aligned value
        yield b"S %s %10s kg\r\n" % (b"S" if stable else b"D", b"%.1f" % kg)


def _toledo(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, stable in profile:  # §1.2: dp code 001 (x10), increment x2, kg, checksum
        swb = 0x30 | (0 if stable else 0x08)
        frame = b"\x02\x31" + bytes([swb]) + b"\x20%06d000000\r" % (kg // 10)
        yield frame + bytes([-sum(frame) & 0x7F])


def _sma(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, stable in profile:  # §1.3 reply to R
        yield b"\n%s1G%s %10dkg \r" % (b"Z" if kg == 0 else b" ", b" " if stable else b"M", kg)


def _ad_cas(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, stable in profile:  # §1.4 AD-4404 layout
        yield b"%s,GS,+%07.1fkg\r\n" % (b"ST" if stable else b"US", kg)


def _a9(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, _ in profile:  # §1.6 continuous format 0
        body = b"+%06d0" % kg
        yield b"\x02" + body + _xor_hex(body) + b"\x03"


def _a12(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, _ in profile:  # §1.6 "WG" format
        body = b"WG%07dkg" % kg
        yield body + _xor_hex(body) + b"\r\n"


def _regex(profile: Iterator[tuple[int, bool]]) -> Iterator[bytes]:
    for kg, stable in profile:  # §1.5 Rice Lake RLWS
        yield b"\x02 %8.1fKG%s\r\n" % (kg, b" " if stable else b"M")


_GENERATORS: dict[str, Callable[[Iterator[tuple[int, bool]]], Iterator[bytes]]] = {
    "mt-sics": _mt_sics,
    "toledo-continuous": _toledo,
    "sma": _sma,
    "ad-cas": _ad_cas,
    "xk3190-a9": _a9,
    "xk3190-a12": _a12,
    "regex": _regex,
    "rdm6300": lambda _p: frames_for("rfid", "rdm6300", random.Random(1)),
    "scanner-line": lambda _p: frames_for("scanner", "scanner-line", random.Random(1)),
    "nmea": lambda _p: frames_for("gps", "nmea", random.Random(1)),
    "wiegand26-text": lambda _p: _wiegand(),
}


def _wiegand() -> Iterator[bytes]:
    """Readers set to emit the 26 bits as text, one card per line (§3.2)."""
    rng = random.Random(1)
    while True:
        yield wiegand26_bits(rng.randrange(256), rng.randrange(65536)).encode() + b"\r\n"


# --- helpers ------------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
