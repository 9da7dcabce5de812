"""Ledger intake: verify + append rate from a pre-filled queue of device batches.

A throwaway gateway (``agent.recorder.Recorder``, fresh ledger keys) records
``--events`` mass-bearing events: bag weighings, and every ``--truck-every``-th
a truck weighing with gross and tare (so net too: three commitments). Its signed
envelopes are grouped into ``--batch``-sized batch payloads with
``sync.batch.encode_batch``, exactly what the uplink publishes. Built once,
outside the clock.

Each run then opens a fresh SQLite ledger store (WAL, ``synchronous=FULL``),
enrols the gateway's key and times ``Intake.ingest`` over every payload, one
after the other, as ``custody-ledger run`` does. Measured:

- ``events_per_s``: events logged / wall seconds, one intake process
  (``workers=1``); median of ``--runs`` runs. Every run must log every event
  exactly once (checked: log size, no rejection, ``integrity_ok``).
- ``events_per_s_workers``: the same with the intake's lock-free checks spread
  over ``--workers`` processes (``Intake(workers=N)``).
- ``stage_us``: per event, the intake's own stage clocks (``Intake.stage_seconds``)
  in the one-process runs: decode (batch payload, key pick), verify (strict
  COSE and payload decode, schema, Ed25519 signature), unseal, opening check,
  store (the transaction: chain checks, batched inserts, commit). Median over
  the runs. ``verify_split_us`` splits verify by timing the Ed25519 check alone
  (``cose.verify_sign1`` on decoded envelopes) on the same events.
- ``opening_alternatives_us``: per commitment, on this machine, three ways to
  check an opening: ``naive`` (validate C, recompute v·H + r·G), ``exact``
  (what the intake does: recompute and compare bytes, no separate validation)
  and ``rlc`` (a random linear combination Σ z_i·C_i == (Σ z_i v_i)·H + (Σ z_i r_i)·G
  with 128-bit z_i, through libsodium's one-point multiplications: libsodium
  has no multi-scalar multiplication). See ``custody.commitment.verify_openings``.

``other_load_cores`` is CPU used outside this process during a run: in the
worker runs it includes the intake's own check workers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.utils

from agent.enrol import initialise
from agent.recorder import Recorder
from bench.machine import host_busy_seconds, machine
from custody import cose
from custody.commitment import Opening, open_sealed, verify_opening
from custody.envelope import verify_envelope
from custody.event import EventType
from custody.group import ED25519, ORDER
from custody.keys import LedgerKeyPair
from ledger.intake import Intake
from ledger.keys import PUBLIC_FILE, create_ledger_keys, load_ledger_keypair
from ledger.store import LedgerStore
from sync.batch import encode_batch

__all__ = ["SUMMARY", "TARGETS", "add_arguments", "render", "run"]

SUMMARY = "ledger intake: verify + append rate from a pre-filled queue of batches"

TARGETS: dict[str, float] = {"events_per_s": 3000}
DEVICE = "bench-gw-01"
SITE = "BENCH-01"
_STAGES = ("decode", "verify", "unseal", "opening", "store")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", type=_positive, default=6000, help="events in the queue (default 6000)"
    )
    parser.add_argument(
        "--batch", type=_positive, default=100, help="envelopes per batch payload (default 100)"
    )
    parser.add_argument(
        "--truck-every", type=_positive, default=10,
        help="every N-th event is a truck weighing (gross, tare, net); the rest bags (10)",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=_positive, default=3, help="runs per setting; the median is quoted (3)"
    )
    parser.add_argument(
        "--workers", type=_positive, default=2,
        help="check processes for the parallel runs (default 2; 1 skips them)",
    )  # fmt: skip


@dataclass(frozen=True)
class _Queue:
    ledger: LedgerKeyPair
    public_key: bytes
    kid: bytes
    envelopes: list[bytes]
    payloads: list[bytes]
    commitments: int


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="custody-bench-intake-") as tmp:
        queue = _build_queue(Path(tmp), args.events, args.batch, args.truck_every)
        single = [_run(Path(tmp), queue, 1) for _ in range(args.runs)]
        parallel = (
            [_run(Path(tmp), queue, args.workers) for _ in range(args.runs)]
            if args.workers > 1
            else []
        )
        alternatives = _opening_alternatives(queue)
    results: dict[str, Any] = {
        "benchmark": "intake",
        "events_per_s": _median(single, "events_per_s"),
        "events_per_s_workers": _median(parallel, "events_per_s") if parallel else None,
        "workers": args.workers,
        "cpu_us_per_event": _median(single, "cpu_us_per_event"),
        "stage_us": {stage: _median_stage(single, stage) for stage in _STAGES},
        "verify_split_us": _verify_split(queue, _median_stage(single, "verify")),
        "opening_alternatives_us": alternatives,
        "events": len(queue.envelopes),
        "commitments": queue.commitments,
        "batches": len(queue.payloads),
        "runs": single,
        "runs_workers": parallel,
        "parameters": {
            "events": args.events,
            "batch": args.batch,
            "truck_every": args.truck_every,
            "runs": args.runs,
            "workers": args.workers,
            "store": "SQLite (WAL, synchronous=FULL), fresh per run",
        },
        "targets": dict(TARGETS),
        "machine": machine(),
    }
    results["meets_targets"] = {k: results[k] >= v for k, v in TARGETS.items()}
    return results


def render(result: Mapping[str, Any]) -> str:
    ok = "yes" if result["meets_targets"]["events_per_s"] else "NO"
    lines = [
        f"events/s, 1 process (median)   {result['events_per_s']:>10.0f}  target >= "
        f"{result['targets']['events_per_s']:g}  {ok}",
    ]
    if result["events_per_s_workers"] is not None:
        lines.append(
            f"events/s, {result['workers']} workers (median)  "
            f"{result['events_per_s_workers']:>10.0f}"
        )
    lines.append(f"CPU µs/event, 1 process        {result['cpu_us_per_event']:>10.1f}")
    lines.append("stage µs per event (1 process):")
    for stage, us in result["stage_us"].items():
        lines.append(f"  {stage:<28}{us:>10.1f}")
    split = result["verify_split_us"]
    lines.append(
        f"  (verify = Ed25519 {split['ed25519']:.1f}"
        f" + decode/schema {split['decode_schema_rest']:.1f})"
    )
    lines.append("opening check per commitment, µs:")
    for name, us in result["opening_alternatives_us"].items():
        lines.append(f"  {name:<28}{us:>10.1f}")
    for label, runs in (("1 process", result["runs"]), ("workers", result["runs_workers"])):
        for i, r in enumerate(runs, 1):
            lines.append(
                f"run {label} {i}: {r['events_per_s']:.0f} events/s, {r['seconds']:.2f} s, "
                f"other processes used {r['other_load_cores']} cores"
            )
    lines.append(
        f"{result['events']} events ({result['commitments']} commitments) in "
        f"{result['batches']} batches; machine: {result['machine'].get('cpu', '?')}, "
        f"{result['machine'].get('cores', '?')} cores"
    )
    return "\n".join(lines)


# --- the queue ----------------------------------------------------------------------------
def _build_queue(root: Path, events: int, batch: int, truck_every: int) -> _Queue:
    create_ledger_keys(root / "ledger", "bench-ledger")
    initialise(
        root / "gw", site_id=SITE, device_id=DEVICE, ledger_key_file=root / "ledger" / PUBLIC_FILE
    )
    with _recorder(root / "gw") as rec:
        futures = []
        for i in range(events - 1):  # the boot event is the first of the chain
            if (i + 1) % truck_every == 0:
                body: dict[str, Any] = {"vehicle": f"CD-{i % 97:04d}", "pass": "single"}
                masses = {"gross": 380_000 + 37 * (i % 1000), "tare": 151_000 + i % 500}
            else:
                body = {"scale": "bag-scale-1", "lot": "LOT-7", "seals": [f"S{i:07d}"]}
                masses = {"bag": 9_800 + i % 400}  # ~1 t bags of hydroxide, 0.1 kg units
            futures.append(rec.submit(EventType.WEIGHING, body, masses=masses))
        for f in futures:
            f.result(timeout=120)
        envelopes = [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]
        public_key, kid = rec.key.public_key, rec.key.kid
    payloads = [
        encode_batch(DEVICE, envelopes[i : i + batch]) for i in range(0, len(envelopes), batch)
    ]
    commitments = sum(3 if (i + 1) % truck_every == 0 else 1 for i in range(events - 1))
    return _Queue(
        load_ledger_keypair(root / "ledger"), public_key, kid, envelopes, payloads, commitments
    )


@contextmanager
def _recorder(data_dir: Path) -> Iterator[Recorder]:
    rec = Recorder(data_dir, boot_reason="benchmark")
    try:
        yield rec
    finally:
        rec.close()


# --- one run ------------------------------------------------------------------------------
def _run(root: Path, queue: _Queue, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as tmp:
        store = LedgerStore(Path(tmp) / "ledger.sqlite")
        store.enroll(DEVICE, SITE, queue.public_key, queue.kid)
        intake = Intake(store, queue.ledger, workers=workers)
        try:
            intake.warm_up()  # worker processes started and H table built, outside the clock
            t0, cpu0, host0 = time.perf_counter(), time.process_time(), host_busy_seconds()
            logged = rejected = 0
            for payload in queue.payloads:
                result = intake.ingest(DEVICE, payload)
                logged += result.logged
                rejected += result.rejected
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            host1 = host_busy_seconds()
            n = len(queue.envelopes)
            if logged != n or rejected or store.log_size() != n or not store.integrity_ok():
                raise RuntimeError(f"intake logged {logged} of {n}, rejected {rejected}")
            stages = dict(intake.stage_seconds)
        finally:
            intake.close()
            store.close()
    return {
        "events_per_s": round(n / seconds, 1),
        "seconds": round(seconds, 3),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),  # this process only
        "stage_us": {k: round(v / n * 1e6, 1) for k, v in stages.items()},
        "other_load_cores": (
            None
            if host0 is None or host1 is None
            else round(max(0.0, (host1 - host0 - cpu) / seconds), 2)
        ),
    }


# --- opening checks, side by side -----------------------------------------------------------
def _opening_alternatives(queue: _Queue, sample: int = 600) -> dict[str, float]:
    pairs: list[tuple[bytes, Opening]] = []
    for data in queue.envelopes:
        body = verify_envelope(data, queue.public_key).payload.body
        if "sealed" not in body:
            continue
        ledger = queue.ledger
        openings = open_sealed(body["sealed"], ledger.public.sealing_key, ledger.sealing_secret)
        pairs += [(body["mass"][name], o) for name, o in openings.items() if name != "net"]
        if len(pairs) >= sample:
            break
    ED25519.mul_h_small(1)  # the table, outside the clock

    def naive() -> None:
        for c, o in pairs:
            assert verify_opening(ED25519.point(c), o)

    def exact() -> None:
        from custody.commitment import verify_openings

        assert verify_openings(pairs) == []

    def rlc() -> None:
        # Σ z_i·C_i with one variable-base multiplication per commitment.
        acc_c: bytes | None = None
        zv = 0
        zr = 0
        for c, o in pairs:
            z = int.from_bytes(nacl.utils.random(16), "little") | 1
            zc = sodium.crypto_scalarmult_ed25519_noclamp(z.to_bytes(32, "little"), c)
            acc_c = zc if acc_c is None else sodium.crypto_core_ed25519_add(acc_c, zc)
            zv += z * o.value
            zr = (zr + z * o.blinding.to_int()) % ORDER
        rhs = ED25519.add(
            ED25519.mul(ED25519.scalar_from_int(zv % ORDER), ED25519.H),
            ED25519.mul_base(ED25519.scalar_from_int(zr)),
        )
        assert rhs is not None
        assert rhs.encoded == acc_c

    out = {}
    for name, check in (("naive", naive), ("exact", exact), ("rlc", rlc)):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            check()
            times.append((time.perf_counter() - t0) / len(pairs) * 1e6)
        out[name] = round(statistics.median(times), 1)
    return out


def _verify_split(queue: _Queue, verify_us: float) -> dict[str, float]:
    msgs = [cose.decode_sign1(data) for data in queue.envelopes]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for msg in msgs:
            cose.verify_sign1(msg, queue.public_key)
        times.append((time.perf_counter() - t0) / len(msgs) * 1e6)
    ed25519 = round(statistics.median(times), 1)
    return {"ed25519": ed25519, "decode_schema_rest": round(max(0.0, verify_us - ed25519), 1)}


# --- helpers ------------------------------------------------------------------------------
def _median_stage(runs: list[dict[str, Any]], stage: str) -> float:
    return round(float(statistics.median(r["stage_us"].get(stage, 0.0) for r in runs)), 1)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(r[key] for r in runs)), 1)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
