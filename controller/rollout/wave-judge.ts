import { z } from "zod";
import type { SyncState } from "../status/status-schema.js";
import { SHARE_EPSILON, type RolloutConfig } from "./rollout-config.js";

/** What the controller sees of one agent now, over the backends the rollout changes. */
export interface WaveObservation {
  connected: boolean;
  /** The rollout's backends this agent runs; AgentStatus.backends fits as it is. */
  backends: ReadonlyArray<{ backend: string; state: SyncState }>;
  /** Servers serving / servers desired, over those backends; null: not reported yet. */
  servingShare: number | null;
}

/** An agent the controller does not know (never connected, or forgotten) is undefined. */
export type Observe = (agentId: string) => WaveObservation | undefined;

/** One agent of the current wave as it was when the wave started: what "new" and "dropped" compare with. */
export const waveStartSchema = z.strictObject({
  agent: z.string().min(1),
  connected: z.boolean(),
  drifted: z.boolean(),
  servingShare: z.number().min(0).nullable(),
});
export type WaveStart = z.output<typeof waveStartSchema>;

export function waveStartOf(agent: string, observation: WaveObservation | undefined): WaveStart {
  return {
    agent,
    connected: observation?.connected ?? false,
    drifted: observation?.backends.some((backend) => backend.state === "drifted") ?? false,
    servingShare: observation?.servingShare ?? null,
  };
}

export type WaveVerdict = { verdict: "wait" } | { verdict: "bake" } | { verdict: "advance" } | { verdict: "halt"; reason: string };

export interface WaveJudgeInput {
  phase: "applying" | "baking";
  phaseSince: number;
  now: number;
  config: Pick<RolloutConfig, "bakeMs" | "waveTimeoutMs" | "maxServingDrop">;
  /** 0-based; with the count, for the operator's "wave 2/4". */
  wave: number;
  waveCount: number;
  waveStart: readonly WaveStart[];
  observe: Observe;
}

/*
 * Acked, whatever HAProxy has done since: drift is judged apart (only new drift counts), and
 * servers an operator holds are the operator's business, not a fault of the change.
 */
const ACKED: ReadonlySet<SyncState> = new Set<SyncState>(["in-sync", "drifted", "repairing", "unknown", "held"]);
const GONE: WaveObservation = { connected: false, backends: [], servingShare: null };
const NAMES_SHOWN = 5;

interface Judged {
  start: WaveStart;
  now: WaveObservation;
}

type Rule = (agent: Judged, config: WaveJudgeInput["config"]) => string | null;

// Worst first: the first rule any agent breaks gives the reason.
const HALT_RULES: readonly Rule[] = [
  ({ start, now }) => {
    const rejected = now.backends.find((backend) => backend.state === "rejected");
    return rejected ? `agent ${start.agent} rejected backend ${rejected.backend}; the agent's error is in its status` : null;
  },
  ({ start, now }) => (start.connected && !now.connected ? `agent ${start.agent} disconnected during its wave` : null),
  ({ start, now }) => {
    const drifted = start.drifted ? undefined : now.backends.find((backend) => backend.state === "drifted");
    return drifted
      ? `agent ${start.agent} drifted on backend ${drifted.backend} after applying the change: HAProxy runs something other than what it acked (the differences are in its status)`
      : null;
  },
];

/*
 * Servers the change adds need a few health checks to come UP, so the serving share is
 * compared once the bake time has passed, not while new servers are still rising.
 */
const servingDropped: Rule = ({ start, now }, config) => {
  if (start.servingShare === null || now.servingShare === null) return null;
  if (start.servingShare - now.servingShare <= config.maxServingDrop + SHARE_EPSILON) return null;
  const backends = now.backends.map((backend) => backend.backend).join(", ");
  return `agent ${start.agent} serves ${percent(now.servingShare)} of the desired servers of ${backends}, down from ${percent(start.servingShare)} when the wave started (at most ${percent(config.maxServingDrop)} may be lost)`;
};

/**
 * Whether the current wave may go on: wait, bake (every agent acked), advance (baked with no
 * problem), or halt with a sentence an operator can act on. Agents that were disconnected
 * when the wave started and still are can neither ack nor fail: they are left out, and get
 * the change when they come back. Pure: the clock is `now`.
 */
export function judgeWave(input: WaveJudgeInput): WaveVerdict {
  const halt = (reason: string): WaveVerdict => ({ verdict: "halt", reason: `wave ${input.wave + 1}/${input.waveCount}: ${reason}` });
  const judged = input.waveStart
    .map((start): Judged => ({ start, now: input.observe(start.agent) ?? GONE }))
    .filter(({ start, now }) => start.connected || now.connected);
  for (const rule of HALT_RULES) {
    for (const agent of judged) {
      const reason = rule(agent, input.config);
      if (reason !== null) return halt(reason);
    }
  }

  const elapsed = input.now - input.phaseSince;
  const unacked = judged.filter(({ now }) => !now.backends.every((backend) => ACKED.has(backend.state)));
  if (input.phase === "applying") {
    if (unacked.length === 0) return { verdict: "bake" };
    if (elapsed < input.config.waveTimeoutMs) return { verdict: "wait" };
    return halt(`${unacked.length} of ${judged.length} agents not acked within ${input.config.waveTimeoutMs / 1000} s: ${names(unacked)}`);
  }
  // Baking: an agent may fall back to pending (a new push, a freeze); the bake waits for it.
  if (elapsed < input.config.bakeMs || unacked.length > 0) return { verdict: "wait" };
  for (const agent of judged) {
    const reason = servingDropped(agent, input.config);
    if (reason !== null) return halt(reason);
  }
  return { verdict: "advance" };
}

function names(agents: readonly Judged[]): string {
  const shown = agents.slice(0, NAMES_SHOWN).map(({ start }) => start.agent).join(", ");
  return agents.length > NAMES_SHOWN ? `${shown} and ${agents.length - NAMES_SHOWN} more` : shown;
}

function percent(share: number): string {
  return `${Math.round(share * 100)}%`;
}
