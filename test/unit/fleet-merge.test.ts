import { describe, expect, it } from "vitest";
import { nameSchema } from "../../agent/model/values.js";
import { mergeFleetStatus } from "../../controller/status/fleet-merge.js";
import { buildFleetStatus, endpointExceptions, type AgentView } from "../../controller/status/fleet-status.js";
import type { ObservedReport } from "../../proto/messages.js";
import { backendState, reportOf, syncedAgent } from "../support/agent-views.js";
import { encodeReport, readReport, reportedAgent, reportFingerprint, type ReplicaReport, type ReportedAgent } from "../../controller/status/replica-report.js";
import { fleetStatusSchema, type FleetStatus, type SyncState } from "../../controller/status/status-schema.js";
import { agentId, FIXTURE_NOW, fleetStatusFixture } from "../support/status-fixture.js";

// One fleet from several replicas' reports: pure, so every rule is one call with the time given.

const NOW = FIXTURE_NOW;
const BACKENDS = ["be_app", "be_api", "be_static"];

function remote(agent: string, state: SyncState = "in-sync", overrides: Partial<ReportedAgent> = {}): ReportedAgent {
  const local = fleetStatusFixture({ agents: 1 });
  return {
    agent,
    labels: { region: "us-east-1" },
    hafleetVersion: "0.2.0",
    state,
    problem: null,
    rolloutSide: null,
    connectedAt: NOW - 60_000,
    lastSeenAt: NOW - 100,
    backends: local.backends.map((backend, index) => ({
      backend: backend.backend,
      state: index === 0 ? state : "in-sync",
      desired: backend.version,
      applied: backend.version,
      serving: 4,
      problem: index === 0 && state === "rejected" ? "backend be_app not in HAProxy" : null,
      exceptions: [],
    })),
    ...overrides,
  };
}

function report(replica: string, agents: ReportedAgent[], overrides: Partial<ReplicaReport> = {}): ReplicaReport {
  return { replica, publishedAt: NOW - 500, connected: agents.length, truncated: false, agents, ...overrides };
}

function merge(local: FleetStatus, peers: ReplicaReport[], extra: { truncated?: { published: number; connected: number } } = {}): FleetStatus {
  const merged = mergeFleetStatus({ local, self: { replica: "ctl-a", truncated: extra.truncated ?? null }, peers, now: NOW });
  // What the API sends must pass the schema the CLI checks it with.
  return fleetStatusSchema.parse(merged);
}

describe("mergeFleetStatus", () => {
  it("adds the other replicas' agents, each naming its replica, and counts the summary and backends over all", () => {
    const local = fleetStatusFixture({ agents: 2, backends: BACKENDS });
    const merged = merge(local, [report("ctl-b", [remote("b-1"), remote("b-2", "rejected")]), report("ctl-c", [remote("c-1")])]);
    expect(merged.agents.map((agent) => [agent.agent, agent.replica, agent.state])).toEqual([
      ["b-2", "ctl-b", "rejected"],
      ["b-1", "ctl-b", "in-sync"],
      ["c-1", "ctl-c", "in-sync"],
      [agentId(1), "ctl-a", "in-sync"],
      [agentId(0), "ctl-a", "in-sync"],
    ]);
    expect(merged.summary).toMatchObject({ agents: 5, connected: 5, inSync: false, scope: "fleet (3 replicas)" });
    expect(merged.summary.states).toMatchObject({ "in-sync": 4, rejected: 1 });
    const app = merged.backends.find((backend) => backend.backend === "be_app")!;
    expect(app).toMatchObject({ agents: 5, inSync: 4, behind: 0 });
    expect(app.states.rejected).toBe(1);
    const rejected = merged.agents[0]!;
    expect(rejected.backends[0]).toMatchObject({ state: "rejected", error: "backend be_app not in HAProxy", serving: 4, pendingSince: null, drift: [] });
    expect(rejected).toMatchObject({ connected: true, peer: "", hafleetVersion: "0.2.0", labels: { region: "us-east-1" } });
  });

  it("with no other replica reporting, says the fleet is this one replica", () => {
    const local = fleetStatusFixture({ agents: 2 });
    const merged = merge(local, []);
    expect(merged.summary.scope).toBe("fleet (1 replica)");
    expect(merged.agents.every((agent) => agent.replica === "ctl-a")).toBe(true);
    expect(merged.summary.agents).toBe(2);
  });

  it("ignores this replica's own report read back", () => {
    const local = fleetStatusFixture({ agents: 1 });
    const merged = merge(local, [report("ctl-a", [remote(agentId(0)), remote("ghost")])]);
    expect(merged.agents.map((agent) => agent.agent)).toEqual([agentId(0)]);
    expect(merged.summary.scope).toBe("fleet (1 replica)");
  });

  it("keeps this replica's row of an agent connected here, whatever a lagging report says", () => {
    const local = fleetStatusFixture({ agents: 1 });
    const merged = merge(local, [report("ctl-b", [remote(agentId(0), "rejected")])]);
    expect(merged.agents).toHaveLength(1);
    expect(merged.agents[0]).toMatchObject({ agent: agentId(0), replica: "ctl-a", state: "in-sync" });
  });

  it("shows an agent that left this replica as connected to the one holding it now, not as disconnected", () => {
    const local = fleetStatusFixture({ states: { disconnected: 1 }, agents: 2 });
    expect(local.agents[0]!.state).toBe("disconnected");
    const moved = local.agents[0]!.agent;
    const merged = merge(local, [report("ctl-b", [remote(moved)])]);
    expect(merged.agents.filter((agent) => agent.agent === moved)).toEqual([expect.objectContaining({ replica: "ctl-b", connected: true, state: "in-sync" })]);
    expect(merged.summary).toMatchObject({ agents: 2, connected: 2, inSync: true });
  });

  it("keeps a departed agent no replica holds as disconnected here", () => {
    const local = fleetStatusFixture({ states: { disconnected: 1 }, agents: 1 });
    const merged = merge(local, [report("ctl-b", [remote("b-1")])]);
    expect(merged.agents.find((agent) => agent.agent === agentId(0))).toMatchObject({ replica: "ctl-a", connected: false, state: "disconnected" });
    expect(merged.summary).toMatchObject({ agents: 2, connected: 1, inSync: false });
  });

  it("takes the latest connection when two reports name one agent (it moved, the old report lags)", () => {
    const local = fleetStatusFixture({ agents: 0 });
    const merged = merge(local, [report("ctl-b", [remote("x", "pending", { connectedAt: NOW - 10_000 })]), report("ctl-c", [remote("x", "in-sync", { connectedAt: NOW - 1_000 })])]);
    expect(merged.agents.map((agent) => [agent.agent, agent.replica])).toEqual([["x", "ctl-c"]]);
  });

  it("counts an agent of another replica told to run another version (a later wave) as behind", () => {
    const local = fleetStatusFixture({ agents: 1, backends: BACKENDS });
    const lagging = remote("b-1", "not-sent");
    lagging.backends[0] = { ...lagging.backends[0]!, desired: "oldversion", applied: "oldversion" };
    const merged = merge(local, [report("ctl-b", [lagging])]);
    expect(merged.backends.find((backend) => backend.backend === "be_app")).toMatchObject({ agents: 2, inSync: 1, behind: 1 });
  });

  it("counts agent problems of other replicas' agents", () => {
    const local = fleetStatusFixture({ agents: 1 });
    const merged = merge(local, [report("ctl-b", [remote("twin", "in-sync", { problem: "two hosts use this id" })])]);
    expect(merged.summary.agentProblems).toBe(1);
    expect(merged.agents[0]).toMatchObject({ agent: "twin", problem: "two hosts use this id" });
  });

  it("says in the scope when a report was cut, when this replica's was, and when one is stale", () => {
    const local = fleetStatusFixture({ agents: 1 });
    const merged = merge(local, [report("ctl-b", [remote("b-1")], { connected: 40, truncated: true }), report("ctl-c", [remote("c-1")], { publishedAt: NOW - 90_000 })], { truncated: { published: 10, connected: 12 } });
    expect(merged.summary.scope).toBe(
      "fleet (3 replicas): this replica's report to the others cut to 10 of 12 agents (Consul's value size limit); ctl-b reported 1 of its 40 agents (Consul's value size limit); ctl-c's report is 90 s old",
    );
  });

  it("keeps the rollout, the freeze, discovery and changes as this replica knows them", () => {
    const local = fleetStatusFixture({ agents: 1, frozen: { since: NOW - 5_000, reason: "incident" }, held: { be_api: "drop guard" } });
    const merged = merge(local, [report("ctl-b", [remote("b-1")])]);
    expect(merged.frozen).toEqual(local.frozen);
    expect(merged.changes).toEqual(local.changes);
    expect(merged.backends.map((backend) => [backend.backend, backend.version, backend.servers, backend.held])).toEqual(local.backends.map((backend) => [backend.backend, backend.version, backend.servers, backend.held]));
    expect(merged.summary.discoveryProblems).toBe(local.summary.discoveryProblems);
  });
});

describe("a replica's report", () => {
  it("holds each connected agent compactly, with the first problem of each backend", () => {
    const local = fleetStatusFixture({ states: { rejected: 1, drifted: 1, disconnected: 1 }, agents: 4 });
    const { report: made } = encodeReport("ctl-a", local.agents, NOW);
    expect(made).toMatchObject({ replica: "ctl-a", publishedAt: NOW, connected: 3, truncated: false });
    expect(made.agents.map((agent) => agent.state)).toEqual(["rejected", "drifted", "in-sync"]);
    expect(made.agents[0]!.backends[0]!.problem).toBe(local.agents.find((agent) => agent.state === "rejected")!.backends[0]!.error);
    expect(made.agents[1]!.backends[0]!.problem).toMatch(/^(missing|unexpected|held) \S+/);
  });

  it("cuts a long problem short", () => {
    const [agent] = fleetStatusFixture({ states: { rejected: 1 }, agents: 1 }).agents;
    const long = { ...agent!, backends: [{ ...agent!.backends[0]!, error: "x".repeat(1_000) }] };
    expect(reportedAgent(long).backends[0]!.problem).toHaveLength(160);
  });

  it("over the size limit: the worst agents kept, measured one by one, and the report says it was cut", () => {
    const local = fleetStatusFixture({ states: { rejected: 2 }, agents: 50 });
    const whole = encodeReport("ctl-a", local.agents, NOW);
    const limit = Math.floor(Buffer.byteLength(whole.value) / 4);
    const cut = encodeReport("ctl-a", local.agents, NOW, { maxBytes: limit });
    expect(Buffer.byteLength(cut.value)).toBeLessThanOrEqual(limit);
    expect(cut.report.truncated).toBe(true);
    expect(cut.report.connected).toBe(50);
    expect(cut.report.agents.length).toBeGreaterThan(2);
    expect(cut.report.agents.length).toBeLessThan(50);
    expect(cut.report.agents.slice(0, 2).map((agent) => agent.state)).toEqual(["rejected", "rejected"]);
    // One more agent would not have fitted.
    const next = JSON.stringify(reportedAgent(local.agents[cut.report.agents.length]!));
    expect(Buffer.byteLength(cut.value) + Buffer.byteLength(next) + 1).toBeGreaterThan(limit);
  });

  it("is written again for a change, not for the times that move by themselves", () => {
    const local = fleetStatusFixture({ agents: 3 });
    const first = encodeReport("ctl-a", local.agents, NOW).report;
    const later = encodeReport("ctl-a", local.agents.map((agent) => ({ ...agent, lastSeenAt: NOW + 5_000 })), NOW + 5_000).report;
    expect(reportFingerprint(later)).toBe(reportFingerprint(first));
    const changed = encodeReport("ctl-a", local.agents.map((agent, index) => (index === 0 ? { ...agent, state: "pending" as const } : agent)), NOW).report;
    expect(reportFingerprint(changed)).not.toBe(reportFingerprint(first));
  });

  it("reads back what was written; a corrupt value names its key", () => {
    const { value, report: made } = encodeReport("ctl-a", fleetStatusFixture({ agents: 2 }).agents, NOW);
    expect(readReport(value, "hafleet/rollout/replicas/ctl-a")).toEqual({ report: made });
    expect(readReport("{not json", "k/replicas/x")).toEqual({ problem: expect.stringContaining("value of Consul key 'k/replicas/x': not valid JSON") });
    const wrong = readReport(JSON.stringify({ ...made, agents: [{ agent: "" }] }), "k/replicas/y");
    expect("problem" in wrong && wrong.problem).toContain("value of Consul key 'k/replicas/y'");
  });
});

describe("wait --contains/--lacks on an agent another replica holds", () => {
  const NEW = backendState("be_app", "v2", [80, 81, 82]);
  const OLD = backendState("be_app", "v1", [80, 81]);
  const ASKED = ["10.0.0.1:80", "10.0.0.1:82", "10.0.0.1:83"].map((endpoint) => ({ backend: "be_app", endpoint }));
  const twoSockets = (drift: ObservedReport["backends"][number]["drift"]): ObservedReport => {
    const one = reportOf(NEW, drift);
    return { ...one, backends: [...one.backends, { ...reportOf(NEW).backends[0]!, socket: "s1" }] };
  };
  const repairing = reportOf(NEW);
  repairing.backends[0]!.repairing = "HAProxy reloaded";
  const cases: Record<string, AgentView> = {
    "in sync": syncedAgent("a", NEW, NOW),
    "one missing": syncedAgent("a", NEW, NOW, { observed: reportOf(NEW, [{ endpoint: "10.0.0.1:82", state: "missing" }]) }),
    "one held": syncedAgent("a", NEW, NOW, { observed: reportOf(NEW, [{ endpoint: "10.0.0.1:80", state: "held" }]) }),
    "one unexpected": syncedAgent("a", NEW, NOW, { observed: reportOf(NEW, [{ endpoint: "10.0.0.1:83", state: "unexpected" }]) }),
    "missing on one of two sockets": syncedAgent("a", NEW, NOW, { observed: twoSockets([{ endpoint: "10.0.0.1:82", state: "missing" }]) }),
    "repairing": syncedAgent("a", NEW, NOW, { observed: repairing }),
    "pending": syncedAgent("a", NEW, NOW, { sync: new Map([[nameSchema.parse("be_app"), { state: "pending", version: "v2", since: NOW }]]), observed: reportOf(OLD) }),
    "on the baseline of a rollout": syncedAgent("a", OLD, NOW),
  };

  for (const [name, view] of Object.entries(cases)) {
    it(`answers as the holding replica would: ${name}`, () => {
      // On the replica holding the agent: the answer from its own view.
      const here = buildFleetStatus({ now: NOW, controller: { version: "t", startedAt: 0 }, agents: [view], backends: [NEW], frozen: null, rollout: null, changes: [], endpoints: ASKED });
      const exceptions = new Map(view.desired.map((backend) => [backend.name as string, endpointExceptions(view, backend)]));
      const { report: made } = encodeReport("ctl-b", here.agents, NOW, { exceptions: (_agent, backend) => exceptions.get(backend) ?? null });
      // On another replica, which knows discovery's servers of v2 only.
      const empty = fleetStatusFixture({ agents: 0, backends: ["be_app"] });
      const desired = (backend: string, version: string) => (backend === "be_app" && version === "v2" ? new Set(NEW.servers.map((server) => `${server.address}:${server.port}`)) : null);
      const there = mergeFleetStatus({ local: empty, self: { replica: "ctl-a", truncated: null }, peers: [made], now: NOW, endpoints: { queries: ASKED, desired } });
      const expected = here.agents[0]!.backends[0]!.endpoint!;
      // Another version than discovery's now (a rollout's baseline): its servers are not known there, so neither is the answer.
      expect(there.agents[0]!.backends[0]!.endpoint).toEqual(view.desired[0]!.version === "v2" ? expected : expected.map((entry) => ({ ...entry, served: null })));
    });
  }

  it("does not know past the exceptions' cap, and adds nothing when no endpoint was asked", () => {
    const drift = Array.from({ length: 65 }, (_, index) => ({ endpoint: `10.0.9.${index}:80`, state: "unexpected" as const }));
    const view = syncedAgent("a", NEW, NOW, { observed: reportOf(NEW, drift) });
    const here = buildFleetStatus({ now: NOW, controller: { version: "t", startedAt: 0 }, agents: [view], backends: [NEW], frozen: null, rollout: null, changes: [] });
    const { report: made } = encodeReport("ctl-b", here.agents, NOW, { exceptions: () => endpointExceptions(view, NEW) });
    expect(made.agents[0]!.backends[0]!.exceptions).toBeNull();
    const empty = fleetStatusFixture({ agents: 0, backends: ["be_app"] });
    const merged = mergeFleetStatus({ local: empty, self: { replica: "ctl-a", truncated: null }, peers: [made], now: NOW, endpoints: { queries: ASKED, desired: () => new Set(["10.0.0.1:80"]) } });
    expect(merged.agents[0]!.backends[0]!.endpoint?.map((entry) => entry.served)).toEqual([null, null, null]);
    expect(mergeFleetStatus({ local: empty, self: { replica: "ctl-a", truncated: null }, peers: [made], now: NOW }).agents[0]!.backends[0]!.endpoint).toBeUndefined();
  });
});
