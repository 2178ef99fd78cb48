#!/usr/bin/env bash
# The test command: installs what the tests need (npm tools, and node/npm if missing), checks
# formatting and lints, then runs every test against the real workerd and anvil.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
stage() { echo "== $1 (at ${SECONDS}s)"; }
stage "install tools"
bash tools/install.sh
bash tools/install-monitoring.sh
command -v cargo >/dev/null || { echo "error: cargo is required (https://rustup.rs)" >&2; exit 1; }

stage "cargo fmt --check"
cargo fmt --check
stage "cargo clippy"
cargo clippy --all-targets --features mocks -- -D warnings
stage "hadolint Dockerfile"
bash tools/lint-dockerfile.sh
stage "cargo test"
log_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$log_dir"
cargo test --features mocks -- --nocapture 2>&1 | tee "$log_dir/test-output.log"
status=${PIPESTATUS[0]}
# Say plainly which tests skipped a part for lack of privileges (cgroups).
grep -h '^SKIP' "$log_dir/test-output.log" | sort -u || true
echo "== done in $((SECONDS - started))s, exit $status"
exit "$status"
