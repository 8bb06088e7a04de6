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

mkdir -p /etc/nix
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  mv "$CONF" "$CONF.before-redox-ci"
  echo "nix-setup: kept the previous $CONF as $CONF.before-redox-ci" >&2
fi
cat > "$CONF" <<CONFIG
$MARKER
# Local additions belong in nix.custom.conf beside this file, which is read last.
build-users-group = nixbld
sandbox = true
sandbox-fallback = false
experimental-features = nix-command flakes
# The Redox flake needs import-from-derivation (crane's vendored sources, patched sources).
allow-import-from-derivation = true
trusted-users = root $WORKER_USER
!include nix.custom.conf
CONFIG

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
  systemctl restart nix-daemon.service
fi
