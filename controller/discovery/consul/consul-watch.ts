import type { DesiredServer } from "../../../agent/model/desired-state.js";
import { endpointKey } from "../../../agent/model/values.js";
import { toServers, type DroppedInstance, type ServiceSnapshot } from "../service-snapshot.js";
import type { HealthAnswer } from "./consul-client.js";
import { fullBucket, takeToken, type TokenBucketOptions } from "../../core/token-bucket.js";
import { classifyFailure, retryDelay, type FailureKind } from "./consul-failure.js";

/*
 * The loop of one watched key: blocking queries for ever, until stopped. The rules it follows
 * are pure functions first (index, token bucket, backoff, comparison), tested on their own.
 */

// ---- Index rules (https://developer.hashicorp.com/consul/api-docs/features/blocking) ----

/**
 * The index to send next. A returned index below 1 is a Consul bug that would make every
 * following query return at once, so it becomes 1 ("always safe ... to wait for updates").
 * An index lower than the one sent means the data went back (a snapshot restore, an upgrade):
 * 0 restarts the loop with one query that answers at once.
 */
export function nextIndex(sent: number, returned: number): number {
  if (returned < 1) return 1;
  if (returned < sent) return 0;
  return returned;
}

/** "The return of a blocking request is no guarantee of a change"; the same index is none. */
export function isNewAnswer(sent: number, returned: number, seenAny: boolean): boolean {
  return !seenAny || returned !== sent;
}

// ---- Rate: a few quick queries, then a rate (see token-bucket.ts) ----

export const DEFAULT_RATE_LIMIT: TokenBucketOptions = { burst: 2, refillPerSecond: 1 };

// ---- Backoff after errors: exponential, capped, jittered so watches do not retry in step ----

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30_000 };

/**
 * "Equal jitter": half the step is fixed, half random, so a retry never comes sooner than half
 * the step (no hot loop when the random number is 0). `failures` counts from 1.
 */
export function backoffDelay(failures: number, options: BackoffOptions, random: () => number): number {
  const exponent = Math.min(Math.max(failures - 1, 0), 30);
  const step = Math.min(options.maxMs, options.initialMs * 2 ** exponent);
  return Math.round(step / 2 + random() * (step / 2));
}

// ---- Comparison of server sets ----

/** Consul's order changes between answers (`near`, shuffles); the set is what counts. */
export function serverSetFingerprint(servers: readonly DesiredServer[]): string {
  return servers
    .map((server) => `${endpointKey(server.address, server.port)} ${server.weight ?? "-"}`)
    .sort()
    .join("\n");
}

export function droppedFingerprint(dropped: readonly DroppedInstance[]): string {
  return dropped
    .map((instance) => `${instance.id} ${instance.reason}`)
    .sort()
    .join("\n");
}

export function sortServers(servers: readonly DesiredServer[]): DesiredServer[] {
  return [...servers].sort((a, b) => compare(endpointKey(a.address, a.port), endpointKey(b.address, b.port)));
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- The loop ----

export interface WatchClock {
  now(): number;
  /** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const systemClock: WatchClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal.aborted || ms <= 0) {
        resolve();
        return;
      }
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    }),
};

/** Told of every query's outcome, so that the watch depends on no metrics library. `service` is the watch key. */
export interface DiscoveryObserver {
  /**
   * `blocking`: sent with an index, so Consul may have held it until a change or `wait` ran
   * out; its duration says when the service changed, not how fast Consul answers.
   */
  discoveryAnswered(service: string, seconds: number, blocking: boolean): void;
  /** Not told of queries cut short by refresh() or stop(): those are no failures. */
  discoveryFailed(service: string): void;
}

/** Where one watch stands, for the status: answered, still waiting for its first answer, or failing. */
export interface WatchHealth {
  key: string;
  state: "pending" | "ok" | "failing";
  /** The last failure's message while failing, else null. */
  error: string | null;
  /** `configuration`: retried slowly, an operator must act; else how the last failure was read. */
  failure: FailureKind | null;
  /** What to fix, for a configuration problem. */
  hint: string | null;
  /** Since when (ms) the watch is in this state. */
  since: number;
  /** When the last answer came (ms), or null. */
  answeredAt: number | null;
}

/** Consul told us to fix something: asked again at this pace, not faster. */
export const DEFAULT_CONFIGURATION_RETRY_MS = 60_000;

export interface ConsulWatchOptions {
  key: string;
  /** One query at `index`; rejects on any failure, and when `signal` aborts. */
  fetch(index: number, signal: AbortSignal): Promise<HealthAnswer>;
  /** The server set differs from the last one notified (or is the first). */
  onSnapshot(snapshot: ServiceSnapshot): void;
  /** A query failed; the watch goes on, the last snapshot stands. */
  onError(error: Error): void;
  /** The set of dropped instances differs from the last answer's. */
  onDropped?(dropped: readonly DroppedInstance[]): void;
  /** Every good answer, changed or not. */
  onAnswer?(): void;
  /** The watch's state changed (first answer, failing, recovered, another failure's kind). */
  onHealth?(health: WatchHealth): void;
  rateLimit?: Partial<TokenBucketOptions>;
  backoff?: Partial<BackoffOptions>;
  /** After a configuration problem (403, unknown dc, over the body limit); default 60 s. */
  configurationRetryMs?: number;
  clock?: WatchClock;
  random?: () => number;
  observer?: DiscoveryObserver;
}

export class ConsulWatch {
  private readonly controller = new AbortController();
  private readonly clock: WatchClock;
  private readonly rateLimit: TokenBucketOptions;
  private readonly backoff: BackoffOptions;
  private readonly random: () => number;
  private running: Promise<void> | null = null;
  private last: ServiceSnapshot | null = null;
  private lastFingerprint = "";
  private lastDropped = "";
  private request: AbortController | null = null;
  private refreshRequested = false;
  private healthState: WatchHealth;

  constructor(private readonly options: ConsulWatchOptions) {
    this.clock = options.clock ?? systemClock;
    this.rateLimit = { ...DEFAULT_RATE_LIMIT, ...options.rateLimit };
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.random = options.random ?? Math.random;
    this.healthState = { key: options.key, state: "pending", error: null, failure: null, hint: null, since: this.clock.now(), answeredAt: null };
  }

  get health(): WatchHealth {
    return this.healthState;
  }

  /** The last snapshot notified, with the current dropped instances; null before the first. */
  get snapshot(): ServiceSnapshot | null {
    return this.last;
  }

  start(): void {
    if (this.running !== null) return;
    this.running = this.run();
  }

  /** Drops the index and re-reads now: the blocking query in flight is cut short. */
  refresh(): void {
    this.refreshRequested = true;
    this.request?.abort(new Error(`watch of '${this.options.key}' refreshed`));
  }

  /** Aborts the query in flight; resolves once the loop has ended. */
  async stop(): Promise<void> {
    this.controller.abort(new Error(`watch of '${this.options.key}' stopped`));
    await this.running;
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    let bucket = fullBucket(this.rateLimit, this.clock.now());
    let index = 0;
    let seenAny = false;
    let failures = 0;
    while (!signal.aborted) {
      const token = takeToken(bucket, this.clock.now(), this.rateLimit);
      bucket = token.state;
      if (token.delayMs > 0) await this.clock.sleep(token.delayMs, signal);
      if (signal.aborted) break;

      if (this.refreshRequested) {
        this.refreshRequested = false;
        index = 0;
      }
      const sent = index;
      let answer: HealthAnswer;
      const request = new AbortController();
      const cancel = (): void => request.abort(signal.reason);
      signal.addEventListener("abort", cancel, { once: true });
      this.request = request;
      const sentAt = this.clock.now();
      try {
        answer = await this.options.fetch(sent, request.signal);
      } catch (error) {
        if (signal.aborted) break;
        if (request.signal.aborted) continue;
        const failure = classifyFailure(error);
        // A proxy's idle timeout ended a held query: asked again, same index, nothing failed.
        if (failure.kind === "idle-cut") continue;
        failures += 1;
        const reported = error instanceof Error ? error : new Error(String(error));
        this.setHealth({ state: "failing", error: reported.message, failure: failure.kind, hint: failure.hint });
        this.observe((observer) => observer.discoveryFailed(this.options.key));
        this.report(reported);
        const policy = { backoff: (count: number) => backoffDelay(count, this.backoff, this.random), configurationRetryMs: this.options.configurationRetryMs ?? DEFAULT_CONFIGURATION_RETRY_MS };
        await this.clock.sleep(retryDelay(failure, failures, policy), signal);
        continue;
      } finally {
        signal.removeEventListener("abort", cancel);
        this.request = null;
      }
      if (signal.aborted) break;
      const seconds = (this.clock.now() - sentAt) / 1000;
      this.observe((observer) => observer.discoveryAnswered(this.options.key, seconds, sent > 0));
      failures = 0;
      this.setHealth({ state: "ok", error: null, failure: null, hint: null }, this.clock.now());
      const onAnswer = this.options.onAnswer;
      if (onAnswer !== undefined) safely(onAnswer);
      index = nextIndex(sent, answer.index);
      if (!isNewAnswer(sent, answer.index, seenAny)) continue;
      seenAny = true;
      this.absorb(answer);
    }
  }

  private absorb(answer: HealthAnswer): void {
    const validated = toServers(answer.instances);
    const dropped = [...answer.dropped, ...validated.dropped];
    const servers = sortServers(validated.servers);
    const droppedNow = droppedFingerprint(dropped);
    if (droppedNow !== this.lastDropped) {
      this.lastDropped = droppedNow;
      const onDropped = this.options.onDropped;
      if (onDropped !== undefined) safely(() => onDropped(dropped));
    }
    const fingerprint = serverSetFingerprint(servers);
    if (this.last !== null && fingerprint === this.lastFingerprint) {
      // The set did not change: nobody is told, but a late listener gets today's drops.
      this.last = { ...this.last, dropped };
      return;
    }
    this.lastFingerprint = fingerprint;
    this.last = { key: this.options.key, servers, dropped };
    const snapshot = this.last;
    safely(() => this.options.onSnapshot(snapshot));
  }

  private setHealth(next: Pick<WatchHealth, "state" | "error" | "failure" | "hint">, answeredAt = this.healthState.answeredAt): void {
    const current = this.healthState;
    const same = current.state === next.state && current.error === next.error && current.failure === next.failure;
    this.healthState = { ...current, ...next, since: current.state === next.state ? current.since : this.clock.now(), answeredAt };
    const onHealth = this.options.onHealth;
    if (!same && onHealth !== undefined) safely(() => onHealth(this.healthState));
  }

  private report(error: Error): void {
    safely(() => this.options.onError(error));
  }

  private observe(tell: (observer: DiscoveryObserver) => void): void {
    const observer = this.options.observer;
    if (observer !== undefined) safely(() => tell(observer));
  }
}

function safely(call: () => void): void {
  try {
    call();
  } catch {
    // A listener's failure must not end the watch: the watch serves every other listener too.
  }
}
