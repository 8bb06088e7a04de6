# Sourced by run.sh and test.sh (and by hand: `. scripts/nix-env.sh`): the Nix that
# scripts/install-nix.sh installed as nix, nix-store, ... on PATH, every call through the
# Nix daemon (started here when it is not running), flakes on, and no substituters but the
# ones a command names (the local and test jobs have no network).
export PATH="/opt/redox-ci/nix/bin:$PATH"
export NIX_REMOTE=daemon
export NIX_CONFIG="${NIX_CONFIG:-experimental-features = nix-command flakes
substituters =}"

if ! nix store info --store daemon >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "nix-env.sh: the Nix daemon is not running; start it as root (systemctl start nix-daemon)" >&2
  else
    mkdir -p /var/log/redox-ci
    # Its own session, so that it outlives this shell; no NIX_CONFIG of ours in its settings.
    env -u NIX_CONFIG -u NIX_REMOTE setsid nix-daemon --daemon \
      >>/var/log/redox-ci/nix-daemon.log 2>&1 </dev/null &
    for _ in $(seq 1 100); do
      nix store info --store daemon >/dev/null 2>&1 && break
      sleep 0.1
    done
    nix store info --store daemon >/dev/null 2>&1 \
      || echo "nix-env.sh: the Nix daemon did not start; see /var/log/redox-ci/nix-daemon.log" >&2
  fi
fi
