"""The site-signed opening stock record: its body, the recorder call, the CLI and the intake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest

from agent.balance import counted, payload_of
from agent.identity import load_device_key
from agent.outbox import Outbox, StoredEvent
from agent.recorder import Recorder
from custody import cbor
from custody.commitment import (
    MASS_UNIT_G,
    MAX_SUM_UNITS,
    commit_masses,
    open_sealed,
    seal_openings,
    verify_opening,
)
from custody.envelope import EventSigner, verify_envelope
from custody.epcis import Locations, decode_source, epcis_document
from custody.errors import CaptureError, DecodeError, InvalidMassError, SchemaError
from custody.event import EPCIS_MAPPING, EventType, Payload
from custody.group import ED25519
from custody.reasons import Reason
from ledger.intake import Intake
from ledger.store import LedgerStore
from sync.ack import verify_ack
from sync.batch import encode_batch
from tests.conftest import Gateway
from tests.support import run_cli
from tests.test_envelope import KEY, LEDGER, forge, make_payload, standard_protected

STOCK = 1_250_005  # 125,000.5 kg


def stock_body(units: int = STOCK, **extra: Any) -> dict[str, Any]:
    points, openings = commit_masses({"stock": units})
    return {
        "mass": {n: p.encoded for n, p in points.items()},
        "sealed": seal_openings(openings, LEDGER.public.sealing_key),
        **extra,
    }


def opened(gateway: Gateway, event: StoredEvent) -> dict[str, int]:
    """What the ledger reads: sealed openings, each opening the signed commitment."""
    body = payload_of(event).body
    openings = open_sealed(
        body["sealed"], gateway.ledger.public.sealing_key, gateway.ledger.sealing_secret
    )
    for name, opening in openings.items():
        assert verify_opening(ED25519.point(body["mass"][name]), opening)
    return {name: o.value for name, o in openings.items()}


def stored(outbox: Outbox) -> list[StoredEvent]:
    return [e for kid in outbox.kids() for e in outbox.of_type(kid, "opening_stock")]


# --- the body schema ------------------------------------------------------------------------------
def test_a_valid_body_signs_verifies_and_round_trips() -> None:
    payload = make_payload(EventType.OPENING_STOCK, body=stock_body(note="stockpile survey"))
    env = EventSigner(KEY).sign(payload)
    got = verify_envelope(env.cose, KEY.public_key)
    assert got.payload == payload
    assert Payload.from_map(cbor.decode(cbor.encode(payload.to_map()))) == payload
    openings = open_sealed(got.payload.body["sealed"], *_ledger_seal())
    assert set(openings) == {"stock"} and openings["stock"].value == STOCK
    assert verify_opening(ED25519.point(got.payload.body["mass"]["stock"]), openings["stock"])


def _ledger_seal() -> tuple[bytes, bytes]:
    return LEDGER.public.sealing_key, LEDGER.sealing_secret


def test_the_note_is_optional_and_bounded() -> None:
    make_payload(EventType.OPENING_STOCK, body=stock_body())
    make_payload(EventType.OPENING_STOCK, body=stock_body(note="x" * 256))
    for bad in ("", "x" * 257, 5, b"note"):
        with pytest.raises(SchemaError, match="note"):
            make_payload(EventType.OPENING_STOCK, body=stock_body(note=bad))


@pytest.mark.parametrize("field", ["mass", "sealed"])
def test_mass_and_sealed_are_required(field: str) -> None:
    body = stock_body()
    del body[field]
    with pytest.raises(SchemaError, match="missing"):
        make_payload(EventType.OPENING_STOCK, body=body)


@pytest.mark.parametrize(
    "names",
    [{"total"}, {"bag"}, {"stock", "total"}, {"stock", "in"}, {"stock", "gross"}, {"in", "out"}],
)
def test_the_mass_is_exactly_stock(names: set[str]) -> None:
    point = stock_body()["mass"]["stock"]
    body = stock_body() | {"mass": dict.fromkeys(sorted(names), point)}
    with pytest.raises(SchemaError, match="exactly stock"):
        make_payload(EventType.OPENING_STOCK, body=body)


@pytest.mark.parametrize(
    "bad", [{}, {"stock": b"\x01" * 31}, {"stock": "not bytes"}, [b"\x01" * 32], b"\x01" * 32]
)
def test_malformed_masses_are_refused(bad: object) -> None:
    with pytest.raises(SchemaError):
        make_payload(EventType.OPENING_STOCK, body=stock_body() | {"mass": bad})


@pytest.mark.parametrize(
    "extra",
    [{"lot": "LOT-1"}, {"manual": True}, {"direction": "in"}, {"site": "KOL-01"}],
)
def test_other_fields_are_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="unknown field"):
        make_payload(EventType.OPENING_STOCK, body=stock_body(**extra))


def test_a_too_short_sealed_box_is_refused() -> None:
    with pytest.raises(SchemaError, match="sealed"):
        make_payload(EventType.OPENING_STOCK, body=stock_body() | {"sealed": bytes(48)})


def test_a_non_canonical_payload_is_refused_although_correctly_signed() -> None:
    payload_map = make_payload(EventType.OPENING_STOCK, body=stock_body(note="n")).to_map()
    body = payload_map["body"]
    payload_map["body"] = dict(reversed(list(body.items())))  # not §4.2.1 key order
    non_canonical = cbor2.dumps(payload_map)
    assert non_canonical != cbor.encode(payload_map)
    with pytest.raises(DecodeError, match="payload"):
        verify_envelope(forge(standard_protected(), non_canonical), KEY.public_key)
    # And a trailing byte after an otherwise valid envelope.
    good = EventSigner(KEY).sign(make_payload(EventType.OPENING_STOCK, body=stock_body()))
    with pytest.raises(DecodeError):
        verify_envelope(good.cose + b"\x00", KEY.public_key)


def test_it_has_no_epcis_form_and_is_skipped_by_the_export() -> None:
    assert EPCIS_MAPPING[EventType.OPENING_STOCK] is None
    env = EventSigner(KEY).sign(make_payload(EventType.OPENING_STOCK, body=stock_body()))
    result = epcis_document([decode_source(env.cose)], Locations(), creation_ms=1_718_000_000_000)
    assert (result.exported, result.skipped) == (0, 1)


# --- Recorder.declare_stock -----------------------------------------------------------------------
def test_declare_stock_commits_the_units_for_the_ledger(
    gateway: Gateway, recorder: Recorder
) -> None:
    event = recorder.declare_stock(STOCK, note="survey of 2026-01-01")
    assert event.type == "opening_stock"
    payload = payload_of(event)
    assert payload.type is EventType.OPENING_STOCK
    assert payload.site_id == gateway.site_id
    assert payload.body["note"] == "survey of 2026-01-01"
    assert opened(gateway, event) == {"stock": STOCK}
    assert recorder.outbox.openings(event.event_id)["stock"][0] == STOCK


def test_the_stock_is_neither_input_nor_output(recorder: Recorder) -> None:
    event = recorder.declare_stock(STOCK)
    assert counted(payload_of(event).body, recorder.outbox.openings(event.event_id)) == ("", 0)
    checkpoint = recorder.checkpoint()
    assert {n: v for n, (v, _) in recorder.outbox.openings(checkpoint.event_id).items()} == {
        "in": 0,
        "out": 0,
    }


@pytest.mark.parametrize("units", [0, MAX_SUM_UNITS])
def test_the_bounds_are_accepted(gateway: Gateway, recorder: Recorder, units: int) -> None:
    assert opened(gateway, recorder.declare_stock(units)) == {"stock": units}


@pytest.mark.parametrize("units", [-1, MAX_SUM_UNITS + 1])
def test_a_stock_out_of_range_is_refused(recorder: Recorder, units: int) -> None:
    head = recorder.outbox.head(recorder.key.kid)
    with pytest.raises(InvalidMassError, match="opening stock must be") as caught:
        recorder.declare_stock(units)
    assert isinstance(caught.value, CaptureError)
    assert recorder.outbox.head(recorder.key.kid) == head


@pytest.mark.parametrize("note", ["", "x" * 257])
def test_a_bad_note_is_refused_before_anything_is_signed(recorder: Recorder, note: str) -> None:
    head = recorder.outbox.head(recorder.key.kid)
    with pytest.raises(CaptureError, match="note"):
        recorder.declare_stock(STOCK, note=note)
    assert recorder.outbox.head(recorder.key.kid) == head
    assert stored(recorder.outbox) == []


def test_a_second_declaration_is_refused_and_records_nothing(recorder: Recorder) -> None:
    first = recorder.declare_stock(STOCK)
    head = recorder.outbox.head(recorder.key.kid)
    with pytest.raises(CaptureError, match="already declared") as caught:
        recorder.declare_stock(STOCK + 10)
    assert first.event_id.hex() in str(caught.value)
    assert "a site declares it once" in str(caught.value)
    assert recorder.outbox.head(recorder.key.kid) == head
    assert [e.event_id for e in stored(recorder.outbox)] == [first.event_id]


def test_a_declaration_under_a_retired_key_still_counts(recorder: Recorder) -> None:
    first = recorder.declare_stock(STOCK)
    recorder.rotate_key()
    with pytest.raises(CaptureError, match=first.event_id.hex()):
        recorder.declare_stock(STOCK)
    assert [e.event_id for e in stored(recorder.outbox)] == [first.event_id]


def test_a_second_recorder_on_the_same_outbox_sees_the_declaration(gateway: Gateway) -> None:
    with gateway.recorder() as rec:
        first = rec.declare_stock(STOCK)
    with gateway.recorder() as rec, pytest.raises(CaptureError, match=first.event_id.hex()):
        rec.declare_stock(STOCK)


# --- custody-agent stock declare ------------------------------------------------------------------
def _cli(gateway: Gateway, *args: str) -> Any:
    return run_cli("--data-dir", str(gateway.data_dir), "stock", "declare", *args)


def _outbox_stock(data_dir: Path) -> list[StoredEvent]:
    outbox = Outbox.open(data_dir / "outbox.sqlite", check=None, create=False)
    try:
        return stored(outbox)
    finally:
        outbox.close()


def test_cli_declares_the_stock_and_says_what_to_do_next(gateway: Gateway) -> None:
    done = _cli(gateway, "--kg", "125000.5", "--note", "stockpile survey")
    assert done.returncode == 0, done.stderr
    (event,) = _outbox_stock(gateway.data_dir)
    lines = done.stdout.splitlines()
    assert event.event_id.hex() in lines[0] and "125000.5 kg" in lines[0]
    assert lines[1] == (
        "next: ask the registry authority to pin it: "
        f"custody-registry stock {gateway.site_id} {event.event_id.hex()}"
    )
    assert opened(gateway, event) == {"stock": STOCK}
    assert payload_of(event).body["note"] == "stockpile survey"
    again = _cli(gateway, "--kg", "10")
    assert again.returncode == 6
    assert "already declared" in again.stderr and event.event_id.hex() in again.stderr
    assert "Traceback" not in again.stderr
    assert len(_outbox_stock(gateway.data_dir)) == 1


def test_cli_json(gateway: Gateway) -> None:
    done = _cli(gateway, "--kg", "125000.5", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (event,) = _outbox_stock(gateway.data_dir)
    assert out == {
        "event_id": event.event_id.hex(),
        "site": gateway.site_id,
        "units": STOCK,
        "kg": "125000.5",
    }


def test_cli_accepts_stocks_beyond_one_weighing(gateway: Gateway) -> None:
    # A stockpile may exceed the largest single weighing (2^32 - 1 units); the bound is the
    # balance proofs' 48 bits.
    done = _cli(gateway, "--kg", "500000000", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["units"] == 500_000_000 * 1000 // MASS_UNIT_G


@pytest.mark.parametrize(
    ("kg", "message"),
    [
        ("12.25", "finer than the record's resolution of 0.1 kg"),
        ("-5", "non-negative"),
        ("ten", "not a number"),
        ("nan", "non-negative"),
        ("28147497671066", "exceeds the largest recordable mass"),
    ],
)
def test_cli_refuses_a_bad_mass(gateway: Gateway, kg: str, message: str) -> None:
    done = _cli(gateway, "--kg", kg)
    assert done.returncode == 6, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert _outbox_stock(gateway.data_dir) == []


def test_cli_needs_the_mass() -> None:
    done = run_cli("stock", "declare")
    assert done.returncode == 2 and "--kg" in done.stderr


# --- the ledger's intake -------------------------------------------------------------------------
DEVICE = "gw-kol-01"


@pytest.fixture
def intake(gateway: Gateway, tmp_path: Path) -> Intake:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    device_key = load_device_key(gateway.data_dir / "device.key")
    store.enroll(DEVICE, gateway.site_id, device_key.public_key, device_key.kid)
    return Intake(store, gateway.ledger)


def test_intake_logs_the_record_and_its_opened_stock(intake: Intake, recorder: Recorder) -> None:
    event = recorder.declare_stock(STOCK, note="survey")
    chain = [e.envelope for e in recorder.outbox.iter_chain(recorder.key.kid)]
    result = intake.ingest(DEVICE, encode_batch(DEVICE, chain))
    assert (result.logged, result.rejected) == (2, 0)  # boot, opening_stock
    logged = {e.event_id: e for e in intake.store.events()}
    assert logged[event.event_id].type == "opening_stock"
    assert intake.store.masses(event.event_id) == {"stock": STOCK}


def test_intake_refuses_a_stock_whose_opening_does_not_match(
    intake: Intake, recorder: Recorder, gateway: Gateway
) -> None:
    boot = next(iter(recorder.outbox.iter_chain(recorder.key.kid)))
    # Signed by the device, but the sealed opening is of another value than the commitment.
    points, _ = commit_masses({"stock": STOCK})
    _, other = commit_masses({"stock": STOCK + 1})
    body = {
        "mass": {"stock": points["stock"].encoded},
        "sealed": seal_openings(other, gateway.ledger.public.sealing_key),
    }
    first = payload_of(boot)
    payload = Payload(
        first.device_id, first.site_id, 2, boot.event_id, first.time, first.boot,
        EventType.OPENING_STOCK, body,
    )  # fmt: skip
    forged = EventSigner(recorder.key).sign(payload)
    result = intake.ingest(DEVICE, encode_batch(DEVICE, [boot.envelope, forged.cose]))
    assert (result.logged, result.rejected) == (1, 1)
    assert dict(result.reasons) == {Reason.MASS: 1}
    ack = verify_ack(
        result.acks[0], intake.keys.public, device_id=DEVICE, device_kid=recorder.key.kid
    )
    assert [r.seq for r in ack.rejected] == [2]
    assert "stock commitment does not open" in ack.rejected[0].reason
    assert intake.store.log_size() == 1
