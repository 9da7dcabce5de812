"""ledger.pki: the MQTT link's CA, checked with OpenSSL's own verifier and a real Mosquitto.

OpenSSL (``openssl verify -x509_strict``) is the independent oracle for the certificates and
the CRL; the broker tests connect with Python's ssl under VERIFY_X509_STRICT (Python 3.13's
default) and show that a revoked gateway is refused after the broker reloads the CRL (SIGHUP)
and after a restart, while a connection opened before the reload stays up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent import enrol
from custody.errors import ConfigError
from ledger.pki import Pki, make_csr, new_private_key, write_private_key
from tests.brokers import CertKey, MosquittoBroker, TestPKI

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl (Debian package) not found")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Pki(tmp_path / "pki")
    ca.init()
    return ca


def _device(tmp_path: Path, pki: Pki, device_id: str) -> CertKey:
    key = new_private_key()
    key_file = tmp_path / f"{device_id}.key"
    write_private_key(key_file, key)
    return CertKey(pki.issue_device(device_id, make_csr(key, device_id)), key_file)


def _openssl_verify(pki: Pki, cert: Path, *, crl: bool = False) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    args = [OPENSSL, "verify", "-x509_strict", "-CAfile", str(pki.ca_file)]
    if crl:
        args += ["-crl_check", "-CRLfile", str(pki.crl_file)]
    return subprocess.run(
        [*args, str(cert)], capture_output=True, text=True, timeout=30, check=False
    )


def test_init_makes_a_strict_ca_with_a_private_key(pki: Pki) -> None:
    assert stat.S_IMODE(pki.ca_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    assert len(list(crl)) == 0
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already exists"):
        pki.init()


@needs_openssl
def test_device_certificate_from_csr_verifies_strictly(tmp_path: Path, pki: Pki) -> None:
    pair = _device(tmp_path, pki, "gw-kol-01")
    result = _openssl_verify(pki, pair.cert, crl=True)
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-kol-01"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical
    assert 0 < cert.serial_number < 2**159  # positive, at most 20 octets (RFC 5280 §4.1.2.2)
    # The key stayed with the requester: the CA wrote no key for this device.
    assert not pki.device_cert_file("gw-kol-01").with_suffix(".key").exists()


@needs_openssl
def test_agent_init_csr_is_what_the_ca_signs(tmp_path: Path, ledger_dir: Path, pki: Pki) -> None:
    enrol.initialise(tmp_path / "gw", site_id="KOL-01", device_id="gw-kol-01")
    key_file = tmp_path / "gw" / enrol.TLS_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    csr = (tmp_path / "gw" / enrol.CSR_FILE).read_bytes()
    cert = pki.issue_device("gw-kol-01", csr)
    assert _openssl_verify(pki, cert).returncode == 0
    with pytest.raises(ConfigError, match="CN='gw-kol-01', not device 'gw-kol-02'"):
        pki.issue_device("gw-kol-02", csr)


@pytest.mark.parametrize("bad", ["ledger", "a/b", "+", "", "x" * 65])
def test_reserved_and_malformed_ids_are_refused(pki: Pki, bad: str) -> None:
    with pytest.raises(ConfigError):
        pki.issue_device(bad, None)
    assert pki.issued() == []


def test_a_csr_that_is_not_one_is_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="not a PEM certificate request"):
        pki.issue_device("gw-1", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")


@needs_openssl
def test_revoke_puts_every_certificate_of_the_device_in_the_crl(tmp_path: Path, pki: Pki) -> None:
    first = _device(tmp_path, pki, "gw-a")
    (tmp_path / "gw-a.key").rename(tmp_path / "gw-a-old.key")
    second = _device(tmp_path, pki, "gw-a")  # re-issued (e.g. a new CSR): same CN
    other = _device(tmp_path, pki, "gw-b")
    first_cert = x509.load_pem_x509_certificate(first.cert.read_bytes())  # overwritten file
    assert (
        first_cert.serial_number
        == x509.load_pem_x509_certificate(second.cert.read_bytes()).serial_number
    )
    revoked = pki.revoke("gw-a")
    assert len(revoked) == 2
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    assert {r.serial_number for r in crl} == {r.serial for r in revoked}
    failed = _openssl_verify(pki, second.cert, crl=True)
    assert failed.returncode != 0
    assert "revoked" in failed.stdout + failed.stderr
    assert _openssl_verify(pki, other.cert, crl=True).returncode == 0
    assert pki.revoke("gw-a") == []  # nothing left to revoke


def _mqtt_connect(sock: ssl.SSLSocket, client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session); returns the CONNACK bytes, or b"" if closed."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x1e"
    body = variable + len(cid).to_bytes(2, "big") + cid
    sock.sendall(bytes([0x10, len(body)]) + body)
    return sock.recv(4)


def _connect(broker: MosquittoBroker, tls: TestPKI, pair: CertKey, client_id: str) -> bytes:
    """CONNACK bytes, or the refusal as an SSLError/connection error. TLS 1.2: the handshake
    itself fails for a refused certificate (deploy/mosquitto/custody.conf). The client id must
    be the certificate's CN (the broker's identity plugin)."""
    context = tls.client_context(pair)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((broker.host, broker.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return _mqtt_connect(sock, client_id)


def _handshake(broker: MosquittoBroker, tls: TestPKI, pair: CertKey) -> None:
    """The TLS 1.2 handshake alone, where a revoked certificate is refused (an SSLError), with
    no CONNECT: one under the certificate's client id would take over its open connection."""
    context = tls.client_context(pair)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((broker.host, broker.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


def test_revoked_gateway_is_refused_after_reload_and_restart(tmp_path: Path, pki: Pki) -> None:
    pki.issue_broker(["localhost", "127.0.0.1"])
    pki.issue_ledger()
    gw_a, gw_b = _device(tmp_path, pki, "gw-a"), _device(tmp_path, pki, "gw-b")
    tls = TestPKI(pki.directory)  # same layout: ca.crt, crl.pem, broker.crt/.key
    with MosquittoBroker(tmp_path / "broker", tls) as broker:
        assert _connect(broker, tls, gw_a, "gw-a") == b"\x20\x02\x00\x00"  # CONNACK accepted
        context = tls.client_context(gw_a)
        open_before = context.wrap_socket(
            socket.create_connection((broker.host, broker.tls_port), timeout=10),
            server_hostname="localhost",
        )
        try:
            assert _mqtt_connect(open_before, "gw-a") == b"\x20\x02\x00\x00"
            pki.revoke("gw-a")
            # Written but not yet read: the broker still admits the revoked certificate.
            _handshake(broker, tls, gw_a)
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGHUP)  # systemctl reload mosquitto
            deadline = time.monotonic() + 10
            refused: BaseException | None = None
            while refused is None and time.monotonic() < deadline:
                try:
                    _handshake(broker, tls, gw_a)
                    time.sleep(0.05)
                except (ssl.SSLError, ConnectionError) as exc:
                    refused = exc
            assert isinstance(refused, ssl.SSLError)
            assert "revoked" in str(refused)
            # Others unaffected.
            assert _connect(broker, tls, gw_b, "gw-b") == b"\x20\x02\x00\x00"
            # The connection made before the reload is not cut (the documented caveat).
            open_before.sendall(b"\xc0\x00")  # PINGREQ
            assert open_before.recv(2) == b"\xd0\x00"  # PINGRESP
        finally:
            open_before.close()
        broker.restart()
        with pytest.raises(ssl.SSLError, match="revoked"):
            _connect(broker, tls, gw_a, "gw-a")
        assert _connect(broker, tls, gw_b, "gw-b") == b"\x20\x02\x00\x00"
