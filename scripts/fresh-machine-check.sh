#!/usr/bin/env bash
# Runs the README's test command on a new Debian 12 machine: a clean root file system
# (mmdebstrap, minbase, from the mirror this machine's apt uses), a clean clone of this
# repository's HEAD inside it, and `./test.sh` run there as root, in namespaces of its own,
# with an empty environment. Whatever was installed or configured by hand on this host is not there, so a
# missing install step fails here first. Takes long (Debian packages, PyPI, the suite): it is
# not part of .ci/run.
#   [FRESH_WORKDIR=DIR] scripts/fresh-machine-check.sh [PYTEST ARGS]
# Needs root (mmdebstrap, a mount namespace). Leaves DIR/rootfs for a look afterwards (a new
# directory under /var/tmp unless FRESH_WORKDIR names one; an existing root file system there
# is used again, with a new clone); the log is DIR/check.log.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: run as root (it builds a root file system and enters it)" >&2; exit 2; }
work=${FRESH_WORKDIR:-$(mktemp -d /var/tmp/redox-ci-fresh.XXXXXX)}
root=$work/rootfs
log=$work/check.log
mkdir -p "$work"

command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
[ -n "$mirror" ] || { echo "fresh-machine-check: no apt source for Debian bookworm on this host" >&2; exit 1; }

start=$(date +%s)
if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "fresh-machine-check: building a Debian 12 root file system in $root" | tee "$log"
  mmdebstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >>"$log" 2>&1
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The local certificate authorities this host's network needs (a TLS-inspecting proxy, say):
# every machine on that network has them, so the new one gets them too.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >>"$log" 2>&1
fi
rm -rf "$root/work"
mkdir -p "$root/work"
git clone -q "$repo" "$root/work/redox-ci"
[ -d "$repo/../shared" ] && cp -r "$repo/../shared" "$root/work/shared"

echo "fresh-machine-check: ./test.sh $* in a clean clone of $(git -C "$repo" rev-parse --short HEAD)" | tee -a "$log"
# A mount and PID namespace of its own, entered with pivot_root rather than chroot: the kernel
# refuses user namespaces (which Nix's sandbox needs) to a chrooted process. When the test
# ends, the namespace's first process dies and takes every daemon started inside with it,
# and its mounts go with the namespace.
set +e
unshare --mount --pid --fork --kill-child -- /bin/bash -c '
  set -e
  root=$1; shift
  mount --make-rprivate /
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  cd "$root"
  mkdir -p .old-root
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  # test.sh is PID 1 of the namespace and reaps no orphans, as the PID 1 of a container or of
  # a CI runner may not: the tests adopt the daemons they start and reap them themselves
  # (tests.support.adopt_orphans). No apostrophe in this quoted script.
  cd /work/redox-ci
  exec /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ./test.sh "$@"
' fresh-machine "$root" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
set -e
echo "fresh-machine-check: exit $rc after $(( $(date +%s) - start )) s; log in $log" | tee -a "$log"
exit "$rc"
