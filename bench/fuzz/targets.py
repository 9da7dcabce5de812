"""Fuzz targets: one plain function per decoder of outside bytes, replayable without a fuzzer.

Each target is ``f(data: bytes) -> None``. It returns when the decoder accepts ``data`` or
refuses it with the error the decoder documents; any other exception is a crash, and so is an
``InvariantViolation``: a property the decoder promises that the input broke (a strict decoder
accepts only what its encoder writes back byte for byte; a serial parser never raises, never
buffers past its documented bound, and finds the same frames however the bytes are chunked).
``Target.__call__`` caps the input at ``max_len`` so that every input stays bounded in time;
the fuzzer is given the same cap.

Signed documents (envelopes, acks, checkpoints, registry entries) have two targets each: the
raw bytes as received, and ``*_payload`` where the input is the signed payload: the target signs
it with fixed fuzzing keys first, so the fuzzer reaches the schema checks behind the signature.
``registry_replay`` goes one step further, to the chain checks of ``replay``: its input is a
list of entry payloads that the target signs (and links) itself. The keys are derived from
public labels (``_seed``); they sign nothing outside fuzzing. The bundle target verifies under
the same ledger and registry authority keys, which signed the committed seed bundle
(``bench.fuzz.seeds``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import random
import tempfile
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import nacl.signing

from agent.settings import check_config, load_config
from custody import cbor, cose
from custody.envelope import EventSigner, verify_envelope
from custody.errors import (
    ConfigError,
    DecodeError,
    ProofError,
    SchemaError,
    VerificationError,
)
from custody.event import CONTENT_TYPE
from custody.keys import DeviceKey, LedgerKeyPair, kid_for
from firmware_bridge.errors import ProtocolError
from firmware_bridge.frames import CommandReply, GpsFix, SealCode, TagRead, WeightReading
from firmware_bridge.protocols import registry as dialects
from firmware_bridge.protocols.base import FrameError, LineParser, Parser
from firmware_bridge.protocols.codes import classify_code
from firmware_bridge.protocols.rfid import (
    CHAFON_MAX_FRAME,
    R2000_MAX_FRAME,
    RDM6300_MAX_FRAME,
    WIEGAND_FORMATS,
)
from firmware_bridge.protocols.scales import ToledoContinuousParser, Xk3190A9Parser
from ledger.verify.authority import AuthorityKey
from ledger.verify.bundle import verify_bundle
from ledger.verify.checkpoint import CHECKPOINT_CONTENT_TYPE, verify_checkpoint
from ledger.verify.policy import PUBLISHED_POLICIES
from ledger.verify.registry import (
    ENTRY_CONTENT_TYPE,
    GENESIS_ENTRY_PREV,
    LoggedEntry,
    Op,
    RegistryEntry,
    RegistryState,
    decode_entry,
    entry_id_of,
    entry_payload,
    replay,
)
from sync.ack import ACK_CONTENT_TYPE, sign_ack, verify_ack
from sync.batch import (
    FORMAT_CBOR,
    FORMAT_CHAINED,
    FORMAT_ZLIB,
    MAX_BATCH_BYTES,
    ZDICT,
    Batch,
    decode_batch,
    encode_batch,
)

__all__ = [
    "AUTHORITY",
    "AUTHORITY_SIGNING",
    "BUNDLE_POLICY",
    "DEVICE_ID",
    "DEVICE_KEY",
    "LEDGER_KEYS",
    "SITE_ID",
    "SYMBOLOGIES",
    "TARGETS",
    "InvariantViolation",
    "Target",
]


class InvariantViolation(Exception):
    """The decoder accepted or produced something its own contract rules out."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    fn: Callable[[bytes], None]
    max_len: int  # longest input tried (bytes): bounds the time one input may take
    summary: str

    def __call__(self, data: bytes) -> None:
        self.fn(bytes(data[: self.max_len]))


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"cobalt-custody/fuzz/" + label.encode()).digest()


DEVICE_ID = "gw-fuzz-01"
SITE_ID = "SITE-FUZZ"
DEVICE_KEY = DeviceKey(_seed("device"))
LEDGER_KEYS = LedgerKeyPair("fuzz-ledger", _seed("ledger-signing"), _seed("ledger-sealing"))
LEDGER = LEDGER_KEYS.public
AUTHORITY_SIGNING = nacl.signing.SigningKey(_seed("registry-authority"))
AUTHORITY = AuthorityKey("fuzz-registry", bytes(AUTHORITY_SIGNING.verify_key))
# The seed bundle is proven under this policy (short range proofs keep one input fast); the
# verifier is told it is published so that a valid bundle gets through every check.
BUNDLE_POLICY = dataclasses.replace(
    PUBLISHED_POLICIES[2], version=99, balance_bits=8, tolerance_bits=4, window=1, stock_bits=4
)
_POLICIES = {**PUBLISHED_POLICIES, BUNDLE_POLICY.version: BUNDLE_POLICY}
_DEVICE_PUBLIC = DEVICE_KEY.public_key
_DEVICE_SIGNING = DEVICE_KEY.signing_key
_LEDGER_SIGNING = nacl.signing.SigningKey(LEDGER_KEYS.signing_seed)
_DEVICE_SIGNER = EventSigner(DEVICE_KEY)


def _signed(key: nacl.signing.SigningKey, content_type: str, payload: bytes) -> bytes:
    """A COSE_Sign1 with our documents' exact header: alg, content type, kid of ``key``."""
    protected = {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: content_type,
        cose.HDR_KID: kid_for(bytes(key.verify_key)),
    }
    return cose.sign1(key, protected, payload)


# --- CBOR and COSE ---------------------------------------------------------------------------
class _Local:
    """A stand-in for the buffers of whoever calls a decoder."""


def fuzz_cbor(data: bytes) -> None:
    refs: list[weakref.ref[_Local]] = []
    value = _decode_in_a_frame(data, refs)
    # A decoder that leaks an exception keeps its caller's frames, and their buffers, alive.
    if refs[0]() is not None:
        raise InvariantViolation("decode kept its caller's frame alive (a leaked exception)")
    # Strict by round trip: whatever decode accepts is the one encoding of its value.
    if value is not _REFUSED and cbor.encode(value) != data:
        raise InvariantViolation("decode accepted bytes that encode() does not reproduce")


_REFUSED = object()


def _decode_in_a_frame(data: bytes, refs: list[weakref.ref[_Local]]) -> Any:
    local = _Local()
    refs.append(weakref.ref(local))
    try:
        return cbor.decode(data, allow_tags=(cose.COSE_SIGN1_TAG,))
    except DecodeError:
        return _REFUSED


def fuzz_cose(data: bytes) -> None:
    for require_tag in (True, False):
        try:
            msg = cose.decode_sign1(data, require_tag=require_tag)
        except DecodeError:
            continue
        if require_tag and not msg.tagged:
            raise InvariantViolation(
                "an untagged COSE_Sign1 was accepted where the tag is required"
            )
        with contextlib.suppress(VerificationError):
            cose.verify_sign1(msg, _DEVICE_PUBLIC)


# --- envelopes -------------------------------------------------------------------------------
def fuzz_envelope(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        verify_envelope(data, _DEVICE_PUBLIC)


def fuzz_envelope_payload(data: bytes) -> None:
    envelope = _signed(_DEVICE_SIGNING, CONTENT_TYPE, data)
    try:
        env = verify_envelope(envelope, _DEVICE_PUBLIC)
    except VerificationError:
        return
    # One encoding per meaning: the accepted payload is exactly what its fields re-encode to,
    # and signing it again gives the same envelope.
    if cbor.encode(env.payload.to_map()) != data:
        raise InvariantViolation("an accepted payload does not re-encode to the signed bytes")
    if _DEVICE_SIGNER.sign(env.payload).cose != envelope:
        raise InvariantViolation("re-signing an accepted payload gives another envelope")
    p = env.payload
    _integers(p.version, p.seq, p.boot, p.time.ms)


def _integers(*values: object) -> None:
    """CBOR true/false equal 1/0 in Python: a field checked only with ``==`` lets them in."""
    if any(isinstance(v, bool) for v in values):
        raise InvariantViolation("a boolean was accepted where the schema has an integer")


# --- batches ---------------------------------------------------------------------------------
def fuzz_batch(data: bytes) -> None:
    try:
        batch = decode_batch(data, device_id=DEVICE_ID)
    except DecodeError:
        return
    _check_batch(batch, data)


def fuzz_batch_chained(data: bytes) -> None:
    """``data`` is the CBOR body of a 0x02 batch; compressed here with the format's dictionary."""
    deflater = zlib.compressobj(6, zdict=ZDICT)
    payload = bytes([FORMAT_CHAINED]) + deflater.compress(data) + deflater.flush()
    try:
        batch = decode_batch(payload, device_id=DEVICE_ID)
    except DecodeError:
        return
    _check_batch(batch, payload)


def _check_batch(batch: Batch, payload: bytes) -> None:
    if payload[0] == FORMAT_CBOR and encode_batch(DEVICE_ID, batch.envelopes, False) != payload:
        raise InvariantViolation("an accepted 0x00 batch does not re-encode to its bytes")
    for compress in (False, True, "chained"):
        again = encode_batch(DEVICE_ID, batch.envelopes, compress)
        # Re-encoding never grows past what was accepted, except raw, by the elided bytes.
        try:
            decoded = decode_batch(again, device_id=DEVICE_ID, max_bytes=4 * MAX_BATCH_BYTES,
                                   max_decompressed=4 * MAX_BATCH_BYTES)  # fmt: skip
        except DecodeError as exc:
            raise InvariantViolation(f"encode_batch({compress!r}) output refused: {exc}") from exc
        if decoded.envelopes != batch.envelopes:
            raise InvariantViolation(f"encode_batch({compress!r}) round trip changed envelopes")
    expected = {FORMAT_CBOR: False, FORMAT_ZLIB: True, FORMAT_CHAINED: True}[payload[0]]
    if batch.compressed != expected:
        raise InvariantViolation("the batch's compressed flag does not match its format byte")
    # What the intake does next with each envelope.
    for envelope in batch.envelopes:
        with contextlib.suppress(VerificationError):
            verify_envelope(envelope, _DEVICE_PUBLIC)


# --- acks, checkpoints, registry entries -------------------------------------------------
def fuzz_ack(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        verify_ack(data, LEDGER, device_id=DEVICE_ID, device_kid=DEVICE_KEY.kid)


def fuzz_ack_payload(data: bytes) -> None:
    signed = _signed(_LEDGER_SIGNING, ACK_CONTENT_TYPE, data)
    try:
        ack = verify_ack(signed, LEDGER, device_id=DEVICE_ID, device_kid=DEVICE_KEY.kid)
    except VerificationError:
        return
    if sign_ack(LEDGER_KEYS, ack) != signed:
        raise InvariantViolation("an accepted ack does not re-sign to the same bytes")


def fuzz_checkpoint(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        verify_checkpoint(data, LEDGER)


def fuzz_checkpoint_payload(data: bytes) -> None:
    signed = _signed(_LEDGER_SIGNING, CHECKPOINT_CONTENT_TYPE, data)
    try:
        checkpoint = verify_checkpoint(signed, LEDGER)
    except VerificationError:
        return
    if cbor.encode(checkpoint.to_map()) != data:
        raise InvariantViolation("an accepted checkpoint does not re-encode to the signed bytes")
    _integers(checkpoint.size, checkpoint.time_ms)


def fuzz_registry_entry(data: bytes) -> None:
    try:
        entry = decode_entry(data, AUTHORITY)
    except VerificationError:
        return
    _check_entry(entry, data)


def fuzz_registry_entry_payload(data: bytes) -> None:
    signed = _signed(AUTHORITY_SIGNING, ENTRY_CONTENT_TYPE, data)
    try:
        entry = decode_entry(signed, AUTHORITY)
    except VerificationError:
        return
    _check_entry(entry, signed)


def _check_entry(entry: RegistryEntry, signed: bytes) -> None:
    """One encoding per meaning: an accepted entry is what its own fields sign to."""
    if entry.entry_id != entry_id_of(signed):
        raise InvariantViolation("an entry's id is not the SHA-256 of its bytes")
    try:  # the authority's encoder, which checks as decode_entry does
        payload = entry_payload(entry.authority_id, entry.seq, entry.prev, entry.time_ms,
                                entry.op, _op_fields(entry))  # fmt: skip
    except SchemaError as exc:
        raise InvariantViolation(f"entry_payload refuses an accepted entry: {exc}") from exc
    if _signed(AUTHORITY_SIGNING, ENTRY_CONTENT_TYPE, cbor.encode(payload)) != signed:
        raise InvariantViolation("an accepted entry does not re-sign to the same bytes")
    _integers(entry.seq, entry.time_ms, entry.last_seq)
    if entry.op is Op.ENROL and entry.kid != kid_for(entry.public_key):
        raise InvariantViolation("an enrolment's kid is not the kid of its key")


def _op_fields(e: RegistryEntry) -> dict[str, Any]:
    """The fields ``e``'s op adds to the payload (docs/zk-summaries.md §2.1)."""
    if e.op is Op.ENROL:
        return {"device": e.device_id, "site": e.site_id, "key": e.public_key}
    if e.op is Op.RETIRE:
        fields: dict[str, Any] = {"kid": e.kid, "last_seq": e.last_seq}
        if e.last_checkpoint is not None:
            fields["last_checkpoint"] = e.last_checkpoint
        return fields
    if e.op is Op.STOCK:
        return {"site": e.site_id, "record": e.record}
    return {}


def fuzz_registry_replay(data: bytes) -> None:
    """``data``: a CBOR array of ``[log index, entry]``, what a bundle's registry shows.

    An entry is either COSE bytes, decoded as they are, or a payload map that the target signs
    with the authority key; a map without ``"prev"`` gets the entry id of the entry before it,
    so the fuzzer can build linked chains as well as broken ones. An input the decoders refuse
    ends there, as a bundle showing it would.
    """
    try:
        items = cbor.decode(data)
    except DecodeError:
        return
    if not isinstance(items, list):
        return
    logged: list[LoggedEntry] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and _index(item[0])):
            return
        index, body = item
        if isinstance(body, dict) and "prev" not in body:
            body = {**body, "prev": logged[-1].entry.entry_id if logged else GENESIS_ENTRY_PREV}
        signed = body if isinstance(body, bytes) else (
            _signed(AUTHORITY_SIGNING, ENTRY_CONTENT_TYPE, cbor.encode(body))
        )  # fmt: skip
        try:
            logged.append(LoggedEntry(index, decode_entry(signed, AUTHORITY)))
        except VerificationError:
            return
    try:
        state = replay(logged)
    except ProofError:
        return
    _check_state(state, logged)


def _index(value: object) -> bool:
    """A log index as a bundle decoder admits it (a non-negative integer)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_state(state: RegistryState, logged: list[LoggedEntry]) -> None:
    if state.entries != tuple(logged):
        raise InvariantViolation("replay's state does not hold the entries it was shown")
    if [e.entry.seq for e in logged] != list(range(1, len(logged) + 1)):
        raise InvariantViolation("replay accepted a chain that is not seq 1..n")
    indexes = [e.index for e in logged]
    if indexes != sorted(set(indexes)) or state.last_index != indexes[-1]:
        raise InvariantViolation("replay accepted entries out of log order")
    for prev, this in itertools.pairwise(logged):
        if this.entry.prev != prev.entry.entry_id:
            raise InvariantViolation("replay accepted an entry that does not link to the last")

    # Each statement of the chain, in chain order (dicts keep insertion order), and no other.
    def said(op: Op, what: Callable[[RegistryEntry], object]) -> list[tuple[object, int]]:
        return [(what(e.entry), e.index) for e in logged if e.entry.op is op]

    if said(Op.ENROL, lambda e: e.kid) != [(k, v.index) for k, v in state.enrolments.items()]:
        raise InvariantViolation("replay's enrolments are not the chain's enrol entries")
    if any(v.kid != kid_for(v.public_key) for v in state.enrolments.values()):
        raise InvariantViolation("replay enrolled a key under another key's kid")
    if said(Op.RETIRE, lambda e: e.kid) != [(k, v.index) for k, v in state.retirements.items()]:
        raise InvariantViolation("replay's retirements are not the chain's retire entries")
    stocks = said(Op.STOCK, lambda e: (e.site_id, e.record))
    if stocks != [((s, r), i) for s, (r, i) in state.stocks.items()]:
        raise InvariantViolation("replay's stocks are not the chain's stock entries")


# --- lot summary bundles ------------------------------------------------------------------
def fuzz_bundle(data: bytes) -> None:
    with contextlib.suppress(ProofError):
        verify_bundle(data, LEDGER, AUTHORITY, policies=_POLICIES)


# --- serial dialects ------------------------------------------------------------------------
_FRAME_TYPES = (WeightReading, CommandReply, TagRead, GpsFix, SealCode)
# The regex dialect's option sets of tests/fixtures/regex (Rice Lake RLWS, a generic
# "value unit mode" line, a bare digit field, a leading-sign field, an assumed-stable one).
_SIGNED_FIELD = r"(?P<sign>[+ -]) *(?P<value>[0-9.]+) +(?P<stable>(?P<unit>kg|g|t|lb)?) *"
_REGEX_OPTIONS: list[dict[str, Any]] = [
    {
        "pattern": r"\x02(?P<sign>[ -])(?P<value>[ 0-9.]{7,8})(?P<unit>[LKGT])(?P<mode>[GN])"
        r"(?:(?P<motion>M)|(?P<overload>O)|(?P<zero>Z)|[ I])",
        "units": {"G": "g", "K": "kg", "L": "lb", "T": "t"},
    },
    {
        "pattern": r" *(?P<value>-?[0-9.]+) (?P<unit>[a-z]+) *(?P<mode>G|NET|T)? *(?P<motion>\?)?",
        "modes": {"G": "gross", "NET": "net", "T": "tare"},
    },
    {"decimals": 2, "pattern": r"(?P<value>[0-9]{8})"},
    {"pattern": _SIGNED_FIELD, "unit": "g"},
    {"assume_stable": True, "pattern": r"\s*(?P<value>[0-9.]+)kg"},
]
_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "toledo-continuous": [{}, {"checksum": True}, {"checksum": False}],
    "xk3190-a9": [{}, {"unit": "t"}],
    "xk3190-a12": [{}, {"unit": "t"}],
    "wiegand26-text": [{"format": f} for f in WIEGAND_FORMATS],
    "regex": _REGEX_OPTIONS,
}
_MAX_CHUNK = 64


def _buffer_bound(parser: Parser) -> int:
    """The most a parser may hold between ``feed`` calls, as each dialect documents it."""
    if isinstance(parser, LineParser):
        return parser.max_line
    if isinstance(parser, ToledoContinuousParser | Xk3190A9Parser):
        return parser.max_frame - 1  # "fewer than max_frame bytes"
    bounds = {"rdm6300": RDM6300_MAX_FRAME, "uhf-r2000": R2000_MAX_FRAME,
              "uhf-chafon": CHAFON_MAX_FRAME}  # fmt: skip
    return bounds[parser.dialect]


def _chunks(data: bytes) -> Iterator[bytes]:
    """``data`` in pieces of 1..64 bytes, the sizes drawn from a generator seeded by ``data``."""
    rng = random.Random(hashlib.sha256(data).digest())
    pos = 0
    while pos < len(data):
        n = rng.randint(1, _MAX_CHUNK)
        yield data[pos : pos + n]
        pos += n


def _feed_all(parser: Parser, pieces: Sequence[bytes]) -> list[object]:
    bound = _buffer_bound(parser)
    out: list[object] = []
    for piece in pieces:
        items = parser.feed(piece)
        for item in items:
            if not isinstance(item, (*_FRAME_TYPES, FrameError)):
                raise InvariantViolation(f"{parser.dialect} returned a {type(item).__name__}")
        out += items
        if parser.buffered > bound:
            raise InvariantViolation(
                f"{parser.dialect} holds {parser.buffered} bytes, over its bound of {bound}"
            )
    return out


def _frames(items: list[object]) -> list[object]:
    return [i for i in items if not isinstance(i, FrameError)]


def _serial(name: str) -> Callable[[bytes], None]:
    factory = dialects.dialect(name).factory
    option_sets = _OPTIONS.get(name, [{}])

    def fuzz(data: bytes) -> None:
        chunks = list(_chunks(data))
        for options in option_sets:
            whole, chunked = factory(**options), factory(**options)
            frames = _frames(_feed_all(whole, [data]))
            # Frames do not depend on how the port happened to deliver the bytes.
            if _frames(_feed_all(chunked, chunks)) != frames:
                raise InvariantViolation(f"{name} {options}: chunked feed gives other frames")
            if (whole.stats.frames, whole.buffered) != (chunked.stats.frames, chunked.buffered):
                raise InvariantViolation(f"{name} {options}: chunked feed gives other counts")

    fuzz.__name__ = fuzz.__qualname__ = f"fuzz_serial_{name.replace('-', '_')}"
    return fuzz


# --- seal codes and configuration --------------------------------------------------------
# AIM symbology identifiers a camera or scanner may report (ISO/IEC 15424): the GS1 ones,
# EAN/UPC, plain Code 128 and QR, and one no dialect knows.
SYMBOLOGIES: list[str | None] = [None, "]C1", "]e0", "]d2", "]Q3", "]J1", "]E0", "]E4", "]C0",
                                  "]Q1", "]X9"]  # fmt: skip


def fuzz_seal_code(data: bytes) -> None:
    """First byte: the symbology reported beside the text (None: the text's own AIM prefix)."""
    if not data:
        return
    symbology = SYMBOLOGIES[data[0] % len(SYMBOLOGIES)]
    # Lone surrogates included: a camera decoder may hand over any str.
    text = data[1:].decode("utf-8", "surrogateescape")
    try:
        code = classify_code(text, symbology)
    except ProtocolError:
        return
    if code.kind not in ("gs1", "digital_link", "opaque") or not code.text:
        raise InvariantViolation(f"classify_code returned kind {code.kind!r}, text {code.text!r}")


@cache
def _config_path() -> Path:
    # One file per process, rewritten for every input; removed with the directory at exit.
    directory = tempfile.TemporaryDirectory(prefix="cobalt-fuzz-config-")
    _KEEP.append(directory)
    return Path(directory.name) / "config.toml"


_KEEP: list[tempfile.TemporaryDirectory[str]] = []


def fuzz_config(data: bytes) -> None:
    path = _config_path()
    path.write_bytes(data)
    problems = check_config(path)
    if not all(isinstance(p, ConfigError) for p in problems):
        raise InvariantViolation("check_config listed something that is not a ConfigError")
    try:
        config = load_config(path)
    except ConfigError:
        if not problems:
            raise InvariantViolation("load_config refused a file check_config passed") from None
        return
    if problems:
        raise InvariantViolation("load_config accepted a file check_config refused")
    # What the agent derives from a loaded config at start must not fail either.
    config.earliest_valid_ms  # noqa: B018
    config.ledger_keys_path(Path("/var/lib/custody"))


# --- the table -----------------------------------------------------------------------------
def _table() -> dict[str, Target]:
    targets = [
        Target("cbor", fuzz_cbor, 4096, "custody.cbor.decode: deterministic CBOR"),
        Target("cose", fuzz_cose, 4096, "custody.cose.decode_sign1 / verify_sign1"),
        Target("envelope", fuzz_envelope, 4096, "custody.envelope.verify_envelope"),
        Target("envelope_payload", fuzz_envelope_payload, 4096,
               "verify_envelope on a validly signed, fuzzed payload (event schema)"),
        Target("batch", fuzz_batch, 16384, "sync.batch.decode_batch, formats 0x00/0x01/0x02"),
        Target("batch_chained", fuzz_batch_chained, 16384,
               "decode_batch of a 0x02 batch, fuzzed CBOR body (prev elision)"),
        Target("ack", fuzz_ack, 4096, "sync.ack.verify_ack"),
        Target("ack_payload", fuzz_ack_payload, 8192,
               "verify_ack on a validly signed, fuzzed payload (ack schema)"),
        Target("checkpoint", fuzz_checkpoint, 2048, "ledger.verify.checkpoint.verify_checkpoint"),
        Target("checkpoint_payload", fuzz_checkpoint_payload, 1024,
               "verify_checkpoint on a validly signed, fuzzed payload"),
        Target("registry_entry", fuzz_registry_entry, 8192,
               "ledger.verify.registry.decode_entry (authority-signed COSE)"),
        Target("registry_entry_payload", fuzz_registry_entry_payload, 8192,
               "decode_entry on a validly authority-signed, fuzzed payload"),
        Target("registry_replay", fuzz_registry_replay, 16384,
               "ledger.verify.registry.replay of entries signed from fuzzed payloads"),
        Target("bundle", fuzz_bundle, 32768, "ledger.verify.bundle.verify_bundle (offline)"),
        Target("seal_code", fuzz_seal_code, 4096,
               "firmware_bridge.protocols.codes.classify_code: GS1, Digital Link, opaque"),
        Target("config", fuzz_config, 8192, "agent.settings.check_config / load_config (TOML)"),
    ]  # fmt: skip
    for name in sorted(dialects.all_dialects()):
        # Longer than the longest line any dialect buffers (scanner-line: 4096), to overflow it.
        size = 8192 if name == "scanner-line" else 2048
        targets.append(Target(f"serial_{name}", _serial(name), size, f"the {name} parser"))
    return {t.name: t for t in targets}


TARGETS: Mapping[str, Target] = _table()
