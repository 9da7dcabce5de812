#!/usr/bin/env bash
# Builds a wheel bundle for installing cobalt-custody where there is no internet
# (docs/operations.md "Offline install"), on any machine with internet and Python >= 3.11:
#
#   deploy/build-offline-bundle.sh --out DIR [--role ROLE] [--arch aarch64|x86_64|armv7l|host]
#                                  [--python 3.11]
#
# DIR then holds every wheel the role needs (the project, its dependencies and the role's extras,
# binary only), requirements.txt pinning each with its sha256 (pip --require-hashes) and naming the
# role, SHA256SUMS (sha256sum --check), MANIFEST.json (role, target, wheels, sizes, hashes), and a
# copy of deploy/ and docs/ so the bundle installs itself (as that role):
#
#   sudo DIR/deploy/install.sh --offline DIR
#
# ROLE is install.sh's: gateway (default: no OpenCV, numpy or psycopg), gateway+camera (the
# [camera] extra), ledger (the [postgres] extra) or all (both extras); one bundle per role.
#
# The default target is Debian 12 on a Raspberry Pi 4/5 (aarch64, CPython 3.11, glibc 2.36). --arch
# host resolves for the Python running this script instead (also works without --platform support,
# e.g. for a package with no wheel for the target). A dependency without a binary wheel for the
# target makes pip fail here, not on the site.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build-offline-bundle.sh: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=""
arch=aarch64
pyver=3.11
glibc_minor=36  # Debian 12 bookworm: glibc 2.36
python=python3
role=gateway

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --role) [ $# -ge 2 ] || die "--role needs gateway, gateway+camera, ledger or all"; role=$2; shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs aarch64, x86_64, armv7l or host"; arch=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a version such as 3.11"; pyver=$2; shift 2 ;;
    --build-python) [ $# -ge 2 ] || die "--build-python needs an interpreter"; python=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$out" ] || { usage >&2; die "--out is required"; }
case "$arch" in aarch64|x86_64|armv7l|host) ;; *) die "--arch must be aarch64, x86_64, armv7l or host" ;; esac
[[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "--python must look like 3.11"
case "$role" in
  gateway|agent) role=gateway; extras="" ;;
  gateway+camera|agent+camera) role="gateway+camera"; extras="camera" ;;
  ledger|central) role=ledger; extras="postgres" ;;
  all|both) role=all; extras="camera,postgres" ;;
  *) die "--role must be gateway, gateway+camera, ledger or all, not '$role'" ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pip itself, from a throwaway venv so the host's Python is not touched.
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)

echo "build-offline-bundle.sh: building the project wheel" >&2
"${pip[@]}" wheel --no-deps --wheel-dir "$work/project" "$repo"
project_wheel=$(find "$work/project" -name '*.whl' | head -n 1)
[ -n "$project_wheel" ] || die "no project wheel was built"

rm -f "$out"/*.whl
cp "$project_wheel" "$out/"
target=("$project_wheel${extras:+[$extras]}")
if [ "$arch" = host ]; then
  platform_args=()
  target_desc="host ($("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_platform())'), CPython $("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))"
else
  # pip matches platform tags exactly: list every manylinux level glibc 2.36 can run, plus the
  # legacy aliases wheels still carry (PEP 600, PEP 599).
  platform_args=()
  for ((m = glibc_minor; m >= 17; m--)); do platform_args+=(--platform "manylinux_2_${m}_${arch}"); done
  case "$arch" in
    x86_64) platform_args+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64) ;;
    aarch64) platform_args+=(--platform manylinux2014_aarch64) ;;
    armv7l) platform_args+=(--platform manylinux2014_armv7l --platform linux_armv7l) ;;
  esac
  abi="cp${pyver/./}"
  platform_args+=(--python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none)
  target_desc="linux $arch, CPython $pyver, glibc 2.$glibc_minor"
fi

echo "build-offline-bundle.sh: downloading wheels for role $role${extras:+ ([$extras])}, $target_desc" >&2
"${pip[@]}" download --only-binary=:all: --dest "$out" "${platform_args[@]}" "${target[@]}"

# Hashes: requirements.txt for pip --require-hashes, SHA256SUMS for sha256sum --check, and a
# JSON manifest for people and tools.
"$work/venv/bin/python" - "$out" "$target_desc" "$role" <<'PY'
import hashlib
import json
import re
import sys
from pathlib import Path

out, target, role = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
wheels = []
for whl in sorted(out.glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    project = re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalised name
    wheels.append({"file": whl.name, "project": project, "version": version,
                   "sha256": digest, "bytes": whl.stat().st_size})
(out / "requirements.txt").write_text(
    "# pip install --no-index --find-links . --require-hashes -r requirements.txt\n"
    f"# role: {role}\n"
    + "".join(f"{w['project']}=={w['version']} --hash=sha256:{w['sha256']}\n" for w in wheels)
)
(out / "SHA256SUMS").write_text(
    "".join(f"{w['sha256']}  {w['file']}\n" for w in wheels)
)
manifest = {"role": role, "target": target, "wheels": wheels,
            "total_bytes": sum(w["bytes"] for w in wheels)}
(out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(f"{len(wheels)} wheels, {manifest['total_bytes'] / 1e6:.1f} MB, role {role}, for {target}",
      file=sys.stderr)
PY

# The installer and the operator guide travel with the wheels.
rm -rf "$out/deploy" "$out/docs"
cp -r "$repo/deploy" "$out/deploy"
mkdir -p "$out/docs"
cp "$repo/docs/operations.md" "$out/docs/" 2>/dev/null || true
cp "$repo/README.md" "$out/"
echo "build-offline-bundle.sh: done; install on the site with: sudo $out/deploy/install.sh --offline $out" >&2
