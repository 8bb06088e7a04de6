#!/usr/bin/env bash
# Installs a Nix that can evaluate the Redox flake (>= 2.18; Debian 13's nix-bin, 2.26.3).
#
# On Debian 13 or newer that is `apt-get install nix-bin`. On Debian 12, whose own nix-bin
# is 2.8, Debian 13's package and the libraries it needs (glibc 2.41 among them) are
# downloaded through a private apt configuration for the trixie suite and unpacked into a
# prefix of their own, /opt/redox-ci/nix/<version>. The nix binary is patched to load that
# prefix's dynamic loader and libraries, so the system's libc and apt sources stay as they
# are, and /proc/self/exe is still nix itself (Nix re-executes itself for the daemon and the
# build hook). Only nix's own commands are linked into /opt/redox-ci/nix/bin: the prefix's
# other programs (perl, ...) never reach PATH. Safe to run again.
set -euo pipefail

NIX_SUITE=trixie
NIX_HOME=/opt/redox-ci/nix
NIX_COMMANDS=(nix nix-build nix-channel nix-collect-garbage nix-copy-closure nix-daemon
              nix-env nix-hash nix-instantiate nix-prefetch-url nix-shell nix-store)
# The oldest Nix that evaluates the Redox flake's locked nixpkgs.
MIN_NIX_VERSION=2.18

version_ok() {  # version_ok VERSION: is VERSION >= MIN_NIX_VERSION?
  [ "$(printf '%s\n%s\n' "$MIN_NIX_VERSION" "$1" | sort -V | head -n1)" = "$MIN_NIX_VERSION" ]
}

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
arch=$(dpkg --print-architecture)

# Debian 12's nix-bin (2.8) would share /nix/store and /nix/var/nix with the modern Nix,
# and 2.8 cannot read what 2.26 writes there: one Nix owns /nix.
if dpkg-query -W -f='${Status} ${Version}' nix-bin 2>/dev/null | grep -q "install ok installed 2\.[0-9]\."; then
  installed=$(dpkg-query -W -f='${Version}' nix-bin)
  if ! version_ok "${installed%%+*}"; then
    echo "install-nix: removing Debian's nix-bin $installed (too old for the Redox flake; it would share /nix)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q nix-bin nix-setup-systemd >/dev/null
  fi
fi

if [ "$codename" != bookworm ]; then
  # Debian 13 (trixie) and newer ship a new enough Nix.
  dpkg-query -W -f='${Status}' nix-bin 2>/dev/null | grep -q "install ok installed" \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-bin bash-static
  mkdir -p "$NIX_HOME/bin"
  for c in "${NIX_COMMANDS[@]}"; do ln -sfn "/usr/bin/$c" "$NIX_HOME/bin/$c"; done
  exit 0
fi

if [ -x "$NIX_HOME/bin/nix" ] && v=$("$NIX_HOME/bin/nix" --version 2>/dev/null) && version_ok "${v##* }"; then
  exit 0
fi

# Debian 12: the trixie suite from the mirror this machine's apt already uses, in a
# private apt tree (its own sources, lists, cache and an empty dpkg status).
mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
[ -n "$mirror" ] || { echo "install-nix: no apt source for Debian bookworm found to take the $NIX_SUITE suite from" >&2; exit 1; }
work=$(mktemp -d /var/tmp/redox-ci-nix.XXXXXX)
trap 'rm -rf "$work"' EXIT
apt_tree=$work/apt
mkdir -p "$apt_tree"/etc/apt/{sources.list.d,preferences.d,apt.conf.d} "$apt_tree"/var/lib/apt/lists/partial \
         "$apt_tree"/var/cache/apt/archives/partial "$apt_tree"/var/lib/dpkg
: > "$apt_tree/var/lib/dpkg/status"
cat > "$apt_tree/etc/apt/sources.list.d/$NIX_SUITE.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $NIX_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(-o "Dir=$apt_tree" -o "Dir::State::status=$apt_tree/var/lib/dpkg/status"
          -o "Dir::Etc::trusted=/etc/apt/trusted.gpg" -o "Dir::Etc::trustedparts=/etc/apt/trusted.gpg.d"
          -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o Debug::NoLocking=1
          -o APT::Sandbox::User=root)
echo "install-nix: fetching nix-bin and its libraries from Debian $NIX_SUITE" >&2
apt-get "${apt_opts[@]}" update -q >/dev/null
apt-get "${apt_opts[@]}" install -y -q --download-only --no-install-recommends nix-bin >/dev/null

nix_deb=$(ls "$apt_tree"/var/cache/apt/archives/nix-bin_*.deb)
version=$(dpkg-deb -f "$nix_deb" Version)
version=${version%%+*}
prefix=$NIX_HOME/$version
rm -rf "$prefix.new"
mkdir -p "$prefix.new"
for deb in "$apt_tree"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$prefix.new"; done

loader_path=$(ls "$prefix.new"/usr/lib/*/ld-linux*.so.* | head -n1)
libdir=$prefix/usr/lib/$(basename "$(dirname "$loader_path")")
loader=$libdir/$(basename "$loader_path")
# DT_RPATH (not RUNPATH) so that the prefix's libraries also find each other.
patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libdir" \
  "$prefix.new/usr/bin/nix"
rm -rf "$prefix"
mv "$prefix.new" "$prefix"
mkdir -p "$NIX_HOME/bin"
for c in "${NIX_COMMANDS[@]}"; do ln -sfn "$prefix/usr/bin/$c" "$NIX_HOME/bin/$c"; done
"$NIX_HOME/bin/nix" --version >&2
