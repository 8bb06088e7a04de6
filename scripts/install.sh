#!/usr/bin/env bash
# Installs what redox-ci needs on a fresh Debian 12 machine: Debian packages, then the
# Python package (editable) with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  git nix-bin
  qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64
  expect diffoscope
  clang lld dosfstools mtools
  chromium chromium-driver
  postgresql
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own python3 refuses pip installs outside a venv (PEP 668); this machine's kind
# ships its own Python, where the variable is ignored.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check -e '.[test]'
