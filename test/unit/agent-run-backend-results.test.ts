import { describe, expect, it } from "vitest";
import { nameSchema, type Name } from "../../agent/model/values.js";
import type { StepOutcome } from "../../agent/reconcile/execute-plan.js";
import type { BackendPlan, PlanStep, StepAction } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import type { SocketApply } from "../../agent/run/applier.js";
import { backendFailures, backendResults, refusedResults } from "../../agent/run/backend-results.js";
import { backendResultSchema, LIMITS } from "../../proto/messages.js";

const name = (text: string): Name => nameSchema.parse(text);

function backendPlan(backend: string, parts: Partial<BackendPlan> = {}): BackendPlan {
  return { backend, held: [], unplaced: [], draining: [], unmanageable: [], ...parts };
}

function step(backend: string, server: string, action: StepAction, endpoint: string | null = null): PlanStep {
  return { action, backend: name(backend), server: name(server), endpoint, prepare: [], commit: [], ledger: undefined };
}

function report(socket: string, backends: BackendPlan[], extra: { outcomes?: StepOutcome[]; steps?: PlanStep[] } = {}): SocketReport {
  const final = { steps: extra.steps ?? [], backends, staleLedgerKeys: [], nextCheckAt: null };
  return { socket, plan: final, outcomes: extra.outcomes ?? [], final, observed: new Map(), converged: false };
}

function refused(backend: string, server: string, reply: string, reason: "refused" | "no-such-server" | "dynamic-servers-refused" = "refused"): StepOutcome {
  return { step: step(backend, server, "fill-slot"), ok: false, command: `set server ${backend}/${server} addr 10.0.0.1 port 80`, reply, reason };
}

describe("backendFailures", () => {
  it("is empty when every socket runs every backend", () => {
    const sockets = [report("/a.sock", [backendPlan("be_a")]), report("/b.sock", [backendPlan("be_a")])];
    expect(backendFailures(["be_a"], sockets)).toEqual(new Map());
  });

  it("does not count drains still running, nor their follow-up steps", () => {
    const draining = backendPlan("be_a", { draining: [{ server: "srv3", endpoint: "10.0.0.3:80", until: 99 }] });
    const sockets = [report("/a.sock", [draining], { steps: [step("be_a", "srv3", "maint"), step("be_a", "hafleet-x", "delete")] })];
    expect(backendFailures(["be_a"], sockets).size).toBe(0);
  });

  it("does not count an operator's held server or names it cannot use", () => {
    const plan = backendPlan("be_a", { held: [{ server: "srv1", endpoint: "10.0.0.1:80", admin: "maint", desired: true }], unmanageable: ["odd name"] });
    expect(backendFailures(["be_a"], [report("/a.sock", [plan])]).size).toBe(0);
  });

  it("names the socket and the reason for a backend HAProxy lacks", () => {
    const plan = backendPlan("be_x", { unplaced: [{ endpoint: "10.0.0.1:80", reason: "backend-missing" }, { endpoint: "10.0.0.2:80", reason: "backend-missing" }] });
    expect(backendFailures(["be_x"], [report("/a.sock", [plan])]).get("be_x")).toBe(
      "/a.sock: backend-missing: the backend does not exist in this HAProxy (2 server(s) not placed: 10.0.0.1:80, 10.0.0.2:80)",
    );
  });

  it("lists a few unplaced servers and counts the rest", () => {
    const unplaced = Array.from({ length: 8 }, (_, i) => ({ endpoint: `10.0.0.${i}:80`, reason: "no-free-slot" as const }));
    const error = backendFailures(["be_a"], [report("/a.sock", [backendPlan("be_a", { unplaced })])]).get("be_a")!;
    expect(error).toMatch(/^\/a\.sock: no-free-slot: every slot is taken and the backend takes no dynamic servers \(8 server\(s\) not placed: 10\.0\.0\.0:80, .*10\.0\.0\.4:80 and 3 more\)$/);
  });

  it("explains a refused empty list", () => {
    const plan = backendPlan("be_a", { unplaced: [{ endpoint: "*", reason: "empty-refused" }] });
    expect(backendFailures(["be_a"], [report("/a.sock", [plan])]).get("be_a")).toBe(
      "/a.sock: empty-refused: an empty server list is refused for a backend that serves traffic (allow_empty is off)",
    );
  });

  it("quotes a refused command and HAProxy's reply", () => {
    const sockets = [report("/a.sock", [backendPlan("be_a")], { outcomes: [refused("be_a", "srv1", "Invalid addr.\n")] })];
    expect(backendFailures(["be_a"], sockets).get("be_a")).toBe(`/a.sock: HAProxy refused 'set server be_a/srv1 addr 10.0.0.1 port 80' -> "Invalid addr."`);
  });

  it("ignores a refused `add server` (the planner reports those servers as not placed) and other backends' refusals", () => {
    const outcomes = [refused("be_a", "hafleet-x", "Backend must use a dynamic load balancing", "dynamic-servers-refused"), refused("be_b", "srv1", "No such server.", "no-such-server")];
    const failures = backendFailures(["be_a", "be_b"], [report("/a.sock", [backendPlan("be_a"), backendPlan("be_b")], { outcomes })]);
    expect(failures.has("be_a")).toBe(false);
    expect(failures.get("be_b")).toContain("No such server.");
  });

  it("does not count successful steps or removals held back as failures of their own", () => {
    const outcomes: StepOutcome[] = [{ step: step("be_a", "srv1", "fill-slot"), ok: true }, { step: step("be_a", "srv2", "drain"), ok: false, skipped: "placement-failed" }];
    expect(backendFailures(["be_a"], [report("/a.sock", [backendPlan("be_a")], { outcomes })]).size).toBe(0);
  });

  it("reports changes still pending when nothing else explains them", () => {
    const steps = [step("be_a", "srv1", "fill-slot", "10.0.0.1:80"), step("be_a", "srv2", "set-weight")];
    expect(backendFailures(["be_a"], [report("/a.sock", [backendPlan("be_a")], { steps })]).get("be_a")).toBe("/a.sock: 2 change(s) still pending: fill-slot srv1, set-weight srv2");
  });

  it("fails every backend on a socket that could not be reached, and joins the sockets' problems", () => {
    const sockets: SocketApply[] = [
      { socket: "/a.sock", error: "cannot connect to HAProxy at /a.sock: ECONNREFUSED" },
      report("/b.sock", [backendPlan("be_a", { unplaced: [{ endpoint: "10.0.0.1:80", reason: "backend-missing" }] }), backendPlan("be_b")]),
    ];
    const failures = backendFailures(["be_a", "be_b"], sockets);
    expect(failures.get("be_a")).toBe(
      "/a.sock: cannot connect to HAProxy at /a.sock: ECONNREFUSED; /b.sock: backend-missing: the backend does not exist in this HAProxy (1 server(s) not placed: 10.0.0.1:80)",
    );
    expect(failures.get("be_b")).toBe("/a.sock: cannot connect to HAProxy at /a.sock: ECONNREFUSED");
  });

  it("keeps a message within the wire's limit", () => {
    const sockets: SocketApply[] = Array.from({ length: 64 }, (_, i) => ({ socket: `/run/haproxy-${i}.sock`, error: "x".repeat(200) }));
    const error = backendFailures(["be_a"], sockets).get("be_a")!;
    expect(error.length).toBe(LIMITS.text);
    expect(error.endsWith("…")).toBe(true);
  });
});

describe("backendResults", () => {
  const applied = (backend: string): string => ({ be_a: "a0", be_b: "" })[backend] ?? "";

  it("acks with the pushed version, nacks with the error and the last good version", () => {
    const results = backendResults(
      [
        { name: name("be_a"), version: "a1" },
        { name: name("be_b"), version: "b1" },
        { name: name("be_c"), version: "c1" },
      ],
      new Map([
        ["be_a", "/a.sock: nope"],
        ["be_b", "/a.sock: nope"],
      ]),
      applied,
    );
    expect(results).toEqual([
      { backend: "be_a", version: "a1", error: "/a.sock: nope", appliedVersion: "a0" },
      { backend: "be_b", version: "b1", error: "/a.sock: nope", appliedVersion: "" },
      { backend: "be_c", version: "c1", error: "", appliedVersion: "c1" },
    ]);
    for (const result of results) expect(backendResultSchema.safeParse(result).success).toBe(true);
  });

  it("gives the same nack to every backend of a push refused whole", () => {
    const results = refusedResults([{ name: name("be_a"), version: "a1" }, { name: name("be_b"), version: "" }], "push refused: " + "y".repeat(5000), applied);
    expect(results.map((r) => [r.backend, r.version, r.appliedVersion, r.error.length])).toEqual([
      ["be_a", "a1", "a0", LIMITS.text],
      ["be_b", "", "", LIMITS.text],
    ]);
  });
});
