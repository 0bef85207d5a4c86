#!/usr/bin/env bash
# hafleet end to end on this machine: a real HAProxy, six small upstream web servers, and
# hafleet-agent applying three desired states in turn (3 servers, scale up to 6 past the
# four template slots, scale down to 2), printing what HAProxy runs after each, with live
# requests through HAProxy in between. Everything runs on loopback and is cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/install-deps.sh
npm run --silent build

dir=$(mktemp -d /tmp/hafleet-demo.XXXXXX)
port=${HAFLEET_DEMO_PORT:-18080}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Six upstream servers on 127.0.0.1:19001..19006, each answering with its own port.
node -e '
  const http = require("node:http");
  for (let p = 19001; p <= 19006; p++)
    http.createServer((q, s) => s.end(`hello from upstream 127.0.0.1:${p}\n`)).listen(p, "127.0.0.1");
' &
pids+=($!)

sed -e "s#__DIR__#$dir#" -e "s#__PORT__#$port#" deploy/demo/haproxy.cfg > "$dir/haproxy.cfg"
haproxy -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$dir/admin.sock" ] && break; sleep 0.1; done

agent() { node dist/agent/cli/main.js "$@" --socket "$dir/admin.sock"; }
desired() { # desired PORT... : a desired-state file with those upstream ports
  local servers=() p
  for p in "$@"; do servers+=("{\"address\":\"127.0.0.1\",\"port\":$p}"); done
  local IFS=,
  echo "{\"version\":\"demo\",\"backends\":[{\"name\":\"be_app\",\"servers\":[${servers[*]}]}]}" > "$dir/desired.json"
}
traffic() {
  sleep 1.5 # let the first health checks pass
  echo "--- 6 requests through HAProxy (127.0.0.1:$port):"
  for _ in 1 2 3 4 5 6; do node -e '
    require("node:http").get(process.argv[1], (r) => r.pipe(process.stdout)).on("error", (e) => console.log("request failed:", e.message));
  ' "http://127.0.0.1:$port/"; done
}
step() { echo; echo "=== $*"; }

step "HAProxy as configured: four empty template slots"
agent show

step "apply: 3 servers"
desired 19001 19002 19003
agent apply --desired "$dir/desired.json" --state-dir "$dir/state" --drain-period 1s
agent show
traffic

step "scale up to 6 servers: 4 slots, then 2 dynamic servers (add server), no reload"
desired 19001 19002 19003 19004 19005 19006
agent apply --desired "$dir/desired.json" --state-dir "$dir/state" --drain-period 1s
agent show
traffic

step "scale down to 2 servers: the others drain, then maintenance (slots free again); dynamic servers are deleted"
desired 19001 19002
agent apply --desired "$dir/desired.json" --state-dir "$dir/state" --drain-period 1s
agent show
traffic

step "a hostile desired state is refused, nothing applied"
echo '{"backends":[{"name":"be_app","servers":[{"address":"127.0.0.1;shutdown sessions server be_app/srv1","port":19001}]}]}' > "$dir/desired.json"
agent apply --desired "$dir/desired.json" --state-dir "$dir/state" || echo "(exit code $?, as expected)"
echo; echo "HAProxy was never reloaded: its process is the one started at the beginning (pid ${pids[1]})."
