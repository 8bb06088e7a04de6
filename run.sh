#!/usr/bin/env bash
# The main job: a local master with its web UI, a local worker, SQLite, a local S3
# server and the bundled fixture flake. State lives in .local/; Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
. scripts/nix-env.sh
. .venv/bin/activate
exec redox-ci local "$@"
