"""The MQTT link's certificate authority: CA, leaf certificates from CSRs, and the CRL.

Theory of operation. One directory (``custody-ledger pki``, default ``DATA_DIR/pki``) holds
a private CA dedicated to the custody broker: every certificate it can verify gets into the
broker, with its CN as the MQTT username (deploy/mosquitto/custody.conf,
``use_identity_as_username``), so it issues only these:

    ca.key (0600), ca.crt          EC P-256 CA, self-signed
    crl.pem                        the broker's ``crlfile``: every revoked serial, re-signed on
                                   each revocation and by ``pki crl`` (before ``next_update``)
    issued.json                    every certificate issued: serial, CN, role, expiry, revocation
    broker.crt, broker.key         server certificate, SAN = the names gateways dial
    ledger.crt, ledger.key         the ledger intake's client certificate, CN=ledger
    devices/ID.crt                 one client certificate per gateway, CN = device id, issued from
                                   the CSR the gateway made (``custody-agent init``), so the
                                   gateway's TLS key never leaves it

Keys are EC P-256 as in deploy/pki/make-test-pki.sh (the curve Mosquitto 2.0.11, OpenSSL 3.0 and
Python's ssl all handle for TLS 1.2 and 1.3) and certificates carry what a strict verifier wants
(Python 3.13 sets VERIFY_X509_STRICT): critical basicConstraints, keyUsage, extendedKeyUsage,
subject and authority key identifiers (RFC 5280 §4.2.1.1-3, §4.2.1.9, §4.2.1.12). Serials are
random and positive, at most 20 octets (RFC 5280 §4.1.2.2).

Revocation: OpenSSL, with a ``crlfile``, refuses every client when the CRL is missing or past its
``nextUpdate``, so ``pki crl`` must run well inside ``CRL_DAYS``. Mosquitto 2.0 reads the CRL when
a listener's TLS context is built: at start, and again on SIGHUP (``systemctl reload
mosquitto``), which tests/test_pki_broker.py checks against a real broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custody.errors import ConfigError, KeyError_, SchemaError
from custody.event import validate_identifier
from custody.files import create_file, replace_file

__all__ = [
    "CA_DAYS",
    "CRL_DAYS",
    "LEAF_DAYS",
    "RESERVED_IDS",
    "Issued",
    "Pki",
    "load_csr",
    "make_csr",
    "new_private_key",
    "write_private_key",
]

CA_DAYS = 3650
# 825 days: the longest leaf validity browsers ever accepted; gateways get a new one at rotation.
LEAF_DAYS = 825
# Regenerate the CRL (``custody-ledger pki crl``) at least monthly: an expired CRL locks every
# client out of the broker.
CRL_DAYS = 90
# CN "ledger" is the ACL's `user ledger`: a device with that CN would get the ledger's rights.
RESERVED_IDS = frozenset({"ledger"})
ORGANISATION = "cobalt-custody"


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PKCS#8 PEM, created 0600 (exclusive: never overwrites a key), durably."""
    try:
        create_file(path, _private_pem(key), 0o600)
    except FileExistsError as exc:
        raise KeyError_(f"{path} already exists; refusing to overwrite it") from exc


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM PKCS#10 request for ``common_name`` (the CA decides every extension)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes, source: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise ConfigError(source, "-", f"not a PEM certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise ConfigError(source, "-", "the request's self-signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise ConfigError(source, "-", "the request's key is not an EC key")
    return csr


def common_name(subject: x509.Name) -> str:
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise SchemaError("expected exactly one common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate the CA issued (a row of ``issued.json``)."""

    serial: int
    common_name: str
    role: str  # "device" | "broker" | "ledger"
    not_after_ms: int
    path: str
    revoked_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": f"{self.serial:x}", "common_name": self.common_name, "role": self.role,
            "not_after_ms": self.not_after_ms, "path": self.path, "revoked_ms": self.revoked_ms,
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Issued:
        return cls(
            int(raw["serial"], 16), raw["common_name"], raw["role"], int(raw["not_after_ms"]),
            raw["path"], raw.get("revoked_ms"),
        )  # fmt: skip


class Pki:
    """The CA in ``directory`` (created by ``init``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    # --- paths --------------------------------------------------------------------------
    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_file(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def index_file(self) -> Path:
        return self.directory / "issued.json"

    def device_cert_file(self, device_id: str) -> Path:
        return self.directory / "devices" / f"{device_id}.crt"

    # --- the CA --------------------------------------------------------------------------
    def init(self, name: str = "custody MQTT CA") -> Path:
        """Create the CA key (0600), its certificate and an empty CRL; refuse to replace one."""
        if self.ca_key_file.exists() or self.ca_file.exists():
            raise ConfigError(
                str(self.directory), "-", "a CA already exists here; refusing to replace it"
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / "devices").mkdir(mode=0o755, exist_ok=True)
        key = new_private_key()
        # A random suffix: two CAs made with the same name must not look alike to a verifier.
        subject = _name(f"{name} {secrets.token_hex(4)}")
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private_key(self.ca_key_file, key)
        replace_file(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))
        self._save_index([])
        self.write_crl()
        return self.ca_file

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
        except FileNotFoundError as exc:
            raise ConfigError(
                str(self.directory), "-", "no CA here (run `custody-ledger pki init`)"
            ) from exc
        except ValueError as exc:
            raise KeyError_(f"{self.directory}: unreadable CA key or certificate: {exc}") from exc
        if self.ca_key_file.stat().st_mode & 0o077:
            raise KeyError_(f"{self.ca_key_file}: readable by others; run `chmod 600` on it")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyError_(f"{self.ca_key_file}: not an EC key")
        return cert, key

    # --- issuing -------------------------------------------------------------------------
    def issue_device(self, device_id: str, csr_pem: bytes | None, source: str = "CSR") -> Path:
        """A gateway's client certificate, CN = ``device_id``, from its CSR.

        Without a CSR the CA makes the key too (``devices/ID.key``, 0600): only for labs and
        for recovering a broken gateway's outbox, since the key then exists off the device.
        """
        _check_device_id(device_id)
        target = self.device_cert_file(device_id)
        if csr_pem is None:
            key = new_private_key()
            write_private_key(target.with_suffix(".key"), key)
            public = key.public_key()
        else:
            csr = load_csr(csr_pem, source)
            try:
                cn = common_name(csr.subject)
            except SchemaError as exc:
                raise ConfigError(source, "subject", str(exc)) from exc
            if cn != device_id:
                raise ConfigError(
                    source, "subject", f"the request is for CN={cn!r}, not device {device_id!r}"
                )
            public_any = csr.public_key()
            assert isinstance(public_any, ec.EllipticCurvePublicKey)  # load_csr checked
            public = public_any
        return self._issue(target, device_id, "device", public, _client_extensions())

    def issue_broker(self, hosts: Sequence[str]) -> Path:
        """The broker's server certificate (and key, 0600) for the names gateways dial."""
        if not hosts:
            raise ConfigError("command line", "--host", "name at least one host")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        key = new_private_key()
        extensions = [
            (_key_usage(), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(names), False),
        ]
        target = self.directory / "broker.crt"
        self._replace_key(target.with_suffix(".key"), key)
        return self._issue(target, hosts[0], "broker", key.public_key(), extensions)

    def issue_ledger(self) -> Path:
        """The ledger intake's client certificate, CN=ledger (the ACL's ``user ledger``)."""
        key = new_private_key()
        target = self.directory / "ledger.crt"
        self._replace_key(target.with_suffix(".key"), key)
        return self._issue(target, "ledger", "ledger", key.public_key(), _client_extensions())

    def _replace_key(self, path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        replace_file(path, _private_pem(key), 0o600)

    def _issue(
        self,
        target: Path,
        cn: str,
        role: str,
        public: ec.EllipticCurvePublicKey,
        extensions: Sequence[tuple[x509.ExtensionType, bool]],
    ) -> Path:
        ca_cert, ca_key = self._ca()
        now = _now()
        not_after = min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc)
        serial = _serial()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        cert = builder.sign(ca_key, hashes.SHA256())
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_file(target, cert.public_bytes(serialization.Encoding.PEM))
        index = self.issued()
        index.append(
            Issued(serial, cn, role, _ms(not_after), str(target.relative_to(self.directory)))
        )
        self._save_index(index)
        return target

    # --- revocation ----------------------------------------------------------------------
    def issued(self) -> list[Issued]:
        try:
            raw = json.loads(self.index_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(str(self.index_file), "-", f"unreadable: {exc}") from exc
        return [Issued.from_json(r) for r in raw]

    def revoke(self, common_name: str) -> list[Issued]:
        """Revoke every unrevoked certificate with this CN and re-sign the CRL."""
        now_ms = _ms(_now())
        index = self.issued()
        revoked: list[Issued] = []
        for i, entry in enumerate(index):
            if entry.common_name == common_name and entry.revoked_ms is None:
                index[i] = Issued(
                    entry.serial, entry.common_name, entry.role, entry.not_after_ms, entry.path,
                    now_ms,
                )  # fmt: skip
                revoked.append(index[i])
        if revoked:
            self._save_index(index)
            self.write_crl()
        return revoked

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign the CRL of every revoked serial (RFC 5280 §5), valid ``days`` from now."""
        ca_cert, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(_ms(now)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        for entry in self.issued():
            if entry.revoked_ms is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(entry.serial)
                    .revocation_date(dt.datetime.fromtimestamp(entry.revoked_ms / 1000, dt.UTC))
                    .build()
                )
        crl = builder.sign(ca_key, hashes.SHA256())
        # The broker never reads a half-written CRL.
        replace_file(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_file

    def verify(self, cert_file: Path) -> x509.Certificate:
        """The certificate, if this CA signed it (a quick check for operators and tests)."""
        ca_cert, _ = self._ca()
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ConfigError(str(cert_file), "-", f"not issued by this CA: {exc}") from exc
        return cert

    def _save_index(self, entries: list[Issued]) -> None:
        data = json.dumps([e.to_json() for e in entries], indent=1).encode() + b"\n"
        replace_file(self.index_file, data)


# --- helpers ------------------------------------------------------------------------------
def _check_device_id(device_id: str) -> None:
    # The CN becomes the MQTT username and the %u of the ACL: [A-Za-z0-9._-] only
    # (ARCHITECTURE.md "Topics"), never the ledger's identity.
    try:
        validate_identifier(device_id, "device id")
    except SchemaError as exc:
        raise ConfigError("command line", "device", str(exc)) from exc
    if device_id in RESERVED_IDS:
        raise ConfigError("command line", "device", f"{device_id!r} is reserved for the ledger")


def _client_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (_key_usage(), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    ]


def _key_usage(*, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _serial() -> int:
    # Positive, at most 20 octets (RFC 5280 §4.1.2.2); 127 random bits, top bit clear.
    return secrets.randbits(127) | 1 << 120


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)
