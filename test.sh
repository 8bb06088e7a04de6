#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
. scripts/nix-env.sh
exec python3 -m pytest "$@"
