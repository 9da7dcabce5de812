"""The ledger intake's TLS files, checked before it dials the broker.

What goes wrong here does not show on the wire: a key that is not the certificate's makes
Python's ``ssl`` raise ``[SSL: KEY_VALUES_MISMATCH]`` from deep inside the MQTT client, and a
gateway's certificate in the ledger's place connects fine and then receives nothing, because
the broker's ACL (deploy/mosquitto/custody.acl, ``user ledger``) lets only the identity
``ledger`` read devices' events, and Mosquitto drops what an ACL forbids without telling the
subscriber. So ``custody-ledger run`` checks the files first and refuses with a message that
names them.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from custody.errors import ConfigError, SchemaError
from ledger.pki import common_name

__all__ = ["LEDGER_IDENTITY", "check_ledger_tls"]

# The broker identity that may read every device's events: the ACL's "user ledger" and the
# identity plugin's plugin_opt_worker_identities (deploy/mosquitto/custody.conf).
LEDGER_IDENTITY = "ledger"


def check_ledger_tls(ca_file: Path, cert_file: Path, key_file: Path) -> str:
    """The certificate's CN once the three files make a working ledger client; else
    ``ConfigError`` naming the file(s) and the reason."""
    cert = _certificate(cert_file)
    try:
        cn = common_name(cert.subject)
    except SchemaError as exc:
        raise ConfigError(str(cert_file), "-", f"not a certificate with one CN: {exc}") from exc
    if cn != LEDGER_IDENTITY:
        raise ConfigError(
            str(cert_file), "-",
            f"is the certificate of {cn!r}, not the ledger's (CN={LEDGER_IDENTITY}): the "
            f"broker's ACL (deploy/mosquitto/custody.acl) lets only {LEDGER_IDENTITY!r} read "
            "the devices' events, so the intake would connect and receive nothing. Use the "
            "certificate `custody-ledger pki issue-ledger` wrote (DATA_DIR/pki/ledger.crt)",
        )  # fmt: skip
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise ConfigError(
            str(cert_file), "-",
            "is not a client certificate (no TLS client authentication in its extended key "
            "usage; a broker's certificate?): the broker would refuse it. Use the one "
            "`custody-ledger pki issue-ledger` wrote",
        )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError as exc:
        raise ConfigError(str(ca_file), "-", "no such file (the broker's CA, --ca-file)") from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(str(ca_file), "-", f"not a PEM CA certificate: {exc}") from exc
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as exc:
        raise ConfigError(
            str(key_file), "-", "no such file (the ledger's key, --key-file)"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(str(key_file), "-", f"cannot read it: {exc.strerror}") from exc
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{cert_file} and {key_file}", "-",
            f"the key does not belong to the certificate, or is not a PEM private key "
            f"({exc.reason or exc}): give --key-file the key made with --cert-file",
        ) from exc  # fmt: skip
    return cn


def _certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            str(path), "-", "no such file (the ledger's certificate, --cert-file)"
        ) from exc
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot read it: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(str(path), "-", f"not a PEM certificate: {exc}") from exc
