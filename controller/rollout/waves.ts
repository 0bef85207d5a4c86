import { createHash } from "node:crypto";
import { SHARE_EPSILON, type RolloutConfig } from "./rollout-config.js";

export interface PlannedAgent {
  id: string;
  labels: Readonly<Record<string, string>>;
}

/**
 * An agent's place in a rollout's order, in [0, 1). Hashed rather than drawn: any controller,
 * restarted or not, orders the same agents the same way; and hashed with the rollout's id, so
 * that the same hosts are not the canary of every rollout.
 */
export function stableScore(rolloutId: string, agentId: string): number {
  // Agent ids and rollout ids are names: neither holds a NUL, so the pair is unambiguous.
  const digest = createHash("sha256").update(rolloutId).update("\0").update(agentId).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

/**
 * The agents of a rollout, wave by wave: the canary first, then the configured cumulative
 * shares of the others, in score order. Every agent is in exactly one wave, no wave is empty,
 * and the same inputs give the same plan. No agent, no wave.
 */
export function planWaves(agents: readonly PlannedAgent[], config: Pick<RolloutConfig, "canary" | "canarySelector" | "waves">, rolloutId: string): string[][] {
  const unique = new Map(agents.map((agent) => [agent.id, agent]));
  const scores = new Map([...unique.keys()].map((id) => [id, stableScore(rolloutId, id)]));
  // Ties in score are all but impossible; the id settles them so the order is total.
  const ordered = [...unique.values()].sort((a, b) => scores.get(a.id)! - scores.get(b.id)! || (a.id < b.id ? -1 : 1));
  if (ordered.length === 0) return [];

  // Agents matching the selector come first, each group still in score order.
  const selector = config.canarySelector;
  const candidates = selector === undefined ? ordered : [...ordered.filter((agent) => matches(selector, agent.labels)), ...ordered.filter((agent) => !matches(selector, agent.labels))];
  const canarySize = "count" in config.canary ? Math.min(config.canary.count, ordered.length) : shareOf(config.canary.share, ordered.length);
  const canary = candidates.slice(0, canarySize).map((agent) => agent.id);
  const inCanary = new Set(canary);
  const rest = ordered.map((agent) => agent.id).filter((id) => !inCanary.has(id));

  const waves = [canary];
  let taken = 0;
  for (const share of config.waves) {
    const upTo = shareOf(share, rest.length);
    if (upTo === taken) continue;
    waves.push(rest.slice(taken, upTo));
    taken = upTo;
  }
  return waves;
}

/** At least one agent, rounded up: a 5% canary of 10 agents is one agent, not none. */
function shareOf(share: number, count: number): number {
  return Math.min(count, Math.max(1, Math.ceil(share * count - SHARE_EPSILON)));
}

function matches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}
