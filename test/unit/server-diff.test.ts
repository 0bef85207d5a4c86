import { describe, expect, it } from "vitest";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { buildObservedState } from "../../agent/reconcile/observed-state.js";
import { diffServers, inStep } from "../../agent/reconcile/server-diff.js";
import type { ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import type { StatRow } from "../../agent/runtime/parsers/stat-csv.js";

const READY = 4;
const DRAIN = 12;
const FREE = 5;

function observe(servers: Array<{ name: string; addr: string; port: number; admin: number }>) {
  const rows: ServerStateRow[] = servers.map((server, i) => ({ backendId: 1, backend: "be", serverId: i + 1, server: server.name, address: server.addr, opState: 2, adminState: server.admin, userWeight: 1, initialWeight: 1, checkState: 8, fqdn: null, port: server.port, columns: {} }));
  const stats: StatRow[] = [{ proxy: "be", service: "BACKEND", type: 1, status: "UP", currentSessions: 0, weight: 1, address: null, algorithm: "roundrobin", checkStatus: null, columns: {} }];
  return buildObservedState(["be"], rows, stats);
}

const want = (...ports: number[]) => parseDesiredState({ backends: [{ name: "be", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends;

describe("show --diff: desired against what HAProxy runs", () => {
  it("names each endpoint serving, held, missing or unexpected, with HAProxy's server", () => {
    const observed = observe([
      { name: "srv1", addr: "10.0.0.1", port: 80, admin: READY },
      { name: "srv2", addr: "10.0.0.1", port: 81, admin: DRAIN },
      { name: "srv3", addr: "10.0.0.1", port: 99, admin: READY },
      { name: "srv4", addr: "0.0.0.0", port: 80, admin: FREE },
    ]);
    const [diff] = diffServers(want(80, 81, 82), observed);
    expect(diff!.entries).toEqual([
      { endpoint: "10.0.0.1:80", state: "serving", server: "srv1", admin: "ready" },
      { endpoint: "10.0.0.1:81", state: "held", server: "srv2", admin: "drain" },
      { endpoint: "10.0.0.1:82", state: "missing", server: null, admin: null },
      { endpoint: "10.0.0.1:99", state: "unexpected", server: "srv3", admin: "ready" },
    ]);
    expect(inStep([diff!])).toBe(false);
  });

  it("is in step only when every desired server serves and nothing else does", () => {
    const observed = observe([{ name: "srv1", addr: "10.0.0.1", port: 80, admin: READY }, { name: "srv2", addr: "0.0.0.0", port: 80, admin: FREE }]);
    expect(inStep(diffServers(want(80), observed))).toBe(true);
  });

  it("says a backend HAProxy lacks is not there, every desired server missing", () => {
    const diff = diffServers(parseDesiredState({ backends: [{ name: "be_other", servers: [{ address: "10.0.0.1", port: 80 }] }] }, "t").backends, observe([]));
    expect(diff).toEqual([{ backend: "be_other", present: false, entries: [{ endpoint: "10.0.0.1:80", state: "missing", server: null, admin: null }] }]);
    expect(inStep(diff)).toBe(false);
  });
});
