import { describe, expect, it } from "vitest";
import { parseDesiredState, type DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema, type Name } from "../../agent/model/values.js";
import { judgeWait } from "../../controller/cli/wait-command.js";
import { formatStatus } from "../../controller/cli/format-status.js";
import type { BackendSync } from "../../controller/core/agent-session.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import { ChangeLog } from "../../controller/status/change-log.js";
import { buildFleetStatus, filterStatus, worse, type AgentView } from "../../controller/status/fleet-status.js";
import { fleetStatusSchema, type FleetStatus } from "../../controller/status/status-schema.js";
import type { ObservedReport } from "../../proto/messages.js";

const NOW = 1_000_000;
const be = (name: string): Name => nameSchema.parse(name);

function servers(...ports: number[]): DesiredServer[] {
  return parseDesiredState({ backends: [{ name: "b", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
}

function backend(name: string, version: string, held: string | null = null): DesiredBackendState {
  return { name: be(name), servers: servers(80, 81), version, allowEmpty: false, held, dropped: [] };
}

const WEB = backend("be_web", "w2");
const API = backend("be_api", "a1");

function observed(entries: Array<{ backend: string; serving: number; drift?: ObservedReport["backends"][number]["drift"] }>): ObservedReport {
  return { digest: "d", appliedVersions: {}, backends: entries.map((entry) => ({ backend: be(entry.backend), socket: "/run/haproxy.sock", digest: "x", serving: entry.serving, drift: entry.drift ?? [] })) };
}

function view(agent: string, sync: Record<string, BackendSync>, extra: Partial<AgentView> = {}): AgentView {
  return {
    agent,
    labels: { region: "eu" },
    hafleetVersion: "0.1.0",
    peer: "ipv4:127.0.0.1:5000",
    connectedAt: NOW - 60_000,
    departed: null,
    desired: [WEB, API],
    sync: new Map(Object.entries(sync).map(([name, state]) => [be(name), state])),
    applied: new Map([[be("be_web"), "w1"], [be("be_api"), "a1"]]),
    observed: observed([{ backend: "be_web", serving: 2 }, { backend: "be_api", serving: 2 }]),
    rolloutSide: null,
    ...extra,
  };
}

const synced = (version: string): BackendSync => ({ state: "synced", version });

function status(agents: AgentView[], backends = [WEB, API]): FleetStatus {
  const result = buildFleetStatus({ now: NOW, controller: { version: "0.1.0", startedAt: NOW - 1 }, agents, backends, frozen: null, rollout: null, changes: [] });
  // What the API serves is what its consumers validate: the builder must always satisfy it.
  return fleetStatusSchema.parse(result);
}

describe("the fleet status", () => {
  it("calls each agent backend by what caused it", () => {
    const result = status([
      view("in-sync", { be_web: synced("w2"), be_api: synced("a1") }),
      view("pending", { be_web: { state: "pending", version: "w2", since: NOW - 1_500 }, be_api: synced("a1") }),
      view("rejected", { be_web: { state: "rejected", version: "w2", error: "backend-missing: be_web", appliedVersion: "" }, be_api: synced("a1") }),
      view("drifted", { be_web: synced("w2"), be_api: synced("a1") }, { observed: observed([{ backend: "be_web", serving: 1, drift: [{ endpoint: "10.0.0.1:81", state: "missing" }] }, { backend: "be_api", serving: 2 }]) }),
      view("held", { be_web: synced("w2"), be_api: synced("a1") }, { observed: observed([{ backend: "be_web", serving: 1, drift: [{ endpoint: "10.0.0.1:81", state: "held" }] }, { backend: "be_api", serving: 2 }]) }),
      view("not-sent", { be_web: { state: "not-sent", version: "w2" }, be_api: synced("a1") }),
      view("gone", {}, { departed: { since: NOW - 30_000, reason: "no message from the agent for 15000 ms" }, sync: null }),
    ]);
    const byAgent = new Map(result.agents.map((agent) => [agent.agent, agent]));
    expect([...byAgent].map(([agent, entry]) => [agent, entry.state])).toEqual([
      ["gone", "disconnected"],
      ["rejected", "rejected"],
      ["drifted", "drifted"],
      ["held", "held"],
      ["pending", "pending"],
      ["not-sent", "not-sent"],
      ["in-sync", "in-sync"],
    ]);
    expect(byAgent.get("pending")!.backends[0]).toMatchObject({ backend: "be_web", state: "pending", pendingSince: NOW - 1_500, desiredVersion: "w2", appliedVersion: "w1" });
    expect(byAgent.get("rejected")!.backends[0]).toMatchObject({ state: "rejected", error: "backend-missing: be_web" });
    expect(byAgent.get("drifted")!.backends[0]).toMatchObject({ state: "drifted", drift: [{ endpoint: "10.0.0.1:81", state: "missing" }], serving: 1 });
    expect(byAgent.get("held")!.backends[0]).toMatchObject({ state: "held", drift: [{ endpoint: "10.0.0.1:81", state: "held" }] });
    expect(byAgent.get("gone")).toMatchObject({ connected: false, disconnectedAt: NOW - 30_000, disconnectReason: "no message from the agent for 15000 ms" });
    expect(byAgent.get("gone")!.backends.map((entry) => [entry.state, entry.appliedVersion])).toEqual([["disconnected", "w1"], ["disconnected", "a1"]]);
  });

  it("is never in sync on an ack alone: a replaced HAProxy being repaired, no report, or nothing served", () => {
    const acked = { be_web: synced("w2"), be_api: synced("a1") };
    const repairing = observed([{ backend: "be_web", serving: 2 }, { backend: "be_api", serving: 2 }]);
    repairing.backends[0]!.repairing = "HAProxy reloaded or restarted (worker 1234 -> 1240)";
    const result = status([
      view("repairing", acked, { observed: repairing }),
      view("no-report", acked, { observed: null }),
      view("serves-none", acked, { observed: observed([{ backend: "be_web", serving: 0 }, { backend: "be_api", serving: 2 }]) }),
      view("in-sync", acked),
    ]);
    const byAgent = new Map(result.agents.map((agent) => [agent.agent, agent]));
    expect(byAgent.get("repairing")!.backends[0]).toMatchObject({ state: "repairing", error: "HAProxy reloaded or restarted (worker 1234 -> 1240)" });
    expect(byAgent.get("repairing")!.backends[1]).toMatchObject({ state: "in-sync" });
    expect(byAgent.get("no-report")!.state).toBe("unknown");
    expect(byAgent.get("serves-none")!.backends[0]).toMatchObject({ state: "drifted", serving: 0 });
    expect(byAgent.get("in-sync")!.state).toBe("in-sync");
    expect(result.summary.inSync).toBe(false);
    expect(formatStatus(result)).toContain("repairing: HAProxy reloaded or restarted (worker 1234 -> 1240)");
  });

  it("takes an empty desired backend as in sync when HAProxy serves none of it", () => {
    const empty = { ...WEB, servers: [] };
    const result = status([view("a", { be_web: synced("w2") }, { desired: [empty], observed: observed([{ backend: "be_web", serving: 0 }]) })], [empty]);
    expect(result.agents[0]!.state).toBe("in-sync");
  });

  it("counts per backend how many agents run its desired version, like 612/640", () => {
    const result = status([
      view("a", { be_web: synced("w2"), be_api: synced("a1") }),
      view("b", { be_web: { state: "pending", version: "w2", since: NOW }, be_api: synced("a1") }),
      view("c", { be_api: synced("a1") }, { desired: [API] }),
    ], [WEB, backend("be_api", "a1", "would drop all 2 servers")]);
    expect(result.backends.map((entry) => [entry.backend, `${entry.inSync}/${entry.agents}`, entry.held])).toEqual([
      ["be_api", "3/3", "would drop all 2 servers"],
      ["be_web", "1/2", null],
    ]);
    expect(result.backends[1]!.states).toMatchObject({ "in-sync": 1, pending: 1, rejected: 0 });
    expect(result.summary).toMatchObject({ agents: 3, connected: 3, inSync: false, states: { "in-sync": 2, pending: 1 } });
  });

  it("is in sync only when every agent is, a disconnected one included", () => {
    expect(status([view("a", { be_web: synced("w2"), be_api: synced("a1") })]).summary.inSync).toBe(true);
    expect(status([view("a", { be_web: synced("w2"), be_api: synced("a1") }), view("b", {}, { departed: { since: NOW, reason: "x" }, sync: null })]).summary.inSync).toBe(false);
    expect(status([]).summary).toMatchObject({ agents: 0, inSync: true });
  });

  it("narrows to an agent, a backend or the problems, keeping the whole summary", () => {
    const whole = status([
      view("a", { be_web: synced("w2"), be_api: synced("a1") }),
      view("b", { be_web: { state: "pending", version: "w2", since: NOW }, be_api: synced("a1") }),
    ]);
    expect(filterStatus(whole, { agent: "b" }).agents.map((agent) => agent.agent)).toEqual(["b"]);
    const web = filterStatus(whole, { backend: "be_web" });
    expect(web.backends.map((entry) => entry.backend)).toEqual(["be_web"]);
    expect(web.agents.flatMap((agent) => agent.backends.map((entry) => entry.backend))).toEqual(["be_web", "be_web"]);
    const problems = filterStatus(whole, { problems: true });
    expect(problems.agents.map((agent) => [agent.agent, agent.backends.map((entry) => entry.backend)])).toEqual([["b", ["be_web"]]]);
    expect(problems.summary).toEqual(whole.summary);
  });

  it("orders states worst first", () => {
    expect(worse("in-sync", "pending")).toBe("pending");
    expect(worse("rejected", "drifted")).toBe("rejected");
    expect(worse("disconnected", "rejected")).toBe("disconnected");
  });

  it("prints a summary line, the backends' convergence and each problem's detail", () => {
    const fleet = status([
      view("edge-1", { be_web: { state: "rejected", version: "w2", error: "backend-missing", appliedVersion: "" }, be_api: synced("a1") }),
      view("edge-2", {}, { departed: { since: NOW - 90_000, reason: "stream error" }, sync: null }),
    ]);
    const text = formatStatus(fleet, { view: "wide" });
    // By default, one row per agent; without headers, those rows alone.
    const agents = formatStatus(fleet);
    expect(agents).toMatch(/^AGENT\s+STATE\s+IN SYNC\s+LAST SEEN\s+VERSION\s+LABELS\s+DETAIL$/m);
    expect(agents).toMatch(/^edge-2\s+disconnected\s+0\/2\s+90s ago\s+0\.1\.0\s+region=eu\s+disconnected 90s ago: stream error$/m);
    expect(agents).toMatch(/^edge-1\s+rejected\s+1\/2\s+connected\s+0\.1\.0\s+region=eu\s+be_web: nack: backend-missing$/m);
    expect(formatStatus(fleet, { headers: false }).split("\n").map((line) => line.split(/\s+/)[0])).toEqual(["edge-2", "edge-1"]);
    expect(text.split("\n")[0]).toBe("2 agent(s) (this replica's agents), 1 connected, NOT in sync: 1 disconnected, 1 rejected");
    expect(text).toMatch(/be_web\s+w2\s+2\s+0\/2/);
    expect(text).toMatch(/edge-1\s+rejected\s+be_web\s+w2\s+w1\s+2\s+nack: backend-missing/);
    expect(text).toMatch(/edge-2\s+disconnected\s+be_web .*disconnected 90s ago: stream error/);
  });

  it("adds a REPLICA column when replicas share status", () => {
    const local = status([view("edge-1", { be_web: synced("w2"), be_api: synced("a1") })]);
    const fleet = { ...local, agents: local.agents.map((agent) => ({ ...agent, replica: "ctl-b" })) };
    expect(formatStatus(fleet)).toMatch(/^AGENT\s+REPLICA\s+STATE\s+IN SYNC/m);
    expect(formatStatus(fleet)).toMatch(/^edge-1\s+ctl-b\s+/m);
    expect(formatStatus(fleet, { view: "wide" })).toMatch(/^AGENT\s+REPLICA\s+STATE\s+BACKEND/m);
    expect(formatStatus(fleet, { view: "wide" })).toMatch(/^edge-1\s+ctl-b\s+\S+\s+be_api/m);
    expect(formatStatus(local)).not.toContain("REPLICA");
  });
});

describe("the change log", () => {
  const agents = (entries: Record<string, string[]>) => new Map(Object.entries(entries));

  it("times a change from its start to the last ack of the agents it was for", () => {
    const log = new ChangeLog();
    log.recorded(1_000, [{ backend: "be_web", version: "w2" }], agents({ a: ["be_web"], b: ["be_web", "be_api"], c: ["be_api"] }));
    expect(log.list()).toEqual([{ at: 1_000, outcome: "converging", outcomeDetail: null, backends: [{ backend: "be_web", version: "w2" }], agents: 2, acked: 0, convergedMs: null }]);
    expect(log.acked("a", "be_web", "w2", 1_200)).toBe(200);
    expect(log.acked("a", "be_web", "w2", 1_300)).toBeNull();
    expect(log.acked("b", "be_web", "w1", 1_300)).toBeNull();
    expect(log.acked("b", "be_web", "w2", 1_450)).toBe(450);
    expect(log.list()[0]).toMatchObject({ agents: 2, acked: 2, convergedMs: 450 });
  });

  it("stops waiting for an agent that left, and keeps the newest changes only", () => {
    const log = new ChangeLog(2);
    log.recorded(1_000, [{ backend: "be_web", version: "w2" }], agents({ a: ["be_web"], b: ["be_web"] }));
    log.acked("a", "be_web", "w2", 1_100);
    log.departed("b", 1_500);
    expect(log.list()[0]).toMatchObject({ agents: 1, acked: 1, convergedMs: 500 });
    log.recorded(2_000, [{ backend: "be_web", version: "w3" }], agents({}));
    log.recorded(3_000, [{ backend: "be_web", version: "w4" }], agents({ a: ["be_web"] }));
    expect(log.list().map((change) => [change.at, change.convergedMs])).toEqual([[3_000, null], [2_000, 0]]);
  });
});

describe("hafleet wait's verdict", () => {
  const base = () => status([
    view("a", { be_web: synced("w2"), be_api: synced("a1") }, { labels: { region: "eu" } }),
    view("b", { be_web: { state: "pending", version: "w2", since: NOW }, be_api: synced("a1") }, { labels: { region: "us" } }),
    view("c", {}, { departed: { since: NOW, reason: "x" }, sync: null }),
  ]);

  it("waits while an agent lacks the version, and for disconnected agents unless told to leave them out", () => {
    expect(judgeWait(base(), { selector: {} })).toMatchObject({ done: false, failed: false, detail: expect.stringContaining("c be_web disconnected 0s ago: x; c be_api disconnected 0s ago: x; b be_web pending") });
    expect(judgeWait(base(), { selector: { region: "eu" } })).toMatchObject({ done: false, detail: expect.stringContaining("c be_web disconnected") });
    expect(judgeWait(base(), { selector: { region: "eu" }, ignoreDisconnected: true })).toMatchObject({ done: true });
    expect(judgeWait(base(), { version: "a1", selector: {} })).toMatchObject({ done: false, failed: false, detail: expect.stringContaining("c be_api disconnected") });
    expect(judgeWait(base(), { version: "a1", selector: {}, ignoreDisconnected: true })).toMatchObject({ done: true, detail: expect.stringContaining("1 disconnected agent(s) left out") });
  });

  it("waits for a version no backend has yet, and fails at once on a nack of it", () => {
    expect(judgeWait(base(), { version: "w9", selector: {} })).toMatchObject({ done: false, failed: false, detail: expect.stringContaining("no backend's desired version is w9 yet") });
    const nacked = status([view("a", { be_web: { state: "rejected", version: "w2", error: "boom", appliedVersion: "" }, be_api: synced("a1") })]);
    expect(judgeWait(nacked, { version: "w2", selector: {} })).toEqual({ done: false, failed: true, detail: "a rejected be_web w2: boom" });
  });
});
