#!/usr/bin/env bash
# Generates a throwaway test PKI for the custody MQTT link:
#
#   DIR/ca.crt, DIR/ca.key          test CA (the broker's `cafile`: it issues ledger and device certs)
#   DIR/crl.pem                     an empty CRL from that CA (the broker's `crlfile`)
#   DIR/broker.crt, DIR/broker.key  broker server cert, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   DIR/ledger.crt, DIR/ledger.key  ledger client cert, CN=ledger (the ACL's `user ledger`)
#   DIR/devices/ID.crt, ID.key      one device client cert per DEVICE_ID, CN=DEVICE_ID (the ACL's %u)
#
# Usage: make-test-pki.sh DIR [DEVICE_ID...]
#
# Keys are EC P-256 (prime256v1): the curve that Mosquitto 2.0.11, OpenSSL 3.0 (Debian 12) and
# Python's ssl module all handle for both TLS 1.2 and 1.3. Certificates carry the extensions that a
# strict verifier wants (Python 3.13 sets VERIFY_X509_STRICT by default): critical basicConstraints,
# keyUsage, extendedKeyUsage, subject and authority key identifiers.
#
# Idempotent-ish: an existing CA is reused, and a leaf is re-issued only when it is missing or no
# longer verifies against the CA, so running it again with more DEVICE_IDs adds those devices. The
# CRL is regenerated on every run. Keys are written 0600 (and directories 0700) for the current
# user: a Mosquitto that drops privileges to user mosquitto cannot read them, so tests/brokers.py
# runs it with `user root` when we are root.
#
# NOT for production: production device keys are generated on the device and never leave it
# (`custody-agent init` makes the key and CSR, `custody-ledger pki` the CA, certificates and CRL;
# docs/operations.md "Enrol a gateway"). ledger/pki.py issues the same extensions.
set -euo pipefail

usage() {
  echo "usage: $0 DIR [DEVICE_ID...]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
dir=$1
shift

# Device ids become the certificate CN, hence the MQTT username and the %u in the broker's pattern
# ACL. Mosquitto rejects usernames containing + or # (CVE-2017-7650) and a / would add topic
# levels, so only [A-Za-z0-9._-] is allowed (ARCHITECTURE.md "Topics"). "ledger" is the ledger's
# identity: a device with that CN would get the ledger's permissions. 64 = ub-common-name (RFC 5280).
for id in "$@"; do
  if [[ ! $id =~ ^[A-Za-z0-9._-]{1,64}$ ]] || [ "$id" = "." ] || [ "$id" = ".." ]; then
    echo "$0: invalid device id '$id' (allowed: 1-64 of [A-Za-z0-9._-], not . or ..)" >&2
    exit 2
  fi
  if [ "$id" = "ledger" ]; then
    echo "$0: device id 'ledger' is reserved for the ledger's certificate" >&2
    exit 2
  fi
done

command -v openssl >/dev/null || {
  echo "$0: openssl not found (Debian package openssl)" >&2
  exit 1
}

umask 077
mkdir -p "$dir/devices"
days=825

# A config for `openssl ca -gencrl` only: leaves are signed with `openssl x509 -req`, which needs no
# database. To revoke a test cert: openssl ca -config DIR/ca.cnf -revoke CERT, then rerun this script.
ca_cnf=$dir/ca.cnf
cat >"$ca_cnf" <<EOF
[ ca ]
default_ca = test_ca

[ test_ca ]
database         = $dir/index.txt
crlnumber        = $dir/crlnumber
certificate      = $dir/ca.crt
private_key      = $dir/ca.key
default_md       = sha256
default_crl_days = $days
EOF
[ -f "$dir/index.txt" ] || : >"$dir/index.txt"
[ -f "$dir/crlnumber" ] || echo 01 >"$dir/crlnumber"

new_key() { # new_key PATH
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null
  chmod 0600 "$1"
}

random_serial() { # positive 127-bit serial (RFC 5280 §4.1.2.2: at most 20 octets, positive)
  echo "0x$(openssl rand -hex 16 | sed 's/^./7/')"
}

# The CA.
if [ ! -f "$dir/ca.key" ] || [ ! -f "$dir/ca.crt" ]; then
  new_key "$dir/ca.key"
  openssl req -new -x509 -sha256 -days $((days * 2)) -key "$dir/ca.key" -out "$dir/ca.crt" \
    -subj "/O=cobalt-custody test/CN=cobalt-custody test CA $(openssl rand -hex 4)" \
    -set_serial "$(random_serial)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  chmod 0644 "$dir/ca.crt"
fi

issue() { # issue BASENAME CN EXTENSIONS...
  local base=$1 cn=$2
  shift 2
  if [ -f "$base.key" ] && [ -f "$base.crt" ] &&
    openssl verify -CAfile "$dir/ca.crt" "$base.crt" >/dev/null 2>&1; then
    return 0
  fi
  local ext
  ext=$(mktemp "$dir/ext.XXXXXX")
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid:always"
    printf '%s\n' "$@"
  } >"$ext"
  new_key "$base.key"
  openssl req -new -sha256 -key "$base.key" -subj "/O=cobalt-custody test/CN=$cn" -out "$base.csr"
  openssl x509 -req -sha256 -days "$days" -in "$base.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "$(random_serial)" -extfile "$ext" -out "$base.crt" 2>/dev/null
  chmod 0644 "$base.crt"
  rm -f "$base.csr" "$ext"
}

issue "$dir/broker" localhost \
  "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" \
  "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

client_ext=("keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth")
issue "$dir/ledger" ledger "${client_ext[@]}"
for id in "$@"; do
  issue "$dir/devices/$id" "$id" "${client_ext[@]}"
done

openssl ca -gencrl -config "$ca_cnf" -out "$dir/crl.pem" 2>/dev/null
chmod 0644 "$dir/crl.pem"
