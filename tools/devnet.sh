#!/usr/bin/env bash
# The main job: installs the pinned tools if missing, then starts a local devnet (anvil + dev
# contracts), an executor registered on it, runs a demo job and keeps serving until Ctrl-C.
# Extra arguments go to `serverless-executor devnet` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
command -v cargo >/dev/null || { echo "error: cargo is required (https://rustup.rs)" >&2; exit 1; }
exec cargo run --quiet -- devnet "$@"
