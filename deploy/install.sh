#!/usr/bin/env bash
# Installs cobalt-custody on Debian 12 / Raspberry Pi OS (docs/operations.md "Install").
#
#   sudo deploy/install.sh [--role gateway|gateway+camera|ledger|all] [--offline WHEELHOUSE]
#   deploy/install.sh --prefix /tmp/try --no-systemd        # try it out, no root needed
#
# Idempotent: running it again upgrades the Python packages in place and re-renders the units,
# and never touches data (/var/lib/custody) or an existing /etc/custody/*.env.
#
# What it installs (every path under --prefix when given):
#   /opt/custody                 a Python venv with custody-agent, custody-ledger, custody-registry,
#                                custody-verify, and the role's optional extras only: [camera]
#                                (OpenCV, numpy, pyzbar, zxing-cpp) for gateway+camera, [postgres]
#                                (psycopg) for ledger
#   /var/lib/custody             data (agent outbox and keys; the ledger's in ledger/), owner custody
#   /etc/custody/                agent.env, ledger.env (ledger role), tls/ for certificates
#   /etc/systemd/system/         custody-agent.service, custody-ledger.service (enabled, not started:
#                                the agent needs `custody-agent init` first)
#   /etc/udev/rules.d/           99-custody-serial.rules (/dev/custody/ names)
#   /etc/modules-load.d/         custody.conf (serial drivers loaded at boot, see the agent unit)
#   /etc/mosquitto/              ledger role: custody.acl and the conf.d/custody.conf drop-in
#   /opt/custody/lib/mosquitto/  ledger role: custody_identity.so, the broker's identity plugin,
#                                built here from deploy/mosquitto/custody_identity.c
# System user custody (groups dialout, video) is created when running as root with systemd.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--prefix DIR] [--no-systemd] [--role gateway|gateway+camera|ledger|all]
                  [--offline WHEELHOUSE | --from-source DIR] [--no-packages] [--python PYTHON]

  --prefix DIR        install under DIR (a trial or image root); no user creation unless root,
                      and no systemctl/udevadm calls: the files are only written
  --no-systemd        no units, udev rules or modules-load file, and no system user
  --role ROLE         what this machine is (docs/operations.md "Roles"):
                        gateway         a gateway without a camera (default; no OpenCV, numpy
                                        or psycopg); alias: agent
                        gateway+camera  a gateway whose scan station reads seals with a camera
                                        (the [camera] extra and libzbar0)
                        ledger          the central side: intake, broker plugin, PostgreSQL
                                        client (the [postgres] extra); alias: central
                        all             gateway+camera and ledger on one machine; alias: both
                      With --offline the default is the role the bundle was built for.
  --offline DIR       install with pip --no-index from a bundle made by build-offline-bundle.sh
                      (hashes checked against its SHA256SUMS and requirements.txt)
  --from-source DIR   the checkout to install (default: the one holding this script)
  --no-packages       do not install Debian packages (report missing ones only)
  --python PYTHON     the interpreter for the venv (default python3; 3.11 or newer)
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=""
systemd=1
role=""
offline=""
source_dir=$(cd "$here/.." && pwd)
packages=1
python=python3

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --role) [ $# -ge 2 ] || die "--role needs gateway, gateway+camera, ledger or all"; role=$2; shift 2 ;;
    --offline) [ $# -ge 2 ] || die "--offline needs a wheelhouse directory"; offline=$2; shift 2 ;;
    --from-source) [ $# -ge 2 ] || die "--from-source needs a directory"; source_dir=$2; shift 2 ;;
    --no-packages) packages=0; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if [ -n "$prefix" ]; then
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
  [ "$prefix" != "/" ] || prefix=""
fi
if [ -n "$offline" ]; then
  [ -d "$offline" ] || die "--offline: no such directory: $offline"
  offline=$(cd "$offline" && pwd)
  if [ ! -f "$offline/requirements.txt" ] || [ ! -f "$offline/SHA256SUMS" ]; then
    die "--offline: $offline has no requirements.txt/SHA256SUMS (make it with build-offline-bundle.sh)"
  fi
  # Before anything is installed: a damaged or altered bundle changes nothing.
  say "checking the bundle's hashes"
  (cd "$offline" && sha256sum --check --quiet --strict SHA256SUMS) || die "bundle hash mismatch in $offline"
  # The wheels are the role's (build-offline-bundle.sh --role): no index to fetch others from.
  bundle_role=$(sed -n 's/^# role: *//p' "$offline/requirements.txt" | head -n 1)
  bundle_role=${bundle_role:-all}
fi

# The role's canonical name, and the extras and parts it installs.
case "${role:-${bundle_role:-gateway}}" in
  gateway|agent) role=gateway ;;
  gateway+camera|agent+camera) role="gateway+camera" ;;
  ledger|central) role=ledger ;;
  all|both) role=all ;;
  *) die "--role must be gateway, gateway+camera, ledger or all, not '$role'" ;;
esac
case "$role" in
  gateway) extras=""; gateway=1; ledger=0 ;;
  gateway+camera) extras="camera"; gateway=1; ledger=0 ;;
  ledger) extras="postgres"; gateway=0; ledger=1 ;;
  all) extras="camera,postgres"; gateway=1; ledger=1 ;;
esac
if [ -n "$offline" ]; then
  # A bundle holds exactly its role's wheels, and pip installs every wheel it lists.
  if [ "$bundle_role" != "$role" ]; then
    die "--offline: $offline was built for role $bundle_role, not $role (build it with build-offline-bundle.sh --role $role)"
  fi
else
  [ -f "$source_dir/pyproject.toml" ] || die "--from-source: no pyproject.toml in $source_dir"
fi

is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1

opt="$prefix/opt/custody"
data="$prefix/var/lib/custody"
etc="$prefix/etc/custody"
unit_dir="$prefix/etc/systemd/system"

# --- Debian packages -------------------------------------------------------------------------
debs=(python3-venv sqlite3)
# pyzbar loads libzbar through ctypes: only the camera roles decode images.
case "$extras" in *camera*) debs+=(libzbar0) ;; esac
# The ledger role also builds the broker's identity plugin: a C compiler and the headers of
# Mosquitto (mosquitto-dev, libmosquitto-dev) and OpenSSL (libssl-dev).
[ "$ledger" -eq 0 ] || debs+=(mosquitto openssl gcc libc6-dev mosquitto-dev libmosquitto-dev libssl-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$packages" -eq 1 ] && [ -z "$offline" ]; then
    "$here/ensure-debian-packages.sh" "${debs[@]}"
  else
    # Offline sites: fetch them elsewhere with `apt-get download PKG` for the same release/arch
    # and install with `dpkg -i` (or from a local mirror) before running this script.
    say "Debian packages missing: ${missing[*]} (not installing: --offline or --no-packages)"
  fi
fi

# --- System user -----------------------------------------------------------------------------
owner=""
if [ "$is_root" -eq 1 ] && [ "$systemd" -eq 1 ]; then
  if ! getent passwd custody >/dev/null; then
    say "creating system user custody"
    useradd --system --user-group --home-dir /var/lib/custody --no-create-home \
      --shell /usr/sbin/nologin --comment "cobalt-custody" custody
  fi
  # dialout: serial adapters (udev rules); video: cameras for `scan`.
  for g in dialout video; do
    if getent group "$g" >/dev/null && ! id -nG custody | tr ' ' '\n' | grep -qx "$g"; then
      usermod -a -G "$g" custody
    fi
  done
  owner=custody
fi

# --- Directories -----------------------------------------------------------------------------
install -d -m 0755 "$opt"
install -d -m 0750 "$data" "$etc" "$etc/tls"
if [ -n "$owner" ]; then
  chown "$owner:$owner" "$data"
  chown "root:$owner" "$etc" "$etc/tls"
fi
if [ "$ledger" -eq 1 ]; then
  install -d -m 0750 "$data/ledger"
  [ -z "$owner" ] || chown "$owner:$owner" "$data/ledger"
fi

# --- Python venv -----------------------------------------------------------------------------
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$python is older than 3.11"
if ! "$opt/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "creating the venv in $opt"
  "$python" -m venv "$opt"
fi
pip=("$opt/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
if [ -n "$offline" ]; then
  say "installing from $offline (no network)"
  # No pip.conf either: its find-links or constraints must not mix into a pinned bundle.
  # --force-reinstall: a newer bundle may carry the project under the same version number.
  PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --force-reinstall --no-index --find-links "$offline" --require-hashes -r "$offline/requirements.txt"
else
  say "installing $source_dir${extras:+ with [$extras]}"
  "${pip[@]}" install "$source_dir${extras:+[$extras]}"
fi
"$opt/bin/custody-agent" --help >/dev/null || die "the installed custody-agent does not start"

install -d -m 0755 "$opt/share/doc"
for f in docs/operations.md README.md; do
  if [ -f "$here/../$f" ]; then install -m 0644 "$here/../$f" "$opt/share/doc/"; fi
done

# --- Configuration (never overwritten) -------------------------------------------------------
install_once() {  # SRC DEST MODE: a template the operator edits afterwards
  if [ ! -e "$2" ]; then
    install -m "$3" "$1" "$2"
    [ -z "$owner" ] || chown "root:$owner" "$2"
  fi
}
[ "$gateway" -eq 0 ] || install_once "$here/systemd/agent.env" "$etc/agent.env" 0640
[ "$ledger" -eq 0 ] || install_once "$here/systemd/ledger.env" "$etc/ledger.env" 0640

# --- systemd, udev, Mosquitto ----------------------------------------------------------------
render() {  # SRC DEST: a unit with its paths moved under the prefix
  local tmp
  tmp=$(mktemp)
  sed -e "s#/opt/custody#$opt#g" -e "s#/var/lib/custody#$data#g" -e "s#/etc/custody#$etc#g" \
    "$1" >"$tmp"
  if cmp -s "$tmp" "$2"; then rm -f "$tmp"; else install -m 0644 "$tmp" "$2"; rm -f "$tmp"; fi
}

if [ "$systemd" -eq 1 ]; then
  live=0
  [ -z "$prefix" ] && [ "$is_root" -eq 1 ] && [ -d /run/systemd/system ] && live=1
  install -d -m 0755 "$unit_dir" "$prefix/etc/udev/rules.d" "$prefix/etc/modules-load.d"
  units=()
  [ "$gateway" -eq 0 ] || units+=(custody-agent.service)
  [ "$ledger" -eq 0 ] || units+=(custody-ledger.service)
  for u in "${units[@]}"; do render "$here/systemd/$u" "$unit_dir/$u"; done
  if [ "$gateway" -eq 1 ]; then
    install -m 0644 "$here/udev/99-custody-serial.rules" "$prefix/etc/udev/rules.d/"
    install -m 0644 "$here/systemd/custody-modules.conf" "$prefix/etc/modules-load.d/custody.conf"
  fi
  case "$ledger" in
    1)
      mq="$prefix/etc/mosquitto"
      install -d -m 0755 "$mq/conf.d" "$unit_dir/mosquitto.service.d"
      install -m 0644 "$here/mosquitto/custody.acl" "$mq/custody.acl"
      install -m 0644 "$here/mosquitto/mosquitto.service.d-custody.conf" \
        "$unit_dir/mosquitto.service.d/custody.conf"
      # The broker loads it as user mosquitto: world-readable, in a root-owned directory.
      plugin="$opt/lib/mosquitto/custody_identity.so"
      install -d -m 0755 "$opt/lib" "$opt/lib/mosquitto"
      "$here/mosquitto/build-plugin.sh" "$plugin" || die "could not build the broker's identity plugin"
      dropin=$(mktemp)
      "$here/mosquitto/render-dropin.sh" --etc "$mq" --plugin "$plugin" >"$dropin"
      # Mosquitto refuses to start when a certificate or the CRL is missing: the drop-in goes
      # live only once the PKI files are in place (run this script again after placing them).
      need=("$mq/certs/custody-ca.crt" "$mq/certs/broker.crt" "$mq/certs/broker.key" "$mq/certs/custody.crl")
      have=1
      for f in "${need[@]}"; do [ -f "$f" ] || have=0; done
      if [ "$have" -eq 1 ]; then
        cmp -s "$dropin" "$mq/conf.d/custody.conf" || install -m 0644 "$dropin" "$mq/conf.d/custody.conf"
        grep -qs "^include_dir $mq/conf.d" "$mq/mosquitto.conf" \
          || say "warning: $mq/mosquitto.conf has no 'include_dir $mq/conf.d' line: the drop-in is not read"
      else
        install -m 0644 "$dropin" "$etc/mosquitto-custody.conf"
        say "Mosquitto drop-in staged as $etc/mosquitto-custody.conf: place ${need[*]} and run install.sh again"
      fi
      rm -f "$dropin"
      ;;
  esac
  if [ "$live" -eq 1 ]; then
    systemctl daemon-reload
    systemctl enable "${units[@]}"
    case "$gateway" in
      1)
        systemctl restart systemd-modules-load.service || say "warning: could not load the serial drivers"
        if command -v udevadm >/dev/null; then
          udevadm control --reload
          udevadm trigger --subsystem-match=tty --action=add
        fi
        ;;
    esac
  fi
fi

say "installed ($role) in ${prefix:-/}; next: docs/operations.md"
if [ "$gateway" -eq 1 ]; then
  if [ -n "$owner" ]; then run_as=(sudo -u custody); else run_as=(); fi
  echo "  ${run_as[*]:+${run_as[*]} }$opt/bin/custody-agent --data-dir $data init --site SITE --device DEVICE --ledger-key ledger-public.json"
fi
