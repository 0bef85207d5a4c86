import type { Logger } from "pino";
import { ConnectionLostError, HafleetError, TimeoutError } from "../errors.js";
import type { MasterCli } from "./master-cli.js";
import type { MasterStatus, ProcessEntry } from "./show-proc.js";

/** What the reloader needs of the master CLI; tests pass a scripted fake. */
export type MasterControl = Pick<MasterCli, "name" | "status" | "reload">;

/** Injected so that tests decide what time it is and how long a sleep takes. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** How a reload ended: `error` is one that never got to a verdict (the master unreachable, `prepare` failed). */
export type ReloadOutcome = "reloaded" | "failed" | "timeout" | "error";

/** Told of every reload, so that the reloader depends on no metrics library. */
export interface ReloadObserver {
  /** From the reload's start (after any rate-limit wait) to its verdict. */
  reloaded(outcome: ReloadOutcome, seconds: number): void;
}

export interface ReloaderOptions {
  /**
   * Runs in each reload right before `reload` is sent (the agent saves the server-state file
   * here, so that the file is as fresh as it can be); if it throws, that reload is not sent.
   */
  prepare?: () => Promise<void>;
  /** Between the starts of two reloads; each reload forks a worker, and old ones linger. */
  minIntervalMs?: number;
  /** How long a new worker may take to show up (2.6: 50-300 ms) before the reload counts as lost. */
  timeoutMs?: number;
  pollMs?: number;
  clock?: Clock;
  logger?: Logger;
  observer?: ReloadObserver;
}

export interface ReloadResult {
  /** The new worker (2.6 runs one; the first when there are several). */
  workerPid: number;
  workerPids: number[];
  /** The workers that served before; they finish their connections as old workers. */
  previousWorkerPids: number[];
  masterPid: number;
  /** The master's reload counter after this reload. */
  reloads: number;
  /** From sending `reload` to seeing the new worker. */
  elapsedMs: number;
}

/** The master reports the reload failed: the previous worker(s) go on serving the previous config. */
export class ReloadFailedError extends HafleetError {
  readonly code = "HAFLEET_RELOAD_FAILED";
  constructor(
    readonly socket: string,
    readonly servingPids: readonly number[],
    readonly failedReloads: number | null,
    readonly prompt: string,
  ) {
    const serving = servingPids.length === 0 ? "and no worker serves" : `worker ${servingPids.join(", ")} still serves`;
    const counter = failedReloads === null ? "" : `'[failed: ${failedReloads}]' in 'show proc', `;
    super(`HAProxy's reload failed: the master at ${socket} reports ${counter}prompt ${JSON.stringify(prompt)}; ${serving} with the previous configuration`);
    this.name = "ReloadFailedError";
  }
}

/** Neither a new worker nor a failure in time; `last` is null when the master never answered again. */
export class ReloadTimeoutError extends HafleetError {
  readonly code = "HAFLEET_RELOAD_TIMEOUT";
  constructor(
    readonly socket: string,
    readonly timeoutMs: number,
    readonly last: MasterStatus | null,
    /** The last verdict's reason, or the last error's message. */
    readonly detail: string,
  ) {
    super(`no new worker within ${timeoutMs} ms of 'reload' on ${socket}: ${detail}`);
    this.name = "ReloadTimeoutError";
  }
}

export type ReloadVerdict =
  | { kind: "reloaded"; workers: ProcessEntry[] }
  | { kind: "failed"; serving: ProcessEntry[] }
  | { kind: "waiting"; reason: string };

/**
 * Whether a reload sent after `before` has ended, from the master's answer `after`.
 *
 * Success is a current worker that was not current before. Failure is the master having
 * reloaded (its counter grew) while reporting the latest reload failed: 2.6 resets
 * `[failed: N]` to 0 on success, and shows `master[ReloadFailed]>` exactly while it is above 0,
 * so a failure that happened before our reload cannot pass for ours once the counter has moved.
 * A master with another pid was restarted: its counters start over, so only a new worker counts.
 */
export function judgeReload(before: MasterStatus, after: MasterStatus): ReloadVerdict {
  const previous = new Set(before.proc.workers.map((worker) => worker.pid));
  const fresh = after.proc.workers.filter((worker) => !previous.has(worker.pid));
  if (fresh.length > 0) return { kind: "reloaded", workers: fresh };
  const sameMaster = after.proc.master.pid === before.proc.master.pid;
  if (!sameMaster) return { kind: "waiting", reason: `the master was restarted (pid ${before.proc.master.pid} -> ${after.proc.master.pid}) and has no new worker yet` };
  if (after.proc.master.reloads <= before.proc.master.reloads) return { kind: "waiting", reason: "the master has not reloaded yet" };
  if ((after.proc.master.failedReloads ?? 0) > 0 || after.prompt.reloadFailed) return { kind: "failed", serving: after.proc.workers };
  return { kind: "waiting", reason: "the master reloaded but lists no new worker yet" };
}

/**
 * Hitless reloads through the master CLI, checked, rate-limited and coalesced: at most one
 * reload runs and one waits. Calls made while one waits share it, since it has not started and
 * so will still see whatever they changed; a call made while one runs gets the next one, since
 * the running one may have read the state before that caller's change.
 */
export class Reloader {
  private running: Promise<ReloadResult> | null = null;
  private queued: Promise<ReloadResult> | null = null;
  private lastStartedAt = Number.NEGATIVE_INFINITY;
  private servingPid: number | null = null;
  private readonly clock: Clock;
  private readonly minIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly pollMs: number;

  constructor(
    private readonly master: MasterControl,
    private readonly options: ReloaderOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.minIntervalMs = options.minIntervalMs ?? 2_000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.pollMs = options.pollMs ?? 50;
  }

  /** The worker that served at the last look: the new one after a reload, the old one after a failure. */
  get workerPid(): number | null {
    return this.servingPid;
  }

  /** Resolves once a new worker serves; rejects with ReloadFailedError, ReloadTimeoutError, or the connection's error. */
  reload(): Promise<ReloadResult> {
    if (this.queued) return this.queued;
    const next = this.runAfter(this.running);
    this.queued = next;
    return next;
  }

  private async runAfter(previous: Promise<unknown> | null): Promise<ReloadResult> {
    if (previous) await previous.then(ignore, ignore);
    await this.clock.sleep(Math.max(0, this.lastStartedAt + this.minIntervalMs - this.clock.now()));
    // Past an await, so reload() has stored this call's promise as `queued`: it moves to running,
    // and stops taking riders, since it may now read state from before a newer caller's change.
    this.running = this.queued;
    this.queued = null;
    this.lastStartedAt = this.clock.now();
    let result: ReloadResult;
    try {
      result = await this.reloadOnce();
    } catch (error) {
      this.observe(outcomeOf(error));
      throw error;
    } finally {
      this.running = null;
    }
    this.observe("reloaded");
    return result;
  }

  private observe(outcome: ReloadOutcome): void {
    this.options.observer?.reloaded(outcome, (this.clock.now() - this.lastStartedAt) / 1000);
  }

  private async reloadOnce(): Promise<ReloadResult> {
    const log = this.options.logger;
    const socket = this.master.name;
    const before = await this.master.status();
    this.servingPid = before.proc.workers[0]?.pid ?? null;
    await this.options.prepare?.();
    log?.info({ socket, pid: this.servingPid }, "reloading HAProxy");
    await this.send();
    const sentAt = this.clock.now();
    let last: MasterStatus | null = null;
    let detail = "the master did not answer";
    for (;;) {
      await this.clock.sleep(this.pollMs);
      const after = await this.poll();
      if (after instanceof HafleetError) {
        detail = `the master did not answer: ${after.message}`;
      } else {
        last = after;
        const verdict = judgeReload(before, after);
        if (verdict.kind === "reloaded") return this.succeeded(before, after, verdict.workers, sentAt);
        if (verdict.kind === "failed") throw this.failed(after, verdict.serving);
        detail = `${verdict.reason} (workers: ${pids(after.proc.workers)}, reloads: ${after.proc.master.reloads})`;
      }
      if (this.clock.now() - sentAt >= this.timeoutMs) throw new ReloadTimeoutError(socket, this.timeoutMs, last, detail);
    }
  }

  /** While it re-executes itself the master refuses connections (2.6: 100-200 ms): not an answer yet. */
  private async poll(): Promise<MasterStatus | HafleetError> {
    try {
      return await this.master.status();
    } catch (error) {
      if (error instanceof HafleetError) return error;
      throw error;
    }
  }

  /**
   * Never sent twice: a connection lost or timed out after the request may still have reloaded,
   * and a second reload would fork another worker. Polling tells what happened. A refusal
   * (text instead of the empty reply) or no connection at all means nothing happened.
   */
  private async send(): Promise<void> {
    try {
      await this.master.reload();
    } catch (error) {
      if (!(error instanceof ConnectionLostError || error instanceof TimeoutError)) throw error;
      this.options.logger?.warn({ socket: this.master.name, err: error }, "no clean reply to 'reload'; checking whether it happened");
    }
  }

  private succeeded(before: MasterStatus, after: MasterStatus, workers: ProcessEntry[], sentAt: number): ReloadResult {
    const workerPids = workers.map((worker) => worker.pid);
    const workerPid = workerPids[0] as number;
    this.servingPid = workerPid;
    const result: ReloadResult = {
      workerPid,
      workerPids,
      previousWorkerPids: before.proc.workers.map((worker) => worker.pid),
      masterPid: after.proc.master.pid,
      reloads: after.proc.master.reloads,
      elapsedMs: this.clock.now() - sentAt,
    };
    this.options.logger?.info({ socket: this.master.name, pid: workerPid, previous: result.previousWorkerPids, elapsedMs: result.elapsedMs }, "HAProxy reloaded");
    return result;
  }

  private failed(after: MasterStatus, serving: ProcessEntry[]): ReloadFailedError {
    this.servingPid = serving[0]?.pid ?? null;
    const error = new ReloadFailedError(this.master.name, serving.map((worker) => worker.pid), after.proc.master.failedReloads, after.prompt.text);
    this.options.logger?.error({ socket: this.master.name, pid: this.servingPid, failedReloads: error.failedReloads }, "HAProxy's reload failed");
    return error;
  }
}

function outcomeOf(error: unknown): ReloadOutcome {
  if (error instanceof ReloadFailedError) return "failed";
  if (error instanceof ReloadTimeoutError) return "timeout";
  return "error";
}

function pids(workers: readonly ProcessEntry[]): string {
  return workers.length === 0 ? "none" : workers.map((worker) => worker.pid).join(", ");
}

function ignore(): void {}
