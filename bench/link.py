"""The drain over an emulated field link: gateway -> link emulator -> Mosquitto -> ledger.

Like ``drain`` (three processes, outbox filled before the clock starts), but
the gateway reaches the broker through ``bench.linkemu.LinkEmulator`` with a
profile's rate, delay, loss stalls and outages (``--profile vsat|edge2g``).
The run ends when every record is acked or after ``--seconds``.

- ``goodput_ratio``: record payload bytes delivered per second over the link
  rate. Delivered = acked records x the mean batch-payload bytes per record
  sent (resent copies and MQTT framing are overhead, not goodput); per second
  of the whole run, connecting and outages included. Target >= 0.7 on vsat.
- ``link_utilisation``: every byte the emulator delivered upstream per second
  over the link rate (MQTT framing and resends included).
- ``events_per_s``, ``seconds``: acked records and the run's length.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

from bench.e2e import Stack, drain, fill, make_site, temp_root
from bench.linkemu import PROFILES, LinkEmulator
from bench.machine import machine

__all__ = ["SUMMARY", "TARGETS", "add_arguments", "render", "run"]

SUMMARY = "the drain over an emulated field link (vsat, edge2g): goodput ratio"
TARGETS: dict[str, dict[str, float]] = {"vsat": {"goodput_ratio": 0.7}}
DEFAULT_EVENTS = {"vsat": 30_000, "edge2g": 3_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default="vsat", help="link profile")
    parser.add_argument(
        "--events",
        type=int,
        help="pending records (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_EVENTS.items())
        + ")",
    )
    parser.add_argument(
        "--seconds", type=float, default=180.0, help="stop the run after this long (180)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the loss stalls (1)")
    parser.add_argument("--tls", action="store_true", help="TLS with client certificates")


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES[args.profile]
    events = args.events or DEFAULT_EVENTS[args.profile]
    with temp_root("custody-bench-link-") as root:
        site = make_site(root / "site")
        pending = fill(site, events)
        with Stack(site, root / "stack", tls=args.tls) as stack:
            emu = LinkEmulator((stack.host, stack.port), profile, seed=args.seed).start()
            try:
                t0 = time.monotonic()
                gw = drain(site, stack.gateway_broker(emu.port), timeout_s=args.seconds)
                wall = time.monotonic() - t0
            finally:
                emu.stop()
    stats = gw.stats
    acked = stats.acked
    per_record = stats.payload_bytes / stats.events_sent if stats.events_sent else 0.0
    rate = profile.bytes_per_s
    result: dict[str, Any] = {
        "benchmark": "link",
        "profile": profile.name,
        "goodput_ratio": round(acked * per_record / gw.seconds / rate, 3),
        "events_per_s": round(acked / gw.seconds, 1),
        "seconds": round(gw.seconds, 1),
        "acked": acked,
        "pending_at_start": pending,
        "all_acked": acked == pending,
        "link_utilisation": round(emu.stats.up_bytes / wall / rate, 3),
        "payload_bytes_per_event": round(per_record, 1),
        "wire_bytes_up": emu.stats.up_bytes,
        "wire_bytes_down": emu.stats.down_bytes,
        "batches": stats.batches_sent,
        "events_sent": stats.events_sent,
        "requeued": stats.requeued,
        "reconnects": stats.reconnects,
        "link": {
            "rate_bps": profile.rate_bps,
            "rtt_s": profile.rtt_s,
            "loss_per_segment": profile.loss,
            "stall_s": profile.stall_s,
            "outage": f"{profile.outage_s:g} s every {profile.outage_every_s:g} s "
            f"(first at {profile.outage_phase_s:g} s)"
            if profile.outage_every_s
            else "none",
            "stalls": emu.stats.stalls,
            "outages": emu.stats.outages,
            "cut_connections": emu.stats.cuts,
            "refused_connections": emu.stats.refused,
        },
        "transport": "TLS with client certificates" if args.tls else "plain TCP",
        "parameters": {"events": events, "seconds": args.seconds, "seed": args.seed},
        "targets": TARGETS.get(profile.name, {}),
        "machine": machine(),
    }
    result["meets_targets"] = {k: result[k] >= v for k, v in result["targets"].items()}
    return result


def render(result: Mapping[str, Any]) -> str:
    link = result["link"]
    lines = [
        f"profile {result['profile']}: {link['rate_bps'] / 1000:g} kbit/s, "
        f"RTT {link['rtt_s'] * 1000:g} ms, loss {link['loss_per_segment']:.0%} "
        f"(stall {link['stall_s']:g} s), outage {link['outage']}",
        f"goodput ratio       {result['goodput_ratio']:.3f}"
        + (
            f"   target >= {result['targets']['goodput_ratio']:g} "
            f"{'yes' if result['meets_targets']['goodput_ratio'] else 'NO'}"
            if "goodput_ratio" in result["targets"]
            else ""
        ),
        f"link utilisation    {result['link_utilisation']:.3f}",
        f"events/s            {result['events_per_s']:.1f}",
        f"seconds             {result['seconds']:.1f}",
        f"acked               {result['acked']} of {result['pending_at_start']}",
        f"payload B/record    {result['payload_bytes_per_event']:.1f}",
        f"batches {result['batches']}, records sent {result['events_sent']}, requeued "
        f"{result['requeued']}, reconnects {result['reconnects']}, stalls {link['stalls']}, "
        f"outages {link['outages']} (cut {link['cut_connections']}, refused "
        f"{link['refused_connections']})",
        f"transport: {result['transport']}",
    ]
    return "\n".join(lines)
