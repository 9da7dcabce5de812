"""Signed custody events as GS1 EPCIS 2.0 JSON-LD documents (pure: no I/O, no clock).

Theory of operation. ``epcis_document`` walks decoded events (``SourceEvent``:
event id, ``Payload``, and the clear masses when the caller holds them) in chain
or log order and maps each capture to one EPCIS event (docs/protocol.md §3.3):

``weighing``
    ``ObjectEvent`` ``OBSERVE``, bizStep ``sensor_reporting``, one
    ``sensorReport`` of CBV type ``Mass`` per committed mass (``gross``,
    ``tare``, ``net``, ``bag``, named in ``cbc:field``). The ledger knows the
    clear value (``value`` in kg, ``uom`` ``KGM``); the gateway exports only
    ``cbc:commitment``, the signed Pedersen commitment to the value in 0.1 kg
    units, and no ``value``. A weighing that produced no reading (``outcome``)
    has no sensor report, only ``cbc:outcome``.
``seal_scan``
    ``ObjectEvent`` ``OBSERVE``, bizStep ``inspecting``, the seal in ``epcList``.
``aggregation``
    ``AggregationEvent``: ``parentID`` the lot, ``childEPCs`` the bag seals,
    ``action`` from the body (bizStep ``packing`` for ``ADD``, ``unpacking``
    for ``DELETE``).
``void``
    an EPCIS error declaration (EPCIS 2.0 §7.4.1.2): a copy of the voided
    event, same ``eventID``, with ``errorDeclaration`` (reason
    ``did_not_occur``, the void's time, id and text). A void whose target is
    not in the export (or is a system event) is counted, not exported.
system events
    (boot, clock_sync, device_*, key_rotation, checkpoint, lot_contribution,
    opening_stock) have no EPCIS form and are skipped (``custody.event.EPCIS_MAPPING``).

Identifiers. A seal that is a GS1 instance key (SSCC ``(00)``, SGTIN
``(01)+(21)``, GRAI ``(8003)`` with serial, GIAI ``(8004)``, as scanned in
element-string or Digital Link form) becomes its canonical GS1 Digital Link URI
``https://id.gs1.org/...``: EPCIS 2.0 §8.3 accepts it as an EPC, and unlike
the ``urn:epc:id:`` form it needs no GS1 company prefix length, which a
scanned code does not carry. Anything else becomes a URN under our own
(unregistered, informal) namespace ``urn:cobalt-custody:``: ``seal:<code
percent-encoded>``, ``lot:<lot>``, ``vehicle:<id>``, ``site:<site>``.
``readPoint``/``bizLocation`` come from ``Locations`` (site -> SGLN or
Digital Link, else ``urn:cobalt-custody:site:<site>``).

Extensions. Our fields use the JSON-LD prefix ``cbc`` = ``NAMESPACE``; every
event carries ``cbc:eventId`` (our event id, hex) so it can be checked against
the ledger. The namespace ends in "/" because the CBV 2.0 event hash
algorithm's reference implementation only recognises extension elements nested
in a standard field (our ``cbc:field`` inside a ``sensorReport``) by a
namespace ending in "/", as in GS1's own examples.

``eventID`` is the CBV 2.0 EPCIS Event Hash ID (``ni:///sha-256;...?ver=CBV2.0``)
computed by ``event_hash_id`` over the fields this module emits; tests cross-check
it with the reference implementation (PyPI ``epcis-event-hash-generator``).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from custody.commitment import WEIGHING_FIELDS
from custody.envelope import event_id_of, peek_payload
from custody.errors import SchemaError
from custody.event import POSITION_UNITS_PER_DEGREE, EventType, Payload, validate_identifier
from custody.mass import units_to_kg

__all__ = [
    "DEFAULT_TZ_OFFSET",
    "EPCIS_CONTEXT",
    "NAMESPACE",
    "URN_ROOT",
    "ExportResult",
    "Locations",
    "SourceEvent",
    "check_location_uri",
    "decode_source",
    "epcis_document",
    "epcis_event",
    "event_hash_id",
    "locations_from_options",
    "lot_uri",
    "prehash",
    "seal_uri",
]

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
NAMESPACE = "urn:cobalt-custody:epcis/"
PREFIX = "cbc"
URN_ROOT = "urn:cobalt-custody:"
# Katanga (DRC) keeps Central Africa Time, UTC+2, without daylight saving.
DEFAULT_TZ_OFFSET = "+02:00"
# The location options of an EPCIS export, as (flag, argparse keyword arguments): plain data,
# so that both command lines (which share no module) add exactly these, and this package
# stays free of argparse. ``locations_from_options`` reads what they parse.
LOCATION_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--site-location", {
        "action": "append", "default": [], "metavar": "SITE=URI",
        "help": "bizLocation of a site, an SGLN (urn:epc:id:sgln:... or "
                "https://id.gs1.org/414/...); default urn:cobalt-custody:site:SITE (repeatable)",
    }),
    ("--read-point", {
        "action": "append", "default": [], "metavar": "DEVICE=URI",
        "help": "readPoint of a device (default: its site's location; repeatable)",
    }),
    ("--tz", {
        "default": DEFAULT_TZ_OFFSET, "metavar": "±HH:MM",
        "help": f"eventTimeZoneOffset (default {DEFAULT_TZ_OFFSET}, Katanga)",
    }),
)  # fmt: skip

_OFFSET = re.compile(r"^([+-])((0[0-9]|1[0-3]):([0-5][0-9])|14:00)$")  # EPCIS JSON schema


# --- identifiers ----------------------------------------------------------------------
def _gs1_check_ok(digits: str) -> bool:
    """GS1 mod-10 check digit (GS1 General Specifications §7.9.1), last digit included."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


# GS1 AI 82-character set (General Specifications §7.11, Figure 7.11-1).
_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]+")


def _dl_segment(value: str) -> str:
    # Percent-encode everything outside RFC 3986 unreserved characters: always a
    # valid path segment, and one spelling per value.
    return quote(value, safe="-._~")


def _gs1_instance(elements: Sequence[tuple[str, str]]) -> str | None:
    """Canonical Digital Link URI of an instance-level GS1 key, or None."""
    ai = dict(elements)
    if len(ai) != len(elements):
        return None
    if "00" in ai:
        v = ai["00"]
        return f"https://id.gs1.org/00/{v}" if len(v) == 18 and _gs1_check_ok(v) else None
    if "01" in ai and "21" in ai:
        gtin, serial = ai["01"], ai["21"]
        ok = len(gtin) == 14 and _gs1_check_ok(gtin) and len(serial) <= 20
        if ok and _CSET82.fullmatch(serial):
            return f"https://id.gs1.org/01/{gtin}/21/{_dl_segment(serial)}"
        return None
    if "8003" in ai:
        v = ai["8003"]  # "0" + GRAI-13 + serial: instance-level only with a serial
        grai, serial = v[:14], v[14:]
        ok = v[:1] == "0" and _gs1_check_ok(grai) and 0 < len(serial) <= 16
        if ok and _CSET82.fullmatch(serial):
            return f"https://id.gs1.org/8003/{grai}{_dl_segment(serial)}"
        return None
    if "8004" in ai:
        v = ai["8004"]
        if 0 < len(v) <= 30 and _CSET82.fullmatch(v):
            return f"https://id.gs1.org/8004/{_dl_segment(v)}"
    return None


_HRI = re.compile(r"\((\d{2,4})\)([^()]+)")
_HRI_WHOLE = re.compile(r"(?:\(\d{2,4}\)[^()]+)+")
_DL_KEYS = ("00", "01", "8003", "8004")


def _from_hri(code: str) -> str | None:
    if not _HRI_WHOLE.fullmatch(code):
        return None
    return _gs1_instance(_HRI.findall(code))


def _from_digital_link(code: str) -> str | None:
    try:
        parts = urlsplit(code)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    segments = parts.path.split("/")[1:]
    for i, seg in enumerate(segments):
        if seg in _DL_KEYS:
            rest = segments[i:]
            if len(rest) % 2 or not all(rest):
                return None
            pairs = [(rest[j], unquote(rest[j + 1])) for j in range(0, len(rest), 2)]
            return _gs1_instance(pairs)
    return None


def seal_uri(code: str) -> str:
    """The EPC of a bag seal: canonical GS1 Digital Link for a GS1 instance key, else our URN.

    ``code`` is the seal text as signed (``custody.event`` *code*): a GS1 element
    string in human-readable form ``(00)…``, a Digital Link URI, or an opaque serial.
    """
    uri = _from_hri(code) if code.startswith("(") else _from_digital_link(code)
    return uri if uri is not None else f"{URN_ROOT}seal:{_dl_segment(code)}"


def lot_uri(lot: str) -> str:
    return f"{URN_ROOT}lot:{lot}"


def _vehicle_uri(vehicle: str) -> str:
    return f"{URN_ROOT}vehicle:{vehicle}"


_SGLN_URN = re.compile(
    r"urn:epc:id:sgln:(?P<cp>\d{6,12})\.(?P<loc>\d{0,6})\.(?P<ext>[!')(*+,.0-9:;=A-Za-z_-]{1,20})"
)
_SGLN_DL = re.compile(r"https://id\.gs1\.org/414/(?P<gln>\d{13})(?:/254/(?P<ext>[^/?#]{1,60}))?")
# Extension characters the canonical form keeps as they are (CBV 2.0 hash
# canonicalisation, as the reference implementation checks the result).
_DL_EXT_CHARS = re.compile(r"[\"'\-.0-9;-?A-Z_a-z]{0,20}")


def check_location_uri(uri: str) -> str:
    """A readPoint/bizLocation URI we can hash canonically; ValueError otherwise.

    Accepted: an SGLN EPC URI ``urn:epc:id:sgln:…``, a canonical Digital Link
    ``https://id.gs1.org/414/<GLN>[/254/<ext>]`` or a non-GS1 URN such as
    ``urn:cobalt-custody:site:KOL-01``.
    """
    m = _SGLN_URN.fullmatch(uri)
    if m:
        if len(m["cp"]) + len(m["loc"]) != 12:
            raise ValueError(f"{uri}: company prefix and location reference must be 12 digits")
        return uri
    m = _SGLN_DL.fullmatch(uri)
    if m:
        if not _gs1_check_ok(m["gln"]):
            raise ValueError(f"{uri}: GLN check digit is wrong")
        return uri
    if uri.startswith("urn:") and not uri.startswith("urn:epc:") and re.fullmatch(r"\S+", uri):
        return uri
    raise ValueError(
        f"{uri!r}: use urn:epc:id:sgln:…, https://id.gs1.org/414/<GLN>[/254/<ext>] or a URN"
    )


def _canonical_location(uri: str) -> str:
    """The pre-hash form of a location: SGLN EPC URI -> canonical Digital Link."""
    m = _SGLN_URN.fullmatch(uri)
    if not m:
        return uri
    gln12 = m["cp"] + m["loc"]
    check = next(d for d in "0123456789" if _gs1_check_ok(gln12 + d))
    out = f"https://id.gs1.org/414/{gln12}{check}"
    if m["ext"] != "0":
        ext = m["ext"]
        for ch, enc in (("!", "%21"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("+", "%2B"),
                        (",", "%2C"), (":", "%3A")):  # fmt: skip
            ext = ext.replace(ch, enc)
        if not _DL_EXT_CHARS.fullmatch(ext):
            return uri  # no canonical Digital Link form: the URN stands as written
        out += f"/254/{ext}"
    return out


@dataclass(frozen=True, slots=True)
class Locations:
    """Where events happened: site -> bizLocation, device -> readPoint, and the local offset.

    ``sites`` maps a site id to an SGLN (``urn:epc:id:sgln:…`` or a
    ``https://id.gs1.org/414/…`` Digital Link); a site without one is
    ``urn:cobalt-custody:site:<site>``. ``read_points`` maps a device id to
    the URI of its read point (a scale, a gate); a device without one reads at
    its site's location. ``tz_offset`` is ``eventTimeZoneOffset``.
    """

    sites: Mapping[str, str] = field(default_factory=dict)
    read_points: Mapping[str, str] = field(default_factory=dict)
    tz_offset: str = DEFAULT_TZ_OFFSET

    def __post_init__(self) -> None:
        if not _OFFSET.fullmatch(self.tz_offset):
            raise ValueError(f"time zone offset {self.tz_offset!r} is not ±HH:MM")
        for uri in (*self.sites.values(), *self.read_points.values()):
            check_location_uri(uri)

    def biz_location(self, site: str) -> str:
        return self.sites.get(site) or f"{URN_ROOT}site:{site}"

    def read_point(self, device: str, site: str) -> str:
        return self.read_points.get(device) or self.biz_location(site)

    def time(self, ms: int) -> str:
        """``ms`` UTC as ISO 8601 with milliseconds in the local offset."""
        sign = -1 if self.tz_offset[0] == "-" else 1
        hours, minutes = int(self.tz_offset[1:3]), int(self.tz_offset[4:6])
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(microsecond=(ms % 1000) * 1000)
        return when.astimezone(tz).isoformat(timespec="milliseconds")


def locations_from_options(
    sites: Sequence[str], read_points: Sequence[str], tz_offset: str = DEFAULT_TZ_OFFSET
) -> Locations:
    """``Locations`` from command-line ``ID=URI`` pairs; ValueError naming the bad one."""

    def pairs(items: Sequence[str], what: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in items:
            key, sep, uri = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: expected {what}=URI")
            try:
                validate_identifier(key, what)
            except SchemaError as exc:
                raise ValueError(str(exc)) from None
            out[key] = check_location_uri(uri)
        return out

    return Locations(pairs(sites, "site"), pairs(read_points, "device"), tz_offset)


# --- events ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One decoded custody event and what the exporter knows beside it.

    ``masses``: clear masses in 0.1 kg units by field (the ledger's verified
    openings), or None to export commitments only (the gateway).
    ``record_time_ms``: when the ledger logged it (EPCIS ``recordTime``), or None.
    """

    event_id: bytes
    payload: Payload
    masses: Mapping[str, int] | None = None
    record_time_ms: int | None = None


def decode_source(
    envelope: bytes,
    masses: Mapping[str, int] | None = None,
    record_time_ms: int | None = None,
) -> SourceEvent:
    """A stored envelope, decoded strictly (schema-checked; the signature is not re-checked:
    the outbox wrote it and the ledger verified it on intake)."""
    return SourceEvent(event_id_of(envelope), peek_payload(envelope), masses, record_time_ms)


def _kg(units: int) -> int | float:
    """A JSON number of kilograms: an integer when whole, so 4505 kg is ``4505``."""
    kg = units_to_kg(units)
    return int(kg) if kg == kg.to_integral_value() else float(kg)


def geo_uri(pos: Mapping[str, int]) -> str:
    """A signed position as an RFC 5870 ``geo:`` URI (WGS 84, decimal degrees), exactly."""
    return f"geo:{_degrees(pos['lat'])},{_degrees(pos['lon'])}"


def _degrees(units: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), POSITION_UNITS_PER_DEGREE)
    return f"{sign}{whole}.{frac:07d}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _x(name: str) -> str:
    return f"{PREFIX}:{name}"


def _mass_reports(body: Mapping[str, Any], masses: Mapping[str, int] | None) -> list[Any]:
    reports: list[dict[str, Any]] = []
    for name in WEIGHING_FIELDS:
        if name not in body["mass"]:
            continue
        report: dict[str, Any] = {"type": "Mass"}
        if masses is not None:
            if name not in masses:
                raise ValueError(f"clear masses given without {name!r}")
            report["value"] = _kg(masses[name])
            report["uom"] = "KGM"
        report[_x("field")] = name
        report[_x("commitment")] = body["mass"][name].hex()
        reports.append(report)
    return [{"sensorReport": reports}]


def epcis_event(src: SourceEvent, locations: Locations) -> dict[str, Any] | None:
    """The EPCIS 2.0 event for one capture (with ``eventID``), or None for a system event."""
    p = src.payload
    body = p.body
    common: dict[str, Any] = {
        "eventTime": locations.time(p.time.ms),
        "eventTimeZoneOffset": locations.tz_offset,
    }
    if src.record_time_ms is not None:
        common["recordTime"] = locations.time(src.record_time_ms)
    where = {
        "readPoint": {"id": locations.read_point(p.device_id, p.site_id)},
        "bizLocation": {"id": locations.biz_location(p.site_id)},
    }
    ours: dict[str, Any] = {
        _x("eventId"): src.event_id.hex(),
        _x("device"): p.device_id,
        _x("seq"): p.seq,
        _x("timeQuality"): str(p.time.quality),
    }
    if body.get("manual") is True:
        ours[_x("manual")] = "true"  # a string: one spelling in JSON and XML
    if "note" in body:
        ours[_x("note")] = body["note"]
    if "pos" in body:
        ours[_x("position")] = geo_uri(body["pos"])

    event: dict[str, Any]
    if p.type is EventType.WEIGHING:
        epcs = [seal_uri(s) for s in body.get("seals", ())]
        if "vehicle" in body:
            epcs.append(_vehicle_uri(body["vehicle"]))
        if not epcs and "lot" in body:
            epcs.append(lot_uri(body["lot"]))
        event = {
            "type": "ObjectEvent", **common, "epcList": _unique(epcs), "action": "OBSERVE",
            "bizStep": "sensor_reporting", **where,
        }  # fmt: skip
        if "mass" in body:
            event["sensorElementList"] = _mass_reports(body, src.masses)
        for key, name in (("lot", "lot"), ("vehicle", "vehicle"), ("pass", "pass"),
                          ("direction", "direction"), ("scale", "scale"), ("alibi", "alibi"),
                          ("outcome", "outcome")):  # fmt: skip
            if key in body:
                ours[_x(name)] = body[key]
        for key, name in (("photo", "photo"), ("inbound", "inbound"), ("tare_event", "tareEvent")):
            if key in body:
                ours[_x(name)] = body[key].hex()
        if "zero" in body:
            ours[_x("zeroKg")] = _kg(body["zero"]) if body["zero"] >= 0 else -_kg(-body["zero"])
    elif p.type is EventType.SEAL_SCAN:
        event = {
            "type": "ObjectEvent", **common, "epcList": [seal_uri(body["seal"])],
            "action": "OBSERVE", "bizStep": "inspecting", **where,
        }  # fmt: skip
        for key in ("lot", "symbology"):
            if key in body:
                ours[_x(key)] = body[key]
        if "photo" in body:
            ours[_x("photo")] = body["photo"].hex()
    elif p.type is EventType.AGGREGATION:
        action = body["action"]
        event = {
            "type": "AggregationEvent", **common, "parentID": lot_uri(body["lot"]),
            "childEPCs": _unique(seal_uri(c) for c in body["children"]), "action": action,
            "bizStep": "packing" if action == "ADD" else "unpacking", **where,
        }  # fmt: skip
    else:
        return None
    event.update(ours)
    return {"eventID": event_hash_id(event), **event}


@dataclass(frozen=True, slots=True)
class ExportResult:
    document: dict[str, Any]
    exported: int  # EPCIS events from captures
    error_declarations: int  # voids exported as error declarations
    skipped: int  # system events (no EPCIS form)
    voids_unmatched: int  # voids whose target is not in this export or has no EPCIS form

    def text(self) -> str:
        """The document as the file both CLIs write."""
        return json.dumps(self.document, indent=2) + "\n"

    def describe(self, where: object) -> str:
        return (
            f"exported {self.exported} EPCIS event(s) and {self.error_declarations} error "
            f"declaration(s) to {where}; {self.skipped} system event(s) skipped"
        )


def epcis_document(
    events: Iterable[SourceEvent],
    locations: Locations,
    *,
    creation_ms: int,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """One ``EPCISDocument`` with every capture of ``events`` (in the order given)."""
    out: list[dict[str, Any]] = []
    by_id: dict[bytes, dict[str, Any]] = {}
    exported = declared = skipped = unmatched = 0
    for n, src in enumerate(events, 1):
        p = src.payload
        if p.type is EventType.VOID:
            target = by_id.get(p.body["target"])
            if target is None:
                unmatched += 1
            else:
                # EPCIS 2.0 §7.4.1.2: an error declaration repeats the original
                # event (same eventID) and adds errorDeclaration; the hash ignores it.
                declaration = copy.deepcopy(target)
                declaration["errorDeclaration"] = {
                    "declarationTime": locations.time(p.time.ms),
                    "reason": "did_not_occur",
                    _x("voidEventId"): src.event_id.hex(),
                    _x("reason"): p.body["reason"],
                }
                if src.record_time_ms is not None:
                    declaration["recordTime"] = locations.time(src.record_time_ms)
                out.append(declaration)
                declared += 1
        else:
            event = epcis_event(src, locations)
            if event is None:
                skipped += 1
            else:
                out.append(event)
                by_id[src.event_id] = event
                exported += 1
        if progress is not None:
            progress(n)
    document = {
        "@context": [EPCIS_CONTEXT, {PREFIX: NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": locations.time(creation_ms),
        "epcisBody": {"eventList": out},
    }
    return ExportResult(document, exported, declared, skipped, unmatched)


# --- CBV 2.0 EPCIS Event Hash ID -------------------------------------------------------
# The pre-hash string concatenates, with no separator, "eventType=<type>", then
# the event's fields in the CBV's fixed order, then user extensions sorted; a
# list contributes its name once and its items sorted; bare CBV values and
# measurement types expand to their web vocabulary URIs; times are UTC with
# milliseconds; numbers lose trailing zeros; GS1 keys take their canonical
# Digital Link form. Only the fields this module emits are handled: anything
# else raises, so a new field cannot silently escape the hash.
_IGNORED = {"type", "eventID", "recordTime", "errorDeclaration"}
_ORDER = ("eventTime", "eventTimeZoneOffset", "parentID", "epcList", "childEPCs", "action",
          "bizStep", "disposition", "readPoint", "bizLocation", "sensorElementList")  # fmt: skip
_REPORT_ORDER = ("type", "value", "uom")


def _utc_ms(text: str) -> str:
    when = dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text_value(value: Any) -> str:
    """An extension value as canonicalised: trimmed, and numbers in their shortest form."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # as text, then read as a number like any other value
    elif isinstance(value, float):
        return _number(value)
    if not isinstance(value, str):
        raise ValueError(f"extension values are text or numbers, got {value!r}")
    text = value.strip()
    try:  # text that reads as a number is written as one (e.g. "007" -> "7")
        number = float(text)
    except ValueError:
        return text
    return _number(number) if math.isfinite(number) else text


def _extension_key(key: str) -> str:
    prefix, sep, local = key.partition(":")
    if prefix != PREFIX or not sep or not local:
        raise ValueError(f"unsupported field {key!r} in the event hash")
    return "{" + NAMESPACE + "}" + local


def _extensions(fields: Mapping[str, Any]) -> str:
    return "".join(sorted(f"{_extension_key(k)}={_text_value(v)}" for k, v in fields.items()))


def _report(report: Mapping[str, Any]) -> str:
    parts = ["sensorReport"]
    if report.get("type") != "Mass":
        raise ValueError(f"unsupported sensor report type {report.get('type')!r}")
    parts.append("type=https://gs1.org/voc/Mass")
    if "value" in report:
        parts.append("value=" + _number(report["value"]))
    if "uom" in report:
        parts.append("uom=" + str(report["uom"]).strip())
    parts.append(_extensions({k: v for k, v in report.items() if k not in _REPORT_ORDER}))
    return "".join(parts)


def _sensor_elements(elements: Sequence[Mapping[str, Any]]) -> str:
    texts = []
    for element in elements:
        if set(element) != {"sensorReport"}:
            raise ValueError(f"unsupported sensor element fields {sorted(element)}")
        texts.append("sensorElement" + "".join(sorted(_report(r) for r in element["sensorReport"])))
    return "sensorElementList" + "".join(sorted(texts))


def prehash(event: Mapping[str, Any]) -> str:
    """The CBV 2.0 pre-hash string of an event built by ``epcis_event``."""
    parts = ["eventType=" + event["type"]]
    for name in _ORDER:
        if name not in event:
            continue
        value = event[name]
        if name == "eventTime":
            parts.append("eventTime=" + _utc_ms(value))
        elif name in ("epcList", "childEPCs"):
            if value:  # an empty list contributes nothing, not even its name
                parts.append(name + "".join(sorted(f"epc={v}" for v in value)))
        elif name == "bizStep":
            parts.append("bizStep=https://ref.gs1.org/cbv/BizStep-" + value)
        elif name == "disposition":
            parts.append("disposition=https://ref.gs1.org/cbv/Disp-" + value)
        elif name in ("readPoint", "bizLocation"):
            if set(value) != {"id"}:
                raise ValueError(f"unsupported {name} fields {sorted(value)}")
            parts.append(f"{name}id=" + _canonical_location(value["id"]))
        elif name == "sensorElementList":
            parts.append(_sensor_elements(value))
        else:  # eventTimeZoneOffset, parentID, action: as written
            parts.append(f"{name}={value}")
    rest = {k: v for k, v in event.items() if k not in _IGNORED and k not in _ORDER}
    parts.append(_extensions(rest))
    return "".join(parts)


def event_hash_id(event: Mapping[str, Any]) -> str:
    """The CBV 2.0 EPCIS Event Hash ID: ``ni:///sha-256;<hex>?ver=CBV2.0`` (RFC 6920 form)."""
    digest = hashlib.sha256(prehash(event).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"
