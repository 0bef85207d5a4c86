import { describe, expect, it } from "vitest";
import { judgeWave, waveStartOf, type WaveJudgeInput, type WaveObservation, type WaveStart } from "../../controller/rollout/wave-judge.js";
import type { SyncState } from "../../controller/status/status-schema.js";

const CONFIG = { bakeMs: 30_000, waveTimeoutMs: 120_000, maxServingDrop: 0.1 };
const T0 = 1_000_000;

function seen(states: SyncState | SyncState[], options: { connected?: boolean; serving?: number | null } = {}): WaveObservation {
  const list = Array.isArray(states) ? states : [states];
  return { connected: options.connected ?? true, backends: list.map((state, index) => ({ backend: `be_${index}`, state })), servingShare: options.serving ?? null };
}

function start(agent: string, options: Partial<Omit<WaveStart, "agent">> = {}): WaveStart {
  return { agent, connected: true, drifted: false, servingShare: null, ...options };
}

/** A wave of agents a, b, c... with these observations now and these wave-start snapshots (default: connected, clean). */
function judge(
  phase: "applying" | "baking",
  elapsed: number,
  now: Record<string, WaveObservation | undefined>,
  starts: Record<string, Partial<Omit<WaveStart, "agent">>> = {},
): ReturnType<typeof judgeWave> {
  const input: WaveJudgeInput = {
    phase,
    phaseSince: T0,
    now: T0 + elapsed,
    config: CONFIG,
    wave: 1,
    waveCount: 4,
    waveStart: Object.keys(now).map((agent) => start(agent, starts[agent])),
    observe: (agent) => now[agent],
  };
  return judgeWave(input);
}

describe("judgeWave while applying", () => {
  it("bakes once every agent acked", () => {
    expect(judge("applying", 10, { a: seen("in-sync"), b: seen(["in-sync", "in-sync"]) })).toEqual({ verdict: "bake" });
  });

  it("counts an operator's held servers as acked", () => {
    expect(judge("applying", 10, { a: seen(["in-sync", "held"]) })).toEqual({ verdict: "bake" });
  });

  it("counts an agent that runs none of the rollout's backends as acked", () => {
    expect(judge("applying", 10, { a: seen([]), b: seen("in-sync") })).toEqual({ verdict: "bake" });
  });

  it.each<SyncState>(["pending", "not-sent"])("waits while an agent is %s, until the wave's timeout", (state) => {
    expect(judge("applying", 119_999, { a: seen("in-sync"), b: seen(["in-sync", state]) })).toEqual({ verdict: "wait" });
  });

  it("halts at the timeout, counting and naming the agents that did not ack", () => {
    expect(judge("applying", 120_000, { a: seen("in-sync"), b: seen("pending"), c: seen("not-sent") })).toEqual({
      verdict: "halt",
      reason: "wave 2/4: 2 of 3 agents not acked within 120 s: b, c",
    });
  });

  it("names at most five agents in a timeout", () => {
    const now = Object.fromEntries(Array.from({ length: 40 }, (_, index) => [`edge-${index}`, seen(index < 8 ? "pending" : "in-sync")]));
    expect(judge("applying", 200_000, now)).toEqual({
      verdict: "halt",
      reason: "wave 2/4: 8 of 40 agents not acked within 120 s: edge-0, edge-1, edge-2, edge-3, edge-4 and 3 more",
    });
  });

  it("gives timeouts under a second in seconds too", () => {
    const verdict = judgeWave({ phase: "applying", phaseSince: 0, now: 1500, config: { ...CONFIG, waveTimeoutMs: 1500 }, wave: 0, waveCount: 1, waveStart: [start("a")], observe: () => seen("pending") });
    expect(verdict).toEqual({ verdict: "halt", reason: "wave 1/1: 1 of 1 agents not acked within 1.5 s: a" });
  });
});

describe("judgeWave halts", () => {
  it.each<[string, "applying" | "baking", Record<string, WaveObservation | undefined>, Record<string, Partial<Omit<WaveStart, "agent">>>, string]>([
    ["a nack", "applying", { a: seen("in-sync"), b: seen(["in-sync", "rejected"]) }, {}, "wave 2/4: agent b rejected backend be_1; the agent's error is in its status"],
    ["a nack while baking", "baking", { a: seen("rejected") }, {}, "wave 2/4: agent a rejected backend be_0; the agent's error is in its status"],
    ["a disconnect", "applying", { a: seen("in-sync"), b: seen("disconnected", { connected: false }) }, {}, "wave 2/4: agent b disconnected during its wave"],
    ["an agent the controller forgot", "baking", { a: undefined }, {}, "wave 2/4: agent a disconnected during its wave"],
    [
      "new drift",
      "applying",
      { a: seen(["in-sync", "drifted"]) },
      {},
      "wave 2/4: agent a drifted on backend be_1 after applying the change: HAProxy runs something other than what it acked (the differences are in its status)",
    ],
    [
      "new drift while baking",
      "baking",
      { a: seen("in-sync"), b: seen("drifted") },
      {},
      "wave 2/4: agent b drifted on backend be_0 after applying the change: HAProxy runs something other than what it acked (the differences are in its status)",
    ],
    ["a nack before a disconnect elsewhere", "applying", { a: seen("disconnected", { connected: false }), b: seen("rejected") }, {}, "wave 2/4: agent b rejected backend be_0; the agent's error is in its status"],
    ["a disconnect before drift elsewhere", "applying", { a: seen("drifted"), b: seen("disconnected", { connected: false }) }, {}, "wave 2/4: agent b disconnected during its wave"],
    [
      "a nack from an agent that came back during the wave",
      "applying",
      { a: seen("rejected") },
      { a: { connected: false } },
      "wave 2/4: agent a rejected backend be_0; the agent's error is in its status",
    ],
  ])("on %s", (_name, phase, now, starts, reason) => {
    expect(judge(phase, 10, now, starts)).toEqual({ verdict: "halt", reason });
  });
});

describe("judgeWave leaves out", () => {
  it("drift that was there when the wave started, and counts that agent as acked", () => {
    expect(judge("applying", 10, { a: seen(["drifted", "in-sync"]) }, { a: { drifted: true } })).toEqual({ verdict: "bake" });
  });

  it("agents disconnected since before the wave started", () => {
    expect(judge("applying", 200_000, { a: seen("disconnected", { connected: false }), b: seen("in-sync"), c: undefined }, { a: { connected: false }, c: { connected: false } })).toEqual({
      verdict: "bake",
    });
  });

  it("nothing from a wave whose every agent was away: it bakes, and gets no verdict on them", () => {
    expect(judge("applying", 10, { a: undefined }, { a: { connected: false } })).toEqual({ verdict: "bake" });
  });

  it("not an agent that came back during the wave: it must ack like the others", () => {
    expect(judge("applying", 10, { a: seen("pending"), b: seen("in-sync") }, { a: { connected: false } })).toEqual({ verdict: "wait" });
  });
});

describe("judgeWave while baking", () => {
  it("waits for the bake time, then advances", () => {
    expect(judge("baking", 29_999, { a: seen("in-sync") })).toEqual({ verdict: "wait" });
    expect(judge("baking", 30_000, { a: seen("in-sync") })).toEqual({ verdict: "advance" });
  });

  it("waits while an agent is no longer acked (a new push, a freeze), past the bake time", () => {
    expect(judge("baking", 60_000, { a: seen("in-sync"), b: seen("pending") })).toEqual({ verdict: "wait" });
  });

  it("halts when an agent's serving share fell by more than allowed, once baked", () => {
    expect(judge("baking", 30_000, { a: seen("in-sync", { serving: 1 }), b: seen(["in-sync", "held"], { serving: 0.5 }) }, { a: { servingShare: 1 }, b: { servingShare: 0.95 } })).toEqual({
      verdict: "halt",
      reason: "wave 2/4: agent b serves 50% of the desired servers of be_0, be_1, down from 95% when the wave started (at most 10% may be lost)",
    });
  });

  it("gives new servers the bake time to come up", () => {
    expect(judge("baking", 29_999, { a: seen("in-sync", { serving: 0.5 }) }, { a: { servingShare: 1 } })).toEqual({ verdict: "wait" });
    expect(judge("applying", 10, { a: seen("in-sync", { serving: 0.5 }) }, { a: { servingShare: 1 } })).toEqual({ verdict: "bake" });
  });

  it.each<[string, number | null, number | null]>([
    ["a drop of exactly the limit", 0.8, 0.7],
    ["a rise", 0.5, 1],
    ["no share at the start", null, 0],
    ["no share now", 1, null],
  ])("advances on %s", (_name, before, after) => {
    expect(judge("baking", 30_000, { a: seen("in-sync", { serving: after }) }, { a: { servingShare: before } })).toEqual({ verdict: "advance" });
  });
});

describe("waveStartOf", () => {
  it.each<[string, WaveObservation | undefined, WaveStart]>([
    ["a clean agent", seen(["in-sync", "pending"], { serving: 0.75 }), { agent: "a", connected: true, drifted: false, servingShare: 0.75 }],
    ["a drifted agent", seen(["in-sync", "drifted"]), { agent: "a", connected: true, drifted: true, servingShare: null }],
    ["a disconnected agent", seen("disconnected", { connected: false, serving: 1 }), { agent: "a", connected: false, drifted: false, servingShare: 1 }],
    ["an unknown agent", undefined, { agent: "a", connected: false, drifted: false, servingShare: null }],
  ])("records %s", (_name, observation, expected) => {
    expect(waveStartOf("a", observation)).toEqual(expected);
  });
});
