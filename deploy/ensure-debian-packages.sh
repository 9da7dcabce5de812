#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing.
# Used by `make demo` / `make test` on a fresh Debian 12 / Raspberry Pi OS machine.
# Runs apt-get through sudo when not root; does nothing when all are present.
# With arguments, installs those packages instead of the list below (deploy/install.sh).
set -euo pipefail

packages=(
  python3-venv   # `python3 -m venv` (Debian splits ensurepip out of python3)
  python3-dev    # headers, in case a wheel has to be built from source (e.g. on armv7)
  libzbar0       # pyzbar's shared library (barcode/QR decoding)
  sqlite3        # the sqlite3 shell, for operators inspecting an outbox
  mosquitto      # the MQTT broker; tests start private instances on free ports
  gcc            # builds the broker's identity plugin (deploy/mosquitto/build-plugin.sh)
  libc6-dev      # its C library headers
  mosquitto-dev  # its plugin API headers (mosquitto_broker.h, mosquitto_plugin.h)
  libmosquitto-dev  # mosquitto.h, which those include
  libssl-dev     # OpenSSL headers: the plugin reads the client certificate's CN
  openssl        # the test PKI (CA, broker, ledger and device certificates)
  postgresql     # the ledger's scale-out store; tests start throwaway clusters
  shellcheck     # tests lint the deploy/ scripts (2.6 MB)
  chromium       # tests load the status pages in a real headless browser
)
[ $# -eq 0 ] || packages=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Python that can already make a venv with pip (pyenv, a custom build, or
# Debian's with python3-venv present) needs neither python3-venv nor headers.
probe=$(mktemp -d)
if python3 -m venv "$probe/venv" >/dev/null 2>&1 && "$probe/venv/bin/python" -m pip --version >/dev/null 2>&1; then
  missing=("${missing[@]/python3-venv}")
  missing=("${missing[@]/python3-dev}")
fi
rm -rf "$probe"
wanted=()
for p in "${missing[@]}"; do [ -n "$p" ] && wanted+=("$p"); done
[ ${#wanted[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "Installing Debian packages: ${wanted[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${wanted[@]}"
