#!/usr/bin/env bash
# Builds the broker's identity plugin (custody_identity.c, next to this script) as a shared object.
#
#   build-plugin.sh OUTPUT.so
#
# Used by deploy/install.sh (ledger role) and by lab/mosquitto.py, which caches the result under
# build/ keyed by the source's hash. Needs gcc and the Debian packages mosquitto-dev
# (mosquitto_broker.h, mosquitto_plugin.h), libmosquitto-dev (mosquitto.h) and libssl-dev
# (deploy/ensure-debian-packages.sh installs them). The broker resolves the mosquitto_* symbols
# from its own executable when it loads the plugin; OpenSSL's libcrypto is linked explicitly.
# The object is written next to OUTPUT and renamed into place, so a concurrent reader never loads
# a half-written file.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: build-plugin.sh OUTPUT.so" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/custody_identity.c"
for header in mosquitto_broker.h mosquitto_plugin.h mosquitto.h openssl/x509.h; do
  if ! echo "#include <$header>" | "${CC:-gcc}" -E -x c - >/dev/null 2>&1; then
    echo "build-plugin.sh: <$header> not found: run deploy/ensure-debian-packages.sh" >&2
    exit 1
  fi
done

mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"${CC:-gcc}" -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared -o "$tmp" "$src" -lcrypto
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
