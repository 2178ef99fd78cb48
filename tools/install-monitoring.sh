#!/usr/bin/env bash
# Installs what the monitoring tests need, from Debian's packages: `promtool` (from the
# `prometheus` package, unpacked into tools/apt/ so no Prometheus server is installed or started)
# and `chromium` (installed with apt-get, for the status page's headless browser test).
# Idempotent. Prints `SKIP: …` and exits 0 when a tool truly cannot be installed (not root, no
# apt); the tests then print their own SKIP lines.
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$TOOLS_DIR/apt"
promtool="$root/usr/bin/promtool"

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || true
    apt_updated=1
  fi
}

can_apt() { command -v apt-get >/dev/null 2>&1; }

# promtool: download the .deb (no root needed) and unpack only its files.
if [ ! -x "$promtool" ] && ! command -v promtool >/dev/null 2>&1; then
  if can_apt; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || {
      [ "$(id -u)" = "0" ] && apt_update
      (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || true
    }
    deb="$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n1 || true)"
    if [ -n "$deb" ]; then
      mkdir -p "$root"
      dpkg-deb -x "$deb" "$root"
    fi
  fi
  if [ -x "$promtool" ]; then
    echo "tools/install-monitoring.sh: promtool unpacked into tools/apt/" >&2
  else
    echo "SKIP: promtool: cannot download Debian's prometheus package (apt-get download prometheus failed)"
  fi
fi

# chromium: a real install (it has many shared-library dependencies); fonts so text renders.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && can_apt; then
    echo "tools/install-monitoring.sh: installing chromium with apt-get" >&2
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 || true
  fi
  command -v chromium >/dev/null 2>&1 \
    || echo "SKIP: chromium: not installed and cannot be installed here (needs root and apt-get)"
fi
