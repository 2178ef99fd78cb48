#!/usr/bin/env bash
# Installs the pinned tools of tools/package.json (solc, anvil, workerd) into tools/node_modules.
# Idempotent: runs `npm ci` only when node_modules is missing or package-lock.json is newer.
# npm does not run the packages' install scripts here; the platform binaries come from the
# optional @cloudflare/workerd-linux-64 and @foundry-rs/anvil-linux-amd64 packages and are
# checked below.
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$TOOLS_DIR"

die() { echo "tools/install.sh: $*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "tools/install.sh: node/npm missing, installing nodejs and npm with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
      || die "apt-get install nodejs npm failed"
  fi
  command -v node >/dev/null 2>&1 || die "node is not installed (need Node.js >= 18); install nodejs"
  command -v npm >/dev/null 2>&1 || die "npm is not installed; install npm"
fi

[ -f package-lock.json ] || die "tools/package-lock.json is missing"

stamp="node_modules/.package-lock.json"
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  echo "tools/install.sh: npm ci in $TOOLS_DIR" >&2
  # npm 11 refuses `npm ci` when the lock lacks the other platforms' optional binaries (it
  # records only those the registry served here); `npm install --no-save` then installs the same
  # pinned versions from the lock without rewriting it.
  if ! npm ci --no-audit --no-fund >&2; then
    echo "tools/install.sh: npm ci refused the lock; installing the locked versions with npm install --no-save" >&2
    npm install --no-audit --no-fund --no-save >&2 || die "npm install failed in $TOOLS_DIR"
  fi
fi

missing=0
for bin in \
  node_modules/@cloudflare/workerd-linux-64/bin/workerd \
  node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil; do
  if [ ! -x "$bin" ]; then
    echo "tools/install.sh: missing executable tools/$bin (npm ci did not install the linux-x64 optional package?)" >&2
    missing=1
  fi
done
[ -f node_modules/solc/package.json ] || { echo "tools/install.sh: missing tools/node_modules/solc" >&2; missing=1; }
[ "$missing" = 0 ] || die "tool installation is incomplete; remove tools/node_modules and re-run"

# The unprivileged user workerd runs as (EXECUTOR_SANDBOX_UID/GID), when installing as root.
if [ "$(id -u)" = "0" ] && command -v useradd >/dev/null 2>&1; then
  if ! id -u serverless-sandbox >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin serverless-sandbox \
      || die "useradd serverless-sandbox failed"
  fi
  echo "tools/install.sh: sandbox user: EXECUTOR_SANDBOX_UID=$(id -u serverless-sandbox) EXECUTOR_SANDBOX_GID=$(id -g serverless-sandbox)" >&2
fi
