#!/usr/bin/env bash
# Installs what hafleet needs on Debian, only what is missing.
#
#   bash deploy/install-deps.sh [--for demo|tests]
#
#   --for demo   what the demo runs (deploy/demo/demo.sh): HAProxy (a Debian package) and the
#                npm dependencies (npm ci), nothing else
#   --for tests  (the default) what the test suite needs besides (.ci/run): Ansible and Chromium
#                (Debian packages), and Debian's own Node 18 for the bundle's oldest-Node tests
#                (unpacked, not installed: see below)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

purpose=tests
while [ $# -gt 0 ]; do
  case "$1" in
    --for)
      purpose=${2:-}
      shift 2 || shift
      ;;
    --for=*)
      purpose=${1#--for=}
      shift
      ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    *)
      echo "install-deps: unknown argument '$1' (usage: bash deploy/install-deps.sh [--for demo|tests])" >&2
      exit 2
      ;;
  esac
done
case "$purpose" in
  demo | tests) ;;
  *)
    echo "install-deps: --for takes demo or tests, not '$purpose'" >&2
    exit 2
    ;;
esac

apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
}

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ "$purpose" = tests ]; then
  # ansible-core, not ansible: the role uses only ansible.builtin modules, and the full ansible
  # package adds some 250 MB of collections.
  command -v ansible-playbook >/dev/null 2>&1 || missing+=(ansible-core)
  # Debian's Chromium, driven by playwright-core, for the status page's browser test.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  apt_update
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package starts a system HAProxy on port 80; hafleet's tests and demo run their own.

if ! command -v node >/dev/null 2>&1; then
  echo "hafleet needs Node.js 20 or later to build and test (apt-get install -y nodejs npm)" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# The demo is done: what follows is for the tests only.
[ "$purpose" = tests ] || exit 0

# Debian bookworm's nodejs (18.20), the oldest Node the bundles support, for test/integration/
# bundle.test.ts. Installing it would replace this machine's Node 20, so its packages are
# unpacked into a cache and run through bin/node there: it finds its libraries through
# LD_LIBRARY_PATH, and the builtins Debian moved out of it (acorn, cjs-module-lexer, undici),
# which it loads from /usr/share/nodejs, through an overlay of /usr/share that exists only in
# its own mount namespace.
node18=/var/cache/hafleet-test/node18
if [ ! -x "$node18/bin/node" ]; then
  debian_node() { apt-cache madison nodejs | awk -F' *[|] *' '$2 ~ /^18[.].*deb12/ { print $2; exit }'; }
  version=$(debian_node)
  if [ -z "$version" ]; then apt_update; version=$(debian_node); fi
  if [ -z "$version" ]; then
    echo "install-deps: no Node 18 from Debian in apt's lists (apt-cache madison nodejs): is this bookworm?" >&2
    exit 1
  fi
  echo "unpacking Debian's nodejs $version into $node18" >&2
  debs=$(mktemp -d)
  # apt downloads as its sandbox user, which must be able to write there.
  chown _apt "$debs" 2>/dev/null || true
  (cd "$debs" && apt-get download -qq "nodejs=$version" "libnode108=$version" libc-ares2 node-acorn node-cjs-module-lexer node-undici)
  rm -rf "$node18"
  mkdir -p "$node18/bin"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$node18/root"; done
  rm -rf "$debs"
  cat > "$node18/bin/node" <<'NODE'
#!/bin/sh
# Debian's Node 18, unpacked beside this script by deploy/install-deps.sh. Needs root (unshare).
root=$(cd "$(dirname "$0")/../root" && pwd)
exec unshare --mount sh -c 'mount -t overlay overlay -o "lowerdir=$0/usr/share:/usr/share" /usr/share &&
  LD_LIBRARY_PATH=$(echo "$0"/usr/lib/*-linux-gnu) exec "$0/usr/bin/node" "$@"' "$root" "$@"
NODE
  chmod 0755 "$node18/bin/node"
  "$node18/bin/node" --version >&2
fi
