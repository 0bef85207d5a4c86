import { describe, expect, it } from "vitest";
import { nameSchema } from "../../agent/model/values.js";
import type { StepOutcome } from "../../agent/reconcile/execute-plan.js";
import { buildObservedState } from "../../agent/reconcile/observed-state.js";
import type { PlanStep, StepAction } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import type { ServerStateRow } from "../../agent/runtime/parsers/servers-state.js";
import type { StatRow } from "../../agent/runtime/parsers/stat-csv.js";
import { repairedServers } from "../../agent/run/agent-runner.js";
import { inventoryOf, toReconcileInput } from "../../agent/run/applier.js";
import { emptyDesiredSet, mergePush } from "../../agent/run/local-store.js";
import { desiredPushSchema, helloSchema } from "../../proto/messages.js";

describe("toReconcileInput", () => {
  const set = mergePush(
    emptyDesiredSet(),
    desiredPushSchema.parse({
      nonce: "n",
      version: "set-7",
      removedBackends: [],
      backends: [
        { name: "be_z", version: "z1", allowEmpty: true, servers: [] },
        { name: "be_a", version: "a1", allowEmpty: false, servers: [{ address: "10.0.0.1", port: 80, weight: 3 }] },
      ],
    }),
  );

  it("gives the reconciler the backends sorted by name, with the set's version", () => {
    const { desired } = toReconcileInput(set);
    expect(desired).toEqual({ version: "set-7", backends: [{ name: "be_a", servers: [{ address: "10.0.0.1", port: 80, weight: 3 }] }, { name: "be_z", servers: [] }] });
  });

  it("allows emptying exactly the backends the controller allowed", () => {
    expect(toReconcileInput(set).allowEmptyBackends).toEqual(new Set(["be_z"]));
  });
});

function row(backend: string, backendId: number, server: string, serverId: number, adminState: number): ServerStateRow {
  return { backendId, backend, serverId, server, address: "10.0.0.1", opState: 2, adminState, userWeight: 1, initialWeight: 1, checkState: 8, fqdn: null, port: 80, columns: {} };
}

function backendStat(proxy: string, algorithm: string | null): StatRow {
  return { proxy, service: "BACKEND", type: 1, status: "UP", currentSessions: 0, weight: 1, address: null, algorithm, checkStatus: null, columns: {} };
}

describe("inventoryOf", () => {
  it("counts slots and ready servers, and tells static-rr backends from dynamic ones", () => {
    const observed = buildObservedState(
      ["be_rr", "be_static", "be_empty", "be_unknown"],
      [row("be_rr", 1, "srv1", 1, 4), row("be_rr", 1, "srv2", 2, 5), row("be_rr", 1, "srv3", 3, 12), row("be_static", 2, "srv1", 1, 4)],
      [backendStat("be_rr", "roundrobin"), backendStat("be_static", "static-rr"), backendStat("be_empty", "leastconn")],
    );
    const inventory = inventoryOf("/a.sock", observed);
    expect(inventory).toEqual({
      socket: "/a.sock",
      backends: [
        { name: "be_rr", slots: 3, serving: 1, dynamic: true },
        { name: "be_static", slots: 1, serving: 1, dynamic: false },
        { name: "be_empty", slots: 0, serving: 0, dynamic: true },
        { name: "be_unknown", slots: 0, serving: 0, dynamic: true },
      ],
    });
    const hello = { agentId: "a", labels: {}, hafleetVersion: "0.1.0", sockets: [inventory], appliedVersions: {} };
    expect(helloSchema.safeParse(hello).success).toBe(true);
  });
});

function step(backend: string, server: string, action: StepAction): PlanStep {
  return { action, backend: nameSchema.parse(backend), server: nameSchema.parse(server), endpoint: "10.0.0.1:80", prepare: [], commit: [], ledger: undefined };
}

function socket(name: string, outcomes: StepOutcome[]): SocketReport {
  const plan = { steps: [], backends: [], staleLedgerKeys: [], nextCheckAt: null };
  return { socket: name, plan, outcomes, final: plan, observed: new Map(), converged: true };
}

describe("repairedServers", () => {
  it("lists each server a resync changed once, leaving out drain follow-ups and failures", () => {
    const outcomes: StepOutcome[] = [
      { step: step("be_a", "srv1", "fill-slot"), ok: true },
      { step: step("be_a", "srv1", "set-weight"), ok: true },
      { step: step("be_a", "srv2", "drain"), ok: true },
      { step: step("be_a", "srv3", "maint"), ok: true },
      { step: step("be_a", "hafleet-x", "delete"), ok: true },
      { step: step("be_a", "srv4", "fill-slot"), ok: false, command: "set server", reply: "no", reason: "refused" },
    ];
    expect(repairedServers([socket("/a.sock", outcomes), { socket: "/b.sock", error: "down" }, socket("/c.sock", outcomes.slice(0, 1))])).toEqual([
      { socket: "/a.sock", backend: "be_a", server: "srv1", action: "fill-slot", endpoint: "10.0.0.1:80" },
      { socket: "/a.sock", backend: "be_a", server: "srv2", action: "drain", endpoint: "10.0.0.1:80" },
      { socket: "/c.sock", backend: "be_a", server: "srv1", action: "fill-slot", endpoint: "10.0.0.1:80" },
    ]);
  });

  it("is empty when nothing had to change", () => {
    expect(repairedServers([socket("/a.sock", [])])).toEqual([]);
  });
});
