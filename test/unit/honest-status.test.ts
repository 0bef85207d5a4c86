import { describe, expect, it } from "vitest";
import { nameSchema } from "../../agent/model/values.js";
import { formatStatus, printable, summaryLine } from "../../controller/cli/format-status.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import { rolloutConfigSchema } from "../../controller/rollout/rollout-config.js";
import { startRollout } from "../../controller/rollout/rollout-state.js";
import { ChangeLog } from "../../controller/status/change-log.js";
import { DiscoveryHealthTracker } from "../../controller/status/discovery-health.js";
import { buildFleetStatus, filterStatus, fleetVersion, isHealthy, type AgentView, type StatusInput } from "../../controller/status/fleet-status.js";
import { fleetStatusSchema, type FleetStatus, type RolloutStatus } from "../../controller/status/status-schema.js";
import { backendState, syncedAgent } from "../support/agent-views.js";

// The pure pieces behind "status tells what is true": each test tries to make one claim lie.

const NOW = 5_000_000;
const be = nameSchema.parse("be_app");

const V1 = backendState("be_app", "v1", [80, 81]);
const V2 = backendState("be_app", "v2", [80, 81, 82]);
const agent = (id: string, desired: DesiredBackendState, extra: Partial<AgentView> = {}): AgentView => syncedAgent(id, desired, NOW, extra);

function rollout(phase: RolloutStatus["phase"]): RolloutStatus {
  return {
    id: "r-9",
    reason: "discovery change of web",
    backends: ["be_app"],
    phase,
    wave: 0,
    waves: [{ agents: 1, acked: 1 }],
    startedAt: NOW - 9_000,
    phaseSince: NOW - 1_000,
    haltReason: null,
    history: [],
    baseline: [{ backend: "be_app", version: "v1", servers: 2 }],
    target: [{ backend: "be_app", version: "v2", servers: 3 }],
  };
}

function build(agents: AgentView[], extra: Partial<StatusInput> = {}): FleetStatus {
  return fleetStatusSchema.parse(buildFleetStatus({ now: NOW, controller: { version: "t", startedAt: 0 }, agents, backends: [V2], frozen: null, rollout: null, changes: [], ...extra }));
}

describe("the backend row", () => {
  it("after a rollback, shows the version agents run now, its servers and its count, not discovery's", () => {
    const status = build([agent("a", V1), agent("b", V1), agent("c", V1)], { rollout: rollout("rolled-back") });
    expect(status.backends[0]).toMatchObject({ version: "v1", servers: 2, inSync: 3, agents: 3, behind: 0 });
    expect(fleetVersion("be_app", V2, rollout("aborted"))).toEqual({ version: "v1", servers: 2 });
    expect(fleetVersion("be_app", V2, rollout("completed"))).toEqual({ version: "v2", servers: 3 });
    expect(fleetVersion("be_app", V2, null)).toEqual({ version: "v2", servers: 3 });
  });

  it("during a rollout, counts agents on the baseline as behind, never as in sync with the target", () => {
    const status = build([agent("a", V2, { rolloutSide: "target" }), agent("b", V1, { rolloutSide: "baseline" })], { rollout: rollout("baking") });
    expect(status.backends[0]).toMatchObject({ version: "v2", inSync: 1, agents: 2, behind: 1 });
    expect(formatStatus(status)).toMatch(/be_app\s+v2\s+3\s+1\/2\s+1 on another version \(rollout\)/);
  });
});

describe("discovery's health", () => {
  it("is never-answered, then failing since the first failure, then ok at the next answer", () => {
    const tracker = new DiscoveryHealthTracker(new Map([["web", ["be_app", "be_app2"]]]));
    expect(tracker.health().get("be_app")).toEqual({ state: "never-answered", since: null, error: null });
    tracker.failed("web", "connect ECONNREFUSED", 100);
    tracker.failed("web", "connect ECONNREFUSED", 200);
    expect(tracker.health().get("be_app2")).toEqual({ state: "failing", since: 100, error: "connect ECONNREFUSED (never answered since the controller started)" });
    tracker.answered("web", 300);
    tracker.answered("web", 400);
    expect(tracker.health().get("be_app")).toEqual({ state: "ok", since: 300, error: null });
    tracker.failed("web", "catalog.json: not JSON", 500);
    expect(tracker.health().get("be_app")).toEqual({ state: "failing", since: 500, error: "catalog.json: not JSON" });
  });

  it("makes the fleet unhealthy whatever the agents say, and the summary line says so", () => {
    const failing = build([agent("a", V2)], { discovery: new Map([["be_app", { state: "failing", since: NOW - 60_000, error: "boom\nsecond line" }]]) });
    expect(failing.summary).toMatchObject({ inSync: true, discoveryProblems: 1 });
    expect(isHealthy(failing)).toBe(false);
    expect(summaryLine(failing)).toBe("1 agent(s) (this replica's agents), 1 connected, discovery NOT ok for 1 backend(s): 1 in-sync");
    expect(formatStatus(failing)).toMatch(/be_app .* failing since .*: boom\\x0asecond line$/m);
    // No agent and nothing answered: not "all in sync".
    const empty = build([], { backends: [], mapped: ["be_app"] });
    expect(isHealthy(empty)).toBe(false);
    expect(summaryLine(empty)).toBe("0 agent(s) (this replica's agents), 0 connected, discovery NOT ok for 1 backend(s): no agents");
    // A held answer is a discovery problem too, from the store's own word.
    const held = build([agent("a", V2)], { backends: [{ ...V2, held: "would drop all 3 servers" }] });
    expect(held.backends[0]!.discovery).toEqual({ state: "held", since: null, error: "would drop all 3 servers" });
    expect(isHealthy(build([agent("a", V2)]))).toBe(true);
  });
});

describe("agents' own problems and filters", () => {
  it("puts an agent with a duplicate id first and makes the fleet unhealthy", () => {
    const status = build([agent("a", V2), agent("twin", V2, { problem: "duplicate id: 2 connections" })]);
    expect(status.agents.map((entry) => entry.agent)).toEqual(["twin", "a"]);
    expect(status.summary.agentProblems).toBe(1);
    expect(isHealthy(status)).toBe(false);
    expect(filterStatus(status, { problems: true }).agents.map((entry) => entry.agent)).toEqual(["twin"]);
    expect(formatStatus(status, { view: "wide" })).toMatch(/twin\s+in-sync\s+be_app .*PROBLEM: duplicate id: 2 connections/);
  });

  it("says when an agent or backend filter matches nothing, and narrows by selector", () => {
    const status = build([agent("a", V2), agent("b", V2, { labels: { region: "us" } })]);
    expect(filterStatus(status, { agent: "nosuch" }).matched).toEqual({ agents: 0, backends: 1 });
    expect(filterStatus(status, { backend: "be_nosuch" }).matched).toEqual({ agents: 2, backends: 0 });
    expect(filterStatus(status, {}).matched).toBeUndefined();
    expect(filterStatus(status, { selector: { region: "us" } }).agents.map((entry) => entry.agent)).toEqual(["b"]);
  });

  it("escapes control characters from outside before a terminal sees them", () => {
    expect(printable("edge\u001b[2J-1\r\n\u0007\u009b")).toBe("edge\\x1b[2J-1\\x0d\\x0a\\x07\\x9b");
    const status = build([agent("evil\u001b]0;pwned\u0007", V2, { sync: new Map([[be, { state: "rejected", version: "v2", error: "bad\u001b[31m", appliedVersion: "" }]]) })]);
    const text = formatStatus(status, { view: "wide" }) + formatStatus(status);
    expect(text).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(text).toContain("evil\\x1b]0;pwned\\x07");
    expect(text).toContain("nack: bad\\x1b[31m");
  });

  it("says frozen: <reason> for what a freeze holds back, and waiting for a wave only during a rollout", () => {
    const notSent = { sync: new Map([[be, { state: "not-sent" as const, version: "v2" }]]) };
    const frozen = formatStatus(build([agent("a", V2, notSent)], { frozen: { since: NOW, reason: "incident 4711" } }), { view: "wide" });
    expect(frozen).toMatch(/a\s+not-sent\s+be_app .*frozen: incident 4711$/m);
    const waiting = formatStatus(build([agent("a", V1, { ...notSent, rolloutSide: "baseline" })], { rollout: rollout("applying") }), { view: "wide" });
    expect(waiting).toMatch(/waiting for its rollout wave \(rollout r-9 applying\)$/m);
    const plain = formatStatus(build([agent("a", V2, { ...notSent, rolloutSide: "baseline" })], { rollout: rollout("completed") }), { view: "wide" });
    expect(plain).toMatch(/not sent yet$/m);
  });
});

describe("the change log: how each change ended", () => {
  const agents = (entries: Record<string, string[]>) => new Map(Object.entries(entries));

  it("ends a change as converged, failed (still counting the others' acks), superseded, or rolled back", () => {
    const log = new ChangeLog();
    log.recorded(1_000, [{ backend: "be_app", version: "v2" }], agents({ a: ["be_app"], b: ["be_app"] }));
    log.acked("a", "be_app", "v2", 1_100);
    log.acked("b", "be_app", "v2", 1_200);
    expect(log.list()[0]).toMatchObject({ outcome: "converged", convergedMs: 200, acked: 2 });

    log.recorded(2_000, [{ backend: "be_app", version: "v3" }], agents({ a: ["be_app"], b: ["be_app"] }));
    log.nacked("b", "be_app", "v3", "backend-missing");
    log.acked("a", "be_app", "v3", 2_100);
    expect(log.list()[0]).toMatchObject({ outcome: "failed", outcomeDetail: "b rejected be_app v3: backend-missing", acked: 1, convergedMs: null });

    log.recorded(3_000, [{ backend: "be_app", version: "v4" }], agents({ a: ["be_app"] }));
    log.recorded(3_500, [{ backend: "be_app", version: "v5" }], agents({ a: ["be_app"] }));
    expect(log.list()[1]).toMatchObject({ outcome: "superseded", outcomeDetail: `by the change at ${new Date(3_500).toISOString()}` });
    // A late ack of a superseded version changes nothing.
    log.acked("a", "be_app", "v4", 3_600);
    expect(log.list()[1]).toMatchObject({ outcome: "superseded", acked: 0 });

    log.acked("a", "be_app", "v5", 3_700);
    log.rolledBack([{ backend: "be_app", version: "v5" }], "rollout r-1: rolled back by the operator");
    expect(log.list()[0]).toMatchObject({ outcome: "rolled-back", outcomeDetail: "rollout r-1: rolled back by the operator", convergedMs: 200 });
    // An older ending stands: a failed change is not turned into a rolled-back one.
    log.rolledBack([{ backend: "be_app", version: "v3" }], "x");
    expect(log.list().find((change) => change.backends[0]!.version === "v3")).toMatchObject({ outcome: "failed" });
  });

  it("drops only what a newer change of some of its backends replaces", () => {
    const log = new ChangeLog();
    log.recorded(1_000, [{ backend: "be_a", version: "a2" }, { backend: "be_b", version: "b2" }], agents({ x: ["be_a", "be_b"] }));
    log.acked("x", "be_b", "b2", 1_100);
    log.recorded(2_000, [{ backend: "be_a", version: "a3" }], agents({ x: ["be_a"] }));
    expect(log.list()[1]).toMatchObject({ outcome: "converged", convergedMs: 1_000, agents: 0 });
  });

  it("after a restart, says unknown for a change that had not ended, and keeps the others as they ended", () => {
    const log = new ChangeLog();
    log.recorded(1_000, [{ backend: "be_app", version: "v2" }], agents({ a: ["be_app"] }));
    log.recorded(500, [{ backend: "be_other", version: "o1" }], agents({}));
    const restored = new ChangeLog();
    restored.restore(log.list());
    expect(restored.list().map((change) => [change.outcome, change.outcomeDetail])).toEqual([
      ["converged", null],
      ["unknown", "the controller restarted before every agent acked it"],
    ]);
    // Nothing waits any more: a later ack does not pretend to complete it.
    restored.acked("a", "be_app", "v2", 2_000);
    expect(restored.list()[1]).toMatchObject({ outcome: "unknown", acked: 0 });
  });
});

describe("a rollout's plan", () => {
  it("says in its history which agents it left out of the waves, and why", () => {
    const config = rolloutConfigSchema.parse({ canary: { count: 1 }, waves: [1] });
    const context = { now: NOW, config, observe: () => undefined };
    const state = startRollout({ id: "r1", reason: "discovery change of web", backends: ["be_app"], agents: [{ id: "a", labels: {} }, { id: "b", labels: {} }], excluded: [{ agent: "c", reason: "cordoned: disk swap" }, { agent: "d", reason: "already rejecting be_app (backend-missing)" }], baseline: 1, target: 2 }, context);
    expect(state.waves.flat().sort()).toEqual(["a", "b"]);
    expect(state.history[0]!.event).toBe("started (discovery change of web): 2 agents in 2 waves of 1, 1; wave 1/2 applying; left out of the waves, on the baseline until it completes: c (cordoned: disk swap), d (already rejecting be_app (backend-missing))");
    const none = startRollout({ id: "r2", reason: "x", backends: ["be_app"], agents: [], excluded: [{ agent: "c", reason: "cordoned: y" }], baseline: 1, target: 2 }, context);
    expect(none.history[0]!.event).toBe("started (x) and completed at once: no agent to roll out to; left out of the waves, on the baseline until it completes: c (cordoned: y)");
  });
});
