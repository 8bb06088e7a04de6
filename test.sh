#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite in the virtual
# environment, against the modern Nix through its daemon.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
. scripts/nix-env.sh
. .venv/bin/activate
exec python -m pytest "$@"
