#!/usr/bin/env bash
# hafleet end to end on this machine, in one command (as root, on Debian): installs what is
# missing and builds, then runs the demo driver (test/demo/demo-driver.ts), which starts a real
# HAProxy, six upstream web servers, the controller on a catalog file and an agent, scales the
# service step by step under load, prints a live view and a summary, and stops everything.
#
#   bash deploy/demo/demo.sh [--short] [--keep]     (--help for the details)
#
# HAFLEET_DEMO_SKIP_INSTALL=1 skips deploy/install-deps.sh and the build, for a checkout that
# is built already (the test suite runs the demo this way).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${HAFLEET_DEMO_SKIP_INSTALL:-}" != 1 ]; then
  # Only what the demo runs (HAProxy, npm dependencies); the tests' extras come with .ci/run.
  bash deploy/install-deps.sh --for demo
  npm run --silent build
fi
exec node dist/test/demo/demo-driver.js "$@"
