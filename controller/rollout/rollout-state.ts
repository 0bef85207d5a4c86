import { z } from "zod";
import { HafleetError } from "../../agent/errors.js";
import { rolloutPhaseSchema, type AgentStatus, type RolloutStatus } from "../status/status-schema.js";
import type { RolloutConfig } from "./rollout-config.js";
import { judgeWave, waveStartOf, waveStartSchema, type Observe, type WaveStart, type WaveVerdict } from "./wave-judge.js";
import { planWaves, type PlannedAgent } from "./waves.js";

/*
 * A rollout as plain, persisted data, and every move it can make. States are never changed in
 * place: each move returns a new one (the same object when nothing changed, so a caller can
 * skip the write). The two desired states are opaque payloads: kept, saved, handed back.
 */

const FORMAT = 1;
export const HISTORY_LIMIT = 100;

export type RolloutPhase = RolloutStatus["phase"];
export type RolloutSide = NonNullable<AgentStatus["rolloutSide"]>;

/** The state file's schema, for a payload (what the caller keeps as baseline and target). */
export function rolloutStateSchema<T>(payload: z.ZodType<T>) {
  return z
    .strictObject({
      format: z.literal(FORMAT),
      id: z.string().min(1),
      /** What started it: a config change, or a staged discovery change of a service. */
      reason: z.string(),
      backends: z.array(z.string()),
      startedAt: z.number(),
      /** Agent ids, wave by wave; waves[0] is the canary. */
      waves: z.array(z.array(z.string()).min(1)),
      wave: z.number().int().min(0),
      phase: rolloutPhaseSchema,
      phaseSince: z.number(),
      haltReason: z.string().nullable(),
      history: z.array(z.strictObject({ at: z.number(), event: z.string() })).max(HISTORY_LIMIT),
      /** The current wave's agents as they were when it started. */
      waveStart: z.array(waveStartSchema),
      baseline: payload,
      target: payload,
    })
    .superRefine((state, ctx) => {
      // A file that parses but contradicts itself would put agents on the wrong side.
      if (state.wave >= Math.max(1, state.waves.length)) {
        ctx.addIssue({ code: "custom", path: ["wave"], message: `must be a wave of the plan (${state.waves.length} planned)`, input: state.wave });
      }
      const planned = new Set<string>();
      state.waves.forEach((agents, wave) =>
        agents.forEach((agent, index) => {
          if (planned.has(agent)) ctx.addIssue({ code: "custom", path: ["waves", wave, index], message: "agent planned twice", input: agent });
          planned.add(agent);
        }),
      );
      const current = new Set(state.waves[state.wave]);
      state.waveStart.forEach((start, index) => {
        if (!current.has(start.agent)) ctx.addIssue({ code: "custom", path: ["waveStart", index, "agent"], message: "not an agent of the current wave", input: start.agent });
      });
    });
}

export type RolloutState<T = unknown> = z.output<ReturnType<typeof rolloutStateSchema<T>>>;

/** What a move needs to see the fleet: the clock, the current config, and each agent now. */
export interface RolloutContext {
  now: number;
  config: RolloutConfig;
  observe: Observe;
}

const MOVES = {
  pause: { from: ["applying", "baking"], what: "pause it" },
  resume: { from: ["paused", "halted"], what: "resume it" },
  abort: { from: ["applying", "baking", "paused", "halted"], what: "abort it" },
  rollback: { from: ["applying", "baking", "paused", "halted", "completed"], what: "roll it back" },
  wait: { from: ["applying", "baking"], what: "wait on its wave" },
  bake: { from: ["applying"], what: "bake its wave" },
  advance: { from: ["baking"], what: "advance to the next wave" },
  halt: { from: ["applying", "baking"], what: "halt it" },
} as const satisfies Record<string, { from: readonly RolloutPhase[]; what: string }>;

export type RolloutMove = keyof typeof MOVES;

/** A move that makes no sense in the rollout's phase (resume a completed one, pause an aborted one). */
export class RolloutPhaseError extends HafleetError {
  readonly code = "HAFLEET_ROLLOUT_PHASE";
  constructor(
    readonly rolloutId: string,
    readonly move: RolloutMove,
    readonly phase: RolloutPhase,
  ) {
    super(`rollout ${rolloutId} is ${phase}: cannot ${MOVES[move].what} (only when ${MOVES[move].from.join(" or ")})`);
    this.name = "RolloutPhaseError";
  }
}

export type Transition<T> = { ok: true; state: RolloutState<T> } | { ok: false; error: RolloutPhaseError };

function allowed<T>(state: RolloutState<T>, move: RolloutMove, next: () => RolloutState<T>): Transition<T> {
  const from: readonly RolloutPhase[] = MOVES[move].from;
  return from.includes(state.phase) ? { ok: true, state: next() } : { ok: false, error: new RolloutPhaseError(state.id, move, state.phase) };
}

function moved<T>(state: RolloutState<T>, now: number, change: Partial<RolloutState<T>> & { phase: RolloutPhase }, event: string): RolloutState<T> {
  return { ...state, ...change, phaseSince: now, history: [...state.history, { at: now, event }].slice(-HISTORY_LIMIT) };
}

function waveLabel(state: RolloutState<unknown>, wave = state.wave): string {
  return `wave ${wave + 1}/${state.waves.length}`;
}

function snapshot(state: RolloutState<unknown>, wave: number, observe: Observe): WaveStart[] {
  return (state.waves[wave] ?? []).map((agent) => waveStartOf(agent, observe(agent)));
}

export interface RolloutStart<T> {
  id: string;
  reason: string;
  backends: string[];
  /** The agents the change concerns, connected now: later ones stay on the baseline until it completes. */
  agents: readonly PlannedAgent[];
  /**
   * Agents the change concerns but left out of the waves, with why (cordoned; already
   * rejecting or drifting on a backend of it, so no fair judge): like late joiners, they stay
   * on the baseline until it completes. Said in the history.
   */
  excluded?: ReadonlyArray<{ agent: string; reason: string }>;
  baseline: T;
  target: T;
}

/** Plans the waves and starts the canary; with no agent to wait for, it is complete at once. */
export function startRollout<T>(start: RolloutStart<T>, context: RolloutContext): RolloutState<T> {
  const { id, reason, backends, baseline, target } = start;
  const { now, config, observe } = context;
  const waves = planWaves(start.agents, config, id);
  const created: RolloutState<T> = {
    format: FORMAT,
    id,
    reason,
    backends,
    startedAt: now,
    waves,
    wave: 0,
    phase: "applying",
    phaseSince: now,
    haltReason: null,
    history: [],
    waveStart: [],
    baseline,
    target,
  };
  const left = excludedText(start.excluded ?? []);
  if (waves.length === 0) return moved(created, now, { phase: "completed" }, `started (${reason}) and completed at once: no agent to roll out to${left}`);
  const sizes = waves.map((agents) => agents.length);
  const total = sizes.reduce((sum, size) => sum + size, 0);
  return moved(
    created,
    now,
    { phase: "applying", waveStart: snapshot(created, 0, observe) },
    `started (${reason}): ${total} agents in ${waves.length} waves of ${sizes.join(", ")}; ${waveLabel(created)} applying${left}`,
  );
}

const EXCLUDED_SHOWN = 10;

function excludedText(excluded: ReadonlyArray<{ agent: string; reason: string }>): string {
  if (excluded.length === 0) return "";
  const shown = excluded.slice(0, EXCLUDED_SHOWN).map((entry) => `${entry.agent} (${entry.reason})`).join(", ");
  const more = excluded.length > EXCLUDED_SHOWN ? ` and ${excluded.length - EXCLUDED_SHOWN} more` : "";
  return `; left out of the waves, on the baseline until it completes: ${shown}${more}`;
}

/** Judges the current wave and moves on if it may; any other phase waits for the operator. */
export function stepRollout<T>(state: RolloutState<T>, context: RolloutContext): RolloutState<T> {
  if (state.phase !== "applying" && state.phase !== "baking") return state;
  const { phase, phaseSince, wave, waves, waveStart } = state;
  const verdict = judgeWave({ phase, phaseSince, wave, waveCount: waves.length, waveStart, ...context });
  const next = applyVerdict(state, verdict, context);
  // judgeWave gives only verdicts that fit the phase it was given.
  if (!next.ok) throw next.error;
  return next.state;
}

export function applyVerdict<T>(state: RolloutState<T>, verdict: WaveVerdict, context: RolloutContext): Transition<T> {
  const { now, config, observe } = context;
  return allowed(state, verdict.verdict, () => {
    switch (verdict.verdict) {
      case "wait":
        return state;
      case "bake":
        return moved(state, now, { phase: "baking" }, `${waveLabel(state)}: every agent acked; baking for ${config.bakeMs / 1000} s`);
      case "halt":
        return config.autoRollback
          ? moved(state, now, { phase: "rolled-back", haltReason: verdict.reason, waveStart: [] }, `halted and rolled back automatically: ${verdict.reason}`)
          : moved(state, now, { phase: "halted", haltReason: verdict.reason }, `halted: ${verdict.reason}`);
      case "advance": {
        const wave = state.wave + 1;
        if (wave === state.waves.length) return moved(state, now, { phase: "completed", waveStart: [] }, `${waveLabel(state)} passed; completed: every agent runs the target`);
        return moved(state, now, { phase: "applying", wave, waveStart: snapshot(state, wave, observe) }, `${waveLabel(state)} passed; ${waveLabel(state, wave)} applying`);
      }
    }
  });
}

export function pause<T>(state: RolloutState<T>, now: number): Transition<T> {
  return allowed(state, "pause", () => moved(state, now, { phase: "paused" }, `paused by the operator while ${state.phase} ${waveLabel(state)}`));
}

/** The current wave is applied and judged again from scratch: the operator has seen the halt reason. */
export function resume<T>(state: RolloutState<T>, context: RolloutContext): Transition<T> {
  const { now, observe } = context;
  return allowed(state, "resume", () =>
    moved(state, now, { phase: "applying", haltReason: null, waveStart: snapshot(state, state.wave, observe) }, `resumed by the operator: ${waveLabel(state)} applying again`),
  );
}

export function abort<T>(state: RolloutState<T>, now: number): Transition<T> {
  return allowed(state, "abort", () => moved(state, now, { phase: "aborted", waveStart: [] }, "aborted by the operator: every agent back on the baseline"));
}

/** During a rollout, the same as abort; after a completed one, every agent goes back to the baseline it replaced. */
export function rollback<T>(state: RolloutState<T>, now: number): Transition<T> {
  const after = state.phase === "completed" ? " after completion" : "";
  return allowed(state, "rollback", () => moved(state, now, { phase: "rolled-back", waveStart: [] }, `rolled back by the operator${after}: every agent back on the baseline`));
}

/**
 * After a controller restart, the wave in progress is judged afresh from `now`: time spent
 * down is neither a wave's timeout nor its bake. The wave-start snapshots stand.
 */
export function reopen<T>(state: RolloutState<T>, now: number): RolloutState<T> {
  if (state.phase !== "applying" && state.phase !== "baking") return state;
  return moved(state, now, { phase: "applying" }, `controller restarted: ${waveLabel(state)} applying again`);
}

/** Completed, aborted or rolled back: every agent is on one side, and only a rollback (after completed) is left. */
export function isFinal(state: RolloutState<unknown>): boolean {
  return state.phase === "completed" || state.phase === "aborted" || state.phase === "rolled-back";
}

// sideOf runs for every agent on every change: the agents of the waves begun so far are
// gathered once per state object (states are never changed in place).
const begun = new WeakMap<RolloutState<unknown>, ReadonlySet<string>>();

/** Which desired state an agent runs: agents that joined after the start stay on the baseline until it completes. */
export function sideOf(state: RolloutState<unknown>, agentId: string): RolloutSide {
  if (state.phase === "completed") return "target";
  if (state.phase === "aborted" || state.phase === "rolled-back") return "baseline";
  let agents = begun.get(state);
  if (agents === undefined) {
    agents = new Set(state.waves.slice(0, state.wave + 1).flat());
    begun.set(state, agents);
  }
  return agents.has(agentId) ? "target" : "baseline";
}

type Versions = RolloutStatus["baseline"];

/**
 * The status API's view; `ackedPerWave[i]`: how many agents of wave i run the target now;
 * `versions`: what the payloads hold, per backend (the payloads are opaque here).
 */
export function rolloutStatus(state: RolloutState<unknown>, ackedPerWave: readonly number[], versions: { baseline: Versions; target: Versions } = { baseline: [], target: [] }): RolloutStatus {
  return {
    id: state.id,
    reason: state.reason,
    backends: state.backends,
    phase: state.phase,
    wave: state.wave,
    waves: state.waves.map((agents, wave) => ({ agents: agents.length, acked: ackedPerWave[wave] ?? 0 })),
    startedAt: state.startedAt,
    phaseSince: state.phaseSince,
    haltReason: state.haltReason,
    history: state.history,
    baseline: versions.baseline,
    target: versions.target,
  };
}
