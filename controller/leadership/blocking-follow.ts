import { fullBucket, takeToken } from "../core/token-bucket.js";
import { classifyFailure } from "../discovery/consul/consul-failure.js";
import { DEFAULT_RATE_LIMIT, isNewAnswer, nextIndex, type WatchClock } from "../discovery/consul/consul-watch.js";

/*
 * Blocking reads of Consul KV for ever, until stopped: the leadership key, the fleet's shared
 * keys. The index, rate and idle-cut rules are the discovery watch's (consul-watch.ts); what is
 * read, and what an answer or a failure means, is the caller's.
 */

export interface BlockingFollow<A extends { index: number }> {
  clock: WatchClock;
  /** One read, blocking past `index` (0: at once). */
  read(index: number, signal: AbortSignal): Promise<A>;
  /** A new answer (the first, or one past the index sent). */
  answered(answer: A): void;
  /** A read failed (`failures` in a row); the loop sleeps `retryDelayMs(failures)` before the next. */
  failed(error: unknown, failures: number): void;
  /** A read answered after `failures` failed ones. */
  recovered?(failures: number): void;
  retryDelayMs(failures: number): number;
}

export async function followBlocking<A extends { index: number }>(follow: BlockingFollow<A>, signal: AbortSignal): Promise<void> {
  const { clock } = follow;
  let bucket = fullBucket(DEFAULT_RATE_LIMIT, clock.now());
  let index = 0;
  let seenAny = false;
  let failures = 0;
  while (!signal.aborted) {
    const token = takeToken(bucket, clock.now(), DEFAULT_RATE_LIMIT);
    bucket = token.state;
    if (token.delayMs > 0) await clock.sleep(token.delayMs, signal);
    if (signal.aborted) break;
    const sent = index;
    let answer: A;
    try {
      answer = await follow.read(sent, signal);
    } catch (error) {
      if (signal.aborted) break;
      // A proxy cut the held read before Consul answered: read again, nothing failed.
      if (classifyFailure(error).kind === "idle-cut") continue;
      failures += 1;
      follow.failed(error, failures);
      await clock.sleep(follow.retryDelayMs(failures), signal);
      continue;
    }
    if (failures > 0) follow.recovered?.(failures);
    failures = 0;
    index = nextIndex(sent, answer.index);
    if (!isNewAnswer(sent, answer.index, seenAny)) continue;
    seenAny = true;
    follow.answered(answer);
  }
}
