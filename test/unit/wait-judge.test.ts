import { describe, expect, it } from "vitest";
import { nameSchema, type Name } from "../../agent/model/values.js";
import { judgeWait, type WaitTarget } from "../../controller/cli/wait-judge.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import { buildFleetStatus, type AgentView, type EndpointQuery, type StatusInput } from "../../controller/status/fleet-status.js";
import { parseEndpointCondition } from "../../controller/status/endpoint-condition.js";
import { fleetStatusSchema, type ChangeStatus, type DiscoveryHealth, type FleetStatus, type RolloutStatus } from "../../controller/status/status-schema.js";
import type { ObservedReport } from "../../proto/messages.js";
import { backendState, reportOf, syncedAgent } from "../support/agent-views.js";

// `hafleet wait`'s verdict, tried against every way it used to say "converged" when nothing it
// waited for had happened (issue 14): each case builds the status the controller would serve.

const NOW = 2_000_000;
const be = (name: string): Name => nameSchema.parse(name);

const OLD = backendState("be_app", "v1", [80, 81]);
const NEW = backendState("be_app", "v2", [80, 81, 82]);
const report = reportOf;
const agent = (id: string, desired: DesiredBackendState, extra: Partial<AgentView> = {}): AgentView => syncedAgent(id, desired, NOW, extra);

function rollout(phase: RolloutStatus["phase"], extra: Partial<RolloutStatus> = {}): RolloutStatus {
  return {
    id: "r-1",
    reason: "discovery change of web",
    backends: ["be_app"],
    phase,
    wave: 0,
    waves: [{ agents: 1, acked: 1 }, { agents: 2, acked: 0 }],
    startedAt: NOW - 5_000,
    phaseSince: NOW - 1_000,
    haltReason: phase === "rolled-back" || phase === "halted" ? "wave 1/2: agent a rejected backend be_app" : null,
    history: [],
    baseline: [{ backend: "be_app", version: "v1" }],
    target: [{ backend: "be_app", version: "v2" }],
    ...extra,
  };
}

function fleet(agents: AgentView[], extra: Partial<StatusInput> = {}): FleetStatus {
  return fleetStatusSchema.parse(buildFleetStatus({ now: NOW, controller: { version: "t", startedAt: 0 }, agents, backends: [NEW], frozen: null, rollout: null, changes: [], ...extra }));
}

const all: WaitTarget = { selector: {} };

describe("hafleet wait: no false success", () => {
  it("is done only when every matching agent runs the fleet's version, by its report", () => {
    expect(judgeWait(fleet([agent("a", NEW), agent("b", NEW)]), all)).toEqual({ done: true, detail: "all 2 matching agent(s) run the desired state: be_app=v2" });
    // Acked but no report of what HAProxy runs: not done.
    expect(judgeWait(fleet([agent("a", NEW), agent("b", NEW, { observed: null })]), all)).toMatchObject({ done: false, failed: false, detail: expect.stringContaining("b be_app unknown") });
  });

  it("waits through a rollout's later waves: agents on the baseline are not the target", () => {
    const status = fleet([agent("a", NEW, { rolloutSide: "target" }), agent("b", OLD, { rolloutSide: "baseline" }), agent("c", OLD, { rolloutSide: "baseline" })], { rollout: rollout("baking") });
    expect(status.backends[0]).toMatchObject({ version: "v2", inSync: 1, agents: 3, behind: 2 });
    const verdict = judgeWait(status, all);
    expect(verdict).toMatchObject({ done: false, failed: false });
    expect(verdict.detail).toContain("b be_app on v1 until its rollout wave (the fleet heads to v2)");
    // The same with --version of the target.
    expect(judgeWait(status, { ...all, version: "v2" })).toMatchObject({ done: false, failed: false });
  });

  it("fails at once when the rollout of what it waits for halts, or rolls back while it waits", () => {
    const halted = fleet([agent("a", NEW), agent("b", OLD)], { rollout: rollout("halted") });
    expect(judgeWait(halted, all)).toEqual({ done: false, failed: true, detail: "rollout r-1 of be_app halted: wave 1/2: agent a rejected backend be_app; 'hafleet rollout resume' or 'rollback'" });
    const back = fleet([agent("a", OLD), agent("b", OLD)], { rollout: rollout("rolled-back") });
    // Every agent is back on v1: the backend row says v1, and a wait begun during the rollout fails.
    expect(back.backends[0]).toMatchObject({ version: "v1", inSync: 2, behind: 0 });
    expect(judgeWait(back, { ...all, rolloutAtStart: { id: "r-1", phase: "applying" } })).toMatchObject({ failed: true, detail: expect.stringMatching(/^rollout r-1 of be_app rolled back: wave 1\/2: agent a rejected backend be_app; agents are back on be_app=v1$/) });
    // A rollback that was old news when the wait began is the fleet's state: it runs it.
    expect(judgeWait(back, { ...all, rolloutAtStart: { id: "r-1", phase: "rolled-back" } })).toMatchObject({ done: true });
    // Waiting for the rolled-back version fails whenever asked.
    expect(judgeWait(back, { ...all, version: "v2", rolloutAtStart: { id: "r-1", phase: "rolled-back" } })).toMatchObject({ failed: true, detail: expect.stringContaining("version v2 was rolled back by rollout r-1") });
  });

  it("fails when nothing matches: no agent, a selector or a backend that matches nothing", () => {
    expect(judgeWait(fleet([]), all)).toEqual({ done: false, failed: true, detail: "no agent is known to the controller: nothing to wait for" });
    expect(judgeWait(fleet([agent("a", NEW)]), { selector: { region: "us" } })).toEqual({ done: false, failed: true, detail: "no agent matches --selector region=us (1 agent(s) known)" });
    expect(judgeWait(fleet([agent("a", NEW)]), { ...all, backend: "be_nosuch" })).toEqual({ done: false, failed: true, detail: "no backend be_nosuch: the controller maps be_app" });
    const other = { ...NEW, name: be("be_other") };
    const unassigned = fleet([agent("a", other)], { backends: [NEW, other] });
    expect(judgeWait(unassigned, { ...all, backend: "be_app" })).toEqual({ done: false, failed: true, detail: "no agent is assigned be_app: nothing to wait for" });
  });

  it("does not take an id two hosts share as done: which host reported is not known", () => {
    const status = fleet([agent("a", NEW), agent("twin", NEW, { problem: "duplicate id: 2 connections contended for one stream 5 times in 60 s" })]);
    expect(judgeWait(status, all)).toMatchObject({ done: false, failed: false, detail: "1 not there yet: twin: duplicate id: 2 connections contended for one stream 5 times in 60 s" });
  });

  it("waits for a disconnected agent unless told to leave it out, and says which", () => {
    const status = fleet([agent("a", NEW), agent("b", NEW, { departed: { since: NOW - 30_000, reason: "no message for 15000 ms" }, sync: null })]);
    expect(judgeWait(status, all)).toMatchObject({ done: false, failed: false, detail: "1 not there yet: b be_app disconnected 30s ago: no message for 15000 ms" });
    expect(judgeWait(status, { ...all, ignoreDisconnected: true })).toMatchObject({ done: true, detail: expect.stringContaining("1 disconnected agent(s) left out") });
    // Every matching agent disconnected and left out: nothing was waited for, so that is no success.
    const gone = fleet([agent("b", NEW, { departed: { since: NOW, reason: "x" }, sync: null })]);
    expect(judgeWait(gone, { ...all, ignoreDisconnected: true })).toMatchObject({ failed: true, detail: "no connected agent is assigned be_app: nothing to wait for" });
  });

  it("fails at once on a nack, and on a freeze while something is missing", () => {
    const nacked = fleet([agent("a", NEW, { sync: new Map([[be("be_app"), { state: "rejected", version: "v2", error: "backend-missing\u001b[31m", appliedVersion: "" }]]) })]);
    expect(judgeWait(nacked, all)).toEqual({ done: false, failed: true, detail: "a rejected be_app v2: backend-missing\\x1b[31m" });
    const frozen = { since: NOW - 60_000, reason: "incident 4711" };
    const blocked = fleet([agent("a", NEW), agent("b", NEW, { sync: new Map([[be("be_app"), { state: "not-sent", version: "v2" }]]) })], { frozen });
    expect(judgeWait(blocked, all)).toMatchObject({ failed: true, detail: expect.stringMatching(/^the fleet is frozen since .*\(incident 4711\): nothing is pushed until 'hafleet unfreeze'; 1 not there yet: b be_app not sent yet$/) });
    // Frozen but already there: done.
    expect(judgeWait(fleet([agent("a", NEW)], { frozen }), all)).toMatchObject({ done: true });
  });

  it("waits while discovery fails or never answered for a backend it covers", () => {
    const failing: DiscoveryHealth = { state: "failing", since: NOW - 5_000, error: "connect ECONNREFUSED 127.0.0.1:8500" };
    const status = fleet([agent("a", NEW)], { discovery: new Map([["be_app", failing]]) });
    expect(judgeWait(status, all)).toMatchObject({ done: false, failed: false, detail: expect.stringContaining("discovery of be_app failing since") });
    const never = fleet([agent("a", NEW, { desired: [] })], { backends: [], mapped: ["be_app"] });
    expect(never.backends[0]).toMatchObject({ backend: "be_app", version: "", discovery: { state: "never-answered" } });
    // No agent has it yet because discovery never answered: that may still come, so it waits.
    expect(judgeWait(never, all)).toEqual({ done: false, failed: false, detail: "discovery of be_app has never answered" });
  });

  it("fails at once for a version rolled back, superseded or rejected, and waits for one not seen yet", () => {
    const changes: ChangeStatus[] = [
      { at: NOW - 1_000, outcome: "converged", outcomeDetail: null, backends: [{ backend: "be_app", version: "v2" }], agents: 1, acked: 1, convergedMs: 30 },
      { at: NOW - 9_000, outcome: "superseded", outcomeDetail: "by the change at T", backends: [{ backend: "be_app", version: "v0" }], agents: 1, acked: 0, convergedMs: null },
    ];
    const status = fleet([agent("a", NEW)], { changes });
    expect(judgeWait(status, { ...all, version: "v0" })).toEqual({ done: false, failed: true, detail: "version v0 was superseded: by the change at T; now: be_app=v2" });
    expect(judgeWait(status, { ...all, version: "v9" })).toEqual({ done: false, failed: false, detail: "no backend's desired version is v9 yet (now: be_app=v2)" });
    expect(judgeWait(status, { ...all, version: "v2" })).toMatchObject({ done: true });
  });
});

describe("hafleet wait --contains / --lacks", () => {
  const endpoint = (backend: string, text: string): EndpointQuery => parseEndpointCondition("--contains", `${backend}=${text}`);
  const asked = (endpoints: EndpointQuery[]) => ({ endpoints });
  const e82 = endpoint("be_app", "10.0.0.1:82");

  it("takes an endpoint as served only from the agent's own report of the version it acked", () => {
    const served = fleet([agent("a", NEW), agent("b", NEW)], asked([e82]));
    expect(judgeWait(served, { ...all, contains: [e82] })).toEqual({ done: true, detail: "all 2 matching agent(s) serve be_app=10.0.0.1:82" });
    // HAProxy lacks it on one of two sockets: not served everywhere.
    const oneSocket = report(NEW, [{ endpoint: "10.0.0.1:82", state: "missing" }], 1);
    const twoSockets: ObservedReport = { ...report(NEW), backends: [...report(NEW).backends, { ...oneSocket.backends[0]!, socket: "s1" }] };
    const partly = fleet([agent("a", NEW, { observed: twoSockets })], asked([e82]));
    expect(judgeWait(partly, { ...all, contains: [e82] })).toMatchObject({ done: false, detail: "1 not there yet: a be_app serves 10.0.0.1:82 on some of its HAProxy sockets" });
    // Held by an operator (drained): not served.
    const held = fleet([agent("a", NEW, { observed: report(NEW, [{ endpoint: "10.0.0.1:82", state: "held" }]) })], asked([e82]));
    expect(judgeWait(held, { ...all, contains: [e82] })).toMatchObject({ done: false });
  });

  it("does not know while the agent has not acked it, reports another version, or is repairing", () => {
    const pending = fleet([agent("a", NEW, { sync: new Map([[be("be_app"), { state: "pending", version: "v2", since: NOW }]]), observed: report(OLD) })], asked([e82]));
    expect(pending.agents[0]!.backends[0]!.endpoint).toEqual([{ endpoint: "10.0.0.1:82", served: null }]);
    expect(judgeWait(pending, { ...all, contains: [e82] })).toMatchObject({ done: false, detail: "1 not there yet: a be_app not known whether it serves 10.0.0.1:82 (pending)" });
    const stale = fleet([agent("a", NEW, { observed: { ...report(NEW), appliedVersions: { [be("be_app")]: "v1" } } })], asked([e82]));
    expect(stale.agents[0]!.backends[0]!.endpoint![0]!.served).toBeNull();
    const repairing = report(NEW);
    repairing.backends[0]!.repairing = "HAProxy reloaded";
    expect(fleet([agent("a", NEW, { observed: repairing })], asked([e82])).agents[0]!.backends[0]!.endpoint![0]!.served).toBeNull();
  });

  it("--lacks is done once no agent's HAProxy serves it, an unexpected server included", () => {
    const e81 = endpoint("be_app", "10.0.0.1:81");
    const without81 = backendState("be_app", "v3", [80, 82]);
    const gone = fleet([agent("a", without81)], { backends: [without81], endpoints: [e81] });
    expect(judgeWait(gone, { ...all, lacks: [e81] })).toEqual({ done: true, detail: "all 1 matching agent(s) lack be_app=10.0.0.1:81" });
    const lingering = fleet([agent("a", without81, { observed: report(without81, [{ endpoint: "10.0.0.1:81", state: "unexpected" }]) })], { backends: [without81], endpoints: [e81] });
    expect(judgeWait(lingering, { ...all, lacks: [e81] })).toMatchObject({ done: false, detail: "1 not there yet: a be_app serves 10.0.0.1:81 on its HAProxy" });
  });

  it("refuses endpoints that are not BACKEND=ADDR:PORT, naming what was wrong", () => {
    expect(parseEndpointCondition("--contains", "be_app=[2001:DB8::7]:8080")).toEqual({ backend: "be_app", endpoint: "[2001:db8::7]:8080" });
    for (const [text, message] of [
      ["be_app", "must be BACKEND=ADDR:PORT"],
      ["be app=10.0.0.1:80", "the backend must be a name"],
      ["be_app=10.0.0.1", "the endpoint must be ADDR:PORT"],
      ["be_app=host.example:80", "the address must be an IPv4 or IPv6 literal"],
      ["be_app=10.0.0.1:0", "the port must be 1..65535"],
    ] as const) {
      expect(() => parseEndpointCondition("--contains", text), text).toThrow(message);
    }
  });
});
