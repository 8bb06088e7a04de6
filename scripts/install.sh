#!/usr/bin/env bash
# Installs what redox-ci needs on a fresh Debian 12 (or 13) machine, as root or through sudo:
# Debian packages, a Nix >= 2.18 (install-nix.sh), Nix's build users, its configuration and
# daemon (nix-setup.sh), the unprivileged worker user, and redox-ci with its dependencies in
# the virtual environment .venv. Safe to run again; run.sh and test.sh run it first.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

DEBIAN_PACKAGES=(
  git ca-certificates python3 python3-venv
  # The modern Nix's unpacking (install-nix.sh), its sandbox shell, and the sandbox-clean
  # fixtures' builder.
  patchelf bash-static busybox-static
  qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64
  # aarch64-linux builds by emulation (scripts/nix-setup.sh registers it with binfmt_misc).
  qemu-user-static
  expect diffoscope
  clang lld dosfstools mtools
  chromium chromium-driver
  postgresql
  # The tests read listening sockets with ss.
  iproute2
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

$SUDO bash scripts/install-nix.sh
$SUDO bash scripts/nix-setup.sh

# Python: a virtual environment of its own (PEP 668), from Debian's python3 unless PYTHON
# names another.
python=${PYTHON:-/usr/bin/python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[local,test]'
# Bytecode for redox_ci now, as a wheel install has it: an editable install has none, the
# unprivileged worker user cannot write it here, and every job's `redox-ci build` would
# compile its modules again (15 ms of its 80, measured).
.venv/bin/python -m compileall -q redox_ci >/dev/null
