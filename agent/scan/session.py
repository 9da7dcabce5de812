"""The scan-and-tag console's logic, sans I/O: an input goes in, a screen and effects come out.

Theory of operation (STYLE.md §1, §4). ``ScanSession`` never touches the terminal, the
scale or the outbox. The front end (``agent.scan.console``) feeds it operator lines
(``handle``), codes from a serial scanner or camera (``scan_code``/``scan_error``), scale
readings (``scale_reading``/``scale_state``) and the results of the effects it asked for
(``recorded``, ``voided``, ``failed``); each call returns a ``Step``: the ``Screen`` to show
and the ``Effect``s to carry out (record a bag, void one, save the lot, quit). What the
outbox holds comes in through the ``ScanIndex`` the front end keeps caught up, so "seen",
"last bag" and "today's count" are always the outbox's answers.

The modes and the moves between them are the table ``TRANSITIONS``; a move that is not
in it raises ``IllegalTransition`` (a bug, never an operator error) and a test walks the
table. An operator's mistake (bad code, duplicate, unknown command) is an outcome with an
ERROR or warning screen that says what to do next, and the mode stays where it was.

Two plausibility checks keep a slip from becoming a custody record. A bare number typed
at the seal prompt ("1500", "1500.5 kg") is refused as a weight typed in the wrong place
unless the site's seals are numbers (``numeric_seals``, only for whole numbers): seal
codes at most sites carry letters, and a keyboard-wedge scanner types exactly what a
person would. Codes from a serial scanner or camera come from a label and are never
taken for a weight. A bag mass, weighed or typed, outside ``bag_range`` is refused. These
refusals and invalid codes are counted in ``refused`` (shown by the counts command and on
quitting).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum

from agent.scan.index import Bag, ScanIndex
from agent.scan.messages import Catalogue
from agent.scan.screen import Kind, Screen
from custody.errors import InvalidMassError, SchemaError
from custody.event import validate_identifier
from custody.mass import kg_to_units, units_to_kg
from firmware_bridge.errors import ProtocolError
from firmware_bridge.frames import SealCode, WeightMode, WeightReading
from firmware_bridge.protocols.codes import classify_code

__all__ = [
    "BAG_RANGE_KG",
    "EMPTY_BELOW_KG",
    "TRANSITIONS",
    "Effect",
    "IllegalTransition",
    "Mode",
    "Quit",
    "RecordBag",
    "SaveLot",
    "ScanSession",
    "Step",
    "VoidBag",
]

# A platform reading at or below this is an empty scale. Bulk bags of hydroxide weigh
# 1-2 t (DOMAIN.md "The material and its path") and an empty platform settles within a
# few divisions of zero, so 5 kg separates the two with room on both sides. A new bag's
# weight is only taken after the scale has been seen empty since the last one, so the
# previous bag left on the platform is never weighed twice.
EMPTY_BELOW_KG = Decimal(5)
# GS1 keys that identify a consignment or shipment, i.e. a lot on a truck (GS1 General
# Specifications §3.2: AI 401 GINC, AI 402 GSIN): scanning one switches lot.
LOT_AIS = ("401", "402")
_MASS_STEP = Decimal("0.1")  # the record's resolution (custody.commitment.MASS_UNIT_G)
# The plausible bag masses when the caller gives none: the defaults of scan.bag_min_kg and
# scan.bag_max_kg (agent.settings says why).
BAG_RANGE_KG = (Decimal(100), Decimal(2500))
# What a person types as a weight: up to 6 digits (999,999 kg is more than any scale
# here), an optional decimal part with a point or a French comma, an optional "kg".
_WEIGHT_TEXT = re.compile(r"(\d{1,6})(?:[.,](\d{1,3}))?\s*(?:kg)?", re.IGNORECASE)
_KG_SUFFIX = re.compile(r"\s*kg\Z", re.IGNORECASE)


class Mode(StrEnum):
    NEED_LOT = "need_lot"  # no lot yet: the next code or typed line is the lot id
    READY = "ready"  # waiting for a seal
    LOT_ENTRY = "lot_entry"  # the operator asked to switch lot
    WEIGHING = "weighing"  # a valid seal waits for a stable weight (or skip)
    RECORDING = "recording"  # the bag's events are being made durable
    CONFIRM_VOID = "confirm_void"  # "void the last bag?"
    VOIDING = "voiding"  # the void events are being made durable
    CLOSED = "closed"


_ANY_IDLE = (Mode.NEED_LOT, Mode.READY, Mode.LOT_ENTRY, Mode.WEIGHING, Mode.CONFIRM_VOID)
TRANSITIONS: dict[tuple[Mode, str], Mode] = {
    (Mode.NEED_LOT, "set_lot"): Mode.READY,
    (Mode.READY, "set_lot"): Mode.READY,
    (Mode.LOT_ENTRY, "set_lot"): Mode.READY,
    (Mode.READY, "ask_lot"): Mode.LOT_ENTRY,
    (Mode.LOT_ENTRY, "cancel"): Mode.READY,
    (Mode.READY, "scan_weigh"): Mode.WEIGHING,
    (Mode.READY, "scan_record"): Mode.RECORDING,
    (Mode.WEIGHING, "weight"): Mode.RECORDING,
    (Mode.WEIGHING, "cancel"): Mode.READY,
    (Mode.RECORDING, "recorded"): Mode.READY,
    (Mode.RECORDING, "failed"): Mode.READY,
    (Mode.READY, "ask_void"): Mode.CONFIRM_VOID,
    (Mode.CONFIRM_VOID, "confirm"): Mode.VOIDING,
    (Mode.CONFIRM_VOID, "cancel"): Mode.READY,
    (Mode.VOIDING, "voided"): Mode.READY,
    (Mode.VOIDING, "failed"): Mode.READY,
    **{(m, "quit"): Mode.CLOSED for m in _ANY_IDLE},
}


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the caller, not an operator error."""


@dataclass(frozen=True, slots=True)
class RecordBag:
    """Record one bag: its weighing (when ``mass`` is known), then its aggregation."""

    seal: str
    lot: str
    mass: int | None = None  # mass units
    manual_mass: bool = False


@dataclass(frozen=True, slots=True)
class VoidBag:
    """Void a bag: its aggregation first (it leaves the lot), then its weighing."""

    bag: Bag


@dataclass(frozen=True, slots=True)
class SaveLot:
    lot: str


@dataclass(frozen=True, slots=True)
class Quit:
    pass


Effect = RecordBag | VoidBag | SaveLot | Quit


@dataclass(frozen=True, slots=True)
class Step:
    screen: Screen
    effects: tuple[Effect, ...] = ()


class ScanSession:
    """One operator's session at one station (see the module docstring)."""

    def __init__(
        self,
        catalogue: Catalogue,
        index: ScanIndex,
        *,
        lot: str | None = None,
        scale: bool = False,
        stable_readings: int = 3,
        tz: dt.tzinfo | None = None,
        bag_range: tuple[Decimal, Decimal] = BAG_RANGE_KG,
        numeric_seals: bool = False,
    ) -> None:
        if stable_readings < 1:
            raise ValueError("stable_readings must be at least 1")
        if not 0 < bag_range[0] <= bag_range[1]:
            raise ValueError(f"bag_range must be 0 < least <= most kg, got {bag_range}")
        self.t = catalogue
        self.index = index
        self.lot = lot if lot is not None else index.last_lot
        self.mode = Mode.READY if self.lot else Mode.NEED_LOT
        self.scale = scale
        self.stable_readings = stable_readings
        self.tz = tz
        self.bag_range = bag_range
        self.numeric_seals = numeric_seals
        # Refusals this session by kind: "weight_as_seal", "bag_mass", "bad_code".
        self.refused: Counter[str] = Counter()
        self.pending: str | None = None  # the seal waiting for its weight
        self.pending_void: Bag | None = None  # the bag the operator is asked to void
        self.screen = Screen(status="")
        self.now_ms = 0
        # Scale tracking (only meaningful when ``scale``).
        self._scale_state = "connecting"
        self._run_value: int | None = None
        self._run = 0
        self._emptied = True
        self._last_reading: WeightReading | None = None
        self._run_refused = False  # this run of stable readings was refused as implausible

    # --- the table --------------------------------------------------------------------
    def _go(self, trigger: str) -> None:
        nxt = TRANSITIONS.get((self.mode, trigger))
        if nxt is None:
            raise IllegalTransition(f"{trigger!r} is not allowed in mode {self.mode}")
        self.mode = nxt

    # --- inputs -----------------------------------------------------------------------
    def start(self, now_ms: int, recovered: list[str] | None = None) -> Step:
        """The first screen; ``recovered`` = seals whose unfinished records were voided."""
        self.now_ms = now_ms
        if recovered:
            return self._show(
                Kind.WARN, "banner.info",
                [self.t("msg.recovered", count=len(recovered)),
                 self.t("msg.recovered_rescan", seals=", ".join(recovered))],
                bell=2,
            )  # fmt: skip
        return self._show(Kind.PROMPT, None, [])

    def handle(self, line: str, now_ms: int) -> Step:
        """One line from the keyboard (or a keyboard-wedge scanner)."""
        self.now_ms = now_ms
        text = line.strip()
        command = self.t.command(text)
        mode = self.mode
        if mode in (Mode.RECORDING, Mode.VOIDING, Mode.CLOSED):
            return Step(self.screen)  # the front end is busy; nothing is queued behind it
        if mode is Mode.CONFIRM_VOID:
            return self._confirm_void(command == "yes")
        if mode is Mode.WEIGHING:
            return self._weighing_input(text, command)
        if not text:
            if mode is Mode.LOT_ENTRY:
                self._go("cancel")
                return self._show(Kind.PROMPT, None, [])
            return Step(self._refresh(self.screen))
        if command is not None:
            return self._command(command)
        if mode is Mode.READY and _looks_like_weight(text, self.numeric_seals):
            return self._weight_as_seal(text)
        if len(text) <= 2:
            return self._error([self.t("msg.unknown_command", text=text)])
        return self._code_text(text, None)

    def scan_code(self, code: SealCode, now_ms: int) -> Step:
        """A code already decoded and classified (serial scanner or camera)."""
        self.now_ms = now_ms
        if self.mode in (Mode.RECORDING, Mode.VOIDING, Mode.CLOSED, Mode.CONFIRM_VOID):
            return Step(self.screen)
        if self.mode is Mode.WEIGHING:
            return self._finish_bag_first()
        return self._code(code)

    def scan_error(self, reason: str, now_ms: int) -> Step:
        """A scanner line that was not a valid code (``FrameError`` from the parser)."""
        self.now_ms = now_ms
        if self.mode in (Mode.RECORDING, Mode.VOIDING, Mode.CLOSED):
            return Step(self.screen)
        if self.mode is Mode.WEIGHING:  # any code, good or bad, waits until the bag is done
            return self._finish_bag_first()
        return self._code_error(reason)

    def scale_reading(self, reading: WeightReading, now_ms: int) -> Step | None:
        """A reading from the platform scale; a Step only when the screen or effects change."""
        self.now_ms = now_ms
        self._scale_state = "open"
        self._last_reading = reading
        kg = reading.kg
        usable = (
            reading.stable
            and not reading.overload
            and not reading.underload
            and reading.mode is not WeightMode.TARE  # the indicator showing its tare
        )
        if usable and kg <= EMPTY_BELOW_KG:
            self._emptied = True
        value = reading.value if usable else None
        if value is not None and value == self._run_value:
            self._run += 1
        else:
            self._run_value, self._run = value, 1 if value is not None else 0
            self._run_refused = False
        if self.mode is not Mode.WEIGHING:
            return None
        if usable and kg > EMPTY_BELOW_KG and self._emptied and self._run >= self.stable_readings:
            kg = kg.quantize(_MASS_STEP, rounding=ROUND_HALF_EVEN)
            if not self._plausible(kg):
                if self._run_refused:  # said once per steady reading, not once per frame
                    return self._weighing_update()
                self._run_refused = True
                return self._implausible(kg, typed=False)
            self._emptied = False
            return self._record(kg_to_units(kg), manual=False)
        return self._weighing_update()

    def scale_state(self, state: str, now_ms: int) -> Step | None:
        """The scale port's state (``open``, ``down``, ...), for the weighing prompt."""
        self.now_ms = now_ms
        self._scale_state = state
        if state != "open":
            self._run_value, self._run = None, 0
        if self.mode is Mode.WEIGHING:
            return self._weighing_update()
        return None

    def recorded(self, event_id: bytes, now_ms: int) -> Step:
        """The bag's aggregation ``event_id`` is durable (and in the index)."""
        self.now_ms = now_ms
        self._go("recorded")
        self.pending = None
        bags = self.index.bag_records(event_id)
        if not bags:  # voided by someone else in the meantime: say what the outbox says
            return self._error([self.t("msg.not_recorded")])
        bag = bags[0]
        count = self.index.counts(self._day(now_ms), self._day).get(bag.lot, (0, 0))[0]
        if bag.mass is None:
            mass = self.t("msg.bag_ok_no_mass")
        elif bag.manual_mass:
            mass = self.t("msg.bag_ok_mass_manual", kg=units_to_kg(bag.mass))
        else:
            mass = self.t("msg.bag_ok_mass", kg=units_to_kg(bag.mass))
        lines = [
            self.t("msg.bag_ok", seal=bag.seal),
            self.t("msg.bag_ok_lot", lot=bag.lot, count=count),
            mass,
        ]
        return self._show(Kind.OK, "banner.ok", lines, bell=1)

    def voided(self, bag: Bag, now_ms: int) -> Step:
        self.now_ms = now_ms
        self._go("voided")
        return self._show(
            Kind.INFO, "banner.void", [self.t("msg.voided", seal=bag.seal, lot=bag.lot)], bell=1
        )

    def failed(self, reason: str, now_ms: int) -> Step:
        """Recording or voiding failed: nothing was recorded (the outbox is unchanged)."""
        self.now_ms = now_ms
        self._go("failed")
        self.pending = None
        return self._error([self.t("msg.not_recorded"), reason])

    # --- commands ---------------------------------------------------------------------
    def _command(self, command: str) -> Step:
        if command == "quit":
            self._go("quit")
            refused = sum(self.refused.values())
            tail = [self.t("msg.counts_refused", count=refused)] if refused else []
            return Step(self._compose(Kind.INFO, None, [self.t("msg.bye"), *tail]), (Quit(),))
        if command == "help":
            lines = [self.t(f"msg.help_{k}") for k in ("lot", "void", "counts", "quit")]
            return self._show(Kind.INFO, None, lines)
        if command == "counts":
            return self._counts()
        if command == "lot" and self.mode is Mode.READY:
            self._go("ask_lot")
            return self._show(Kind.PROMPT, "banner.lot", [])
        if command == "void" and self.mode is Mode.READY:
            bag = self.index.last_bag()
            if bag is None:
                return self._show(Kind.INFO, None, [self.t("msg.nothing_to_void")])
            self.pending_void = bag
            self._go("ask_void")
            lines = [
                self.t("screen.confirm_void", seal=bag.seal, lot=bag.lot),
                self.t("screen.confirm_keys"),
            ]
            return self._show(Kind.WARN, "banner.void", lines, bell=1)
        if self.mode is Mode.NEED_LOT and command in ("lot", "void"):
            return self._error([self.t("msg.no_lot_first")])
        return self._error([self.t("msg.unknown_command", text=command)])

    def _confirm_void(self, yes: bool) -> Step:
        if not yes:
            self._go("cancel")
            return self._show(Kind.INFO, None, [self.t("msg.void_cancelled")])
        self._go("confirm")
        bag = self.pending_void
        assert bag is not None  # set with the move to CONFIRM_VOID
        return Step(self._compose(Kind.PROMPT, None, [self.t("screen.recording")]), (VoidBag(bag),))

    def _counts(self) -> Step:
        counts = self.index.counts(self._day(self.now_ms), self._day)
        refused = sum(self.refused.values())
        tail = [self.t("msg.counts_refused", count=refused)] if refused else []
        if not counts:
            return self._show(Kind.INFO, None, [self.t("msg.counts_none"), *tail])
        lines = [self.t("msg.counts_title")]
        for lot, (n, mass) in sorted(counts.items()):
            kg = f"{units_to_kg(mass)} kg" if mass else ""
            lines.append(self.t("msg.counts_line", lot=lot, count=n, kg=kg).rstrip())
        return self._show(Kind.INFO, None, lines + tail)

    # --- codes --------------------------------------------------------------------------
    def _code_text(self, text: str, symbology: str | None) -> Step:
        try:
            code = classify_code(text, symbology)
        except ProtocolError as exc:
            if self.mode in (Mode.NEED_LOT, Mode.LOT_ENTRY):
                return self._bad_lot(text)
            return self._code_error(str(exc))
        return self._code(code)

    def _code(self, code: SealCode) -> Step:
        lot = _lot_of(code)
        if lot is not None or self.mode in (Mode.NEED_LOT, Mode.LOT_ENTRY):
            if lot is None and code.kind != "opaque":
                # A GS1 seal or product code where a lot was asked for.
                if self.mode is Mode.NEED_LOT:
                    return self._error([self.t("msg.no_lot_first")])
                return self._bad_lot(code.text)
            return self._set_lot(lot if lot is not None else code.text)
        return self._seal(code)

    def _set_lot(self, lot: str) -> Step:
        try:
            validate_identifier(lot, "lot")
        except SchemaError:
            return self._bad_lot(lot)
        self._go("set_lot")
        self.lot = lot
        count = self.index.counts(self._day(self.now_ms), self._day).get(lot, (0, 0))[0]
        lines = [self.t("msg.lot_set", lot=lot), self.t("msg.lot_count", count=count)]
        return Step(self._compose(Kind.INFO, "banner.lot", lines, bell=1), (SaveLot(lot),))

    def _bad_lot(self, text: str) -> Step:
        return self._error([self.t("msg.bad_lot", lot=text), self.t("msg.bad_lot_rule")])

    def _seal(self, code: SealCode) -> Step:
        seal = code.text
        if not seal.isascii() or len(seal) > 128:
            return self._error([self.t("msg.not_ascii"), self.t("msg.rescan")])
        seen = self.index.seen(seal)
        if seen is not None:
            where = self.t("msg.duplicate_where", lot=seen.lot or "-", time=self._clock(seen))
            lines = [self.t("msg.duplicate", seal=seal), where, self.t("msg.duplicate_hint")]
            return self._show(Kind.WARN, "banner.duplicate", lines, bell=3)
        assert self.lot is not None  # READY implies a lot
        self.pending = seal
        if self.scale:
            self._go("scan_weigh")
            return self._weighing_step(bell=1)
        self._go("scan_record")
        return Step(
            self._compose(Kind.PROMPT, None, [seal, self.t("screen.recording")]),
            (RecordBag(seal, self.lot),),
        )

    def _code_error(self, reason: str) -> Step:
        self.refused["bad_code"] += 1
        if "check digit" in reason:
            return self._error([self.t("msg.bad_check_digit"), self.t("msg.rescan"), reason])
        return self._error([self.t("msg.bad_code"), self.t("msg.rescan"), reason])

    def _weight_as_seal(self, text: str) -> Step:
        self.refused["weight_as_seal"] += 1
        hint = "msg.weight_as_seal_scale" if self.scale else "msg.weight_as_seal_no_scale"
        return self._error([self.t("msg.weight_as_seal", text=text), self.t(hint)])

    # --- weighing -------------------------------------------------------------------------
    def _weighing_input(self, text: str, command: str | None) -> Step:
        if command == "skip":
            return self._record(None, manual=False)
        if command in ("cancel", "quit"):
            seal = self.pending
            self._go("cancel")
            self.pending = None
            step = self._show(Kind.INFO, None, [self.t("msg.bag_cancelled", seal=seal)])
            if command == "quit":
                return self._command("quit")
            return step
        if not text:
            return self._weighing_step()
        number = _KG_SUFFIX.sub("", text).replace(",", ".")
        try:
            kg = Decimal(number)
            if not kg.is_finite() or kg <= 0:
                raise InvalidMassError(text)
            mass = kg_to_units(kg)
        except (InvalidOperation, InvalidMassError):
            if len(text) > 2 and not _looks_like_weight(text, numeric_seals=False):
                return self._finish_bag_first()  # a code scanned while the bag waits
            return self._error_keep([self.t("msg.bad_weight", text=text), self.t("msg.type_kg")])
        if not self._plausible(kg):
            return self._implausible(kg, typed=True)
        return self._record(mass, manual=True)

    def _finish_bag_first(self) -> Step:
        keys = self.t("screen.weighing_keys")
        return self._error_keep([self.t("msg.finish_bag", seal=self.pending), keys])

    def _plausible(self, kg: Decimal) -> bool:
        return self.bag_range[0] <= kg <= self.bag_range[1]

    def _implausible(self, kg: Decimal, *, typed: bool) -> Step:
        """A bag mass outside ``bag_range``: refused and counted, still weighing."""
        self.refused["bag_mass"] += 1
        lo, hi = self.bag_range
        what = "msg.bag_too_light" if kg < lo else "msg.bag_too_heavy"
        lines = [
            self.t(what, kg=kg),
            self.t("msg.bag_range", lo=lo, hi=hi),
            self.t("msg.type_again" if typed else "msg.weigh_again"),
        ]
        return self._error_keep(lines)

    def _record(self, mass: int | None, *, manual: bool) -> Step:
        assert self.pending is not None
        assert self.lot is not None
        self._go("weight")
        lines = [self.pending, self.t("screen.recording")]
        return Step(
            self._compose(Kind.PROMPT, None, lines),
            (RecordBag(self.pending, self.lot, mass, manual_mass=manual),),
        )

    def _weighing_lines(self) -> tuple[str, ...]:
        r = self._last_reading
        if self._scale_state != "open":
            state = self.t("screen.scale_down")
        elif r is None:
            state = self.t("screen.weight_none")
        elif r.overload or r.underload:
            state = self.t("screen.weight_overload")
        elif not self._emptied and r.kg > EMPTY_BELOW_KG:
            state = (
                self.t("screen.weight_live", kg=r.kg, state="")
                + " "
                + self.t("screen.weight_not_emptied")
            )
        elif r.kg <= EMPTY_BELOW_KG:
            state = self.t("screen.weight_live", kg=r.kg, state=self.t("screen.weight_empty"))
        else:
            word = "screen.weight_stable" if r.stable else "screen.weight_unstable"
            state = self.t("screen.weight_live", kg=r.kg, state=self.t(word))
        return (state.strip(),)

    def _weighing_update(self) -> Step | None:
        """The weighing screen again, only when the live reading's line changed."""
        extra = self._weighing_lines()
        if extra == self.screen.extra:
            return None
        if self.screen.kind is Kind.ERROR:  # keep the error in view; update the reading
            self.screen = replace(self.screen, extra=extra, bell=0)
            return Step(self.screen)
        return self._weighing_step()

    def _weighing_step(self, bell: int = 0) -> Step:
        extra = self._weighing_lines()
        lines = [self.t("screen.weighing", seal=self.pending), self.t("screen.weighing_keys")]
        screen = replace(self._compose(Kind.PROMPT, "banner.scale", lines, bell=bell), extra=extra)
        self.screen = screen
        return Step(screen)

    # --- screens ------------------------------------------------------------------------------
    def _error(self, lines: list[str]) -> Step:
        return self._show(Kind.ERROR, "banner.error", lines, bell=2)

    def _error_keep(self, lines: list[str]) -> Step:
        """An error while weighing: shown, and the weighing prompt stays underneath."""
        step = self._show(Kind.ERROR, "banner.error", lines, bell=2)
        return Step(replace(step.screen, extra=self._weighing_lines()))

    def _show(self, kind: Kind, banner: str | None, lines: list[str], bell: int = 0) -> Step:
        return Step(self._compose(kind, banner, lines, bell=bell))

    def _compose(self, kind: Kind, banner: str | None, lines: list[str], bell: int = 0) -> Screen:
        prompt = {
            Mode.NEED_LOT: self.t("screen.need_lot"),
            Mode.READY: self.t("screen.ready"),
            Mode.LOT_ENTRY: self.t("screen.lot_entry"),
        }.get(self.mode)
        body = list(lines)
        if prompt and self.mode is Mode.LOT_ENTRY and self.lot:
            body += [prompt, self.t("screen.lot_entry_cancel", lot=self.lot)]
        elif prompt and (not body or kind is not Kind.PROMPT):
            body.append(prompt)
        self.screen = Screen(
            status=self._status(),
            banner=self.t(banner) if banner else None,
            kind=kind,
            lines=tuple(body),
            hint=self.t("screen.hint"),
            bell=bell,
        )
        return self.screen

    def _refresh(self, screen: Screen) -> Screen:
        """The same screen with a fresh status line and no bell (e.g. after a resize)."""
        return replace(screen, status=self._status(), bell=0)

    def redraw(self, now_ms: int) -> Screen:
        self.now_ms = now_ms
        self.screen = self._refresh(self.screen)
        return self.screen

    def _status(self) -> str:
        if not self.lot:
            return self.t("screen.no_lot")
        count = self.index.counts(self._day(self.now_ms), self._day).get(self.lot, (0, 0))[0]
        return self.t("screen.status", lot=self.lot, count=count)

    def _day(self, ms: int) -> dt.date:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).date()

    def _clock(self, m: object) -> str:
        ms = getattr(m, "time_ms", 0)
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).strftime("%H:%M")


def _looks_like_weight(text: str, numeric_seals: bool) -> bool:
    """A bare number a person typed where a seal was asked for (see the module docstring).

    With ``numeric_seals`` only a number with a decimal part or "kg" still counts: a seal
    id is a whole number."""
    m = _WEIGHT_TEXT.fullmatch(text)
    if m is None:
        return False
    return not numeric_seals or m.group(2) is not None or text[-1:].lower() == "g"


def _lot_of(code: SealCode) -> str | None:
    """The lot id a GS1 consignment/shipment code carries (first element AI 401/402)."""
    if code.kind in ("gs1", "digital_link") and code.elements:
        ai, value = code.elements[0]
        if ai in LOT_AIS:
            return value
    return None
