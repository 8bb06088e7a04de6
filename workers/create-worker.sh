#!/usr/bin/env bash
# Creates a redox-ci worker host: one buildbot-worker per slot, each with a systemd unit.
#   workers/create-worker.sh NAME MASTER_HOST:PORT PASSWORD_FILE [SLOTS]
# NAME and SLOTS as in workers/inventory.toml (SLOTS = max_builds; slots are NAME-1..NAME-N,
# or NAME alone when it is 1: Buildbot runs one build per builder and worker, so a host runs
# N jobs of a stage at once only as N workers). The host needs Nix with its daemon (Nix's
# commands in /opt/redox-ci/nix/bin, as scripts/install-nix.sh puts them) and Python 3.11+
# with venv. redox-ci and buildbot-worker go into the virtual environment $venv, from this
# checkout (REDOX_CI_SOURCE names another source, e.g. 'redox-ci' for a package index).
set -euo pipefail
name=${1:?worker name, as in workers/inventory.toml}
master=${2:?master host:port, e.g. ci.example.org:9989}
password_file=${3:?file holding the worker password (from secrets.toml)}
slots=${4:-1}
base=/var/lib/redox-ci-worker
venv=/opt/redox-ci/venv
src=${REDOX_CI_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$src[worker]"

# The same user scripts/nix-setup.sh makes (and trusts in nix.conf); NixOS: users.users.redox-ci.
id redox-ci >/dev/null 2>&1 || useradd --system --home-dir "$base" --create-home --shell /usr/sbin/nologin redox-ci
install -d -o redox-ci -g redox-ci "$base"
if [ "$slots" -eq 1 ]; then names=("$name"); else names=(); for i in $(seq 1 "$slots"); do names+=("$name-$i"); done; fi
for slot in "${names[@]}"; do
  runuser -u redox-ci -- "$venv/bin/buildbot-worker" create-worker --umask=0o22 --keepalive=60 \
    "$base/$slot" "$master" "$slot" "$(cat "$password_file")"
  sed "s/@NAME@/$slot/g" "$(dirname "$0")/redox-ci-worker.service" > /etc/systemd/system/redox-ci-worker@"$slot".service
  systemctl daemon-reload
  systemctl enable --now redox-ci-worker@"$slot".service
  echo "worker slot $slot created in $base/$slot and started"
done
