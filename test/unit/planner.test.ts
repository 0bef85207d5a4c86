import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredBackend } from "../../agent/model/desired-state.js";
import type { Ledger, LedgerEntry } from "../../agent/reconcile/ledger.js";
import { buildObservedState } from "../../agent/reconcile/observed-state.js";
import { planChanges, type Plan, type PlanOptions } from "../../agent/reconcile/planner.js";
import type { ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import type { StatRow } from "../../agent/runtime/parsers/stat-csv.js";

// Admin-state bit fields as HAProxy 2.6 prints them (see the notes). Template slots are
// declared `disabled`, which HAProxy keeps as bit 0x04 whatever their runtime state.
const SLOT_FREE = 5; // `disabled` template slot, or put in maint
const READY = 4; // template slot after `state ready`
const DRAIN = 12;
const DYNAMIC_READY = 0;
const DYNAMIC_MAINT = 1;
// A server line without `disabled` (an operator's `server web1 10.0.0.1:80`), per runtime state.
const LINE_READY = 0;
const LINE_MAINT = 1;
const LINE_DRAIN = 8;

interface ServerSpec {
  name: string;
  addr?: string;
  port?: number;
  admin?: number;
  weight?: number;
  iweight?: number;
  /** null: not read (HAProxy's stat row missing). */
  sessions?: number | null;
  check?: boolean;
}

function observe(backends: Record<string, { algorithm?: string; servers: ServerSpec[] }>) {
  const rows: ServerStateRow[] = [];
  const stats: StatRow[] = [];
  Object.entries(backends).forEach(([backend, spec], b) => {
    stats.push(statRow(backend, "BACKEND", spec.algorithm ?? "roundrobin", 0));
    spec.servers.forEach((server, s) => {
      rows.push({
        backendId: b + 1,
        backend,
        serverId: s + 1,
        server: server.name,
        address: server.addr ?? "0.0.0.0",
        opState: 0,
        adminState: server.admin ?? SLOT_FREE,
        userWeight: server.weight ?? 1,
        initialWeight: server.iweight ?? 1,
        checkState: server.check ? 14 : 8,
        fqdn: null,
        port: server.port ?? 80,
        columns: {},
      });
      if (server.sessions !== null) stats.push(statRow(backend, server.name, null, server.sessions ?? 0));
    });
  });
  return buildObservedState(Object.keys(backends), rows, stats);
}

function statRow(proxy: string, service: string, algorithm: string | null, sessions: number): StatRow {
  return { proxy, service, type: service === "BACKEND" ? 1 : 2, status: "UP", currentSessions: sessions, weight: 1, address: null, algorithm, checkStatus: null, columns: {} };
}

function desired(backends: Record<string, Array<{ address: string; port: number; weight?: number }>>): DesiredBackend[] {
  return parseDesiredState({ backends: Object.entries(backends).map(([name, servers]) => ({ name, servers })) }, "test").backends;
}

const OPTIONS: PlanOptions = { now: 1_000_000, drainMs: 5_000, allowEmpty: false };

function commands(plan: Plan): string[] {
  return plan.steps.flatMap((step) => [...step.prepare, ...step.commit].map((command) => command.text));
}

function ledger(entries: Record<string, LedgerEntry>): Ledger {
  return new Map(Object.entries(entries));
}

const threeFreeSlots = { servers: [{ name: "srv1" }, { name: "srv2" }, { name: "srv3" }] };

describe("placing servers", () => {
  it("fills free template slots in slot order with address, port and ready", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 8080 }, { address: "10.0.0.2", port: 8081 }] }), observe({ be: threeFreeSlots }), new Map(), OPTIONS);
    expect(commands(plan)).toEqual([
      "set server be/srv1 addr 10.0.0.1 port 8080",
      "set server be/srv1 state ready",
      "set server be/srv2 addr 10.0.0.2 port 8081",
      "set server be/srv2 state ready",
    ]);
    expect(plan.steps.map((step) => [step.action, step.server, step.endpoint])).toEqual([
      ["fill-slot", "srv1", "10.0.0.1:8080"],
      ["fill-slot", "srv2", "10.0.0.2:8081"],
    ]);
    expect(plan.steps[0]!.prepare.map((c) => c.text)).toEqual(["set server be/srv1 addr 10.0.0.1 port 8080"]);
    expect(plan.steps[0]!.commit.map((c) => c.text)).toEqual(["set server be/srv1 state ready"]);
  });

  it("sets the weight when given, and the slot's configured weight otherwise", () => {
    const observed = observe({ be: { servers: [{ name: "s1", weight: 7, iweight: 10 }, { name: "s2", weight: 10, iweight: 10 }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 50 }, { address: "10.0.0.2", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.prepare.map((c) => c.text))).toEqual([
      ["set server be/s1 addr 10.0.0.1 port 80", "set server be/s1 weight 50"],
      ["set server be/s2 addr 10.0.0.2 port 80"],
    ]);
  });

  it("adds dynamic servers named after their endpoint when slots run out, with check where the backend checks", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", check: true, iweight: 100, weight: 100 }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }, { address: "2001:db8::5", port: 443 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["fill-slot", "add-server"]);
    const add = plan.steps[1]!;
    expect(add.server).toBe("hafleet-2001_db8__5-443");
    expect(add.prepare.map((c) => c.text)).toEqual(["add server be/hafleet-2001_db8__5-443 [2001:db8::5]:443 weight 100 check"]);
    expect(add.commit.map((c) => c.text)).toEqual(["enable health be/hafleet-2001_db8__5-443", "set server be/hafleet-2001_db8__5-443 state ready"]);
  });

  it("adds without check where the backend's servers have none", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 3 }] }), observe({ be: { servers: [] } }), new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["add server be/hafleet-10.0.0.1-80 10.0.0.1:80 weight 3", "set server be/hafleet-10.0.0.1-80 state ready"]);
  });

  it("reports servers it cannot place on a static-rr backend instead of sending add server", () => {
    const observed = observe({ be: { algorithm: "static-rr", servers: [{ name: "s1" }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["fill-slot"]);
    expect(plan.backends[0]!.unplaced).toEqual([{ endpoint: "10.0.0.2:80", reason: "no-free-slot" }]);
  });

  it("treats a backend that refused add server once like a static one", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observe({ be: { algorithm: "source", servers: [] } }), new Map(), { ...OPTIONS, refusesDynamic: new Set(["be"]) });
    expect(plan.steps).toEqual([]);
    expect(plan.backends[0]!.unplaced).toEqual([{ endpoint: "10.0.0.1:80", reason: "no-free-slot" }]);
  });

  it("reports every server of a backend HAProxy does not have", () => {
    const plan = planChanges(desired({ nope: [{ address: "10.0.0.1", port: 80 }] }), observe({ be: threeFreeSlots }), new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.backends).toEqual([{ backend: "nope", held: [], unplaced: [{ endpoint: "10.0.0.1:80", reason: "backend-missing" }], draining: [], unmanageable: [], foreign: [] }]);
  });

  it("leaves backends that are not in the desired state alone", () => {
    const plan = planChanges(desired({}), observe({ other: { servers: [{ name: "a", addr: "10.9.9.9", admin: READY }] } }), new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
  });
});

describe("keeping what runs", () => {
  const running = {
    servers: [
      { name: "srv1", addr: "10.0.0.1", port: 80, admin: READY },
      { name: "srv2", addr: "10.0.0.2", port: 80, admin: READY },
      { name: "srv3" },
    ],
  };

  it("sends nothing when HAProxy already runs the desired state (idempotent)", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.2", port: 80 }, { address: "10.0.0.1", port: 80 }] }), observe({ be: running }), new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.nextCheckAt).toBeNull();
  });

  it("keeps a server on its slot when others change (no churn)", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.2", port: 80 }, { address: "10.0.0.3", port: 80 }] }), observe({ be: running }), new Map(), OPTIONS);
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([
      ["fill-slot", "srv3"],
      ["drain", "srv1"],
    ]);
  });

  it("changes only the weight when only the weight changed", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 20 }, { address: "10.0.0.2", port: 80 }] }), observe({ be: running }), new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 weight 20"]);
  });

  it("leaves weights alone on static-rr backends, which take only 0% or 100% at runtime", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 20 }] }), observe({ be: { algorithm: "static-rr", servers: [running.servers[0]!] } }), new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
  });

  it("matches IPv6 endpoints in HAProxy's canonical form", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "2001:db8::1", port: 80, admin: READY }] } });
    expect(planChanges(desired({ be: [{ address: "2001:DB8:0:0::1", port: 80 }] }), observed, new Map(), OPTIONS).steps).toEqual([]);
  });

  it("serves a duplicated endpoint once and drains the copy", () => {
    const observed = observe({ be: { servers: [{ name: "a", addr: "10.0.0.1", admin: READY }, { name: "b", addr: "10.0.0.1", admin: READY }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([["drain", "b"]]);
  });
});

describe("removing servers", () => {
  const key = "be/srv1";
  const draining = (sessions: number) => observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN, sessions }, { name: "srv2", addr: "10.0.0.2", admin: READY }] } });
  const stillWanted = desired({ be: [{ address: "10.0.0.2", port: 80 }] });

  it("drains first, records it, and says when to look again", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }, { name: "srv2", addr: "10.0.0.2", admin: READY }] } });
    const plan = planChanges(stillWanted, observed, new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 state drain"]);
    expect(plan.steps[0]!.ledger).toEqual({ state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now });
    expect(plan.nextCheckAt).toBe(OPTIONS.now + OPTIONS.drainMs);
  });

  it("waits while its own drain has sessions and time left", () => {
    const plan = planChanges(stillWanted, draining(3), ledger({ [key]: { state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now - 1_000 } }), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.backends[0]!.draining).toEqual([{ server: "srv1", endpoint: "10.0.0.1:80", until: OPTIONS.now + 4_000 }]);
    expect(plan.nextCheckAt).toBe(OPTIONS.now + 4_000);
  });

  it("puts its own drained server in maintenance once sessions reach zero", () => {
    const plan = planChanges(stillWanted, draining(0), ledger({ [key]: { state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now - 1_000 } }), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 state maint"]);
    expect(plan.steps[0]!.ledger).toEqual({ state: "maint", endpoint: "10.0.0.1:80", since: OPTIONS.now - 1_000 });
  });

  it("waits for the drain period when the sessions could not be read", () => {
    const plan = planChanges(stillWanted, observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN, sessions: null }] } }), ledger({ [key]: { state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now - 1_000 } }), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["add-server"]);
    expect(plan.nextCheckAt).toBe(OPTIONS.now + 4_000);
  });

  it("puts its own drained server in maintenance when the drain period is over, sessions or not", () => {
    const plan = planChanges(stillWanted, draining(9), ledger({ [key]: { state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now - 5_000 } }), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 state maint"]);
  });

  it("deletes dynamic servers once in maintenance, but never a configured one", () => {
    const observed = observe({
      be: {
        servers: [
          { name: "hafleet-10.0.0.9-80", addr: "10.0.0.9", admin: DYNAMIC_MAINT },
          { name: "srv1", addr: "10.0.0.8", admin: SLOT_FREE },
          { name: "srv2", addr: "10.0.0.2", admin: READY },
        ],
      },
    });
    const plan = planChanges(stillWanted, observed, new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["del server be/hafleet-10.0.0.9-80"]);
    // HAProxy 3.0+: the deletion waits for the server's last connections, in the same step.
    expect(commands(planChanges(stillWanted, observed, new Map(), { ...OPTIONS, waitRemovableMs: 2_000 }))).toEqual(["wait 2000 srv-removable be/hafleet-10.0.0.9-80", "del server be/hafleet-10.0.0.9-80"]);
  });

  it("reuses a slot freed by maintenance for a new server", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: SLOT_FREE }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.7", port: 81 }] }), observed, ledger({ [key]: { state: "maint", endpoint: "10.0.0.1:80", since: 1 } }), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 addr 10.0.0.7 port 81", "set server be/srv1 state ready"]);
    expect(plan.steps[0]!.ledger).toEqual({ state: "ready", endpoint: "10.0.0.7:81", since: OPTIONS.now, weight: null });
  });

  it("orders new capacity before removals", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }, { name: "srv2" }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["fill-slot", "drain"]);
  });

  it("refuses to empty a backend that serves traffic unless allowed", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }] } });
    const refused = planChanges(desired({ be: [] }), observed, new Map(), OPTIONS);
    expect(refused.steps).toEqual([]);
    expect(refused.backends[0]!.unplaced).toEqual([{ endpoint: "*", reason: "empty-refused" }]);
    const allowed = planChanges(desired({ be: [] }), observed, new Map(), { ...OPTIONS, allowEmpty: true });
    expect(commands(allowed)).toEqual(["set server be/srv1 state drain"]);
    const allowedHere = planChanges(desired({ be: [] }), observed, new Map(), { ...OPTIONS, allowEmptyBackends: new Set(["be"]) });
    expect(commands(allowedHere)).toEqual(["set server be/srv1 state drain"]);
    const allowedElsewhere = planChanges(desired({ be: [] }), observed, new Map(), { ...OPTIONS, allowEmptyBackends: new Set(["other"]) });
    expect(allowedElsewhere.steps).toEqual([]);
  });

  it("on a backend with no slot to grow into, keeps the last serving server until a new one is up", () => {
    const full = observe({
      be: { algorithm: "static-rr", servers: [{ name: "s1", addr: "10.0.0.1", admin: READY }, { name: "s2", addr: "10.0.0.2", admin: READY }] },
    });
    const moved = desired({ be: [{ address: "10.0.0.3", port: 80 }, { address: "10.0.0.4", port: 80 }] });
    const first = planChanges(moved, full, new Map(), OPTIONS);
    expect(first.steps.map((step) => [step.action, step.server])).toEqual([["drain", "s2"]]);

    const oneFree = observe({ be: { algorithm: "static-rr", servers: [{ name: "s1", addr: "10.0.0.1", admin: READY }, { name: "s2", addr: "10.0.0.2", admin: SLOT_FREE }] } });
    const second = planChanges(moved, oneFree, ledger({ "be/s2": { state: "maint", endpoint: "10.0.0.2:80", since: 1 } }), OPTIONS);
    expect(second.steps.map((step) => [step.action, step.server, step.endpoint])).toEqual([
      ["fill-slot", "s2", "10.0.0.3:80"],
      ["drain", "s1", "10.0.0.1:80"],
    ]);
  });
});

describe("operator-held servers", () => {
  it("leaves an operator's drain or maintenance on a desired server alone and reports it", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN }, { name: "srv2", addr: "10.0.0.2", admin: SLOT_FREE }, { name: "srv3" }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.backends[0]!.held).toEqual([
      { server: "srv1", endpoint: "10.0.0.1:80", admin: "drain", desired: true },
      { server: "srv2", endpoint: "10.0.0.2:80", admin: "maint", desired: true },
    ]);
  });

  it("leaves an operator's drain alone even when the server is no longer desired", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["add-server"]);
    expect(plan.backends[0]!.held).toEqual([{ server: "srv1", endpoint: "10.0.0.1:80", admin: "drain", desired: false }]);
  });

  it("brings back a server it drained itself when its endpoint is desired again", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN, weight: 1, iweight: 1 }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 9 }] }), observed, ledger({ "be/srv1": { state: "drain", endpoint: "10.0.0.1:80", since: 1 } }), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 weight 9", "set server be/srv1 state ready"]);
    expect(plan.steps[0]!.ledger).toEqual({ state: "ready", endpoint: "10.0.0.1:80", since: OPTIONS.now, weight: 9 });
  });

  it("after a reload, brings back a server a stale state file put back in maintenance, and still holds the operator's", () => {
    const served = { "be/srv1": { state: "ready" as const, endpoint: "10.0.0.1:80", since: 1, weight: null }, "be/srv2": { state: "ready" as const, endpoint: "10.0.0.2:80", since: 1, weight: null } };
    // The old worker ran srv1 ready and srv2 in the operator's drain; the new one restored both to maintenance.
    const before = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }, { name: "srv2", addr: "10.0.0.2", admin: DRAIN }] } });
    const after = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: SLOT_FREE }, { name: "srv2", addr: "10.0.0.2", admin: SLOT_FREE }] } });
    const want = desired({ be: [{ address: "10.0.0.1", port: 80 }, { address: "10.0.0.2", port: 80 }] });
    const plan = planChanges(want, after, ledger(served), { ...OPTIONS, previous: before });
    expect(commands(plan)).toEqual(["set server be/srv1 state ready"]);
    expect(plan.backends[0]!.held).toEqual([{ server: "srv2", endpoint: "10.0.0.2:80", admin: "maint", desired: true }]);
    // Without knowing what the replaced process ran, a maintenance hafleet did not set is the operator's.
    expect(commands(planChanges(want, after, ledger(served), OPTIONS))).toEqual([]);
  });

  it("ignores a ledger entry whose endpoint no longer matches (an operator moved the server)", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.2", admin: DRAIN }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.2", port: 80 }] }), observed, ledger({ "be/srv1": { state: "drain", endpoint: "10.0.0.1:80", since: 1 } }), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.backends[0]!.held).toHaveLength(1);
    expect(plan.staleLedgerKeys).toEqual(["be/srv1"]);
  });

  it("never puts a server whose name cannot be used in a command in any command", () => {
    const observed = observe({ be: { servers: [{ name: "bad name", addr: "10.0.0.1", admin: READY }, { name: "ok;x", admin: SLOT_FREE }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.3", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["add server be/hafleet-10.0.0.3-80 10.0.0.3:80 weight 1", "set server be/hafleet-10.0.0.3-80 state ready"]);
    expect(plan.backends[0]!.unmanageable).toEqual(["bad name", "ok;x"]);
  });
});

describe("dynamic servers already present", () => {
  it("keeps a ready dynamic server that is desired", () => {
    const observed = observe({ be: { servers: [{ name: "hafleet-10.0.0.1-80", addr: "10.0.0.1", admin: DYNAMIC_READY }] } });
    expect(planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observed, new Map(), OPTIONS).steps).toEqual([]);
  });
});

describe("servers hafleet did not place", () => {
  // An operator's hand-written lines next to two template slots.
  const mixed = (extra: Partial<Record<"web1" | "web2", Partial<ServerSpec>>> = {}) =>
    observe({
      be: {
        servers: [
          { name: "web1", addr: "10.0.0.1", admin: LINE_READY, weight: 100, iweight: 100, ...extra.web1 },
          { name: "web2", addr: "10.0.0.2", admin: LINE_READY, weight: 100, iweight: 100, ...extra.web2 },
          { name: "srv1", iweight: 10, weight: 10 },
          { name: "srv2", iweight: 10, weight: 10 },
        ],
      },
    });
  const foreignOf = (plan: Plan) => plan.backends[0]!.foreign!;

  it("fills only the template slots, never drains the hand-written servers, and reports them", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), mixed(), new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 addr 10.0.0.5 port 80", "set server be/srv1 state ready"]);
    expect(foreignOf(plan)).toEqual([
      { server: "web1", endpoint: "10.0.0.1:80", admin: "ready", desired: false },
      { server: "web2", endpoint: "10.0.0.2:80", admin: "ready", desired: false },
    ]);
  });

  it("grows past the slots with dynamic servers weighted like the slots, not like the hand-written lines", () => {
    const plan = planChanges(desired({ be: ["10.0.0.5", "10.0.0.6", "10.0.0.7"].map((address) => ({ address, port: 80 })) }), mixed(), new Map(), OPTIONS);
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([
      ["fill-slot", "srv1"],
      ["fill-slot", "srv2"],
      ["add-server", "hafleet-10.0.0.7-80"],
    ]);
    expect(plan.steps[2]!.prepare.map((c) => c.text)).toEqual(["add server be/hafleet-10.0.0.7-80 10.0.0.7:80 weight 10"]);
  });

  it("counts a hand-written server on a desired endpoint as serving it: no copy, no weight change", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80, weight: 7 }, { address: "10.0.0.5", port: 80 }] }), mixed(), new Map(), OPTIONS);
    expect(plan.steps.map((step) => [step.action, step.server, step.endpoint])).toEqual([["fill-slot", "srv1", "10.0.0.5:80"]]);
    expect(foreignOf(plan)[0]).toEqual({ server: "web1", endpoint: "10.0.0.1:80", admin: "ready", desired: true });
  });

  it("places no copy of a desired endpoint whose hand-written server an operator took out, and reports it held", () => {
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), mixed({ web1: { admin: LINE_MAINT } }), new Map(), OPTIONS);
    expect(plan.steps).toEqual([]);
    expect(plan.backends[0]!.held).toEqual([{ server: "web1", endpoint: "10.0.0.1:80", admin: "maint", desired: true }]);
  });

  it("never takes a hand-written server in maintenance as a free slot", () => {
    const observed = observe({ be: { servers: [{ name: "web1", addr: "10.0.0.1", admin: LINE_MAINT }, { name: "web2", addr: "10.0.0.2", admin: LINE_DRAIN }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["add server be/hafleet-10.0.0.5-80 10.0.0.5:80 weight 1", "set server be/hafleet-10.0.0.5-80 state ready"]);
    expect(plan.backends[0]!.held).toEqual([]);
  });

  it("ignores and drops an earlier version's ledger entries on hand-written servers (the drains it should never have made)", () => {
    const observed = mixed({ web1: { admin: LINE_DRAIN, sessions: 0 }, web2: { admin: LINE_MAINT } });
    const old = ledger({ "be/web1": { state: "drain", endpoint: "10.0.0.1:80", since: 1 }, "be/web2": { state: "maint", endpoint: "10.0.0.2:80", since: 1 } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }, { address: "10.0.0.6", port: 80 }, { address: "10.0.0.7", port: 80 }] }), observed, old, OPTIONS);
    expect(plan.steps.map((step) => step.server)).toEqual(["srv1", "srv2", "hafleet-10.0.0.7-80"]);
    expect(plan.staleLedgerKeys).toEqual(["be/web1", "be/web2"]);
  });

  it("leaves an operator's own dynamic server alone, whatever its state", () => {
    const observed = observe({ be: { servers: [{ name: "extra1", addr: "10.0.0.9", admin: DYNAMIC_MAINT }, { name: "extra2", addr: "10.0.0.8", admin: DYNAMIC_READY }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["add-server"]);
    expect(foreignOf(plan).map((server) => server.server)).toEqual(["extra1", "extra2"]);
  });

  it("takes a server declared `disabled` as a template slot, even one written by hand", () => {
    const observed = observe({ be: { servers: [{ name: "spare", addr: "10.0.0.1", admin: SLOT_FREE }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/spare addr 10.0.0.5 port 80", "set server be/spare state ready"]);
  });

  it("with an empty desired set, drains only its own servers, and refuses only when its own serve", () => {
    const filled = mixed();
    const own = observe({ be: { servers: [{ name: "web1", addr: "10.0.0.1", admin: LINE_READY }, { name: "srv1", addr: "10.0.0.5", admin: READY }] } });
    expect(planChanges(desired({ be: [] }), filled, new Map(), OPTIONS).backends[0]!.unplaced).toEqual([]);
    expect(planChanges(desired({ be: [] }), own, new Map(), OPTIONS).backends[0]!.unplaced).toEqual([{ endpoint: "*", reason: "empty-refused" }]);
    expect(commands(planChanges(desired({ be: [] }), own, new Map(), { ...OPTIONS, allowEmpty: true }))).toEqual(["set server be/srv1 state drain"]);
  });

  it("drains its own copy of an endpoint a hand-written server already serves", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }, { name: "web1", addr: "10.0.0.1", admin: LINE_READY }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observed, new Map(), OPTIONS);
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([["drain", "srv1"]]);
  });

  it("counts a serving hand-written server when a full static backend recycles its slots", () => {
    const observed = observe({ be: { algorithm: "static-rr", servers: [{ name: "web1", addr: "10.0.0.1", admin: LINE_READY }, { name: "s1", addr: "10.0.0.2", admin: READY }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.3", port: 80 }] }), observed, new Map(), OPTIONS);
    // web1 keeps the backend serving, so hafleet's last server may go to free its slot.
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([["drain", "s1"]]);
    expect(plan.backends[0]!.unplaced).toEqual([{ endpoint: "10.0.0.3:80", reason: "no-free-slot" }]);
  });

  it("owns every server of a config it rendered (hybrid mode), where filled slots lose `disabled`", () => {
    const rendered = { ...OPTIONS, configRendered: true };
    const plan = planChanges(desired({ be: [{ address: "10.0.0.5", port: 80 }] }), mixed(), new Map(), rendered);
    expect(plan.steps.map((step) => [step.action, step.server])).toEqual([
      ["fill-slot", "srv1"],
      ["drain", "web1"],
      ["drain", "web2"],
    ]);
    expect(foreignOf(plan)).toEqual([]);
  });
});

describe("weights it did not set", () => {
  const serving = (spec: Partial<ServerSpec>) => observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY, iweight: 100, ...spec }] } });
  const recorded = (weight: number | null | undefined, state: LedgerEntry["state"] = "ready") => ledger({ "be/srv1": { state, endpoint: "10.0.0.1:80", since: 5, weight: weight as LedgerEntry["weight"] } });
  const want = (weight?: number) => desired({ be: [{ address: "10.0.0.1", port: 80, ...(weight === undefined ? {} : { weight }) }] });

  it("leaves a weight agent-check or an operator set when no weight is desired, recorded or not", () => {
    expect(planChanges(want(), serving({ weight: 50 }), new Map(), OPTIONS).steps).toEqual([]);
    expect(planChanges(want(), serving({ weight: 50 }), recorded(null), OPTIONS).steps).toEqual([]);
  });

  it("leaves it when the desired weight is the one hafleet applied last", () => {
    expect(planChanges(want(80), serving({ weight: 50 }), recorded(80), OPTIONS).steps).toEqual([]);
  });

  it("applies a desired weight that changed, and records it", () => {
    const plan = planChanges(want(90), serving({ weight: 50 }), recorded(80), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 weight 90"]);
    expect(plan.steps[0]!.ledger).toEqual({ state: "ready", endpoint: "10.0.0.1:80", since: 5, weight: 90 });
  });

  it("sends a changed desired weight even when it runs already, so the ledger records it", () => {
    expect(commands(planChanges(want(50), serving({ weight: 50 }), recorded(null), OPTIONS))).toEqual(["set server be/srv1 weight 50"]);
  });

  it("goes back to the configured weight when a desired weight is dropped", () => {
    const plan = planChanges(want(), serving({ weight: 80 }), recorded(80), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 weight 100"]);
    expect(plan.steps[0]!.ledger).toMatchObject({ weight: null });
  });

  it("with nothing recorded, applies an explicit desired weight only where it does not run", () => {
    expect(commands(planChanges(want(20), serving({ weight: 50 }), new Map(), OPTIONS))).toEqual(["set server be/srv1 weight 20"]);
    expect(planChanges(want(20), serving({ weight: 20 }), new Map(), OPTIONS).steps).toEqual([]);
    expect(commands(planChanges(want(20), serving({ weight: 50 }), recorded(undefined, "ready"), OPTIONS))).toEqual(["set server be/srv1 weight 20"]);
  });

  it("records the weight of every server it places", () => {
    const fill = planChanges(want(30), observe({ be: { servers: [{ name: "srv1" }] } }), new Map(), OPTIONS);
    expect(fill.steps[0]!.ledger).toEqual({ state: "ready", endpoint: "10.0.0.1:80", since: OPTIONS.now, weight: 30 });
    const add = planChanges(want(), observe({ be: { servers: [] } }), new Map(), OPTIONS);
    expect(add.steps[0]!.ledger).toEqual({ state: "ready", endpoint: "10.0.0.1:80", since: OPTIONS.now, weight: null });
  });

  it("keeps the recorded weight through a drain and brings the server back without touching it", () => {
    const drain = planChanges(desired({ be: [{ address: "10.0.0.2", port: 80 }] }), serving({ weight: 50 }), recorded(80), OPTIONS);
    expect(drain.steps.find((step) => step.action === "drain")!.ledger).toEqual({ state: "drain", endpoint: "10.0.0.1:80", since: OPTIONS.now, weight: 80 });
    const back = planChanges(want(80), serving({ admin: DRAIN, weight: 50 }), recorded(80, "drain"), OPTIONS);
    expect(commands(back)).toEqual(["set server be/srv1 state ready"]);
  });

  it("changes no weight on a static-rr backend", () => {
    const observed = observe({ be: { algorithm: "static-rr", servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY, weight: 1 }] } });
    expect(planChanges(want(90), observed, recorded(80), OPTIONS).steps).toEqual([]);
  });
});

describe("what the ledger records", () => {
  it("keeps the entry of a server it placed while it serves, and holds an operator's drain of it", () => {
    const entry = { state: "ready" as const, endpoint: "10.0.0.1:80", since: 5, weight: null };
    const serving = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }] } });
    expect(planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), serving, ledger({ "be/srv1": entry }), OPTIONS).staleLedgerKeys).toEqual([]);
    const drained = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: DRAIN, sessions: 0 }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.2", port: 80 }] }), drained, ledger({ "be/srv1": entry }), OPTIONS);
    expect(plan.steps.map((step) => step.action)).toEqual(["add-server"]);
    expect(plan.backends[0]!.held).toEqual([{ server: "srv1", endpoint: "10.0.0.1:80", admin: "drain", desired: false }]);
  });

  it("drops a drain it set once the server runs again: a later drain is an operator's", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: READY }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observed, ledger({ "be/srv1": { state: "drain", endpoint: "10.0.0.1:80", since: 5 } }), OPTIONS);
    expect(plan.staleLedgerKeys).toEqual(["be/srv1"]);
  });

  it("drops entries of servers that are gone or moved, only in desired backends", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.9", admin: READY }] }, other: { servers: [] } });
    const entries = ledger({
      "be/srv1": { state: "ready", endpoint: "10.0.0.1:80", since: 5, weight: null },
      "be/hafleet-10.0.0.3-80": { state: "ready", endpoint: "10.0.0.3:80", since: 5, weight: null },
      "other/srv1": { state: "maint", endpoint: "10.0.0.1:80", since: 5 },
    });
    expect(planChanges(desired({ be: [{ address: "10.0.0.9", port: 80 }] }), observed, entries, OPTIONS).staleLedgerKeys).toEqual(["be/srv1", "be/hafleet-10.0.0.3-80"]);
  });
});

describe("IPv4-mapped IPv6 addresses", () => {
  it("matches a slot HAProxy runs on ::ffff:a.b.c.d with the desired IPv4 address, either way", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "::ffff:10.0.0.1", admin: READY }] } });
    expect(planChanges(desired({ be: [{ address: "10.0.0.1", port: 80 }] }), observed, new Map(), OPTIONS).steps).toEqual([]);
    expect(planChanges(desired({ be: [{ address: "::ffff:10.0.0.1", port: 80 }] }), observed, new Map(), OPTIONS).steps).toEqual([]);
  });

  it("sends the IPv4 form, and names a dynamic server after it", () => {
    const plan = planChanges(desired({ be: [{ address: "::FFFF:0a00:0002", port: 80 }] }), observe({ be: { servers: [] } }), new Map(), OPTIONS);
    expect(commands(plan)[0]).toBe("add server be/hafleet-10.0.0.2-80 10.0.0.2:80");
  });
});
