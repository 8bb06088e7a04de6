#!/usr/bin/env bash
# Creates a redox-ci worker on this host and installs its systemd unit.
#   workers/create-worker.sh NAME MASTER_HOST:PORT PASSWORD_FILE
# The host needs Nix (flakes on), Python 3.11+, and redox-ci installed (pip install .).
set -euo pipefail
name=${1:?worker name, as in workers/inventory.toml}
master=${2:?master host:port, e.g. ci.example.org:9989}
password_file=${3:?file holding the worker password (from secrets.toml)}
base=/var/lib/redox-ci-worker

id redox-ci >/dev/null 2>&1 || useradd --system --home-dir "$base" --create-home redox-ci
install -d -o redox-ci -g redox-ci "$base"
sudo -u redox-ci buildbot-worker create-worker --umask=0o22 --keepalive=60 \
  "$base/$name" "$master" "$name" "$(cat "$password_file")"
sed "s/@NAME@/$name/g" "$(dirname "$0")/redox-ci-worker.service" > /etc/systemd/system/redox-ci-worker@"$name".service
systemctl daemon-reload
systemctl enable --now redox-ci-worker@"$name".service
echo "worker $name created in $base/$name and started"
