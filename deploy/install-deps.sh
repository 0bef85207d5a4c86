#!/usr/bin/env bash
# Installs what hafleet needs to build and test on Debian, only what is missing:
# HAProxy (apt-get install -y haproxy) and the npm dependencies (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v haproxy >/dev/null 2>&1; then
  echo "installing haproxy (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq haproxy >/dev/null
fi
# Debian's package starts a system HAProxy on port 80; hafleet's tests and demo run their own.

if ! command -v node >/dev/null 2>&1; then
  echo "hafleet needs Node.js 20 or later (apt-get install -y nodejs npm)" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
