import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredBackend } from "../../agent/model/desired-state.js";
import type { Ledger, LedgerEntry } from "../../agent/reconcile/ledger.js";
import { buildObservedState } from "../../agent/reconcile/observed-state.js";
import { planChanges, type Plan, type PlanOptions } from "../../agent/reconcile/planner.js";
import type { ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import type { StatRow } from "../../agent/runtime/parsers/stat-csv.js";

// Admin-state bit fields as HAProxy 2.6 prints them (see the notes).
const SLOT_FREE = 5; // `disabled` template slot, or put in maint
const READY = 4; // template slot after `state ready`
const DRAIN = 12;
const DYNAMIC_READY = 0;
const DYNAMIC_MAINT = 1;

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
    expect(plan.backends).toEqual([{ backend: "nope", held: [], unplaced: [{ endpoint: "10.0.0.1:80", reason: "backend-missing" }], draining: [], unmanageable: [] }]);
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
  });

  it("reuses a slot freed by maintenance for a new server", () => {
    const observed = observe({ be: { servers: [{ name: "srv1", addr: "10.0.0.1", admin: SLOT_FREE }] } });
    const plan = planChanges(desired({ be: [{ address: "10.0.0.7", port: 81 }] }), observed, ledger({ [key]: { state: "maint", endpoint: "10.0.0.1:80", since: 1 } }), OPTIONS);
    expect(commands(plan)).toEqual(["set server be/srv1 addr 10.0.0.7 port 81", "set server be/srv1 state ready"]);
    expect(plan.steps[0]!.ledger).toBeNull();
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
    expect(plan.steps[0]!.ledger).toBeNull();
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
