"""The scan console's logic without a terminal: session table, index, layout, catalogue."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest

from agent.recorder import Recorder
from agent.scan import index as index_module
from agent.scan.index import Observed, ScanIndex
from agent.scan.messages import LANGUAGES, Catalogue, choose_language, fields_of
from agent.scan.screen import Kind, Screen, big_word, layout, visible_width
from agent.scan.session import (
    TRANSITIONS,
    IllegalTransition,
    Mode,
    Quit,
    RecordBag,
    SaveLot,
    ScanSession,
    VoidBag,
)
from custody.event import EventType
from firmware_bridge.frames import SealCode, WeightReading

NOW = 1_780_000_000_000  # 2026-05-28, device time in ms
T = Catalogue("en")


def mod10(digits: str) -> str:
    """GS1 mod-10 check digit, written here independently of the code under test."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def sscc(n: int) -> str:
    body = f"03952123450{n:06d}"  # extension digit 0, company prefix 3952123450, serial
    return "00" + body + mod10(body)


def hri(code: str) -> str:
    return f"({code[:2]}){code[2:]}"


class Outbox:
    """Plays the outbox for the session: effects become observed events in the index."""

    def __init__(self, index: ScanIndex) -> None:
        self.index = index
        self.rows = itertools.count(1)
        self.ids = itertools.count(1)

    def event(self, type_: str, body: dict[str, object], masses: dict[str, int] | None = None,
              at: int = NOW) -> bytes:  # fmt: skip
        event_id = next(self.ids).to_bytes(32, "big")
        self.index.apply(Observed(next(self.rows), event_id, type_, at, body, masses or {}))
        return event_id

    def record(self, effect: RecordBag) -> bytes:
        if effect.mass is not None:
            body: dict[str, object] = {"lot": effect.lot, "seals": [effect.seal],
                                       "mass": {"bag": b"x" * 32}}  # fmt: skip
            if effect.manual_mass:
                body["manual"] = True
            self.event("weighing", body, {"bag": effect.mass})
        return self.event(
            "aggregation", {"lot": effect.lot, "children": [effect.seal], "action": "ADD"}
        )

    def void(self, target: bytes) -> None:
        self.event("void", {"target": target, "reason": "test"})


def session(
    scale: bool = False, lot: str | None = None, numeric_seals: bool = False
) -> tuple[ScanSession, Outbox]:
    index = ScanIndex()
    s = ScanSession(T, index, lot=lot, scale=scale, tz=dt.UTC, numeric_seals=numeric_seals)
    s.start(NOW)
    return s, Outbox(index)


def record(s: ScanSession, box: Outbox, line: str) -> Screen:
    step = s.handle(line, NOW)
    (effect,) = step.effects
    assert isinstance(effect, RecordBag)
    return s.recorded(box.record(effect), NOW).screen


def reading(kg: str, stable: bool = True) -> WeightReading:
    value = Decimal(kg)
    return WeightReading(int(value * 10), 1, "kg", stable)


# --- the table ----------------------------------------------------------------------------
def test_table_walk_every_move_and_refuse_the_rest() -> None:
    s, _ = session()
    triggers = {t for _, t in TRANSITIONS}
    for mode, trigger in itertools.product(Mode, sorted(triggers)):
        s.mode = mode
        if (mode, trigger) in TRANSITIONS:
            s._go(trigger)
            assert s.mode is TRANSITIONS[(mode, trigger)]
        else:
            with pytest.raises(IllegalTransition):
                s._go(trigger)
            assert s.mode is mode
    # Every mode but CLOSED can be left; CLOSED is final.
    assert {m for m, _ in TRANSITIONS} == set(Mode) - {Mode.CLOSED}


# --- lots and seals -----------------------------------------------------------------------
def test_first_line_is_the_lot_then_a_seal_is_recorded_and_counted() -> None:
    s, box = session()
    assert s.mode is Mode.NEED_LOT
    step = s.handle("LOT-2026-0042", NOW)
    assert step.effects == (SaveLot("LOT-2026-0042"),)
    assert s.mode is Mode.READY
    code = sscc(1)
    step = s.handle("]C1" + code, NOW)
    assert step.effects == (RecordBag(hri(code), "LOT-2026-0042"),)
    assert s.mode is Mode.RECORDING
    screen = s.recorded(box.record(step.effects[0]), NOW).screen
    assert (screen.kind, screen.banner, screen.bell) == (Kind.OK, "OK", 1)
    assert "-> lot LOT-2026-0042: bag 1 today" in screen.lines
    assert screen.status == "LOT LOT-2026-0042 | 1 today"
    assert s.mode is Mode.READY


def test_wrong_check_digit_is_an_error_and_records_nothing() -> None:
    s, _ = session(lot="LOT-1")
    code = sscc(7)
    bad = code[:-1] + str((int(code[-1]) + 1) % 10)
    step = s.handle("]C1" + bad, NOW)
    assert step.effects == ()
    assert (step.screen.kind, step.screen.banner, step.screen.bell) == (Kind.ERROR, "ERROR", 2)
    assert step.screen.lines[0] == "Wrong check digit: misread label"
    assert s.mode is Mode.READY


def test_seen_seal_warns_loudly_and_is_not_recorded_again() -> None:
    s, box = session(lot="LOT-1")
    record(s, box, sscc(1))
    step = s.handle(sscc(1), NOW)
    assert step.effects == ()
    assert (step.screen.kind, step.screen.banner, step.screen.bell) == (Kind.WARN, "DUPLICATE", 3)
    assert step.screen.lines[:2] == (f"{hri(sscc(1))} ALREADY SCANNED", "lot LOT-1 at 20:26")


def test_seen_comes_from_the_index_including_other_writers() -> None:
    """A seal recorded by someone else (CLI, gateway service) is a duplicate too."""
    s, box = session(lot="LOT-1")
    box.event("seal_scan", {"seal": "SEAL-77", "lot": "LOT-9", "manual": True})
    assert s.handle("SEAL-77", NOW).screen.banner == "DUPLICATE"


def test_voided_seal_can_be_scanned_again() -> None:
    s, box = session(lot="LOT-1")
    record(s, box, "SEAL-1")
    step = s.handle("v", NOW)
    assert s.mode is Mode.CONFIRM_VOID
    assert step.screen.lines[0] == "Void bag SEAL-1 in lot LOT-1?"
    step = s.handle("y", NOW)
    (effect,) = step.effects
    assert isinstance(effect, VoidBag)
    assert effect.bag.seal == "SEAL-1"
    box.void(effect.bag.event_id)
    assert s.voided(effect.bag, NOW).screen.banner == "VOID"
    assert s.index.seen("SEAL-1") is None
    assert s.index.counts(dt.date(2026, 5, 28), s._day) == {}
    assert record(s, box, "SEAL-1").kind is Kind.OK


def test_void_needs_confirmation_and_nothing_to_void_is_said() -> None:
    s, box = session(lot="LOT-1")
    assert s.handle("v", NOW).screen.lines[0] == "Nothing to void"
    record(s, box, "SEAL-1")
    s.handle("v", NOW)
    step = s.handle("n", NOW)
    assert step.effects == ()
    assert step.screen.lines[0] == "Void cancelled"
    assert s.mode is Mode.READY


def test_gs1_shipment_code_switches_lot_and_counts_are_per_lot() -> None:
    s, box = session(lot="LOT-A")
    record(s, box, "SEAL-1")
    gsin = "3952123450000001"
    gsin += mod10(gsin)
    step = s.handle(f"]C1402{gsin}", NOW)
    assert step.effects == (SaveLot(gsin),)
    record(s, box, "SEAL-2")
    record(s, box, "SEAL-3")
    lines = s.handle("c", NOW).screen.lines
    assert lines[:3] == ("Today, per lot:", f"{gsin}: 2 bag(s)", "LOT-A: 1 bag(s)")


def test_counts_only_today() -> None:
    s, box = session(lot="LOT-A")
    box.event("aggregation", {"lot": "LOT-A", "children": ["OLD"], "action": "ADD"},
              at=NOW - 86_400_000)  # fmt: skip
    record(s, box, "SEAL-1")
    assert s.handle("c", NOW).screen.lines[1] == "LOT-A: 1 bag(s)"


def test_switch_lot_by_command_and_cancel_keeps_it() -> None:
    s, _ = session(lot="LOT-A")
    s.handle("l", NOW)
    assert s.mode is Mode.LOT_ENTRY
    s.handle("", NOW)
    assert (s.mode, s.lot) == (Mode.READY, "LOT-A")
    s.handle("l", NOW)
    assert s.handle("bad lot!", NOW).screen.kind is Kind.ERROR
    assert s.handle("LOT-B", NOW).effects == (SaveLot("LOT-B"),)
    assert s.lot == "LOT-B"


def test_seal_before_lot_is_refused() -> None:
    s, _ = session()
    step = s.handle("]C1" + sscc(3), NOW)
    assert step.screen.lines[0] == "Scan the LOT first"
    assert s.mode is Mode.NEED_LOT


def test_lot_comes_back_from_the_outbox_when_no_state_file() -> None:
    index = ScanIndex()
    Outbox(index).event("aggregation", {"lot": "LOT-Z", "children": ["S"], "action": "ADD"})
    s = ScanSession(T, index, tz=dt.UTC)
    assert (s.lot, s.mode) == ("LOT-Z", Mode.READY)


def test_unknown_command_and_quit() -> None:
    s, _ = session(lot="LOT-A")
    assert s.handle("zz", NOW).screen.kind is Kind.ERROR
    assert s.handle("q", NOW).effects == (Quit(),)
    assert s.mode is Mode.CLOSED


# --- the scale ------------------------------------------------------------------------------
def test_weight_taken_only_after_enough_identical_stable_readings() -> None:
    s, box = session(scale=True, lot="LOT-A")
    step = s.handle("SEAL-1", NOW)
    assert (s.mode, step.screen.banner) == (Mode.WEIGHING, "SCALE")
    assert s.scale_reading(reading("1500.0", stable=False), NOW) is not None
    assert s.scale_reading(reading("1502.5"), NOW) is not None
    assert s.scale_reading(reading("1502.5"), NOW) is None  # same line: no redraw
    assert s.mode is Mode.WEIGHING
    step = s.scale_reading(reading("1502.5"), NOW)
    assert step is not None
    assert step.effects == (RecordBag("SEAL-1", "LOT-A", 15025),)
    screen = s.recorded(box.record(step.effects[0]), NOW).screen
    assert "1502.5 kg" in screen.lines


def test_same_bag_is_not_weighed_twice_until_the_scale_was_empty() -> None:
    s, box = session(scale=True, lot="LOT-A")
    s.handle("SEAL-1", NOW)
    for _ in range(3):
        step = s.scale_reading(reading("1502.5"), NOW)
    assert step is not None
    s.recorded(box.record(step.effects[0]), NOW)
    s.handle("SEAL-2", NOW)
    for _ in range(5):
        step = s.scale_reading(reading("1502.5"), NOW)
        assert step is None or step.effects == ()
    assert "remove the last bag first" in s.screen.extra[0]
    s.scale_reading(reading("0.0"), NOW)
    for _ in range(3):
        step = s.scale_reading(reading("1498.0"), NOW)
    assert step is not None
    assert step.effects == (RecordBag("SEAL-2", "LOT-A", 14980),)


def test_overload_and_disconnected_scale_are_shown_and_never_taken() -> None:
    s, _ = session(scale=True, lot="LOT-A")
    s.handle("SEAL-1", NOW)
    over = WeightReading(0, 0, "kg", False, overload=True)
    for _ in range(5):
        step = s.scale_reading(over, NOW)
        assert step is None or step.effects == ()
    assert s.screen.extra == ("OVERLOAD",)
    step = s.scale_state("down", NOW)
    assert step is not None
    assert step.screen.extra == ("scale not connected",)


def test_skip_manual_weight_and_cancel_while_weighing() -> None:
    s, box = session(scale=True, lot="LOT-A")
    s.handle("SEAL-1", NOW)
    step = s.handle("s", NOW)
    assert step.effects == (RecordBag("SEAL-1", "LOT-A", None),)
    assert "no weight" in s.recorded(box.record(step.effects[0]), NOW).screen.lines
    s.handle("SEAL-2", NOW)
    assert s.handle("12.34", NOW).screen.kind is Kind.ERROR  # finer than 0.1 kg
    step = s.handle("1499,5", NOW)  # French decimal comma
    assert step.effects == (RecordBag("SEAL-2", "LOT-A", 14995, manual_mass=True),)
    assert "1499.5 kg (typed)" in s.recorded(box.record(step.effects[0]), NOW).screen.lines
    s.handle("SEAL-3", NOW)
    assert s.handle("SEAL-4", NOW).screen.lines[0] == "Finish bag SEAL-3 first"
    step = s.handle("x", NOW)
    assert (step.effects, s.mode) == ((), Mode.READY)
    assert s.index.seen("SEAL-3") is None


@pytest.mark.parametrize("scale", [False, True])
def test_a_number_at_the_seal_prompt_is_refused_as_a_weight(scale: bool) -> None:
    s, box = session(scale=scale, lot="LOT-A")
    for text in ("1500", "1500.5", "1499,5", "1500 kg", "1500kg", "15"):
        step = s.handle(text, NOW)
        assert step.effects == ()
        assert (step.screen.kind, s.mode) == (Kind.ERROR, Mode.READY)
        assert step.screen.lines[0] == f"{text} looks like a weight"
        hint = "Scan the SEAL first, then weigh" if scale else "No weighing here: scan the SEAL"
        assert step.screen.lines[1] == hint
    assert s.refused == {"weight_as_seal": 6}
    # Codes that are not a bare weight are seals as before: letters, 7+ digits, valid GS1.
    for seal in ("SEAL-1500", "1234567", sscc(1)):
        step = s.handle(seal, NOW)
        assert step.screen.kind is not Kind.ERROR, seal
        if scale:
            step = s.handle("s", NOW)
        (effect,) = step.effects
        assert isinstance(effect, RecordBag)
        s.recorded(box.record(effect), NOW)
    assert {b.seal for b in s.index.bags()} == {"SEAL-1500", "1234567", hri(sscc(1))}
    assert "Refused this session: 6" in s.handle("c", NOW).screen.lines


def test_a_number_at_the_lot_prompt_is_a_lot() -> None:
    s, _ = session()
    step = s.handle("1500", NOW)
    assert (s.mode, s.lot, step.effects) == (Mode.READY, "1500", (SaveLot("1500"),))


def test_numeric_seal_sites_take_whole_numbers_as_seals() -> None:
    s, box = session(lot="LOT-N", numeric_seals=True)
    assert record(s, box, "1500").lines[0] == "1500"
    assert s.index.seen("1500") is not None
    # A decimal part or "kg" is never part of a seal id.
    for text in ("1500.5", "1501 kg"):
        assert s.handle(text, NOW).screen.lines[0] == f"{text} looks like a weight"
    assert s.refused == {"weight_as_seal": 2}


def test_typed_bag_mass_outside_the_plausible_range_is_refused() -> None:
    s, box = session(scale=True, lot="LOT-A")
    s.handle("SEAL-1", NOW)
    step = s.handle("30680", NOW)
    assert (step.effects, s.mode, step.screen.kind) == ((), Mode.WEIGHING, Kind.ERROR)
    assert step.screen.lines == (
        "30680 kg: too heavy for a bag", "A bag is 100 to 2500 kg", "Type the weight again in kg",
    )  # fmt: skip
    assert step.screen.extra == ("scale not connected",)  # the weighing goes on underneath
    step = s.handle("1.5", NOW)  # tonnes typed where kg are asked
    assert step.screen.lines[0] == "1.5 kg: too light for a bag"
    assert s.handle("1500.55", NOW).screen.lines == (
        "Not a weight: 1500.55",
        "Type kg, e.g. 1500.5",
    )
    step = s.handle("2500 kg", NOW)  # the bounds are plausible
    assert step.effects == (RecordBag("SEAL-1", "LOT-A", 25000, manual_mass=True),)
    s.recorded(box.record(step.effects[0]), NOW)
    assert s.refused == {"bag_mass": 2}
    screen = s.handle("c", NOW).screen
    assert screen.lines[-2:] == ("Refused this session: 2", "Scan a seal")


def test_scale_reading_outside_the_plausible_range_is_refused_once_per_steady_reading() -> None:
    s, _ = session(scale=True, lot="LOT-A")
    s.handle("SEAL-1", NOW)
    steps = [s.scale_reading(reading("30680.0"), NOW) for _ in range(8)]
    # A refusal rings; the redraws after it (the live reading under it) do not.
    errors = [st for st in steps if st is not None and st.screen.bell]
    assert [e.screen.lines[0] for e in errors] == ["30680.0 kg: too heavy for a bag"]
    assert errors[0].screen.lines[2] == "Check the scale, weigh again"
    assert all(st is None or st.effects == () for st in steps)
    assert (s.mode, s.refused) == (Mode.WEIGHING, {"bag_mass": 1})
    # Another steady reading is judged afresh: a person on the platform is refused too.
    for _ in range(3):
        step = s.scale_reading(reading("80.0"), NOW)
    assert step is not None and step.screen.lines[0] == "80.0 kg: too light for a bag"
    for _ in range(3):
        step = s.scale_reading(reading("1502.5"), NOW)
    assert step is not None
    assert step.effects == (RecordBag("SEAL-1", "LOT-A", 15025),)
    assert s.refused == {"bag_mass": 2}


def test_bag_range_comes_from_the_caller() -> None:
    s = ScanSession(T, ScanIndex(), lot="LOT-S", scale=True, bag_range=(Decimal(20), Decimal(60)))
    s.start(NOW)
    s.handle("SEAL-1", NOW)
    assert s.handle("61", NOW).screen.lines[1] == "A bag is 20 to 60 kg"
    assert s.handle("50", NOW).effects == (RecordBag("SEAL-1", "LOT-S", 500, manual_mass=True),)
    with pytest.raises(ValueError, match="bag_range"):
        ScanSession(T, ScanIndex(), bag_range=(Decimal(60), Decimal(20)))


def test_every_refusal_says_what_to_do_next() -> None:
    s, _ = session(scale=True, lot="LOT-A")
    code = sscc(5)
    bad = code[:-1] + str((int(code[-1]) + 1) % 10)
    for text in ("]C1" + bad, hri(bad), "]C1" + "0012"):
        lines = s.handle(text, NOW).screen.lines
        assert lines[1] == "Scan the label again", text
    s.handle("SEAL-1", NOW)
    s.scale_reading(reading("1480.0", stable=False), NOW)
    finish = ("Finish bag SEAL-1 first", "s = no weight, x = cancel, or type kg")
    # Typed, from a serial scanner or camera, or unreadable: the bag on the scale comes first,
    # and its live reading stays on screen.
    for step in (
        s.handle("SEAL-2", NOW),
        s.scan_code(SealCode("SEAL-2", "opaque"), NOW),
        s.scan_error("AI (00) check digit wrong", NOW),
    ):
        assert (step.screen.lines, step.screen.extra) == (finish, ("1480.0 kg  settling...",))
        assert (step.screen.kind, step.effects, s.mode) == (Kind.ERROR, (), Mode.WEIGHING)


# --- the index ------------------------------------------------------------------------------
def test_orphan_weighing_is_found_and_a_paired_one_is_not() -> None:
    index = ScanIndex()
    box = Outbox(index)
    box.record(RecordBag("S1", "L", 100))
    w = box.event("weighing", {"lot": "L", "seals": ["S2"], "mass": {"bag": b""}}, {"bag": 5})
    assert index.orphans() == [(w, "L", "S2")]
    # A weighbridge weighing (vehicle, gross) is never a bag record.
    box.event("weighing", {"vehicle": "T1", "lot": "L", "seals": ["S3"], "mass": {"gross": b""}})
    assert [o[0] for o in index.orphans()] == [w]
    box.void(w)
    assert index.orphans() == []


def test_void_interrupted_between_its_two_events_leaves_an_orphan() -> None:
    index = ScanIndex()
    box = Outbox(index)
    agg = box.record(RecordBag("S1", "L", 100))
    bag = index.last_bag()
    assert bag is not None
    assert bag.mass == 100
    box.void(agg)  # ... killed before voiding the weighing
    assert index.orphans() == [(bag.weighing, "L", "S1")]


def test_apply_is_idempotent_by_row() -> None:
    index = ScanIndex()
    ev = Observed(1, b"\x01" * 32, "aggregation", NOW, {"lot": "L", "children": ["S"],
                  "action": "ADD"}, {})  # fmt: skip
    index.apply(ev)
    index.apply(ev)
    assert len(list(index.bags())) == 1


# --- the screen -----------------------------------------------------------------------------
@pytest.mark.parametrize(("width", "height"), [(40, 12), (30, 10), (20, 6), (80, 24), (12, 4)])
@pytest.mark.parametrize("colour", [False, True])
def test_no_line_is_wider_than_the_terminal(width: int, height: int, colour: bool) -> None:
    long = "https://id.example.com/00/039521234500000017?x=" + "y" * 80
    for word in ("OK", "ERREUR", "DUPLICATE", "DOUBLON", "ANNULÉ", "BALANCE", None):
        screen = Screen("LOT " + "L" * 64 + " | 12 today", word, Kind.ERROR,
                        (long, "Scannez un scellé", "x" * 100), "l lot v void c count h help q",
                        extra=("1502.5 kg  stable",))  # fmt: skip
        lines = layout(screen, width, height, colour=colour)
        assert len(lines) == height - 1
        assert all(visible_width(line) <= width for line in lines), lines


def test_big_banner_at_40x12_and_a_one_line_banner_when_short() -> None:
    screen = Screen("LOT A", "ERROR", Kind.ERROR, ("Wrong check digit",), "hint")
    lines = layout(screen, 40, 12, unicode=False)
    assert lines[1:6] == big_word("ERROR", 40)
    assert "#" in lines[1]
    assert lines[6] == "Wrong check digit"
    short = layout(screen, 40, 8)
    assert short[1] == "*** ERROR ***".center(40).rstrip()
    coloured = layout(screen, 40, 12, colour=True)
    assert coloured[1].startswith("\x1b[1;97;41m")  # white on red


def test_big_word_picks_the_largest_scale_that_fits() -> None:
    ok = big_word("OK", 40)
    assert ok is not None
    assert max(len(r) for r in ok) > 20  # stretched, not the 7-column minimum
    assert big_word("DUPLICATE", 20) is None  # too narrow even at scale 1


# --- the catalogue --------------------------------------------------------------------------
@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_language_has_every_key_with_the_same_fields(language: str) -> None:
    english = LANGUAGES["en"]
    assert set(LANGUAGES[language]) == set(english)
    for key, text in LANGUAGES[language].items():
        assert fields_of(text) == fields_of(english[key]), key


def test_french_commands_and_english_fallback() -> None:
    fr = Catalogue("fr")
    assert (fr.command("a"), fr.command("v"), fr.command("o"), fr.command("?")) == (
        "void", "void", "yes", "help",
    )  # fmt: skip
    assert fr("banner.error") == "ERREUR"


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        ("fr", {"LANG": "en_GB.UTF-8"}, "fr"),
        (None, {"LANG": "fr_CD.UTF-8"}, "fr"),
        (None, {"LC_ALL": "C", "LANG": "fr_FR.UTF-8"}, "en"),
        (None, {"LANGUAGE": "sw:fr", "LANG": "en_US.UTF-8"}, "fr"),
        (None, {}, "en"),
    ],
)
def test_language_choice(explicit: str | None, env: dict[str, str], expected: str) -> None:
    assert choose_language(explicit, env) == expected


def test_replay_from_a_real_outbox_in_pages(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "PAGE", 3)
    for n in range(7):
        recorder.weighing(bag=1000 + n, lot="L", seals=[f"S{n}"])
        recorder.record(EventType.AGGREGATION, {"lot": "L", "children": [f"S{n}"], "action": "ADD"})
    index = ScanIndex()
    for ev in index_module.observe_rows(recorder.outbox, 0):
        index.apply(ev)
    assert index.cursor == 15  # boot + 7 x 2
    assert [(b.seal, b.mass) for b in index.bags()] == [(f"S{n}", 1000 + n) for n in range(7)]
    assert index.orphans() == []
    assert list(index_module.observe_rows(recorder.outbox, index.cursor)) == []
