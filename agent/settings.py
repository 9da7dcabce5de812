"""The agent's configuration: one declarative table (STYLE.md §10).

Each setting is declared once in ``SETTINGS`` with its TOML key, type, default,
validator and help. The TOML loader, ``custody-agent config check``, the
commented file that ``init`` writes, and the documentation all come from this
table, so they cannot drift apart. A bad value fails with the file, the key
and the reason (``ConfigError``).
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, SchemaError
from custody.event import validate_identifier

__all__ = [
    "SETTINGS",
    "AgentConfig",
    "Setting",
    "check_config",
    "check_config_text",
    "load_config",
    "parse_setting",
    "render_config",
]


def _identifier(value: Any) -> str:
    try:
        return validate_identifier(value, "value")
    except SchemaError as exc:
        raise ValueError(str(exc).removeprefix("value ")) from exc


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"must be an integer between {lo} and {hi}, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"must be an integer between {lo} and {hi}, got {value}")
        return value

    return check


def _relative_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a file path, got {value!r}")
    return _usable_path(value)


def _usable_path(value: str) -> str:
    # Both would only fail where the path is used, far from the file and key that set it:
    # open() refuses a NUL, and Path.expanduser raises RuntimeError for "~user" of no user.
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    try:
        Path(value).expanduser()
    except RuntimeError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return value


def _date(value: Any) -> str:
    # TOML's offset and local date-times are datetime objects, a subclass of date.
    if isinstance(value, dt.datetime):
        raise ValueError(f"must be a date like 2026-01-01, not a date and time ({value})")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"must be a date like 2026-01-01, got {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be a date like 2026-01-01, got {value!r}") from None
    return value


def _broker_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a broker URL such as mqtts://broker.example:8883, got {value!r}")
    if value and not value.startswith(("mqtt://", "mqtts://")):
        raise ValueError(f"must start with mqtts:// or mqtt://, got {value!r}")
    return value


def _ip_literal(value: Any) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError(f"must be an IP address such as 127.0.0.1, got {value!r}") from exc


def _port_specs(value: Any) -> tuple[str, ...]:
    # "DIALECT@URL": the dialect names its parser; the URL is a pyserial port URL (STYLE.md §6).
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f'must be a list of "DIALECT@URL" strings such as ["xk3190-a12@/dev/ttyUSB0"], '
            f"got {value!r}"
        )
    from firmware_bridge.protocols.registry import all_dialects

    known = all_dialects()
    for spec in value:
        dialect, sep, url = spec.partition("@")
        if not sep or not url:
            raise ValueError(f'{spec!r}: expected "DIALECT@URL", e.g. "xk3190-a12@/dev/ttyUSB0"')
        if dialect not in known:
            raise ValueError(f"{spec!r}: unknown dialect {dialect!r}; known: {', '.join(known)}")
    if len({v.partition("@")[2] for v in value}) != len(value):
        raise ValueError(f"the same port URL is listed twice in {value!r}")
    return tuple(value)


def _optional_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a path (a string, may be empty), got {value!r}")
    return _usable_path(value)


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(
                f"must be a number of seconds between {lo:g} and {hi:g}, got {value!r}"
            )
        if not lo <= value <= hi:
            raise ValueError(
                f"must be a number of seconds between {lo:g} and {hi:g}, got {value:g}"
            )
        return float(value)

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _scale_dialect(value: Any) -> str:
    from firmware_bridge.protocols.registry import all_dialects

    scales = sorted(n for n, d in all_dialects().items() if d.kind == "scale")
    return _choice(value, tuple(scales))


def split_port(value: str) -> tuple[str | None, str]:
    """(dialect, URL) of ``"DIALECT@URL"``; (None, value) for a bare port URL.

    Only a known dialect name before the first ``@`` makes a prefix, so a URL that itself
    holds an ``@`` still reads as a bare URL."""
    from firmware_bridge.protocols.registry import all_dialects

    dialect, sep, url = value.partition("@")
    if sep and dialect in all_dialects():
        return dialect, url
    return None, value


def _port_of_kind(kind: str, example: str) -> Callable[[Any], str]:
    """A port setting written ``"DIALECT@URL"`` (the dialect of this kind) or, as older
    files do, a bare URL whose dialect comes from a separate setting."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f'must be a "DIALECT@URL" string such as "{example}", got {value!r}')
        dialect, url = split_port(value)
        if dialect is None:
            word, sep, _ = value.partition("@")
            if sep and word and not any(c in word for c in "/:\\"):
                raise ValueError(
                    f"{value!r}: unknown dialect {word!r}; `custody-agent devices dialects` "
                    "lists them"
                )
            return _usable_path(value)
        from firmware_bridge.protocols.registry import dialect as lookup

        if lookup(dialect).kind != kind:
            raise ValueError(f"{value!r}: {dialect} is not a {kind} dialect")
        if not url:
            raise ValueError(f'{value!r}: the port URL after "@" is missing, e.g. "{example}"')
        _usable_path(url)
        return value

    return check


def _optional_port_spec(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f'must be a "DIALECT@URL" string or empty, got {value!r}')
    if value:
        _port_specs([value])
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # "section.name" in the TOML file
    attr: str  # attribute of AgentConfig
    default: Any  # None = required, no default
    validate: Callable[[Any], Any]
    help: str


_WB_EXAMPLE = "xk3190-a12@/dev/serial/by-id/usb-FTDI_A1-if00-port0"

SETTINGS: tuple[Setting, ...] = (
    Setting("device.id", "device_id", None, _identifier,
            "Device id of this gateway: 1-64 of A-Z a-z 0-9 . _ - (used in MQTT topics)."),
    Setting("device.site", "site_id", None, _identifier,
            "Site id the gateway is enrolled to, e.g. KOL-01."),
    Setting("ledger.public_keys", "ledger_keys_file", "ledger.json", _relative_path,
            "Ledger public-key file (from `custody-ledger init`), relative to the data dir. "
            "Mass openings are sealed to it; without it mass captures are refused."),
    Setting("outbox.budget_mb", "budget_mb", 2048, _int_range(16, 1_048_576),
            "Disk budget of the outbox in MiB. At the limit new captures are refused "
            "with a clear error; nothing already captured is ever dropped."),
    Setting("outbox.alarm_percent", "alarm_percent", 80, _int_range(1, 99),
            "Raise a disk-budget alarm when the outbox uses this share of its budget."),
    Setting("outbox.min_free_mb", "min_free_mb", 64, _int_range(0, 1_048_576),
            "Refuse new captures when the filesystem has less free space than this (MiB), "
            "so the database never hits a full disk mid-write."),
    Setting("outbox.batch_max", "batch_max", 256, _int_range(1, 10_000),
            "Most captures committed together in one transaction (group commit)."),
    Setting("outbox.startup_check", "startup_check", "integrity",
            lambda v: _choice(v, ("integrity", "quick")),
            "Database check at start: 'integrity' (PRAGMA integrity_check, thorough) or "
            "'quick' (PRAGMA quick_check, faster on very large outboxes)."),
    Setting("sync.broker", "broker_url", "", _broker_url,
            "Broker URL: mqtts://host:8883 (TLS with this gateway's certificate) or "
            "mqtt://127.0.0.1:1883 for a local test broker. Empty: not configured yet."),
    Setting("sync.ca_file", "ca_file", "", _optional_path,
            "CA certificate that signed the broker's certificate (relative to the data dir)."),
    Setting("sync.cert_file", "cert_file", "", _optional_path,
            "This gateway's client certificate (CN = device id), relative to the data dir."),
    Setting("sync.key_file", "key_file", "", _optional_path,
            "The client certificate's private key (mode 0600), relative to the data dir."),
    Setting("sync.window", "sync_window", 4, _int_range(1, 64),
            "Batches in flight before waiting for the broker's PUBACK."),
    Setting("sync.max_bytes_per_s", "max_bytes_per_s", 0, _int_range(0, 1_000_000_000),
            "Cap on the uplink's average rate in bytes per second for metered links "
            "(VSAT, 3G); 0 = no cap."),
    Setting("sync.ack_timeout_s", "ack_timeout_s", 60, _int_range(5, 86_400),
            "Seconds a sent record may wait for the ledger's ack before it is sent again."),
    Setting("service.http_host", "http_host", "127.0.0.1", _ip_literal,
            "Address of the service's /healthz and /metrics endpoint (`custody-agent run`). "
            "A loopback address (127.0.0.1, ::1) unless service.http_token_file is set: "
            "anything else is refused without a token, since anyone who reaches the port "
            "would read the gateway's state."),
    Setting("service.http_port", "http_port", 9478, _int_range(0, 65_535),
            "TCP port of /healthz and /metrics; 0 = any free port (written to service.json "
            "in the data dir)."),
    # The status page (agent.service.page): required off loopback (custody.webpage.Access).
    Setting("service.http_token_file", "http_token_file", "", _optional_path,
            "File holding the token (one line, 16+ characters) that the status page, /metrics "
            "and /healthz ask for (Bearer, or a browser's password); relative to the data dir. "
            "Empty: no token, and the page is served on a loopback http_host only."),
    Setting("service.drain_deadline_s", "drain_deadline_s", 20, _int_range(1, 600),
            "On SIGTERM: seconds to stop workers, flush the outbox and exit 0 before giving up "
            "(keep systemd's TimeoutStopSec above it)."),
    Setting("service.heartbeat_timeout_s", "heartbeat_timeout_s", 30, _int_range(1, 3600),
            "A worker whose heartbeat is older than this is stuck: WATCHDOG=1 is withheld, "
            "so systemd restarts the service."),
    Setting("service.checkpoint_interval_s", "checkpoint_interval_s", 3600,
            _int_range(0, 86_400),
            "The service signs a checkpoint of the running input/output sums at every multiple "
            "of this many seconds of UTC time, busy or idle, so checkpoints reveal the "
            "schedule, never the pace (seconds; 0 = only `custody-agent checkpoint` and lot "
            "close)."),
    Setting("devices.ports", "device_ports", (), _port_specs,
            'Serial devices the service reads, as "DIALECT@URL" (see `devices dialects`), '
            'e.g. ["xk3190-a12@/dev/serial/by-id/usb-FTDI_A1-if00-port0"].'),
    Setting("weighbridge.port", "wb_port", "", _port_of_kind("scale", _WB_EXAMPLE),
            'Weighbridge indicator as "DIALECT@URL" (a scale dialect, see `devices dialects`), '
            f'e.g. "{_WB_EXAMPLE}" or "xk3190-a12@socket://10.0.0.7:4001"; '
            "empty: no unattended weighbridge on this gateway."),
    Setting("weighbridge.dialect", "wb_dialect", "xk3190-a12", _scale_dialect,
            "Older files only: the indicator's dialect when weighbridge.port is a bare URL "
            "(write it in weighbridge.port instead)."),
    Setting("weighbridge.rfid", "wb_rfid", "", _optional_port_spec,
            'Vehicle tag reader as "DIALECT@URL" (e.g. "rdm6300@/dev/ttyUSB1"); empty: none.'),
    Setting("weighbridge.scanner", "wb_scanner", "", _optional_port_spec,
            'Code scanner at the weighbridge as "DIALECT@URL": seal codes, and vehicle codes '
            'written "VEH:<id>"; empty: none.'),
    Setting("weighbridge.on_threshold_kg", "wb_on_threshold_kg", 500, _int_range(1, 1_000_000),
            "A reading at or above this many kg means a vehicle is on the bridge; below it, "
            "the bridge is empty (and zero drift is tracked)."),
    Setting("weighbridge.stable_readings", "wb_stable_readings", 5, _int_range(1, 1000),
            "Stable = the indicator's stable flag AND at least this many readings within "
            "tolerance_kg spanning window_s (OIML R76 stable equilibrium)."),
    Setting("weighbridge.tolerance_kg", "wb_tolerance_kg", 20, _int_range(0, 10_000),
            "Largest spread in kg of the readings counted as stable (usually one division)."),
    Setting("weighbridge.window_s", "wb_window_s", 2.0, _seconds(0, 600),
            "Seconds the stable readings must span before a capture."),
    Setting("weighbridge.unstable_timeout_s", "wb_unstable_timeout_s", 60.0, _seconds(1, 3600),
            "A vehicle not stable this long after driving on gets a signed 'unstable' outcome "
            "instead of a guessed weight."),
    Setting("weighbridge.zero_drift_limit_kg", "wb_zero_drift_limit_kg", 100,
            _int_range(0, 1_000_000),
            "Alarm (and a signed 'zero_drift' record) when the empty bridge reads further than "
            "this from zero; 0 = no check."),
    Setting("weighbridge.stored_tare", "wb_stored_tare", False, _bool,
            "Weigh a vehicle once when it has a stored tare (from its last two-pass visit) "
            "instead of weighing it in and out."),
    Setting("weighbridge.single_pass_direction", "wb_single_pass_direction", "out",
            lambda v: _choice(v, ("in", "out")),
            "Direction recorded for one-pass weighings against a stored tare: 'out' = material "
            "shipped, 'in' = received."),
    Setting("weighbridge.printer_port", "wb_printer_port", "", _optional_path,
            "Serial ESC/POS ticket printer port URL; empty: tickets go to the service log only."),
    Setting("weighbridge.vehicles", "wb_vehicles", "", _optional_path,
            "Vehicle registry, a CSV file of tag,plate,haulier (relative to the data dir): "
            "records and tickets then name the truck by its plate; empty: none, tickets show "
            "the RFID tag number."),
    Setting("weighbridge.max_seals_per_visit", "wb_max_seals_per_visit", 60,
            _int_range(1, 1000),
            "Most seal codes one truck visit takes; further scans are refused and counted "
            "(a flatbed of one-tonne bags carries about 30-40; a scanner left reading is not "
            "a load)."),
    Setting("weighbridge.gross_min_kg", "wb_gross_min_kg", 1500, _int_range(1, 1_000_000),
            "Lightest plausible loaded (gross) weighing in kg; a lighter one is refused as "
            "'implausible', signed and counted, not recorded as a mass."),
    Setting("weighbridge.gross_max_kg", "wb_gross_max_kg", 100_000, _int_range(1, 1_000_000),
            "Heaviest plausible gross weighing in kg (the largest road weighbridges' "
            "capacity); a heavier one is refused as 'implausible'."),
    Setting("weighbridge.tare_min_kg", "wb_tare_min_kg", 1500, _int_range(1, 1_000_000),
            "Lightest plausible empty (tare) truck in kg; also the least a first-pass reading "
            "may weigh (the truck may be empty)."),
    Setting("weighbridge.tare_max_kg", "wb_tare_max_kg", 50_000, _int_range(1, 1_000_000),
            "Heaviest plausible empty (tare) truck in kg (a tractor with two empty trailers "
            "is about 20-25 t)."),
    Setting("scan.scale_port", "scan_scale_port", "",
            _port_of_kind("scale", "ad-cas@/dev/ttyUSB0"),
            "Platform scale of the handheld scan console (`custody-agent scan`) as "
            '"DIALECT@URL", e.g. "ad-cas@/dev/ttyUSB0"; empty: bags are recorded without a '
            "weight."),
    Setting("scan.scale_dialect", "scan_scale_dialect", "ad-cas", _scale_dialect,
            "Older files only: the platform scale's dialect when scan.scale_port is a bare URL "
            "(write it in scan.scale_port instead)."),
    Setting("scan.stable_readings", "scan_stable_readings", 3, _int_range(1, 100),
            "A bag's weight is taken after this many identical readings flagged stable."),
    Setting("scan.scanner_port", "scan_scanner_port", "",
            _port_of_kind("scanner", "scanner-line@/dev/ttyACM0"),
            'Serial barcode scanner of the scan console as "scanner-line@URL" (a bare URL also '
            "means scanner-line); empty: keyboard-wedge scanners type into the console."),
    Setting("scan.camera", "scan_camera", "", _optional_path,
            "Camera reading seal codes for the scan console (/dev/video0, rtsp://...); "
            "empty: none."),
    Setting("scan.language", "scan_language", "", lambda v: _choice(v, ("", "en", "fr")),
            "Language of the scan console: en or fr; empty: from LANG."),
    # Plausible bag masses at the bagging station: hydroxide leaves in 1-2 t FIBCs
    # (DOMAIN.md "The material and its path"); an empty FIBC is a few kg.
    Setting("scan.bag_min_kg", "scan_bag_min_kg", 100, _int_range(1, 100_000),
            "Lightest plausible bag in kg, weighed or typed, at the scan console; a lighter "
            "one is refused and counted (an empty bag, a person on the platform, or a weight "
            "typed in tonnes)."),
    Setting("scan.bag_max_kg", "scan_bag_max_kg", 2500, _int_range(1, 100_000),
            "Heaviest plausible bag in kg at the scan console (a 2 t big bag with margin); "
            "a heavier one is refused and counted (a scale fault, or a truck's mass typed)."),
    Setting("scan.numeric_seals", "scan_numeric_seals", False, _bool,
            "Seal ids at this site may be bare numbers of up to 6 digits: accept one typed "
            "at the seal prompt. False: it is refused as a probable weight typed in the "
            "wrong place (codes from a serial scanner or camera are always taken)."),
    Setting("clock.earliest_valid", "earliest_valid", "2026-01-01", _date,
            "A device time before this date is recorded with time quality 'none' "
            "(clock not set after a power cut); the capture itself is never refused."),
)  # fmt: skip


def _choice(value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device_id: str
    site_id: str
    ledger_keys_file: str
    budget_mb: int
    alarm_percent: int
    min_free_mb: int
    batch_max: int
    startup_check: str
    broker_url: str
    ca_file: str
    cert_file: str
    key_file: str
    sync_window: int
    max_bytes_per_s: int
    ack_timeout_s: int
    http_host: str
    http_port: int
    http_token_file: str
    drain_deadline_s: int
    heartbeat_timeout_s: int
    checkpoint_interval_s: int
    device_ports: tuple[str, ...]
    wb_port: str
    wb_dialect: str
    wb_rfid: str
    wb_scanner: str
    wb_on_threshold_kg: int
    wb_stable_readings: int
    wb_tolerance_kg: int
    wb_window_s: float
    wb_unstable_timeout_s: float
    wb_zero_drift_limit_kg: int
    wb_stored_tare: bool
    wb_single_pass_direction: str
    wb_printer_port: str
    wb_vehicles: str
    wb_max_seals_per_visit: int
    wb_gross_min_kg: int
    wb_gross_max_kg: int
    wb_tare_min_kg: int
    wb_tare_max_kg: int
    scan_scale_port: str
    scan_scale_dialect: str
    scan_stable_readings: int
    scan_scanner_port: str
    scan_camera: str
    scan_language: str
    scan_bag_min_kg: int
    scan_bag_max_kg: int
    scan_numeric_seals: bool
    earliest_valid: str
    source: str = "<defaults>"

    @property
    def earliest_valid_ms(self) -> int:
        day = dt.date.fromisoformat(self.earliest_valid)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)

    def ledger_keys_path(self, data_dir: Path) -> Path:
        path = Path(self.ledger_keys_file).expanduser()
        return path if path.is_absolute() else data_dir / path


def _flatten(raw: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(source, section, "expected a [section] table")
        for name, value in table.items():
            flat[f"{section}.{name}"] = value
    return flat


def _problems(flat: dict[str, Any], source: str) -> tuple[dict[str, Any], list[ConfigError]]:
    known = {s.key: s for s in SETTINGS}
    values: dict[str, Any] = {}
    problems = [
        ConfigError(source, key, "unknown setting") for key in sorted(set(flat) - set(known))
    ]
    for setting in SETTINGS:
        if setting.key not in flat:
            if setting.default is None:
                problems.append(ConfigError(source, setting.key, "required setting is missing"))
            else:
                values[setting.attr] = setting.default
            continue
        try:
            values[setting.attr] = setting.validate(flat[setting.key])
        except ValueError as exc:
            problems.append(ConfigError(source, setting.key, str(exc)))
    problems += [ConfigError(source, key, reason) for key, reason in _together(values)]
    _split_ports(values)
    return values, problems


# Port settings written "DIALECT@URL" whose older files name the dialect in a second setting:
# (port key, dialect key or None, the dialect a bare URL means when there is no such key).
_PORT_PAIRS: tuple[tuple[str, str | None, str], ...] = (
    ("weighbridge.port", "weighbridge.dialect", ""),
    ("scan.scale_port", "scan.scale_dialect", ""),
    ("scan.scanner_port", None, "scanner-line"),
)


def _split_ports(values: dict[str, Any]) -> None:
    """Store each port as its bare URL and its dialect apart, so both written forms load into
    the same station. A dialect in the port wins over an older separate line (config check
    notes that line), so setting the port alone switches an upgraded file to another dialect."""
    attr = {s.key: s.attr for s in SETTINGS}
    for port_key, dialect_key, _ in _PORT_PAIRS:
        spec = values.get(attr[port_key])
        if not isinstance(spec, str):
            continue  # already a problem
        dialect, url = split_port(spec)
        if dialect is None:
            continue
        values[attr[port_key]] = url
        if dialect_key is not None:
            values[attr[dialect_key]] = dialect


# Settings that only files written before the DIALECT@URL form carry.
OLDER_KEYS = frozenset(k for _, k, _ in _PORT_PAIRS if k is not None)


def deprecation_notes(path: Path) -> list[str]:
    """Plain notes on settings written in an older form that still works, each naming the
    one line that replaces it (empty when the file is current or unreadable)."""
    try:
        flat = _flatten(_read(path), str(path))
    except ConfigError:
        return []
    defaults = {s.key: s.default for s in SETTINGS}
    notes: list[str] = []
    for port_key, dialect_key, implied in _PORT_PAIRS:
        spec = flat.get(port_key)
        named = flat.get(dialect_key) if dialect_key else None
        if not isinstance(spec, str):
            continue
        dialect, url = split_port(spec)
        if spec and dialect is None:
            d = named if isinstance(named, str) else implied or defaults[dialect_key or ""]
            notes.append(
                f"{path}: {port_key}: a bare URL{f' with {dialect_key}' if named else ''} is the "
                f"older form and still works; write the dialect in the port: {port_key} = "
                f'"{d}@{url}"' + (f" and remove the {dialect_key} line" if named else "")
            )
        elif dialect is not None and dialect_key and named is not None:
            ignored = f" ({named!r} is ignored)" if named != dialect else ""
            notes.append(
                f"{path}: {dialect_key}: no longer needed, {port_key} names the dialect "
                f"{dialect}{ignored}; remove the {dialect_key} line"
            )
    return notes


# Pairs of settings that bound one range: (low key, high key).
_RANGES = (
    ("weighbridge.gross_min_kg", "weighbridge.gross_max_kg"),
    ("weighbridge.tare_min_kg", "weighbridge.tare_max_kg"),
    ("scan.bag_min_kg", "scan.bag_max_kg"),
)


def _together(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems of settings that are each valid but not together: (key, reason)."""
    attr = {s.key: s.attr for s in SETTINGS}
    out: list[tuple[str, str]] = []
    for lo_key, hi_key in _RANGES:
        lo, hi = values.get(attr[lo_key]), values.get(attr[hi_key])
        if lo is not None and hi is not None and lo > hi:
            out.append(
                (lo_key, f"{lo} is above {hi_key} = {hi}; the least must not exceed the most")
            )
    host = values.get("http_host")
    if host is not None and not _loopback(host) and not values.get("http_token_file"):
        out.append((
            "service.http_host",
            f"{host} is not a loopback address, and /healthz, /metrics and the status page "
            "have no authentication without a token: keep 127.0.0.1, or set "
            "service.http_token_file to a token file (then readers must present it)",
        ))  # fmt: skip
    return out


def _loopback(host: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(host).is_loopback


def parse_setting(key: str, text: str) -> Any:
    """A setting's value from command-line text (``config set KEY VALUE``), validated.

    Raises ``ValueError`` with a plain reason that names the value and what is expected
    (a ``ConfigError`` for an unknown key); lists come back as lists, the TOML form."""
    setting = next((s for s in SETTINGS if s.key == key), None)
    if setting is None:
        import difflib

        near = difflib.get_close_matches(key, [s.key for s in SETTINGS], n=3)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise ConfigError(
            "command line", key, f"unknown setting{hint} (`custody-agent config settings` "
            "lists them all)",
        )  # fmt: skip
    value = _from_text(setting, text)
    setting.validate(value)
    return list(value) if isinstance(value, tuple) else value


def _from_text(setting: Setting, text: str) -> Any:
    default = setting.default
    if isinstance(default, bool):
        if text not in ("true", "false"):
            raise ValueError(f"must be true or false, got {text!r}")
        return text == "true"
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            setting.validate(text)  # the validator's own words: the range it expects
            raise  # pragma: no cover - every int validator refuses a string
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            setting.validate(text)
            raise  # pragma: no cover - every float validator refuses a string
    if isinstance(default, tuple):
        return _list_from_text(text)
    return text


def _list_from_text(text: str) -> list[str]:
    """A list setting: comma-separated items (``a@x,b@y``), or a JSON/TOML list."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            raise ValueError(
                f"{text!r} starts like a list but is not one: write items separated by "
                "commas (xk3190-a12@/dev/ttyUSB0,rdm6300@/dev/ttyUSB1) or a list with "
                'double quotes (["xk3190-a12@/dev/ttyUSB0"])'
            ) from None
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {text!r}")
        return value
    return [item.strip() for item in stripped.split(",") if item.strip()]


def _read(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(source, "-", "file not found (run `custody-agent init`)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "-", f"cannot read: {exc}") from exc
    return _parse(text, source)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "-", f"not valid TOML: {exc}") from exc


def check_config(path: Path) -> list[ConfigError]:
    """Every problem in the file (empty when valid)."""
    try:
        flat = _flatten(_read(path), str(path))
    except ConfigError as exc:
        return [exc]
    return _problems(flat, str(path))[1]


def check_config_text(text: str, source: str) -> list[ConfigError]:
    """Every problem in ``text``, a config file's would-be content (empty when valid)."""
    try:
        flat = _flatten(_parse(text, source), source)
    except ConfigError as exc:
        return [exc]
    return _problems(flat, source)[1]


def load_config(path: Path) -> AgentConfig:
    """Load and validate; raise the first ``ConfigError`` (``check_config`` lists all)."""
    flat = _flatten(_read(path), str(path))
    values, problems = _problems(flat, str(path))
    if problems:
        raise problems[0]
    return AgentConfig(**values, source=str(path))


def render_config(device_id: str, site_id: str) -> str:
    """The commented TOML file ``init`` writes: every setting with its help and default."""
    given = {"device.id": device_id, "device.site": site_id}
    lines = ["# cobalt-custody gateway configuration (custody-agent config check validates it)"]
    section = ""
    for s in SETTINGS:
        if s.key in OLDER_KEYS:
            continue  # read from files written before; a new file names dialects in the port
        sec, name = s.key.split(".", 1)
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        lines.append(f"# {s.help}")
        value = given.get(s.key, s.default)
        # JSON string/int literals are valid TOML basic strings and integers.
        rendered = json.dumps(value)
        lines.append(f"{name} = {rendered}")
    return "\n".join(lines) + "\n"


def _check_table_matches_config() -> None:
    attrs = {f.name for f in fields(AgentConfig)} - {"source"}
    declared = {s.attr for s in SETTINGS}
    assert attrs == declared, f"SETTINGS and AgentConfig disagree: {attrs ^ declared}"


_check_table_matches_config()
