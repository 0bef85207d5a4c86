import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema, type Name } from "../../agent/model/values.js";
import { buildObservedState, type ObservedState } from "../../agent/reconcile/observed-state.js";
import type { BackendPlan, Plan, PlanStep, StepAction } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import type { ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import type { StatRow } from "../../agent/runtime/parsers/stat-csv.js";
import { digestOf, observedReport } from "../../agent/run/observed-report.js";
import { observedReportSchema } from "../../proto/messages.js";

const READY = 4;
const SLOT_FREE = 5;
const DRAIN = 12;

interface ServerSpec {
  name: string;
  addr: string;
  port: number;
  admin?: number;
  weight?: number;
}

function observe(backends: Record<string, ServerSpec[]>): ObservedState {
  const rows: ServerStateRow[] = [];
  const stats: StatRow[] = [];
  Object.entries(backends).forEach(([backend, servers], b) => {
    stats.push({ proxy: backend, service: "BACKEND", type: 1, status: "UP", currentSessions: 0, weight: 1, address: null, algorithm: "roundrobin", checkStatus: null, columns: {} });
    servers.forEach((server, s) => {
      rows.push({
        backendId: b + 1,
        backend,
        serverId: s + 1,
        server: server.name,
        address: server.addr,
        opState: 2,
        adminState: server.admin ?? READY,
        userWeight: server.weight ?? 1,
        initialWeight: 1,
        checkState: 8,
        fqdn: null,
        port: server.port,
        columns: {},
      });
    });
  });
  return buildObservedState(Object.keys(backends), rows, stats);
}

function desired(backends: Record<string, Array<{ address: string; port: number }>>, appliedVersion = "v1"): Array<{ name: Name; servers: DesiredServer[]; appliedVersion: string }> {
  return parseDesiredState({ backends: Object.entries(backends).map(([name, servers]) => ({ name, servers })) }, "test").backends.map((backend) => ({ ...backend, appliedVersion }));
}

function plan(backends: BackendPlan[] = [], steps: PlanStep[] = []): Plan {
  return { steps, backends, staleLedgerKeys: [], nextCheckAt: null };
}

function report(socket: string, observed: ObservedState, parts: { final?: Plan; first?: Plan } = {}): SocketReport {
  const final = parts.final ?? plan();
  return { socket, plan: parts.first ?? final, outcomes: [], final, observed, converged: true };
}

function step(backend: string, action: StepAction, endpoint: string | null): PlanStep {
  return { action, backend: nameSchema.parse(backend), server: nameSchema.parse("srv1"), endpoint, prepare: [], commit: [], ledger: undefined };
}

const want = desired({ be_app: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 80 }] });

describe("observedReport", () => {
  it("reports what serves, with no drift when HAProxy runs the desired set", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80, weight: 5 }, { name: "srv3", addr: "0.0.0.0", port: 80, admin: SLOT_FREE }] });
    const result = observedReport(want, [report("/a.sock", observed)], { repaired: false });
    expect(result.backends).toEqual([{ backend: "be_app", socket: "/a.sock", digest: digestOf(["10.0.0.1:80:1", "10.0.0.2:80:5"]), serving: 2, drift: [] }]);
    expect(observedReportSchema.safeParse(result).success).toBe(true);
    expect(result.digest).toMatch(/^[0-9a-f]{16}$/);
  });

  it("names desired servers that do not serve and serving ones that are not desired", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.9", port: 80 }, { name: "srv3", addr: "10.0.0.2", port: 80, admin: SLOT_FREE }] });
    const [entry] = observedReport(want, [report("/a.sock", observed)], { repaired: false }).backends;
    expect(entry!.serving).toBe(2);
    expect(entry!.drift).toEqual([
      { endpoint: "10.0.0.2:80", state: "missing" },
      { endpoint: "10.0.0.9:80", state: "unexpected" },
    ]);
  });

  it("names a desired server an operator holds as held, not missing", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80, admin: DRAIN }] });
    const final = plan([{ backend: "be_app", held: [{ server: "srv2", endpoint: "10.0.0.2:80", admin: "drain", desired: true }], unplaced: [], draining: [], unmanageable: [] }]);
    const [entry] = observedReport(want, [report("/a.sock", observed, { final })], { repaired: false }).backends;
    expect(entry!.drift).toEqual([{ endpoint: "10.0.0.2:80", state: "held" }]);
  });

  it("counts an operator's hand-written server as serving, not as drift: hafleet never touches it", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }, { name: "web1", addr: "10.9.9.9", port: 80 }] });
    const final = plan([{ backend: "be_app", held: [], unplaced: [], draining: [], unmanageable: [], foreign: [{ server: "web1", endpoint: "10.9.9.9:80", admin: "ready", desired: false }] }]);
    const [entry] = observedReport(want, [report("/a.sock", observed, { final })], { repaired: false }).backends;
    expect([entry!.serving, entry!.drift]).toEqual([3, []]);
  });

  it("marks every entry of a socket being repaired with the reason, and only that socket's", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] });
    const reason = "HAProxy reloaded or restarted (worker 1 -> 2)";
    const result = observedReport(want, [report("/a.sock", observed), report("/b.sock", observed)], { repaired: false, repairing: new Map([["/b.sock", reason]]) });
    expect(result.backends.map((entry) => [entry.socket, entry.repairing])).toEqual([["/a.sock", undefined], ["/b.sock", reason]]);
    expect(result.digest).not.toBe(observedReport(want, [report("/a.sock", observed), report("/b.sock", observed)], { repaired: false }).digest);
  });

  it("counts a draining server hafleet removes as neither serving nor drift", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }, { name: "srv3", addr: "10.0.0.3", port: 80, admin: DRAIN }] });
    const [entry] = observedReport(want, [report("/a.sock", observed)], { repaired: false }).backends;
    expect([entry!.serving, entry!.drift]).toEqual([2, []]);
  });

  it("reports every desired server missing where HAProxy lacks the backend", () => {
    const [entry] = observedReport(want, [report("/a.sock", observe({ other: [] }))], { repaired: false }).backends;
    expect(entry).toMatchObject({ serving: 0, digest: digestOf([]), drift: [{ endpoint: "10.0.0.1:80", state: "missing" }, { endpoint: "10.0.0.2:80", state: "missing" }] });
  });

  it("brackets IPv6 endpoints", () => {
    const v6 = desired({ be_app: [{ address: "2001:db8::1", port: 80 }] });
    const [entry] = observedReport(v6, [report("/a.sock", observe({ be_app: [] }))], { repaired: false }).backends;
    expect(entry!.drift).toEqual([{ endpoint: "[2001:db8::1]:80", state: "missing" }]);
  });

  it("on a resync, counts what had to be repaired as drift, though it serves again", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] });
    const first = plan([], [step("be_app", "fill-slot", "10.0.0.1:80"), step("be_app", "drain", "10.0.0.7:80"), step("be_app", "set-weight", "10.0.0.2:80"), step("be_app", "maint", "10.0.0.8:80"), step("other", "fill-slot", "10.0.0.5:80")]);
    const socket = report("/a.sock", observed, { first });
    expect(observedReport(want, [socket], { repaired: true }).backends[0]!.drift).toEqual([
      { endpoint: "10.0.0.1:80", state: "missing" },
      { endpoint: "10.0.0.7:80", state: "unexpected" },
    ]);
    // After a push the same steps are the push's own changes, not drift.
    expect(observedReport(want, [socket], { repaired: false }).backends[0]!.drift).toEqual([]);
  });

  it("has one entry per desired backend per socket, sorted by backend", () => {
    const two = desired({ be_b: [], be_a: [] });
    const result = observedReport(two, [report("/1.sock", observe({})), report("/3.sock", observe({}))], { repaired: false });
    expect(result.backends.map((entry) => `${entry.backend}@${entry.socket}`)).toEqual(["be_a@/1.sock", "be_a@/3.sock", "be_b@/1.sock", "be_b@/3.sock"]);
  });

  it("reports a socket it cannot read as serving nothing, every desired server missing", () => {
    const result = observedReport(want, [{ socket: "/down.sock", error: "cannot connect to HAProxy at /down.sock" }], { repaired: false });
    expect(result.backends).toEqual([
      { backend: "be_app", socket: "/down.sock", digest: digestOf([]), serving: 0, drift: [{ endpoint: "10.0.0.1:80", state: "missing" }, { endpoint: "10.0.0.2:80", state: "missing" }] },
    ]);
    const up = observedReport(want, [report("/down.sock", observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] }))], { repaired: false });
    expect(up.digest).not.toBe(result.digest);
  });

  it("carries the version each backend applied last, in its digest too", () => {
    const observed = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] });
    const v1 = observedReport(want, [report("/a.sock", observed)], { repaired: false });
    const v2 = observedReport(desired({ be_app: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 80 }] }, "v2"), [report("/a.sock", observed)], { repaired: false });
    expect([v1.appliedVersions, v2.appliedVersions]).toEqual([{ be_app: "v1" }, { be_app: "v2" }]);
    expect(v2.digest).not.toBe(v1.digest);
  });

  it("changes the top-level digest with what serves, weights and drift, and only with them", () => {
    const base = observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] });
    const digest = (observed: ObservedState, socket = "/a.sock") => observedReport(want, [report(socket, observed)], { repaired: false }).digest;
    const same = observe({ be_app: [{ name: "srvB", addr: "10.0.0.2", port: 80 }, { name: "srvA", addr: "10.0.0.1", port: 80 }] });
    expect(digest(same)).toBe(digest(base));
    expect(digest(observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80, weight: 9 }, { name: "srv2", addr: "10.0.0.2", port: 80 }] }))).not.toBe(digest(base));
    expect(digest(observe({ be_app: [{ name: "srv1", addr: "10.0.0.1", port: 80 }] }))).not.toBe(digest(base));
    expect(digest(base, "/b.sock")).not.toBe(digest(base));
  });

  it("digests sorted lines, so the order servers are listed in does not matter", () => {
    expect(digestOf(["b", "a"])).toBe(digestOf(["a", "b"]));
    expect(digestOf(["a"])).not.toBe(digestOf(["a", "a"]));
  });
});
