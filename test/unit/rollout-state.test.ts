import { describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { HafleetError } from "../../agent/errors.js";
import { rolloutConfigSchema, type RolloutConfigInput } from "../../controller/rollout/rollout-config.js";
import {
  abort,
  applyVerdict,
  HISTORY_LIMIT,
  isFinal,
  pause,
  reopen,
  resume,
  rollback,
  RolloutPhaseError,
  rolloutStateSchema,
  rolloutStatus,
  sideOf,
  startRollout,
  stepRollout,
  type RolloutContext,
  type RolloutMove,
  type RolloutPhase,
  type RolloutState,
  type Transition,
} from "../../controller/rollout/rollout-state.js";
import type { WaveObservation, WaveVerdict } from "../../controller/rollout/wave-judge.js";
import { planWaves } from "../../controller/rollout/waves.js";
import { rolloutStatusSchema, type SyncState } from "../../controller/status/status-schema.js";

const T0 = 1_000_000;
const AGENTS = Array.from({ length: 5 }, (_, index) => ({ id: `edge-${index}`, labels: {} }));
const IDS = AGENTS.map((agent) => agent.id);

interface Payload {
  servers: string[];
}
const BASELINE: Payload = { servers: ["10.0.0.1:80"] };
const TARGET: Payload = { servers: ["10.0.0.1:80", "10.0.0.2:80"] };

/** The fleet as the controller sees it; every agent connected and in sync unless changed. */
class Fleet {
  readonly seen = new Map<string, WaveObservation>(IDS.map((id) => [id, observation("in-sync")]));
  set(ids: readonly string[], state: SyncState, serving: number | null = 1): void {
    for (const id of ids) this.seen.set(id, observation(state, serving));
  }
  context(now: number, config: RolloutConfigInput = {}): RolloutContext {
    return { now, config: rolloutConfigSchema.parse({ waves: [0.5, 1], bakeMs: 1000, waveTimeoutMs: 5000, ...config }), observe: (id) => this.seen.get(id) };
  }
}

function observation(state: SyncState, serving: number | null = 1): WaveObservation {
  return { connected: state !== "disconnected", backends: [{ backend: "be_app", state }], servingShare: serving };
}

function started(fleet = new Fleet(), config: RolloutConfigInput = {}, agents = AGENTS): RolloutState<Payload> {
  return startRollout({ id: "r1", reason: "config change", backends: ["be_app"], agents, baseline: BASELINE, target: TARGET }, fleet.context(T0, config));
}

function ok<T>(transition: Transition<T>): RolloutState<T> {
  if (!transition.ok) throw transition.error;
  return transition.state;
}

function events(state: RolloutState<unknown>): string[] {
  return state.history.map((entry) => entry.event);
}

const WAVES = planWaves(AGENTS, rolloutConfigSchema.parse({ waves: [0.5, 1] }), "r1");
const [CANARY, SECOND, THIRD] = WAVES as [string[], string[], string[]];

describe("startRollout", () => {
  it("plans the waves and applies the canary, with a snapshot of its agents", () => {
    const fleet = new Fleet();
    fleet.set(CANARY, "drifted", 0.5);
    const state = started(fleet);
    expect(WAVES.map((wave) => wave.length)).toEqual([1, 2, 2]);
    expect(state).toMatchObject({ format: 1, id: "r1", reason: "config change", backends: ["be_app"], startedAt: T0, waves: WAVES, wave: 0, phase: "applying", phaseSince: T0, haltReason: null });
    expect(state.waveStart).toEqual(CANARY.map((agent) => ({ agent, connected: true, drifted: true, servingShare: 0.5 })));
    expect(state.baseline).toBe(BASELINE);
    expect(state.target).toBe(TARGET);
    expectTypeOf(state.target).toEqualTypeOf<Payload>();
    expect(state.history).toEqual([{ at: T0, event: "started (config change): 5 agents in 3 waves of 1, 2, 2; wave 1/3 applying" }]);
  });

  it("completes at once with no agent, and then every agent that comes gets the target", () => {
    const state = started(new Fleet(), {}, []);
    expect(state).toMatchObject({ phase: "completed", waves: [], wave: 0, waveStart: [] });
    expect(events(state)).toEqual(["started (config change) and completed at once: no agent to roll out to"]);
    expect(sideOf(state, "edge-new")).toBe("target");
    expect(() => rolloutStateSchema(z.json()).parse(JSON.parse(JSON.stringify(state)))).not.toThrow();
  });

  it("is one wave for a single agent", () => {
    const state = started(new Fleet(), {}, AGENTS.slice(0, 1));
    expect(state.waves).toEqual([["edge-0"]]);
  });
});

describe("stepRollout", () => {
  it("takes a healthy fleet through every wave to completed", () => {
    const fleet = new Fleet();
    fleet.set(IDS, "not-sent");
    let state = started(fleet);
    let now = T0;
    for (const wave of WAVES) {
      now += 100;
      expect(stepRollout(state, fleet.context(now))).toBe(state);
      fleet.set(wave, "in-sync");
      state = stepRollout(state, fleet.context(now));
      expect(state).toMatchObject({ phase: "baking", phaseSince: now });
      now += 1000;
      state = stepRollout(state, fleet.context(now));
    }
    expect(state).toMatchObject({ phase: "completed", wave: 2, waveStart: [], haltReason: null, phaseSince: now });
    expect(isFinal(state)).toBe(true);
    expect(events(state)).toEqual([
      "started (config change): 5 agents in 3 waves of 1, 2, 2; wave 1/3 applying",
      "wave 1/3: every agent acked; baking for 1 s",
      "wave 1/3 passed; wave 2/3 applying",
      "wave 2/3: every agent acked; baking for 1 s",
      "wave 2/3 passed; wave 3/3 applying",
      "wave 3/3: every agent acked; baking for 1 s",
      "wave 3/3 passed; completed: every agent runs the target",
    ]);
  });

  it("snapshots the next wave's agents as they are when it starts", () => {
    const fleet = new Fleet();
    let state = stepRollout(started(fleet), fleet.context(T0));
    fleet.set(SECOND, "drifted", 0.25);
    state = stepRollout(state, fleet.context(T0 + 1000));
    expect(state.wave).toBe(1);
    expect(state.waveStart).toEqual(SECOND.map((agent) => ({ agent, connected: true, drifted: true, servingShare: 0.25 })));
  });

  it("rolls back on a halt, keeping the reason", () => {
    const fleet = new Fleet();
    fleet.set(CANARY, "rejected");
    const state = stepRollout(started(fleet), fleet.context(T0 + 5));
    const reason = `wave 1/3: agent ${CANARY[0]} rejected backend be_app; the agent's error is in its status`;
    expect(state).toMatchObject({ phase: "rolled-back", haltReason: reason, phaseSince: T0 + 5, waveStart: [] });
    expect(events(state).at(-1)).toBe(`halted and rolled back automatically: ${reason}`);
    expect(sideOf(state, CANARY[0]!)).toBe("baseline");
  });

  it("halts without autoRollback, leaving the wave on the target", () => {
    const fleet = new Fleet();
    fleet.set(CANARY, "pending");
    const state = stepRollout(started(fleet, { autoRollback: false }), fleet.context(T0 + 5000, { autoRollback: false }));
    const reason = `wave 1/3: 1 of 1 agents not acked within 5 s: ${CANARY[0]}`;
    expect(state).toMatchObject({ phase: "halted", haltReason: reason });
    expect(events(state).at(-1)).toBe(`halted: ${reason}`);
    expect(sideOf(state, CANARY[0]!)).toBe("target");
  });

  it.each<RolloutPhase>(["paused", "halted", "completed", "aborted", "rolled-back"])("leaves a %s rollout as it is", (phase) => {
    const fleet = new Fleet();
    const state = inPhase(phase);
    expect(stepRollout(state, fleet.context(T0 + 10_000_000))).toBe(state);
  });
});

/** A rollout of the five agents in `phase`, at wave 1 (0-based) where it is still under way. */
function inPhase(phase: RolloutPhase): RolloutState<Payload> {
  const fleet = new Fleet();
  const context = fleet.context(T0, { autoRollback: false });
  const applying = ok(applyVerdict(ok(applyVerdict(started(fleet), { verdict: "bake" }, context)), { verdict: "advance" }, context));
  switch (phase) {
    case "applying":
      return applying;
    case "baking":
      return ok(applyVerdict(applying, { verdict: "bake" }, context));
    case "paused":
      return ok(pause(applying, T0));
    case "halted":
      return ok(applyVerdict(applying, { verdict: "halt", reason: "wave 2/3: broken" }, context));
    case "completed":
      return ok(applyVerdict(ok(applyVerdict(ok(applyVerdict(ok(applyVerdict(applying, { verdict: "bake" }, context)), { verdict: "advance" }, context)), { verdict: "bake" }, context)), { verdict: "advance" }, context));
    case "aborted":
      return ok(abort(applying, T0));
    case "rolled-back":
      return ok(rollback(applying, T0));
  }
}

const MOVES: Record<RolloutMove, (state: RolloutState<Payload>, context: RolloutContext) => Transition<Payload>> = {
  pause: (state, context) => pause(state, context.now),
  resume: (state, context) => resume(state, context),
  abort: (state, context) => abort(state, context.now),
  rollback: (state, context) => rollback(state, context.now),
  wait: (state, context) => applyVerdict(state, { verdict: "wait" }, context),
  bake: (state, context) => applyVerdict(state, { verdict: "bake" }, context),
  advance: (state, context) => applyVerdict(state, { verdict: "advance" }, context),
  halt: (state, context) => applyVerdict(state, { verdict: "halt", reason: "it broke" }, context),
};

const ONLY: Record<RolloutMove, string> = {
  pause: "cannot pause it (only when applying or baking)",
  resume: "cannot resume it (only when paused or halted)",
  abort: "cannot abort it (only when applying or baking or paused or halted)",
  rollback: "cannot roll it back (only when applying or baking or paused or halted or completed)",
  wait: "cannot wait on its wave (only when applying or baking)",
  bake: "cannot bake its wave (only when applying)",
  advance: "cannot advance to the next wave (only when baking)",
  halt: "cannot halt it (only when applying or baking)",
};

// Where each move leads from each phase; null: refused.
const TRANSITIONS: Record<RolloutPhase, Record<RolloutMove, RolloutPhase | null>> = {
  applying: { pause: "paused", resume: null, abort: "aborted", rollback: "rolled-back", wait: "applying", bake: "baking", advance: null, halt: "halted" },
  baking: { pause: "paused", resume: null, abort: "aborted", rollback: "rolled-back", wait: "baking", bake: null, advance: "applying", halt: "halted" },
  paused: { pause: null, resume: "applying", abort: "aborted", rollback: "rolled-back", wait: null, bake: null, advance: null, halt: null },
  halted: { pause: null, resume: "applying", abort: "aborted", rollback: "rolled-back", wait: null, bake: null, advance: null, halt: null },
  completed: { pause: null, resume: null, abort: null, rollback: "rolled-back", wait: null, bake: null, advance: null, halt: null },
  aborted: { pause: null, resume: null, abort: null, rollback: null, wait: null, bake: null, advance: null, halt: null },
  "rolled-back": { pause: null, resume: null, abort: null, rollback: null, wait: null, bake: null, advance: null, halt: null },
};

const CASES = Object.entries(TRANSITIONS).flatMap(([from, moves]) => Object.entries(moves).map(([move, to]) => [from as RolloutPhase, move as RolloutMove, to] as const));

describe("every move from every phase", () => {
  it.each(CASES)("from %s, %s gives %s", (from, move, to) => {
    const state = inPhase(from);
    const frozen = structuredClone(state);
    const result = MOVES[move](state, new Fleet().context(T0 + 77, { autoRollback: false }));
    expect(state).toEqual(frozen);
    if (to === null) {
      expect(result.ok).toBe(false);
      const error = (result as { error: RolloutPhaseError }).error;
      expect(error).toBeInstanceOf(RolloutPhaseError);
      expect(error).toBeInstanceOf(HafleetError);
      expect(error).toMatchObject({ code: "HAFLEET_ROLLOUT_PHASE", name: "RolloutPhaseError", rolloutId: "r1", move, phase: from });
      expect(error.message).toBe(`rollout r1 is ${from}: ${ONLY[move]}`);
      return;
    }
    const next = ok(result);
    expect(next.phase).toBe(to);
    if (move === "wait") {
      expect(next).toBe(state);
      return;
    }
    expect(next.phaseSince).toBe(T0 + 77);
    expect(next.history.at(-1)!.at).toBe(T0 + 77);
    expect(next.history).toHaveLength(state.history.length + 1);
  });
});

describe("operator moves", () => {
  it.each<[RolloutPhase, string]>([
    ["applying", "paused by the operator while applying wave 2/3"],
    ["baking", "paused by the operator while baking wave 2/3"],
  ])("pauses a rollout that is %s, and the wave stays on the target", (phase, event) => {
    const state = ok(pause(inPhase(phase), T0 + 1));
    expect(events(state).at(-1)).toBe(event);
    expect(sideOf(state, SECOND[0]!)).toBe("target");
    expect(sideOf(state, THIRD[0]!)).toBe("baseline");
  });

  it("resumes a halted rollout: the current wave again, the reason cleared, a new snapshot", () => {
    const fleet = new Fleet();
    fleet.set(SECOND, "in-sync", 0.4);
    const state = ok(resume(inPhase("halted"), fleet.context(T0 + 9)));
    expect(state).toMatchObject({ phase: "applying", wave: 1, haltReason: null, phaseSince: T0 + 9 });
    expect(state.waveStart).toEqual(SECOND.map((agent) => ({ agent, connected: true, drifted: false, servingShare: 0.4 })));
    expect(events(state).at(-1)).toBe("resumed by the operator: wave 2/3 applying again");
  });

  it.each<RolloutPhase>(["applying", "baking", "paused", "halted"])("aborts a rollout that is %s: every agent back on the baseline", (phase) => {
    const state = ok(abort(inPhase(phase), T0 + 1));
    expect(state.waveStart).toEqual([]);
    expect(events(state).at(-1)).toBe("aborted by the operator: every agent back on the baseline");
    expect(IDS.map((id) => sideOf(state, id))).toEqual(IDS.map(() => "baseline"));
  });

  it("keeps the halt reason through an abort", () => {
    expect(ok(abort(inPhase("halted"), T0 + 1)).haltReason).toBe("wave 2/3: broken");
  });

  it("rolls a completed rollout back to the baseline it replaced", () => {
    const state = ok(rollback(inPhase("completed"), T0 + 1));
    expect(events(state).at(-1)).toBe("rolled back by the operator after completion: every agent back on the baseline");
    expect(sideOf(state, CANARY[0]!)).toBe("baseline");
    expect(state.baseline).toBe(BASELINE);
  });

  it("rolls back a rollout under way", () => {
    expect(events(ok(rollback(inPhase("baking"), T0 + 1))).at(-1)).toBe("rolled back by the operator: every agent back on the baseline");
  });

  it("says clearly why a move makes no sense", () => {
    const resumed = resume(inPhase("completed"), new Fleet().context(T0));
    expect(resumed.ok).toBe(false);
    expect(!resumed.ok && resumed.error.message).toBe("rollout r1 is completed: cannot resume it (only when paused or halted)");
    const paused = pause(inPhase("aborted"), T0);
    expect(!paused.ok && paused.error.message).toBe("rollout r1 is aborted: cannot pause it (only when applying or baking)");
  });
});

describe("reopen after a controller restart", () => {
  it.each<RolloutPhase>(["applying", "baking"])("judges a wave that was %s afresh from now, keeping its snapshot", (phase) => {
    const state = inPhase(phase);
    const reopened = reopen(state, T0 + 600_000);
    expect(reopened).toMatchObject({ phase: "applying", wave: 1, phaseSince: T0 + 600_000, waveStart: state.waveStart });
    expect(events(reopened).at(-1)).toBe("controller restarted: wave 2/3 applying again");
    expect(stepRollout(reopened, new Fleet().context(T0 + 600_001))).toMatchObject({ phase: "baking" });
  });

  it.each<RolloutPhase>(["paused", "halted", "completed", "aborted", "rolled-back"])("leaves a %s rollout as it is", (phase) => {
    const state = inPhase(phase);
    expect(reopen(state, T0 + 1)).toBe(state);
  });
});

describe("sideOf", () => {
  it.each<[RolloutPhase, string]>([
    ["applying", "target target target baseline baseline baseline"],
    ["baking", "target target target baseline baseline baseline"],
    ["paused", "target target target baseline baseline baseline"],
    ["halted", "target target target baseline baseline baseline"],
    ["completed", "target target target target target target"],
    ["aborted", "baseline baseline baseline baseline baseline baseline"],
    ["rolled-back", "baseline baseline baseline baseline baseline baseline"],
  ])("when %s: waves begun get the target, later waves and newcomers the baseline", (phase, sides) => {
    const state = inPhase(phase);
    expect([...CANARY, ...SECOND, ...THIRD, "edge-new"].map((id) => sideOf(state, id)).join(" ")).toBe(sides);
  });

  it("follows the rollout from state to state", () => {
    const fleet = new Fleet();
    const state = started(fleet);
    expect(sideOf(state, SECOND[0]!)).toBe("baseline");
    const next = stepRollout(stepRollout(state, fleet.context(T0)), fleet.context(T0 + 1000));
    expect(sideOf(next, SECOND[0]!)).toBe("target");
    expect(sideOf(state, SECOND[0]!)).toBe("baseline");
  });
});

describe("isFinal", () => {
  it.each<[RolloutPhase, boolean]>([
    ["applying", false],
    ["baking", false],
    ["paused", false],
    ["halted", false],
    ["completed", true],
    ["aborted", true],
    ["rolled-back", true],
  ])("%s: %s", (phase, final) => {
    expect(isFinal(inPhase(phase))).toBe(final);
  });
});

describe("history", () => {
  it(`keeps the last ${HISTORY_LIMIT} events`, () => {
    const fleet = new Fleet();
    let state = started(fleet);
    for (let round = 1; round <= 80; round++) {
      state = ok(resume(ok(pause(state, T0 + round * 2)), fleet.context(T0 + round * 2 + 1)));
    }
    expect(state.history).toHaveLength(HISTORY_LIMIT);
    expect(state.history.at(-1)).toEqual({ at: T0 + 161, event: "resumed by the operator: wave 1/3 applying again" });
    expect(state.history[0]).toEqual({ at: T0 + 62, event: "paused by the operator while applying wave 1/3" });
    expect(() => rolloutStateSchema(z.json()).parse(state)).not.toThrow();
  });
});

describe("rolloutStatus", () => {
  it("gives the status API's shape, with acks per wave", () => {
    const state = inPhase("baking");
    const status = rolloutStatus(state, [1, 1]);
    expect(rolloutStatusSchema.parse(status)).toEqual(status);
    expect(status).toEqual({
      baseline: [],
      target: [],
      id: "r1",
      reason: "config change",
      backends: ["be_app"],
      phase: "baking",
      wave: 1,
      waves: [
        { agents: 1, acked: 1 },
        { agents: 2, acked: 1 },
        { agents: 2, acked: 0 },
      ],
      startedAt: T0,
      phaseSince: T0,
      haltReason: null,
      history: state.history,
    });
  });
});

describe("rolloutStateSchema", () => {
  const payload = z.strictObject({ servers: z.array(z.string()) });
  const schema = rolloutStateSchema(payload);

  it.each<RolloutPhase>(["applying", "baking", "paused", "halted", "completed", "aborted", "rolled-back"])("reads back a %s rollout written as JSON", (phase) => {
    const state = inPhase(phase);
    expect(schema.parse(JSON.parse(JSON.stringify(state)))).toEqual(state);
  });

  it.each<[string, (state: RolloutState<Payload>) => unknown, Array<{ path: PropertyKey[]; message: string }>]>([
    ["a wave beyond the plan", (state) => ({ ...state, wave: 3, waveStart: [] }), [{ path: ["wave"], message: "must be a wave of the plan (3 planned)" }]],
    ["a wave in an empty plan", (state) => ({ ...state, waves: [], wave: 1, waveStart: [] }), [{ path: ["wave"], message: "must be a wave of the plan (0 planned)" }]],
    ["an agent in two waves", (state) => ({ ...state, waves: [state.waves[0], [...state.waves[1]!, state.waves[0]![0]], state.waves[2]] }), [{ path: ["waves", 1, 2], message: "agent planned twice" }]],
    ["a snapshot of an agent of another wave", (state) => ({ ...state, waveStart: [{ agent: CANARY[0], connected: true, drifted: false, servingShare: null }] }), [{ path: ["waveStart", 0, "agent"], message: "not an agent of the current wave" }]],
    ["an empty wave", (state) => ({ ...state, waves: [...state.waves, []] }), [{ path: ["waves", 3], message: "Too small: expected array to have >=1 items" }]],
    ["another format", (state) => ({ ...state, format: 2 }), [{ path: ["format"], message: "Invalid input: expected 1" }]],
    ["a payload that is not the caller's", (state) => ({ ...state, target: { servers: "all" } }), [{ path: ["target", "servers"], message: "Invalid input: expected array, received string" }]],
    ["an unknown phase", (state) => ({ ...state, phase: "done" }), [{ path: ["phase"], message: expect.stringContaining("applying") as unknown as string }]],
    ["too long a history", (state) => ({ ...state, history: Array.from({ length: 101 }, (_, at) => ({ at, event: "x" })) }), [{ path: ["history"], message: "Too big: expected array to have <=100 items" }]],
  ])("refuses %s", (_name, change, issues) => {
    const result = schema.safeParse(change(inPhase("applying")));
    expect(result.success).toBe(false);
    expect(result.error!.issues.map(({ path, message }) => ({ path, message }))).toEqual(issues);
  });
});

describe("applyVerdict", () => {
  it("returns the very same state on wait, so the caller can skip the write", () => {
    const state = inPhase("applying");
    const verdict: WaveVerdict = { verdict: "wait" };
    expect(ok(applyVerdict(state, verdict, new Fleet().context(T0 + 1)))).toBe(state);
  });
});
