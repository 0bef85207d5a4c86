#!/usr/bin/env bash
# hafleet end to end on this machine: a real HAProxy, six small upstream web servers, the
# hafleet controller (discovery from a catalog file, as it would from Consul) and an agent
# streaming from it. The catalog changes three times (3 servers, scale to 6 past the four
# template slots, down to 2); after each, what HAProxy runs is printed, with live requests.
# Everything runs on loopback and is cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/install-deps.sh
npm run --silent build

dir=$(mktemp -d /tmp/hafleet-demo.XXXXXX)
port=${HAFLEET_DEMO_PORT:-18080}
grpc=${HAFLEET_DEMO_GRPC_PORT:-17900}
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
haproxy_pid=$!
pids+=($haproxy_pid)
for _ in $(seq 50); do [ -S "$dir/admin.sock" ] && break; sleep 0.1; done

catalog() { # catalog PORT... : the service "web" has these upstream ports
  local servers=() p
  for p in "$@"; do servers+=("{\"address\":\"127.0.0.1\",\"port\":$p}"); done
  local IFS=,
  echo "{\"services\":{\"web\":[${servers[*]}]}}" > "$dir/catalog.tmp"
  mv "$dir/catalog.tmp" "$dir/catalog.json"
}
show() { node dist/agent/cli/main.js show --socket "$dir/admin.sock"; }
serving() { node dist/agent/cli/main.js show --socket "$dir/admin.sock" --json | node -e '
  let t = ""; process.stdin.on("data", (c) => (t += c)).on("end", () => {
    const be = JSON.parse(t).sockets[0].backends.find((b) => b.name === "be_app");
    console.log(be.servers.filter((s) => s.admin === "ready").map((s) => s.endpoint).sort().join(" "));
  });'; }
wait_for() { # wait_for "ENDPOINTS": until HAProxy serves exactly these (at most 10 s)
  for _ in $(seq 100); do [ "$(serving)" = "$1" ] && return 0; sleep 0.1; done
  echo "HAProxy did not converge: serving '$(serving)', wanted '$1'" >&2; return 1
}
endpoints() { local p out=(); for p in "$@"; do out+=("127.0.0.1:$p"); done; echo "${out[*]}"; }
traffic() {
  sleep 1.5 # let the first health checks pass
  echo "--- 6 requests through HAProxy (127.0.0.1:$port):"
  for _ in 1 2 3 4 5 6; do node -e '
    require("node:http").get(process.argv[1], (r) => r.pipe(process.stdout)).on("error", (e) => console.log("request failed:", e.message));
  ' "http://127.0.0.1:$port/"; done
}
pushes() { # the controller's push/ack log lines so far, in short
  node -e '
    for (const line of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
      if (!line.startsWith("{")) continue;
      const j = JSON.parse(line);
      if (j.msg === "push") console.log(`  controller: push ${j.version} to ${j.agent}: ${j.backends.join(",")}`);
      if (j.msg === "ack") console.log(`  controller: ack from ${j.agent}: ${j.backend} ${j.version} in ${j.latencyMs} ms`);
    }' "$dir/controller.log" | tail -n "${1:-2}"
}
step() { echo; echo "=== $*"; }
change() { # change PORT...: edit the catalog, time until HAProxy runs it
  local start=$(date +%s%N)
  catalog "$@"
  wait_for "$(endpoints "$@")"
  echo "HAProxy runs it $(( ($(date +%s%N) - start) / 1000000 )) ms after the catalog changed (no reload):"
  pushes 2
  show
  traffic
}

step "HAProxy as configured: four empty template slots"
show

catalog 19001 19002 19003
node dist/controller/cli/main.js controller --listen "127.0.0.1:$grpc" --catalog-file "$dir/catalog.json" --map web=be_app > "$dir/controller.log" 2>&1 &
pids+=($!)
node dist/agent/cli/main.js run --controller "127.0.0.1:$grpc" --socket "$dir/admin.sock" --id demo-edge-1 \
  --label region=local --state-dir "$dir/agent-state" --drain-period 1s > "$dir/agent.log" 2>&1 &
pids+=($!)

step "controller and agent started; the catalog lists 3 servers for service 'web'"
wait_for "$(endpoints 19001 19002 19003)"
pushes 2
show
traffic

step "scale up to 6 servers: 4 slots, then 2 dynamic servers (add server)"
change 19001 19002 19003 19004 19005 19006

step "the catalog drops to 1 server at once (83% of them): the controller holds the last good set"
catalog 19001
for _ in $(seq 50); do grep -q '"discovery answer held' "$dir/controller.log" && break; sleep 0.1; done
grep '"discovery answer held' "$dir/controller.log" | tail -n 1 | node -e 'let t="";process.stdin.on("data",c=>t+=c).on("end",()=>{const j=JSON.parse(t);console.log(`  controller: held ${j.backend}: ${j.reason}`)})'
echo "HAProxy still serves: $(serving)"

step "scale down to 3, then 2 (each step within the 50% limit): the others drain, then maintenance; dynamic servers are deleted"
change 19001 19002 19003
change 19001 19002

step "a hostile catalog entry is dropped by the controller with the reason, the rest applies"
echo '{"services":{"web":[{"address":"127.0.0.1","port":19001},{"address":"127.0.0.1;shutdown sessions server be_app/srv1","port":19002},{"address":"127.0.0.1","port":19003}]}}' > "$dir/catalog.tmp"
mv "$dir/catalog.tmp" "$dir/catalog.json"
wait_for "$(endpoints 19001 19003)"
grep '"instance dropped"' "$dir/controller.log" | tail -n 1 | node -e 'let t="";process.stdin.on("data",c=>t+=c).on("end",()=>{const j=JSON.parse(t);console.log(`  controller: dropped ${j.instance}: ${j.reason}`)})'
show

echo; echo "HAProxy was never reloaded: its process is the one started at the beginning (pid $haproxy_pid)."
