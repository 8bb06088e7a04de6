#!/usr/bin/env bash
# Creates, or upgrades, a redox-ci production master: a Buildbot master directory that
# `buildbot start BASEDIR` runs with the given settings, and its systemd unit.
#   scripts/create-master.sh BASEDIR SETTINGS
# Run as root after installing redox-ci with the master extra into the virtual environment
# (README, "A production master"):
#   python3 -m venv /opt/redox-ci/venv && /opt/redox-ci/venv/bin/pip install '/path/to/redox-ci[master]'
# It checks the settings and the secrets file first (every problem at once; nothing is changed
# when one is wrong), then:
#   - makes the system user the master runs as ($REDOX_CI_MASTER_USER, default redox-ci-master)
#     and gives it the secrets file, mode 0600;
#   - a new BASEDIR: `buildbot create-master --db URL` creates the database schema of
#     [database].url; every run: `buildbot upgrade-master` brings the schema and the web files
#     to the installed version (nothing to do on a new one) after loading master.cfg as the
#     master user, so a setting or file the master could not read stops it here;
#   - installs master.cfg and links BASEDIR/settings.toml to SETTINGS (the master reads it
#     there; relative paths in it stay relative to SETTINGS);
#   - writes the unit redox-ci-master.service and, where systemd runs, enables and starts it
#     (a running master is stopped for the upgrade and started again).
# After each upgrade of the virtual environment (pip install -U), run it again.
# Environment: REDOX_CI_VENV (/opt/redox-ci/venv), REDOX_CI_MASTER_USER (redox-ci-master),
# REDOX_CI_UNIT_DIR (/etc/systemd/system).
set -euo pipefail
say() { echo "create-master.sh: $*" >&2; }
die() { say "$*"; exit 2; }

[ $# -eq 2 ] || die "usage: scripts/create-master.sh BASEDIR SETTINGS"
venv=${REDOX_CI_VENV:-/opt/redox-ci/venv}
user=${REDOX_CI_MASTER_USER:-redox-ci-master}
unit_dir=${REDOX_CI_UNIT_DIR:-/etc/systemd/system}
unit=redox-ci-master.service
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")

[ "$(id -u)" -eq 0 ] || die "run it as root: it makes the user $user, gives it its files and writes the systemd unit"
[ -x "$venv/bin/buildbot" ] || die "no Buildbot in $venv: first python3 -m venv $venv && $venv/bin/pip install '$src[master]'"
[ -f "$2" ] || die "$2: no settings file (start from settings.example.toml; README: a production master)"
basedir=$(realpath -m "$1")
settings=$(realpath "$2")
# They go into the unit's lines as they are: no spaces, quotes or other characters to escape.
for p in "$basedir" "$settings" "$venv"; do
  [[ $p =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "$p: use a path of letters, digits and . _ / + - only"
done

# The settings and the secrets as the master reads them: the database URL and the secrets file.
found=$("$venv/bin/python" - "$settings" <<'PY'
import sys

from redox_ci.errors import ConfigError
from redox_ci.secrets_file import load_secrets
from redox_ci.settings_file import load

try:
    loaded = load(sys.argv[1])
    load_secrets(loaded)
except ConfigError as e:
    sys.exit(str(e))
print(loaded.settings.database.url)
print(loaded.settings.secrets.file)
PY
) || die "fix the settings or the secrets file above; nothing was changed"
db=$(sed -n 1p <<<"$found")
secrets=$(sed -n 2p <<<"$found")

# A Buildbot process working in BASEDIR: twistd changes into it, with or without --nodaemon
# (which writes no twistd.pid).
running_master() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$basedir" ] || continue
    case $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) in *buildbot*) echo "${p#/proc/}"; return ;; esac
  done
  return 0
}
systemd=false
[ -d /run/systemd/system ] && systemd=true
if $systemd && systemctl is-active --quiet "$unit"; then
  say "stopping the running master for the upgrade"
  systemctl stop "$unit"
fi
pid=$(running_master)
[ -z "$pid" ] || die "the master in $basedir is running (pid $pid): stop it first"

id "$user" >/dev/null 2>&1 ||
  useradd --system --home-dir "$basedir" --no-create-home --shell /usr/sbin/nologin \
    --comment "redox-ci Buildbot master" "$user"
install -d -o "$user" -g "$user" -m 0750 "$basedir"
chown "$user:" "$secrets"
chmod 0600 "$secrets"
as_master() { (cd "$basedir" && runuser -u "$user" -- env HOME="$basedir" "$@"); }

if [ -f "$basedir/buildbot.tac" ]; then
  done="upgraded"
else
  as_master "$venv/bin/buildbot" create-master --quiet --relocatable --db "$db" "$basedir"
  done="created"
fi
install -o "$user" -g "$user" -m 0644 "$src/master.cfg" "$basedir/master.cfg"
ln -sfn "$settings" "$basedir/settings.toml"
as_master "$venv/bin/buildbot" upgrade-master --quiet "$basedir" >/dev/null ||
  die "buildbot upgrade-master failed (above); the master in $basedir is not ready"

install -d "$unit_dir"
sed -e "s|@USER@|$user|g" -e "s|@BASEDIR@|$basedir|g" -e "s|@VENV@|$venv|g" "$here/$unit" > "$unit_dir/$unit"
say "master $done in $basedir, run as $user; unit $unit_dir/$unit"
if $systemd; then
  systemctl daemon-reload
  systemctl enable --now "$unit"
  say "started: systemctl status $unit; its log is $basedir/twistd.log"
else
  say "no systemd here: start it with runuser -u $user -- env HOME=$basedir $venv/bin/buildbot start $basedir"
fi
