#!/usr/bin/env bash
# Makes the Nix from install-nix.sh production-shaped: build users, the sandbox on, the
# daemon (a systemd unit where systemd runs; otherwise nix-env.sh starts it), and the
# unprivileged user that Buildbot workers run as, trusted by the daemon so that it may sign
# store paths for the binary cache. Run as root; safe to run again.
set -euo pipefail

NIX_BIN=/opt/redox-ci/nix/bin
# One build user per concurrent build; more than this machine's cores is plenty.
BUILD_USERS=8
WORKER_USER=redox-ci
WORKER_HOME=/var/lib/redox-ci-worker
CONF=/etc/nix/nix.conf
MARKER="# Managed by redox-ci (scripts/nix-setup.sh)."

getent group nixbld >/dev/null || groupadd --system nixbld
for i in $(seq 1 "$BUILD_USERS"); do
  id "nixbld$i" >/dev/null 2>&1 || useradd --system --gid nixbld --groups nixbld --no-create-home \
    --home-dir /var/empty --shell /usr/sbin/nologin --comment "Nix build user $i" "nixbld$i"
done

id "$WORKER_USER" >/dev/null 2>&1 || useradd --system --create-home --home-dir "$WORKER_HOME" \
  --shell /usr/sbin/nologin --comment "redox-ci Buildbot worker" "$WORKER_USER"

# aarch64-linux derivations, built here by emulation: Debian's qemu-user-static registered
# with binfmt_misc (flag F: the kernel keeps the interpreter open, so it works inside the
# sandbox too). Without systemd nothing registers it at boot, so it is done here.
extra_platforms=""
binfmt=/proc/sys/fs/binfmt_misc
if [ "$(uname -m)" = x86_64 ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
  if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-aarch64" ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register" 2>/dev/null || true
  fi
  if [ -e "$binfmt/qemu-aarch64" ]; then
    extra_platforms="extra-platforms = aarch64-linux"
  else
    echo "nix-setup: aarch64-linux cannot be emulated here (binfmt_misc not available); aarch64 jobs need an aarch64 worker" >&2
  fi
fi

mkdir -p /etc/nix
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  mv "$CONF" "$CONF.before-redox-ci"
  echo "nix-setup: kept the previous $CONF as $CONF.before-redox-ci" >&2
fi
new_conf=$(cat <<CONFIG
$MARKER
# Local additions belong in nix.custom.conf beside this file, which is read last.
build-users-group = nixbld
sandbox = true
sandbox-fallback = false
experimental-features = nix-command flakes
# The Redox flake needs import-from-derivation (crane's vendored sources, patched sources).
allow-import-from-derivation = true
trusted-users = root $WORKER_USER
$extra_platforms
!include nix.custom.conf
CONFIG
)
changed=false
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" > "$CONF"
  changed=true
fi

if [ -d /run/systemd/system ]; then
  cat > /etc/systemd/system/nix-daemon.service <<UNIT
[Unit]
Description=Nix daemon (redox-ci)
RequiresMountsFor=/nix/store /nix/var

[Service]
ExecStart=$NIX_BIN/nix-daemon --daemon
KillMode=process
LimitNOFILE=1048576
TasksMax=1048576

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now nix-daemon.service
  [ "$changed" = false ] || systemctl restart nix-daemon.service
elif [ "$changed" = true ]; then
  # A daemon started by nix-env.sh reads its settings once: the next nix-env.sh starts it anew.
  pkill -x nix-daemon 2>/dev/null || true
fi
