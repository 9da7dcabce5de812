#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing.
# Used by `make demo` / `make test` on a fresh Debian 12 / Raspberry Pi OS machine.
# Runs apt-get through sudo when not root; does nothing when all are present.
set -euo pipefail

packages=(
  python3-venv   # `python3 -m venv` (Debian splits ensurepip out of python3)
  python3-dev    # headers, in case a wheel has to be built from source (e.g. on armv7)
  libzbar0       # pyzbar's shared library (barcode/QR decoding)
  sqlite3        # the sqlite3 shell, for operators inspecting an outbox
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Python not from Debian (pyenv, a venv-capable build) needs no python3-venv.
if python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
  missing=("${missing[@]/python3-dev}")
fi
wanted=()
for p in "${missing[@]}"; do [ -n "$p" ] && wanted+=("$p"); done
[ ${#wanted[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "Installing Debian packages: ${wanted[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${wanted[@]}"
