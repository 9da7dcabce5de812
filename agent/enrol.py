"""``custody-agent init`` and ``enrol``: a gateway identity and its enrolment.

``initialise`` writes the device signing key (0600), the pinned ledger public
keys when given, a commented config file generated from the settings table, an
empty outbox, and the MQTT link's TLS key (EC P-256, 0600) with a certificate
request for it (CN = device id, ``tls.csr``), then returns the enrolment
record the ledger needs (device id, site, public key, kid). Neither key ever
leaves the gateway: the ledger operator enrols the record and issues a client
certificate from the CSR (``custody-ledger enroll`` and ``pki issue``).

``install_enrolment`` takes what comes back (the ledger's public keys, the
broker CA and this gateway's certificate), checks that they fit together (CN =
device id, the certificate's key is ``tls.key``, issued by that CA) and points
the config at them; ``set_settings`` edits single settings in ``config.toml``
in place, validated by the settings table, keeping every comment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import replace
from agent.identity import create_device_key, load_device_key, load_ledger_keys, write_new
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.settings import check_config_text, load_config, parse_setting, render_config
from custody.errors import ConfigError, KeyError_, SchemaError
from custody.event import validate_identifier
from custody.files import fsync_directory, replace_file

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "CSR_FILE",
    "TLS_KEY_FILE",
    "EnrolmentRecord",
    "enrolment_record",
    "initialise",
    "install_enrolment",
    "replace_identity",
    "set_settings",
]

# The MQTT link's files in the data directory (names relative to it, as the config holds them).
TLS_KEY_FILE = "tls.key"
CSR_FILE = "tls.csr"
CERT_FILE = "tls.crt"
CA_FILE = "ca.crt"


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    device_id: str
    site_id: str
    public_key: bytes
    kid: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "cobalt-custody/enrolment/v1",
            "device_id": self.device_id,
            "site_id": self.site_id,
            "algorithm": "Ed25519",
            "public_key": self.public_key.hex(),
            "kid": self.kid.hex(),
        }


def initialise(
    data_dir: Path, *, site_id: str, device_id: str, ledger_key_file: Path | None = None
) -> EnrolmentRecord:
    """Create identity and config; refuse to touch an already initialised directory."""
    _check_ids(site_id, device_id)
    paths = DataDir(data_dir)
    if paths.config.exists() or paths.device_key.exists():
        raise ConfigError(
            str(paths.config),
            "-",
            "this data directory is already initialised; refusing to replace its identity "
            "(use another --data-dir, or --replace --ledger-key FILE to move it to another "
            "ledger)",
        )
    ledger_json = None
    if ledger_key_file is not None:
        ledger_json = load_ledger_keys(ledger_key_file).to_json()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    fsync_directory(data_dir.parent)  # a new data dir's own name, or the identity vanishes with it
    return _write_identity(
        data_dir, site_id, device_id, ledger_json, render_config(device_id, site_id), ()
    )


def replace_identity(
    data_dir: Path,
    *,
    ledger_key_file: Path,
    site_id: str | None = None,
    device_id: str | None = None,
    abandon_unsynced: bool = False,
) -> tuple[EnrolmentRecord, replace.Archived]:
    """Move this gateway to the ledger of ``ledger_key_file`` (agent/replace.py says how).

    The site and device ids stay unless given; every setting but those naming the old
    ledger is kept. Returns the new enrolment record and where the old identity went.
    """
    new_keys = load_ledger_keys(ledger_key_file)  # checked before anything moves
    replace.require_initialised(data_dir)
    with replace.exclusive(data_dir):
        old_cfg = load_config(DataDir(data_dir).config)
        pinned = old_cfg.ledger_keys_path(data_dir)
        if pinned.exists() and load_ledger_keys(pinned) == new_keys:
            raise ConfigError(
                str(ledger_key_file), "-",
                f"this is the ledger {new_keys.ledger_id!r} the gateway already pins "
                f"({pinned}); --replace moves a gateway to another ledger (for a new signing "
                "key on the same ledger: `custody-agent keys rotate`)",
            )  # fmt: skip
        site, device = site_id or old_cfg.site_id, device_id or old_cfg.device_id
        _check_ids(site, device)
        old = replace.archive_identity(data_dir, abandon_unsynced=abandon_unsynced)
        changes = (*replace.LEDGER_SETTINGS, ("device.id", device), ("device.site", site))
        record = _write_identity(
            data_dir, site, device, new_keys.to_json(), old.config_text, changes
        )
    return record, old


def _check_ids(site_id: str, device_id: str) -> None:
    for value, what in ((device_id, "device id"), (site_id, "site id")):
        try:
            validate_identifier(value, what)
        except SchemaError as exc:
            raise ConfigError("command line", what.replace(" ", "_"), str(exc)) from exc


def _write_identity(
    data_dir: Path,
    site_id: str,
    device_id: str,
    ledger_json: str | None,
    config_text: str,
    changes: Sequence[tuple[str, str]],
) -> EnrolmentRecord:
    paths = DataDir(data_dir)
    key = create_device_key(paths.device_key)
    if ledger_json is not None:
        write_new(paths.ledger_keys, ledger_json.encode() + b"\n", 0o644)
    write_new(paths.config, config_text.encode(), 0o644)
    if changes:
        set_settings(paths.config, changes)
    Outbox.open(paths.outbox).close()  # created and migrated now, so every command works
    make_tls_request(data_dir, device_id)
    return EnrolmentRecord(device_id, site_id, key.public_key, key.kid)


def make_tls_request(data_dir: Path, device_id: str) -> Path:
    """The MQTT client key (EC P-256, 0600; the curve of deploy/pki) and its CSR, CN = device id.

    The CA decides every extension of the certificate; the request only names the device.
    """
    tls_key = ec.generate_private_key(ec.SECP256R1())
    pem = tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    write_new(data_dir / TLS_KEY_FILE, pem, 0o600)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cobalt-custody"),
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(tls_key, hashes.SHA256())
    )
    write_new(data_dir / CSR_FILE, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    return data_dir / CSR_FILE


# --- after the ledger operator answered ---------------------------------------------------------
def install_enrolment(
    data_dir: Path,
    *,
    cert_file: Path,
    ca_file: Path,
    ledger_key_file: Path | None = None,
    broker_url: str | None = None,
) -> dict[str, str]:
    """Check and install the certificate, the CA and the ledger keys; point the config at them.

    Returns the settings changed. Refuses a certificate that is not for this device, not for
    ``tls.key`` or not issued by ``ca_file``, and a ledger key that differs from one already
    pinned (a gateway that trusted another ledger key must be re-initialised, not re-pointed).
    """
    paths = DataDir(data_dir)
    cfg = load_config(paths.config)
    ca = _load_cert(ca_file)
    cert = _load_cert(cert_file)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [a.value for a in cn] != [cfg.device_id]:
        raise ConfigError(
            str(cert_file), "subject",
            f"the certificate is for CN={cn[0].value if cn else None!r}, "
            f"this gateway is {cfg.device_id!r}",
        )  # fmt: skip
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(str(cert_file), "-", f"not issued by {ca_file}: {exc}") from exc
    tls_key = _load_tls_key(data_dir / TLS_KEY_FILE)
    if cert.public_key() != tls_key.public_key():
        raise ConfigError(
            str(cert_file), "-",
            f"the certificate's key is not this gateway's {TLS_KEY_FILE} (another CSR's?)",
        )  # fmt: skip
    changes = [
        ("sync.ca_file", CA_FILE), ("sync.cert_file", CERT_FILE),
        ("sync.key_file", TLS_KEY_FILE),
    ]  # fmt: skip
    if ledger_key_file is not None:
        pinned = cfg.ledger_keys_path(data_dir)
        new = load_ledger_keys(ledger_key_file)
        if pinned.exists():
            if load_ledger_keys(pinned) != new:
                raise KeyError_(
                    f"{pinned} already pins other ledger keys; refusing to replace them "
                    "(re-initialise the gateway if the ledger really changed)"
                )
        else:
            write_new(pinned, new.to_json().encode() + b"\n", 0o644)
    if broker_url is not None:
        changes.append(("sync.broker", broker_url))
    replace_file(data_dir / CA_FILE, ca.public_bytes(serialization.Encoding.PEM))
    replace_file(data_dir / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    set_settings(paths.config, changes)
    return dict(changes)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(str(path), "-", f"not a PEM certificate: {exc}") from exc


def _load_tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError as exc:
        raise KeyError_(f"{path}: no TLS key (made by `custody-agent init`)") from exc
    except (OSError, ValueError) as exc:
        raise KeyError_(f"{path}: unreadable TLS key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyError_(f"{path}: not an EC key")
    return key


# --- config edits -------------------------------------------------------------------------------
_SECTION = re.compile(r"^\s*\[([A-Za-z0-9_]+)\]\s*$")


def _parse_value(key: str, raw: str, source: str) -> Any:
    """The command line's text as the setting's type, validated by the settings table."""
    try:
        return parse_setting(key, raw)
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None


def set_settings(path: Path, changes: Sequence[tuple[str, str]]) -> None:
    """Set ``key = value`` lines in ``config.toml`` in place (comments kept), then re-check
    the whole file; it is replaced atomically only when every setting is valid."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found (run `custody-agent init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    for key, raw in changes:
        value = _parse_value(key, raw, "command line")
        section, name = key.split(".", 1)
        line = f"{name} = {json.dumps(value)}"  # JSON strings/ints/lists are valid TOML here
        current, header, found = "", None, None
        for i, text in enumerate(lines):
            match = _SECTION.match(text)
            if match:
                current = match.group(1)
                header = i if current == section else header
            elif current == section and re.match(rf"^\s*{re.escape(name)}\s*=", text):
                found = i
        if found is not None:
            lines[found] = line
        elif header is not None:
            lines.insert(header + 1, line)
        else:
            lines += ["", f"[{section}]", line]
    text = "\n".join(lines) + "\n"
    problems = check_config_text(text, str(path))
    if problems:
        first = problems[0]
        raise ConfigError(str(path), first.key, first.reason)
    replace_file(path, text.encode(), 0o644)


def enrolment_record(data_dir: Path, device_id: str, site_id: str) -> EnrolmentRecord:
    key = load_device_key(DataDir(data_dir).device_key)
    return EnrolmentRecord(device_id, site_id, key.public_key, key.kid)
