"""Rebuild the seed corpus: ``python -m bench.fuzz.seeds [--out tests/fuzz_corpus] [--target T]``.

Seeds are real inputs made by the project's own encoders under the fuzzing keys of
``bench.fuzz.targets`` (a chain of signed events of every type, batches of each format, acks,
checkpoints, a registry authority's chain with an entry of every op, one small lot-summary
bundle proven by ``ledger.summary`` for a lab lot), the device frames of ``tests/fixtures``,
plus a few hand-made inputs at the edges each decoder documents (trailing bytes, a
decompression bomb, non-canonical CBOR, an overlong line, a registry chain with a gap).
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
from unittest import mock

import nacl.signing

from agent.settings import render_config
from bench.fuzz.targets import (
    AUTHORITY,
    AUTHORITY_SIGNING,
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
from ledger.authority import create_authority
from ledger.log import sign_checkpoint
from ledger.verify.authority import AuthorityKey
from ledger.verify.registry import (
    ENTRY_CONTENT_TYPE,
    GENESIS_ENTRY_PREV,
    Op,
    entry_id_of,
    entry_payload,
)
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


# --- registry entries --------------------------------------------------------------------------
_ENTRY_TIME = 1_767_000_000_000
_OTHER_DEVICE = DeviceKey(hashlib.sha256(b"another device").digest())
_CHECKPOINT_ID = hashlib.sha256(b"a checkpoint record").digest()
_STOCK_RECORD = hashlib.sha256(b"an opening_stock record").digest()


def _entry_fields() -> list[tuple[str, Op, dict[str, Any]]]:
    """Seq 1..6 of one authority's chain: an entry of every op, retire with and without
    ``last_checkpoint``."""
    return [
        ("enrol", Op.ENROL, {"device": DEVICE_ID, "site": SITE_ID, "key": DEVICE_KEY.public_key}),
        ("enrol-other", Op.ENROL,
         {"device": "gw-other-02", "site": "SITE-OTHER", "key": _OTHER_DEVICE.public_key}),
        ("stock", Op.STOCK, {"site": SITE_ID, "record": _STOCK_RECORD}),
        ("retire-checkpoint", Op.RETIRE,
         {"kid": _OTHER_DEVICE.kid, "last_seq": 12, "last_checkpoint": _CHECKPOINT_ID}),
        ("retire", Op.RETIRE, {"kid": DEVICE_KEY.kid, "last_seq": 0}),
        ("heartbeat", Op.HEARTBEAT, {}),
    ]  # fmt: skip


def _sign_entry(payload: dict[str, Any], key: nacl.signing.SigningKey = AUTHORITY_SIGNING) -> bytes:
    """``payload`` signed under ``key`` with the header ``ledger.authority.Authority`` writes."""
    protected = {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CONTENT_TYPE: ENTRY_CONTENT_TYPE,
                 cose.HDR_KID: kid_for(bytes(key.verify_key))}  # fmt: skip
    return cose.sign1(key, protected, cbor.encode(payload))


def _entries() -> list[tuple[str, dict[str, Any], bytes]]:
    """``(name, payload, COSE entry)`` of the chain, linked by entry id."""
    out = []
    prev = GENESIS_ENTRY_PREV
    for seq, (name, op, fields) in enumerate(_entry_fields(), start=1):
        payload = entry_payload(AUTHORITY.authority_id, seq, prev, _ENTRY_TIME + seq, op, fields)
        data = _sign_entry(payload)
        out.append((f"{seq:02d}-{name}", payload, data))
        prev = entry_id_of(data)
    return out


def _registry_entry() -> Seeds:
    out = {f"{n}.cose": data for n, _, data in _entries()}
    first_payload, first = _entries()[0][1:]
    out["truncated.cose"] = first[: len(first) // 2]
    out["trailing-byte.cose"] = first + b"\x00"
    # The right profile under another key (the ledger's: it may never sign the registry).
    ledger = nacl.signing.SigningKey(LEDGER_KEYS.signing_seed)
    out["ledger-signed.cose"] = _sign_entry(first_payload, ledger)
    return out


def _registry_entry_payload() -> Seeds:
    out = {f"{n}.cbor": cbor.encode(payload) for n, payload, _ in _entries()}
    enrol = _entries()[0][1]
    small_order = bytes([1]) + bytes(31)  # the identity point
    # Each is refused for one reason (docs/zk-summaries.md §2.1).
    out.update({
        "version-true.cbor": cbor.encode({**enrol, "v": True}),
        "seq-zero.cbor": cbor.encode({**enrol, "seq": 0}),
        "seq-2-genesis-prev.cbor": cbor.encode({**enrol, "seq": 2}),
        "authority-int.cbor": cbor.encode({**enrol, "authority": 7}),
        "other-authority.cbor": cbor.encode({**enrol, "authority": "fuzz-ledger"}),
        "small-order-key.cbor": cbor.encode({**enrol, "key": small_order}),
        "unknown-op.cbor": cbor.encode({**enrol, "op": "revoke"}),
        "heartbeat-with-site.cbor": cbor.encode({**_entries()[5][1], "site": SITE_ID}),
        "retire-null-checkpoint.cbor": cbor.encode({**_entries()[4][1], "last_checkpoint": None}),
        # Unknown keys of two CBOR types: sorting them to name them raised TypeError.
        "crash-mixed-unknown-keys.cbor": cbor.encode({**enrol, 1: 0, "x": 0}),
    })  # fmt: skip
    return out


def _replay_input(items: list[tuple[int, Any]]) -> bytes:
    return cbor.encode([[index, body] for index, body in items])


def _registry_replay() -> Seeds:
    entries = _entries()
    indexes = [0, 4, 9, 10, 15, 21]
    cose_items = [(i, data) for i, (_, _, data) in zip(indexes, entries, strict=True)]
    # Payload maps without "prev": the target links each to the entry before it.
    maps = [{k: v for k, v in payload.items() if k != "prev"} for _, payload, _ in entries]
    map_items = list(zip(indexes, maps, strict=True))
    enrol, enrol_other, stock, retire_cp, retire, heartbeat = maps
    return {
        "chain.cbor": _replay_input(cose_items),
        "chain-maps.cbor": _replay_input(map_items),
        "heartbeat-only.cbor": _replay_input([(3, {**heartbeat, "seq": 1})]),
        # Each is refused by replay for one reason.
        "empty.cbor": _replay_input([]),
        "gap.cbor": _replay_input([map_items[0], map_items[2]]),
        "index-backwards.cbor": _replay_input([(4, maps[0]), (4, maps[1])]),
        "prev-unlinked.cbor": _replay_input([cose_items[0], (5, {**enrol_other,
                                                                 "prev": bytes(range(32))})]),
        "enrol-twice.cbor": _replay_input([(0, enrol), (1, {**enrol, "seq": 2})]),
        "stock-twice.cbor": _replay_input([(0, {**stock, "seq": 1}), (1, {**stock, "seq": 2})]),
        "retire-twice.cbor": _replay_input([(0, {**retire_cp, "seq": 1}),
                                            (1, {**retire, "seq": 2, "kid": retire_cp["kid"]})]),
    }  # fmt: skip


# --- a lot summary bundle ----------------------------------------------------------------------
def _create_fuzz_authority(directory: Path, authority_id: str) -> AuthorityKey:
    """``create_authority`` for the lab lot, under the fuzzing authority's key and id."""
    del authority_id  # the lab's name for it; the target pins AUTHORITY
    with mock.patch.object(nacl.signing.SigningKey, "generate", return_value=AUTHORITY_SIGNING):
        return create_authority(directory, AUTHORITY.authority_id)


def _bundle() -> Seeds:
    """The smallest real bundle: a lab lot of one site, one bag and an opening stock, proven
    under BUNDLE_POLICY.

    The lab ledger's keys are random; the summary is signed as the fuzzing ledger, with its
    signing key (what the target verifies under), and opens the masses with the lab ledger's
    sealing key. The lab's registry authority is created with the fuzzing authority's key (its
    entries are logged leaves, so they cannot be signed again afterwards).
    """
    from lab.lots import build_lot
    from ledger.summary import build_summary

    with (
        tempfile.TemporaryDirectory(prefix="cobalt-fuzz-lot-") as tmp,
        mock.patch("lab.lots.create_authority", _create_fuzz_authority),
    ):
        lot = build_lot(Path(tmp), sites=1, checkpoints_per_site=1, bags_per_site=1,
                        bag_range=(10, 10), ore_margin=10, opening_stock=5)  # fmt: skip
        if lot.authority != AUTHORITY:
            raise RuntimeError("the lab lot's registry authority is not the fuzzing one")
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
    "registry_entry": _registry_entry,
    "registry_entry_payload": _registry_entry_payload,
    "registry_replay": _registry_replay,
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
