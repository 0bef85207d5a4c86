/*
 * A few quick actions, then a rate; never a fixed sleep. Discovery queries use it (a flapping
 * service degrades to polling, not to a hot loop) and so do pushes to one agent.
 */

export interface TokenBucketOptions {
  /** Actions that may go back to back after a quiet time. */
  burst: number;
  refillPerSecond: number;
}

export interface TokenBucketState {
  /** Below 0 when actions are already booked for the future. */
  tokens: number;
  at: number;
}

export function fullBucket(options: TokenBucketOptions, now: number): TokenBucketState {
  return { tokens: options.burst, at: now };
}

/** Takes one token: how long to wait before it is there, and the bucket after. */
export function takeToken(state: TokenBucketState, now: number, options: TokenBucketOptions): { delayMs: number; state: TokenBucketState } {
  const elapsed = Math.max(0, now - state.at);
  const tokens = Math.min(options.burst, state.tokens + (elapsed * options.refillPerSecond) / 1000) - 1;
  const delayMs = tokens >= 0 ? 0 : Math.ceil((-tokens * 1000) / options.refillPerSecond);
  return { delayMs, state: { tokens, at: now } };
}
