"""docs/protocol.md stays true: its worked example verifies, its facts hold.

The example envelope is a fixed recording (sealed boxes and blindings are
random), so it is verified here, never regenerated.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from custody import cbor, cose
from custody.commitment import MASS_FIELDS, open_sealed, verify_opening
from custody.envelope import verify_envelope
from custody.errors import SignatureError
from custody.event import BODY_SCHEMAS, CONTENT_TYPE, EPCIS_MAPPING, GENESIS_PREV, EventType
from custody.group import ED25519
from custody.keys import DeviceKey, kid_for
from tests.test_envelope import make_payload

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def _doc() -> str:
    # The document is part of this repository: a missing one is a failure, not a skip.
    return DOC.read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```text\n(.*?)```", _doc(), re.DOTALL)
    assert match, f"no fenced block after <!-- {marker} --> in {DOC}"
    return match.group(1)


def _facts() -> dict[str, str]:
    facts = {}
    for line in _block_after("example-facts").splitlines():
        name, _, value = line.partition(":")
        facts[name.strip()] = value.strip()
    return facts


def _envelope() -> bytes:
    return bytes.fromhex("".join(_block_after("example-envelope").split()))


def test_example_envelope_verifies() -> None:
    facts = _facts()
    key = DeviceKey(bytes.fromhex(facts["device seed"]))
    # The RFC 8032 §7.1 TEST 1 key, as the doc says.
    assert key.public_key.hex() == facts["device public key"]
    assert facts["device seed"].startswith("9d61b19deffd5a60")
    data = _envelope()
    assert f"The envelope, {len(data)} bytes" in _doc()

    env = verify_envelope(data, key.public_key)
    assert env.kid.hex() == facts["kid"] == kid_for(key.public_key).hex()
    assert env.event_id.hex() == facts["event id"] == hashlib.sha256(data).hexdigest()
    payload = env.payload
    assert payload.type is EventType.WEIGHING
    assert (payload.device_id, payload.site_id, payload.seq) == ("gw-kov-wb01", "site-KOV", 1)
    assert payload.prev == GENESIS_PREV
    assert payload.time.ms == 1_718_000_000_000
    assert cbor.encode(payload.to_map()) == cose.decode_sign1(data).payload


def test_example_protected_header_is_the_documented_one() -> None:
    msg = cose.decode_sign1(_envelope())
    assert len(msg.protected_bytes) == 61
    assert msg.protected == {1: -8, 3: CONTENT_TYPE, 4: bytes.fromhex(_facts()["kid"])}
    assert msg.protected_bytes.hex().startswith("a3012703782d")
    assert msg.unprotected == {}


def test_example_does_not_verify_under_another_key() -> None:
    other = DeviceKey(bytes(32))
    with pytest.raises(SignatureError):
        verify_envelope(_envelope(), other.public_key)


def test_example_sealed_openings_open_the_commitments() -> None:
    facts = _facts()
    env = verify_envelope(_envelope(), bytes.fromhex(facts["device public key"]))
    body = env.payload.body
    openings = open_sealed(
        body["sealed"],
        bytes.fromhex(facts["ledger sealing public key"]),
        bytes.fromhex(facts["ledger sealing secret"]),
    )
    assert set(openings) == set(body["mass"]) == {"gross", "tare", "net"}
    for name, opening in openings.items():
        assert verify_opening(ED25519.point(body["mass"][name]), opening)
        assert opening.value == int(facts[f"{name} units"])
    assert openings["net"].value == openings["gross"].value - openings["tare"].value
    gross, tare = ED25519.point(body["mass"]["gross"]), ED25519.point(body["mass"]["tare"])
    assert ED25519.sub(gross, tare) == ED25519.point(body["mass"]["net"])
    assert ED25519.scalar_sub(openings["gross"].blinding, openings["tare"].blinding) == (
        openings["net"].blinding
    )


def test_doc_pins_h_and_the_content_type() -> None:
    doc = _doc()
    assert ED25519.H.hex() in doc
    assert ED25519.G.hex() in doc
    assert 'b"cobalt-custody/v1/pedersen/H"' in doc
    assert f'"{CONTENT_TYPE}"' in doc
    assert 'b"cobalt-custody/v1/kid"' in doc


def test_doc_names_every_payload_key_body_field_and_event_type() -> None:
    doc = _doc()
    for key in make_payload().to_map():
        assert f"| `{key}` |" in doc, key
    for type_, schema in BODY_SCHEMAS.items():
        assert f"`{type_.value}`" in doc, type_
        for field in (*schema.required, *schema.optional):
            assert f"`{field}`" in doc, (type_, field)
    for type_, mapping in EPCIS_MAPPING.items():
        if mapping is not None:
            event, action, biz_step = mapping
            row = next(line for line in doc.splitlines() if line.startswith(f"| `{type_.value}` |"))
            assert event in row
            assert action in row
            assert biz_step in row
    for name in MASS_FIELDS:
        assert f"`{name}`" in doc
