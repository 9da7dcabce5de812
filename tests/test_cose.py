"""custody.cose against the COSE working group's vectors and pycose 1.1.0.

Vectors: cose-wg/Examples (tests/vectors/cose/, public domain). Only
eddsa-sig-01 is Ed25519; the sign1-tests mutations (sign-fail-*, sign-pass-*)
are ES256 in the original, so each mutation is first checked to reproduce the
file's own output from its own input, and then applied to the same message
signed with the Ed25519 key (standards.md §1.3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pycose import headers as pycose_headers
from pycose.algorithms import EdDSA as PycoseEdDSA
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519 as PycoseEd25519
from pycose.messages import Sign1Message

from custody import cbor, cose
from custody.envelope import EventSigner
from custody.errors import DecodeError, SignatureError, VerificationError
from custody.event import CONTENT_TYPE, EventType
from custody.keys import DeviceKey
from tests.test_envelope import OTHER_KEY, make_payload

COSE_DIR = Path(__file__).parent / "vectors" / "cose"
MUTATION_FILES = [
    "sign-fail-01",
    "sign-fail-02",
    "sign-fail-03",
    "sign-fail-04",
    "sign-fail-06",
    "sign-fail-07",
    "sign-pass-01",
    "sign-pass-02",
    "sign-pass-03",
]
# Our verdict on each mutation applied to the Ed25519 message (None = verifies).
EXPECTED: dict[str, type[VerificationError] | None] = {
    "sign-fail-01": DecodeError,  # tag 998: not a COSE_Sign1
    "sign-fail-02": SignatureError,  # payload changed
    "sign-fail-03": SignatureError,  # alg -999
    "sign-fail-04": SignatureError,  # alg "unknown"
    "sign-fail-06": SignatureError,  # protected header grew after signing
    "sign-fail-07": SignatureError,  # protected header shrank after signing
    "sign-pass-01": None,  # empty protected map encoded as h'A0' (re-signed)
    "sign-pass-02": None,  # external AAD
    "sign-pass-03": None,  # untagged: only with require_tag=False
}
# Mutations after which the message must be signed afresh to mean what the file
# means: sign-pass-01 changes the protected bytes, and we always hash the
# received protected bytes (RFC 9052 §4.4), never a re-encoding.
RESIGN = {"sign-pass-01"}

LABELS = {"alg": cose.HDR_ALG, "ctyp": cose.HDR_CONTENT_TYPE, "kid": cose.HDR_KID}
ALG_NAMES = {"EdDSA": cose.ALG_EDDSA, "ES256": -7}


def load(name: str) -> dict[str, Any]:
    path = COSE_DIR / f"{name}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def header_value(name: str, value: Any) -> Any:
    if name == "alg" and isinstance(value, str):
        return ALG_NAMES.get(value, value)  # "unknown" stays a text string
    if name == "kid":
        return value.encode()
    return value


def header_map(spec: dict[str, Any], *, ed25519: bool = False) -> dict[int, Any]:
    out = {LABELS[k]: header_value(k, v) for k, v in spec.items()}
    if ed25519 and cose.HDR_ALG in out:
        out[cose.HDR_ALG] = cose.ALG_EDDSA
    return out


def mutate(message: bytes, failures: dict[str, Any]) -> bytes:
    """Apply a cose-wg ``failures`` entry to a tagged COSE_Sign1."""
    tagged = cbor.decode(message, allow_tags=(cose.COSE_SIGN1_TAG,))
    tag, (pbytes, unprotected, payload, signature) = tagged.tag, list(tagged.value)
    untag = False
    for kind, arg in failures.items():
        if kind == "ChangeCBORTag":
            tag = arg
        elif kind == "RemoveCBORTag":
            untag = True
        elif kind == "ChangeTag":  # the file's output: last payload byte + 1
            payload = payload[:-1] + bytes([(payload[-1] + 1) % 256])
        elif kind in ("ChangeAttr", "AddProtected"):
            protected = cbor.decode(pbytes) if pbytes else {}
            protected.update(header_map(arg))
            pbytes = cose.encode_protected(protected)
        elif kind == "RemoveProtected":
            protected = cbor.decode(pbytes)
            for name in arg:
                del protected[LABELS[name]]
            pbytes = cose.encode_protected(protected)
        elif kind == "ChangeProtected":
            pbytes = bytes.fromhex(arg)
        else:  # pragma: no cover - a new kind of failure in the vector set
            raise AssertionError(f"unknown failure kind {kind}")
    array = [pbytes, unprotected, payload, signature]
    return cbor.encode(array if untag else cbor.Tag(tag, array))


def resign(message: bytes, key: DeviceKey, external_aad: bytes = b"") -> bytes:
    """Replace the signature with a fresh one over the message's own bytes."""
    tagged = cbor.decode(message, allow_tags=(cose.COSE_SIGN1_TAG,))
    pbytes, unprotected, payload, _ = tagged.value
    signature = key.signing_key.sign(cose.sig_structure(pbytes, payload, external_aad)).signature
    return cbor.encode(cbor.Tag(tagged.tag, [pbytes, unprotected, payload, signature]))


def ed25519_key() -> DeviceKey:
    key = load("eddsa-sig-01")["input"]["sign0"]["key"]
    device_key = DeviceKey(bytes.fromhex(key["d_hex"]))
    assert device_key.public_key == bytes.fromhex(key["x_hex"])
    return device_key


# --- (a) the Ed25519 vector, byte for byte -------------------------------------------------


def test_eddsa_sig_01_reproduced_byte_for_byte() -> None:
    vector = load("eddsa-sig-01")
    sign0 = vector["input"]["sign0"]
    key = ed25519_key()
    protected = header_map(sign0["protected"])
    unprotected = header_map(sign0["unprotected"])
    assert protected == {1: -8, 3: 0}
    assert unprotected == {4: b"11"}
    plaintext = vector["input"]["plaintext"].encode()

    pbytes = cose.encode_protected(protected)
    assert pbytes == bytes.fromhex("A201270300")
    tbs = cose.sig_structure(pbytes, plaintext)
    assert tbs == bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])

    out = cose.sign1(key.signing_key, protected, plaintext, unprotected=unprotected)
    assert out == bytes.fromhex(vector["output"]["cbor"])

    msg = cose.verify_sign1(out, key.public_key)
    assert msg.protected == protected
    assert msg.unprotected == unprotected
    assert msg.payload == plaintext
    assert msg.tagged


@pytest.mark.parametrize("name", ["eddsa-sig-01", *MUTATION_FILES])
def test_sig_structure_matches_every_files_intermediate(name: str) -> None:
    vector = load(name)
    sign0 = vector["input"]["sign0"]
    pbytes = cose.encode_protected(header_map(sign0.get("protected", {})))
    aad = bytes.fromhex(sign0.get("external", ""))
    tbs = cose.sig_structure(pbytes, vector["input"]["plaintext"].encode(), aad)
    assert tbs == bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])


# --- (b) the sign1-tests mutations ------------------------------------------------------------


@pytest.mark.parametrize("name", MUTATION_FILES)
def test_mutation_reproduces_the_files_own_output(name: str) -> None:
    """Our reading of each ``failures`` entry turns the file's input into its output."""
    vector = load(name)
    sign0 = vector["input"]["sign0"]
    expected = bytes.fromhex(vector["output"]["cbor"])
    outer = cbor.decode(expected, allow_tags=(998, cose.COSE_SIGN1_TAG))
    original_signature = (outer.value if isinstance(outer, cbor.Tag) else outer)[3]
    unmutated = cbor.encode(
        cbor.Tag(
            cose.COSE_SIGN1_TAG,
            [
                cose.encode_protected(header_map(sign0.get("protected", {}))),
                header_map(sign0.get("unprotected", {})),
                vector["input"]["plaintext"].encode(),
                original_signature,
            ],
        )
    )
    assert mutate(unmutated, vector["input"].get("failures", {})) == expected
    assert vector.get("fail", False) == (EXPECTED[name] is not None)


def _ed25519_base(vector: dict[str, Any], key: DeviceKey) -> tuple[bytes, bytes]:
    sign0 = vector["input"]["sign0"]
    aad = bytes.fromhex(sign0.get("external", ""))
    message = cose.sign1(
        key.signing_key,
        header_map(sign0.get("protected", {}), ed25519=True),
        vector["input"]["plaintext"].encode(),
        unprotected=header_map(sign0.get("unprotected", {}), ed25519=True),
        external_aad=aad,
    )
    return message, aad


@pytest.mark.parametrize("name", MUTATION_FILES)
def test_mutation_applied_to_ed25519_gives_the_files_verdict(name: str) -> None:
    vector = load(name)
    key = ed25519_key()
    base, aad = _ed25519_base(vector, key)
    assert cose.verify_sign1(base, key.public_key, external_aad=aad)  # unmutated verifies

    mutated = mutate(base, vector["input"].get("failures", {}))
    if name in RESIGN:
        mutated = resign(mutated, key, aad)
    expected = EXPECTED[name]
    require_tag = name != "sign-pass-03"
    if expected is None:
        msg = cose.verify_sign1(mutated, key.public_key, external_aad=aad, require_tag=require_tag)
        assert msg.payload == vector["input"]["plaintext"].encode()
        assert msg.header(cose.HDR_ALG) == cose.ALG_EDDSA
    else:
        with pytest.raises(expected):
            cose.verify_sign1(mutated, key.public_key, external_aad=aad, require_tag=False)


@pytest.mark.parametrize("name", ["sign-fail-06", "sign-fail-07"])
def test_header_mutations_fail_on_the_signature_alone(name: str) -> None:
    # Re-signed, the same mutated headers verify: the rejection above is the
    # signature over the received protected bytes, not a header rule.
    vector = load(name)
    key = ed25519_key()
    base, _ = _ed25519_base(vector, key)
    mutated = mutate(base, vector["input"]["failures"])
    assert cose.verify_sign1(resign(mutated, key), key.public_key)


@pytest.mark.parametrize("name", ["sign-fail-03", "sign-fail-04"])
def test_unknown_algorithm_fails_even_when_re_signed(name: str) -> None:
    vector = load(name)
    key = ed25519_key()
    base, _ = _ed25519_base(vector, key)
    mutated = resign(mutate(base, vector["input"]["failures"]), key)
    with pytest.raises(SignatureError, match="algorithm"):
        cose.verify_sign1(mutated, key.public_key)


def test_sign_pass_01_literal_form_is_rejected_because_we_hash_received_bytes() -> None:
    """cose-wg signs over h'' and then carries h'A0'; we verify over what we receive.

    The C# harness that produced sign-pass-01 normalises an empty protected map
    to h'' when verifying. We deliberately do not (RFC 9052 §4.4 body_protected
    is the received bstr; standards.md §0.3): a verifier that re-encodes can be
    made to accept bytes that were never signed. So the literal mutation fails
    here and the pass case is the re-signed one above.
    """
    vector = load("sign-pass-01")
    key = ed25519_key()
    base, _ = _ed25519_base(vector, key)
    assert cbor.decode(base, allow_tags=(18,)).value[0] == b""
    literal = mutate(base, vector["input"]["failures"])
    with pytest.raises(SignatureError):
        cose.verify_sign1(literal, key.public_key)


def test_sign_pass_02_external_aad_is_bound() -> None:
    vector = load("sign-pass-02")
    key = ed25519_key()
    base, aad = _ed25519_base(vector, key)
    assert aad == bytes.fromhex("11aa22bb33cc44dd55006699")
    assert cose.verify_sign1(base, key.public_key, external_aad=aad)
    for wrong in (b"", aad[:-1], aad + b"\x00"):
        with pytest.raises(SignatureError):
            cose.verify_sign1(base, key.public_key, external_aad=wrong)


def test_sign_pass_03_untagged_only_when_the_tag_is_optional() -> None:
    """Generic COSE accepts untagged COSE_Sign1; our event profile requires tag 18."""
    vector = load("sign-pass-03")
    key = ed25519_key()
    base, _ = _ed25519_base(vector, key)
    untagged = mutate(base, vector["input"]["failures"])
    assert untagged == base[1:]
    assert not cose.verify_sign1(untagged, key.public_key, require_tag=False).tagged
    with pytest.raises(DecodeError, match="tag 18"):
        cose.verify_sign1(untagged, key.public_key)


@pytest.mark.parametrize("name", MUTATION_FILES)
def test_original_es256_vectors_are_refused_by_algorithm(name: str) -> None:
    vector = load(name)
    data = bytes.fromhex(vector["output"]["cbor"])
    with pytest.raises(VerificationError):
        cose.verify_sign1(data, ed25519_key().public_key, require_tag=False)
    if name in ("sign-pass-02", "sign-pass-03"):
        with pytest.raises(SignatureError, match="algorithm -7"):
            cose.verify_sign1(data, ed25519_key().public_key, require_tag=False)


# --- (c) every envelope verifies under pycose 1.1.0 -------------------------------------------


def _pycose_verify(data: bytes, public_key: bytes) -> bool:
    msg = Sign1Message.decode(data)
    msg.key = OKPKey(crv=PycoseEd25519, x=public_key)
    return bool(msg.verify_signature())


@pytest.mark.parametrize("type_", list(EventType))
def test_envelopes_verify_under_pycose(type_: EventType) -> None:
    key = ed25519_key()
    env = EventSigner(key).sign(make_payload(type_))
    msg = Sign1Message.decode(env.cose)
    msg.key = OKPKey(crv=PycoseEd25519, x=key.public_key)
    assert msg.verify_signature() is True
    assert msg.get_attr(pycose_headers.Algorithm) is PycoseEdDSA
    assert msg.get_attr(pycose_headers.KID) == key.kid
    assert msg.get_attr(pycose_headers.ContentType) == CONTENT_TYPE
    assert msg.payload == cbor.encode(env.payload.to_map())


@pytest.mark.parametrize("type_", [EventType.WEIGHING, EventType.SEAL_SCAN, EventType.VOID])
def test_tampered_envelope_fails_under_pycose(type_: EventType) -> None:
    key = ed25519_key()
    env = EventSigner(key).sign(make_payload(type_))
    assert _pycose_verify(env.cose, key.public_key)
    # Last signature byte, and a byte inside the payload (after the 2-byte tag/array
    # heads and the protected bucket).
    payload_at = env.cose.index(cbor.encode(env.payload.to_map()))
    for index in (len(env.cose) - 1, payload_at + 20):
        tampered = bytearray(env.cose)
        tampered[index] ^= 0x01
        assert _pycose_verify(bytes(tampered), key.public_key) is False
    assert _pycose_verify(env.cose, OTHER_KEY.public_key) is False


# --- (d) algorithms and crit ----------------------------------------------------------------


def test_fully_specified_ed25519_alg_accepted() -> None:
    key = ed25519_key()
    data = cose.sign1(key.signing_key, {cose.HDR_ALG: cose.ALG_ED25519}, b"payload")
    assert cose.verify_sign1(data, key.public_key).header(cose.HDR_ALG) == -19


@pytest.mark.parametrize(
    "alg",
    [-7, -35, -36, -37, -47, -257, -999, 0, 1, "EdDSA", "unknown", None, True, [-8], {1: -8}],
    ids=repr,
)
def test_other_algorithms_rejected(alg: Any) -> None:
    key = ed25519_key()
    protected = {} if alg is None else {cose.HDR_ALG: alg}
    data = cose.sign1(key.signing_key, protected, b"payload")
    with pytest.raises(SignatureError, match="algorithm"):
        cose.verify_sign1(data, key.public_key)


def test_alg_in_unprotected_bucket_is_accepted_by_generic_verifier() -> None:
    # sign-pass-01's layout; verify_envelope still insists on the protected bucket.
    key = ed25519_key()
    data = cose.sign1(key.signing_key, {}, b"p", unprotected={cose.HDR_ALG: cose.ALG_EDDSA})
    assert cose.verify_sign1(data, key.public_key).protected_bytes == b""


@pytest.mark.parametrize("crit", [[cose.HDR_CONTENT_TYPE], [16], [], ["x"]], ids=repr)
def test_crit_header_rejected(crit: Any) -> None:
    key = ed25519_key()
    protected = {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CRIT: crit, cose.HDR_CONTENT_TYPE: 0}
    with pytest.raises(SignatureError, match="critical"):
        cose.verify_sign1(cose.sign1(key.signing_key, protected, b"p"), key.public_key)
    # crit belongs in the protected bucket; an unprotected one is refused too.
    data = cose.sign1(
        key.signing_key, {cose.HDR_ALG: cose.ALG_EDDSA}, b"p", unprotected={cose.HDR_CRIT: crit}
    )
    with pytest.raises(SignatureError, match="critical"):
        cose.verify_sign1(data, key.public_key)


# --- structural rules of decode_sign1 ---------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        [b"", {}, b"p"],  # three items
        [b"", {}, b"p", b"s", b"x"],  # five items
        [{}, {}, b"p", bytes(64)],  # protected not a bstr
        [cbor.encode([1]), {}, b"p", bytes(64)],  # protected not a map
        [b"", [], b"p", bytes(64)],  # unprotected not a map
        [b"", {"alg": -8}, b"p", bytes(64)],  # text label
        [cbor.encode({1: -8}), {1: -8}, b"p", bytes(64)],  # label in both buckets
        [b"", {}, None, bytes(64)],  # detached payload
        [b"", {}, "p", bytes(64)],  # text payload
        [b"", {}, b"p", "sig"],  # text signature
    ],
)
def test_malformed_cose_sign1_rejected(array: list[Any]) -> None:
    with pytest.raises(DecodeError):
        cose.decode_sign1(cbor.encode(cbor.Tag(cose.COSE_SIGN1_TAG, array)))


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_length_checked(length: int) -> None:
    key = ed25519_key()
    data = cbor.encode(
        cbor.Tag(cose.COSE_SIGN1_TAG, [cbor.encode({1: -8}), {}, b"p", bytes(length)])
    )
    with pytest.raises(SignatureError, match="64 bytes"):
        cose.verify_sign1(data, key.public_key)


def test_non_canonical_protected_bytes_rejected() -> None:
    key = ed25519_key()
    # {3: 0, 1: -8}: a valid map, signed as received, but not deterministic.
    pbytes = bytes.fromhex("a203000127")
    data = cose.sign1(key.signing_key, {}, b"p", protected_bytes=pbytes)
    with pytest.raises(DecodeError):
        cose.verify_sign1(data, key.public_key)
