import type { DesiredServer } from "../../agent/model/desired-state.js";

export interface GuardOptions {
  /** A step losing more than this share of the last good set is held (0..1). */
  maxDropShare: number;
  allowEmpty: boolean;
  /** limits.serversPerBackend: a bigger answer is held, whatever the backend ran before. */
  maxServers: number;
}

export type GuardVerdict = { accept: true } | { accept: false; reason: string };

/**
 * An empty or truncated discovery answer must never empty a backend across the fleet. The
 * next set is compared with the last good one (not the last seen), so a held service stays
 * held until discovery answers something plausible again or the operator allows it.
 */
export function guardStep(lastGood: readonly DesiredServer[] | undefined, next: readonly DesiredServer[], options: GuardOptions): GuardVerdict {
  if (next.length > options.maxServers) return { accept: false, reason: `has ${next.length} servers, over the limit of ${options.maxServers} (limits.serversPerBackend)` };
  if (lastGood === undefined || lastGood.length === 0 || options.allowEmpty) return { accept: true };
  if (next.length === 0) return { accept: false, reason: `would drop all ${lastGood.length} servers` };
  const lost = lastGood.length - next.length;
  const share = lost / lastGood.length;
  if (share > options.maxDropShare) {
    return { accept: false, reason: `would drop ${lost} of ${lastGood.length} servers (${Math.round(share * 100)}%, over the ${Math.round(options.maxDropShare * 100)}% limit)` };
  }
  return { accept: true };
}
