"""Rebuild the seed corpus: ``python -m bench.fuzz.seeds [--out tests/fuzz_corpus] [--target T]``.

Seeds are real inputs made by the project's own encoders under the fuzzing keys of
``bench.fuzz.targets`` (a chain of signed events of every type, batches of each format, acks,
checkpoints, a registry, one small lot-summary bundle proven by ``ledger.summary`` for a lab
lot), the device frames of ``tests/fixtures``, plus a few hand-made inputs at the edges each
decoder documents (trailing bytes, a decompression bomb, non-canonical CBOR, an overlong line).
Masses are committed with random blindings and the bundle carries a random id, so a rebuild
differs byte for byte from the committed corpus; run it only to replace a target's seeds
(``--target T``). Files it does not make (inputs the fuzzer found) are left in place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.settings import render_config
from bench.fuzz.targets import (
    BUNDLE_POLICY,
    DEVICE_ID,
    DEVICE_KEY,
    LEDGER_KEYS,
    SITE_ID,
    SYMBOLOGIES,
    TARGETS,
)
from custody import cbor, cose
from custody.commitment import commit_masses, seal_openings
from custody.envelope import Envelope, EventSigner
from custody.event import GENESIS_PREV, DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey, LedgerKeyPair, kid_for
from ledger.log import sign_checkpoint
from ledger.registry import sign_registry
from ledger.verify.registry import Registry, RegistryEntry
from sync.ack import Ack, Rejection, sign_ack
from sync.batch import FORMAT_CHAINED, ZDICT, encode_batch

__all__ = ["main", "seeds"]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
Seeds = dict[str, bytes]  # file name -> content


def seeds(target: str) -> Seeds:
    """The seed files of one target."""
    if target.startswith("serial_"):
        return _serial(target.removeprefix("serial_"))
    return _BUILDERS[target]()


# --- events ------------------------------------------------------------------------------------
_TIME = DeviceTime(1_767_225_600_000, TimeSource.NTP, TimeQuality.SYNCED)


def _bodies() -> Iterator[tuple[EventType, dict[str, Any]]]:
    sealing = LEDGER_KEYS.public.sealing_key
    yield EventType.BOOT, {"software": "cobalt-custody 0.1.0", "reason": "power-on"}
    points, openings = commit_masses({"gross": 412_600, "tare": 150_300})
    yield EventType.WEIGHING, {
        "mass": {k: p.encoded for k, p in points.items()},
        "sealed": seal_openings(openings, sealing),
        "vehicle": "CD-KLZ-4471", "lot": "LOT-2026-0042", "pass": "single",
        "direction": "in", "seals": ["SEAL-000123"], "scale": "xk3190-a12@/dev/ttyUSB0",
    }  # fmt: skip
    points, openings = commit_masses({"bag": 10_250})
    yield EventType.WEIGHING, {
        "mass": {k: p.encoded for k, p in points.items()},
        "sealed": seal_openings(openings, sealing), "lot": "LOT-2026-0042", "direction": "out",
    }  # fmt: skip
    yield EventType.WEIGHING, {"outcome": "unstable", "vehicle": "CD-KLZ-4471", "manual": True}
    yield EventType.SEAL_SCAN, {"seal": "(01)09520123456788(21)12345", "symbology": "]C1",
                                "lot": "LOT-2026-0042", "photo": bytes(range(32))}  # fmt: skip
    yield EventType.AGGREGATION, {"lot": "LOT-2026-0042", "children": ["SEAL-000123", "S-2"],
                                  "action": "ADD", "note": "bags 1-2"}  # fmt: skip
    points, openings = commit_masses({"in": 262_300, "out": 10_250})
    yield EventType.CHECKPOINT, {"epoch": 1, "upto": 7, "sealed": seal_openings(openings, sealing),
                                 "mass": {k: p.encoded for k, p in points.items()}}  # fmt: skip
    points, openings = commit_masses({"total": 10_250})
    yield EventType.LOT_CONTRIBUTION, {"lot": "LOT-2026-0042", "sealed": seal_openings(
        openings, sealing), "mass": {k: p.encoded for k, p in points.items()}}  # fmt: skip
    yield EventType.CLOCK_SYNC, {"before_ms": 1_767_225_000_000, "after_ms": 1_767_225_600_000,
                                 "source": "gps"}  # fmt: skip
    yield EventType.DEVICE_ATTACH, {"port": "/dev/ttyUSB0", "dialect": "xk3190-a12"}
    yield EventType.DEVICE_DETACH, {"port": "/dev/ttyUSB0", "reason": "unplugged"}
    yield EventType.VOID, {"target": bytes(range(32)), "reason": "wrong vehicle"}
    yield EventType.KEY_ROTATION, {"new_key": DeviceKey(bytes(32)).public_key}
    points, openings = commit_masses({"stock": 1_250_000})
    yield EventType.OPENING_STOCK, {"sealed": seal_openings(openings, sealing), "note": "stockpile",
                                    "mass": {k: p.encoded for k, p in points.items()}}  # fmt: skip


_CHAIN: list[Envelope] = []


def _chain() -> list[Envelope]:
    """One device's chain with an event of every type (built once per run)."""
    if not _CHAIN:
        signer = EventSigner(DEVICE_KEY)
        prev = GENESIS_PREV
        for seq, (type_, body) in enumerate(_bodies(), start=1):
            payload = Payload(DEVICE_ID, SITE_ID, seq, prev, _TIME, 3, type_, body)
            env = signer.sign(payload)
            _CHAIN.append(env)
            prev = env.event_id
    return _CHAIN


def _named(envelopes: list[Envelope]) -> Iterator[tuple[str, Envelope]]:
    for env in envelopes:
        yield f"{env.seq:02d}-{env.payload.type.value}", env


def _envelope() -> Seeds:
    out = {f"{n}.cose": e.cose for n, e in _named(_chain())}
    first = _chain()[1].cose
    out["truncated.cose"] = first[: len(first) // 2]
    out["trailing-byte.cose"] = first + b"\x00"
    return out


def _envelope_payload() -> Seeds:
    out = {f"{n}.cbor": cbor.encode(e.payload.to_map()) for n, e in _named(_chain())}
    # "v": true is not the integer 1 (one encoding per meaning).
    weighing = _chain()[1].payload.to_map()
    out["crash-version-true.cbor"] = cbor.encode({**weighing, "v": True})
    out["crash-mixed-key-types.cbor"] = cbor.encode({**weighing, 1: 0, "x": 0})
    return out


def _cose() -> Seeds:
    out = {f"{n}.cose": e.cose for n, e in list(_named(_chain()))[:3]}
    item = cbor.decode(_chain()[0].cose, allow_tags=(cose.COSE_SIGN1_TAG,))
    out["untagged.cose"] = cbor.encode(item.value)
    out["empty-protected.cose"] = cose.sign1(DEVICE_KEY.signing_key, {}, b"payload")
    out["crit-header.cose"] = cose.sign1(
        DEVICE_KEY.signing_key, {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CRIT: [99]}, b"x"
    )
    out["checkpoint.cose"] = _checkpoint()["checkpoint.cose"]
    return out


def _cbor() -> Seeds:
    out = {
        "payload.cbor": cbor.encode(_chain()[1].payload.to_map()),
        "envelope.cose": _chain()[1].cose,
        "batch-body.cbor": encode_batch(DEVICE_ID, [e.cose for e in _chain()[:2]], False)[1:],
    }
    # Each is refused for one reason of RFC 8949 §4.2.1 or our subset.
    out.update({
        "non-shortest-int.bin": b"\x18\x01",
        "indefinite-array.bin": b"\x9f\x01\x02\xff",
        "unsorted-map.bin": b"\xa2\x61b\x01\x61a\x02",
        "duplicate-key.bin": b"\xa2\x61a\x01\x61a\x02",
        "half-float.bin": b"\xf9\x3c\x00",
        "tag-1-date.bin": b"\xc1\x1a\x65\x5b\xa0\x00",
        "bignum.bin": b"\xc2\x49\x01" + bytes(8),
        "deep-array.bin": b"\x81" * 500 + b"\x00",
        "huge-length.bin": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
        # Refused inputs that cbor2's C decoder leaked with the caller's frames, and a map
        # whose key holds a map whose key holds ... that took exponential time to order.
        "crash-invalid-utf8-key.bin": b"\xa1\x62\xc3\x28\x00",
        "crash-tag-1-overflow.bin": b"\xc1\x1b" + b"\xff" * 8,
        "crash-tag-37-short-uuid.bin": b"\xd8\x25\x41\x00",
        "crash-keys-in-keys.bin": b"\xa1\x82\x61k" * 24 + b"\x00" + b"\x01" * 24,
    })  # fmt: skip
    return out


# --- batches -----------------------------------------------------------------------------------
def _batch() -> Seeds:
    chain = [e.cose for e in _chain()]
    out = {
        "raw-4.bin": encode_batch(DEVICE_ID, chain[:4], False),
        "zlib-4.bin": encode_batch(DEVICE_ID, chain[:4], True),
        "chained-all.bin": encode_batch(DEVICE_ID, chain, "chained"),
        "chained-1.bin": encode_batch(DEVICE_ID, chain[:1], "chained"),
    }
    zlib_4 = out["zlib-4.bin"]
    out["zlib-truncated.bin"] = zlib_4[:-5]
    out["zlib-trailing.bin"] = zlib_4 + b"\x00"
    # A decompression bomb: 300 KiB of zeros in a few hundred bytes (the limit is 256 KiB).
    out["zlib-bomb.bin"] = b"\x01" + zlib.compress(bytes(300 * 1024), 9)
    # An events array head declaring 2^32-1 events before any of them.
    head = encode_batch(DEVICE_ID, chain[:1], False)
    count_at = head.index(b"\x66events") + 7
    out["raw-huge-count.bin"] = head[:count_at] + b"\x9a\xff\xff\xff\xff" + head[count_at + 1 :]
    return out


def _batch_chained() -> Seeds:
    out = {}
    for name, payload in _batch().items():
        if payload[0] == FORMAT_CHAINED:
            out[name.replace(".bin", ".cbor")] = zlib.decompressobj(zdict=ZDICT).decompress(
                payload[1:]
            )
    return out


# --- acks, checkpoints, registries -----------------------------------------------------------
def _acks() -> dict[str, Ack]:
    chain = _chain()
    kid, head = DEVICE_KEY.kid, chain[3]
    root = hashlib.sha256(b"root").digest()
    return {
        "nothing-yet": Ack(DEVICE_ID, kid, 0, GENESIS_PREV, 0, root, 1_767_225_600_000),
        "acked-4": Ack(DEVICE_ID, kid, 4, head.event_id, 17, root, 1_767_225_600_000,
                       correlation=hashlib.sha256(b"batch").digest()),
        "rejected": Ack(
            DEVICE_ID, kid, 4, head.event_id, 17, root, 1_767_225_600_000,
            rejected=(Rejection(0, bytes(range(32)), "not COSE"),
                      Rejection(6, chain[5].event_id, "seq 6: prev does not match")),
            resend_from=5,
        ),
    }  # fmt: skip


def _ack() -> Seeds:
    out = {f"{n}.cose": sign_ack(LEDGER_KEYS, a) for n, a in _acks().items()}
    other = LedgerKeyPair("other-ledger", bytes(32), bytes(range(32)))
    out["other-ledger.cose"] = sign_ack(other, _acks()["acked-4"])
    return out


def _ack_payload() -> Seeds:
    out = {f"{n}.cbor": cbor.encode(a.to_map()) for n, a in _acks().items()}
    out["null-resend.cbor"] = cbor.encode({**_acks()["acked-4"].to_map(), "resend_from": None})
    return out


def _checkpoint() -> Seeds:
    root = hashlib.sha256(b"root").digest()
    return {
        "checkpoint.cose": sign_checkpoint(LEDGER_KEYS, 17, root),
        "empty-log.cose": sign_checkpoint(LEDGER_KEYS, 0, root),
    }


def _checkpoint_payload() -> Seeds:
    out = {}
    for name, data in _checkpoint().items():
        signed = cose.decode_sign1(data)
        out[name.replace(".cose", ".cbor")] = signed.payload
    good = cbor.decode(out["checkpoint.cbor"])
    out["crash-version-true.cbor"] = cbor.encode({**good, "v": True})
    out["crash-time-negative.cbor"] = cbor.encode({**good, "t": -1})
    return out


def _registry_value() -> Registry:
    other = DeviceKey(hashlib.sha256(b"another device").digest())
    entries = (
        RegistryEntry(DEVICE_ID, SITE_ID, DEVICE_KEY.kid, DEVICE_KEY.public_key,
                      1_767_000_000_000, valid_from_ms=1_767_100_000_000),
        RegistryEntry("gw-other-02", "SITE-OTHER", other.kid, other.public_key,
                      1_767_000_000_000, revoked_ms=1_767_300_000_000),
    )  # fmt: skip
    stock, _ = commit_masses({"total": 5_000_000})
    return Registry("fuzz-ledger", 1_767_225_600_000, entries, {SITE_ID: stock["total"].encoded})


def _registry() -> Seeds:
    return {"registry.cose": sign_registry(LEDGER_KEYS, _registry_value())}


def _registry_payload() -> Seeds:
    good = _registry_value().to_map()
    small_order = bytes([1]) + bytes(31)  # the identity point
    entry = {**good["devices"][0], "key": small_order, "kid": kid_for(small_order)}
    return {
        "registry.cbor": cbor.encode(good),
        "crash-version-true.cbor": cbor.encode({**good, "v": True}),
        "crash-ledger-int.cbor": cbor.encode({**good, "ledger": 7}),
        "crash-small-order-key.cbor": cbor.encode({**good, "devices": [entry]}),
    }


# --- a lot summary bundle ----------------------------------------------------------------------
def _bundle() -> Seeds:
    """The smallest real bundle: a lab lot of one site and one bag, proven under BUNDLE_POLICY.

    The lab ledger's keys are random; the summary is signed as the fuzzing ledger, with its
    signing key (what the target verifies under), and opens the masses with the lab ledger's
    sealing key.
    """
    from lab.lots import build_lot
    from ledger.summary import build_summary

    with tempfile.TemporaryDirectory(prefix="cobalt-fuzz-lot-") as tmp:
        lot = build_lot(Path(tmp), sites=1, checkpoints_per_site=1, bags_per_site=1,
                        bag_range=(10, 10), ore_margin=10)  # fmt: skip
        keys = LedgerKeyPair(
            LEDGER_KEYS.ledger_id, LEDGER_KEYS.signing_seed, lot.keys.sealing_secret
        )
        store = lot.store()
        try:
            data = build_summary(store, keys, lot.ledger_dir, lot.lot, policy=BUNDLE_POLICY).bundle
        finally:
            store.close()
    raw = cbor.decode(data)
    statement = raw["statement"]
    policy = {**statement["policy"], "tol": "5"}
    return {
        "tiny.cbor": data,
        "truncated.cbor": data[: len(data) // 2],
        "crash-sites-mixed.cbor": cbor.encode(
            {**raw, "statement": {**statement, "sites": [*statement["sites"], 1]}}
        ),
        "crash-sites-array.cbor": cbor.encode(
            {**raw, "statement": {**statement, "sites": [statement["sites"]]}}
        ),
        "crash-tolerance-text.cbor": cbor.encode(
            {**raw, "statement": {**statement, "policy": policy}}
        ),
    }


# --- seal codes and configuration --------------------------------------------------------
def _seal_code() -> Seeds:
    cases = json.loads((FIXTURES / "scanner-line" / "lines.json").read_text(encoding="utf-8"))
    out = {}
    for i, case in enumerate(cases["cases"]):
        text = case["text"].rstrip("\r\n")
        out[f"{i:02d}.txt"] = b"\x00" + text.encode("utf-8")  # symbology from the text
    gs1 = "010952012345678810ABC\x1d2112345"
    for symbology in ("]C1", "]E0", "]Q1"):
        out[f"reported-{symbology[1:]}.txt"] = (
            bytes([SYMBOLOGIES.index(symbology)])
            + (gs1 if symbology != "]E0" else "9520123456788").encode()
        )
    return out


def _config() -> Seeds:
    base = render_config(DEVICE_ID, SITE_ID)
    return {
        "rendered.toml": base.encode(),
        "ports.toml": base.replace(
            "ports = []", 'ports = ["xk3190-a12@/dev/ttyUSB0", "nmea@loop://"]'
        ).encode(),
        "crash-datetime-date.toml": base.replace(
            'earliest_valid = "2026-01-01"', "earliest_valid = 2026-01-01T00:00:00"
        ).encode(),
        "crash-home-path.toml": base.replace(
            'public_keys = "ledger.json"', 'public_keys = "~nobody-here/ledger.json"'
        ).encode(),
        "crash-nul-path.toml": base.replace(
            'public_keys = "ledger.json"', 'public_keys = "ledger\\u0000.json"'
        ).encode(),
        "not-a-table.toml": b"device = 1\n",
        "bad-utf8.toml": b'[device]\nid = "\xff"\n',
    }


# --- device frames -----------------------------------------------------------------------------
def _fixture_bytes(case: dict[str, Any]) -> bytes:
    if "hex" in case:
        return bytes.fromhex(case["hex"])
    if "data" in case:
        return str(case["data"]).encode("latin-1")
    return str(case["text"]).encode("utf-8")


def _serial(dialect: str) -> Seeds:
    directory = FIXTURES / dialect
    (path,) = directory.glob("*.json")
    cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    out = {f"{i:02d}.bin": _fixture_bytes(c) for i, c in enumerate(cases)}
    stream = b"".join(out.values())
    out["all-cases.bin"] = stream
    # Noise around real frames, and a line or frame that never ends (the buffer bounds).
    out["noise.bin"] = b"\x00\xff\x13garbage" + stream[:200] + b"\xa0\x02\x0d\x0a\x03\x24"
    out["endless.bin"] = stream[:40] + bytes([0x41]) * 5000
    return out


_BUILDERS: dict[str, Callable[[], Seeds]] = {
    "cbor": _cbor,
    "cose": _cose,
    "envelope": _envelope,
    "envelope_payload": _envelope_payload,
    "batch": _batch,
    "batch_chained": _batch_chained,
    "ack": _ack,
    "ack_payload": _ack_payload,
    "checkpoint": _checkpoint,
    "checkpoint_payload": _checkpoint_payload,
    "registry": _registry,
    "registry_payload": _registry_payload,
    "bundle": _bundle,
    "seal_code": _seal_code,
    "config": _config,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz.seeds", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fuzz_corpus")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    args = parser.parse_args(argv)
    for name in sorted(args.target or TARGETS):
        directory: Path = args.out / name
        # Only the files made here are replaced: inputs the fuzzer found stay.
        directory.mkdir(parents=True, exist_ok=True)
        files = seeds(name)
        for file, content in files.items():
            (directory / file).write_bytes(content[: TARGETS[name].max_len])
        print(f"{name}: {len(files)} files, {sum(map(len, files.values()))} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
