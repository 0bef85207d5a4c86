import type { Logger } from "pino";
import { ConnectionLostError, HafleetError, TimeoutError } from "../errors.js";
import type { ReloadReply } from "./reload-reply.js";
import { servingWorkers, type MasterStatus, type ProcessEntry } from "./show-proc.js";

/** What the reloader needs of the master CLI (MasterCli); tests pass a scripted fake. */
export interface MasterControl {
  readonly name: string;
  status(): Promise<MasterStatus>;
  /** HAProxy's verdict when its version gives one (2.7+); nothing means: judge from `show proc`. */
  reload(timeoutMs?: number): Promise<ReloadReply | void>;
}

const NO_VERDICT: ReloadReply = { kind: "no-verdict" };

/** Injected so that tests decide what time it is and how long a sleep takes. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** How long to wait before asking again when HAProxy answers that another reload is in progress. */
const BUSY_RETRY_MS = 100;

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
    /** HAProxy's own words on why (its `[ALERT]` lines), from the reload's reply on 2.7+; null on 2.6. */
    readonly reason: string | null = null,
  ) {
    const serving = servingPids.length === 0 ? "and no worker serves" : `worker ${servingPids.join(", ")} still serves`;
    const counter = failedReloads === null ? "" : `'[failed: ${failedReloads}]' in 'show proc', `;
    const says = reason === null ? "" : `. HAProxy says:\n${reason}`;
    super(`HAProxy's reload failed: the master at ${socket} reports ${counter}prompt ${JSON.stringify(prompt)}; ${serving} with the previous configuration${says}`);
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
 * Whether a reload sent after `before` has ended, from the master's answer `after`: the only
 * verdict 2.6 gives, whose `reload` answers nothing.
 *
 * Success is a current worker that was not serving before. Failure is the master having
 * reloaded (its counter grew) while reporting the latest reload failed: `[failed: N]` is 0 after
 * a success (2.6-3.0 reset it then, 3.1+ at every reload), and `master[ReloadFailed]>` shows
 * exactly while it is above 0, so a failure that happened before our reload cannot pass for ours
 * once the counter has moved. What serves after a failure is what served before: 2.6-3.0 keep
 * it under `# workers`, 3.1+ move it to `# old workers`. A master with another pid was
 * restarted: its counters start over, so only a new worker counts.
 */
export function judgeReload(before: MasterStatus, after: MasterStatus): ReloadVerdict {
  const previous = new Set([...before.proc.workers, ...servingWorkers(before.proc)].map((worker) => worker.pid));
  const fresh = after.proc.workers.filter((worker) => !previous.has(worker.pid));
  if (fresh.length > 0) return { kind: "reloaded", workers: fresh };
  const sameMaster = after.proc.master.pid === before.proc.master.pid;
  if (!sameMaster) return { kind: "waiting", reason: `the master was restarted (pid ${before.proc.master.pid} -> ${after.proc.master.pid}) and has no new worker yet` };
  if (after.proc.master.reloads <= before.proc.master.reloads) return { kind: "waiting", reason: "the master has not reloaded yet" };
  if ((after.proc.master.failedReloads ?? 0) > 0 || after.prompt.reloadFailed) return { kind: "failed", serving: stillServing(before, after) };
  return { kind: "waiting", reason: "the master reloaded but lists no new worker yet" };
}

/** After a failed reload: the current workers (2.6-3.0), else those that served before and are still listed (3.1+). */
function stillServing(before: MasterStatus, after: MasterStatus): ProcessEntry[] {
  if (after.proc.workers.length > 0) return after.proc.workers;
  const served = new Set(servingWorkers(before.proc).map((worker) => worker.pid));
  return after.proc.oldWorkers.filter((worker) => served.has(worker.pid));
}

/**
 * The workers a reload that HAProxy reported successful (2.7+) started: listed now, and not
 * before. Current ones first; an old one only if another reload already replaced ours.
 */
function startedBy(before: MasterStatus, after: MasterStatus): ProcessEntry[] {
  const known = new Set([...before.proc.workers, ...before.proc.oldWorkers].map((worker) => worker.pid));
  const current = after.proc.workers.filter((worker) => !known.has(worker.pid));
  return current.length > 0 ? current : after.proc.oldWorkers.filter((worker) => !known.has(worker.pid));
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
    let before = await this.master.status();
    this.servingPid = servingWorkers(before.proc)[0]?.pid ?? null;
    await this.options.prepare?.();
    const startedAt = this.clock.now();
    for (;;) {
      log?.info({ socket, worker: this.servingPid }, "reloading HAProxy");
      const sentAt = this.clock.now();
      const reply = await this.send(Math.max(1, this.timeoutMs - (sentAt - startedAt)));
      if (reply.kind !== "busy") return this.verdict(before, reply, sentAt);
      // Nothing was tried: another reload (an operator's, or HAProxy's own start) is still loading its worker.
      if (this.clock.now() - startedAt >= this.timeoutMs) throw new ReloadTimeoutError(socket, this.timeoutMs, before, `another reload is still in progress: ${reply.log}`);
      log?.info({ socket }, "another reload is still in progress; sending ours once it is done");
      await this.clock.sleep(Math.max(this.pollMs, BUSY_RETRY_MS));
      // That other reload changes the workers: ours is judged against what it left.
      const now = await this.poll();
      if (!(now instanceof HafleetError)) before = now;
    }
  }

  /**
   * Follows `show proc` until it shows the outcome: the one HAProxy's reply gave (2.7+), with the
   * workers that tells apart; or, when the reply gave none (2.6, or a connection lost after
   * sending), the one judgeReload reads from the master's counters.
   */
  private async verdict(before: MasterStatus, reply: ReloadReply, sentAt: number): Promise<ReloadResult> {
    let last: MasterStatus | null = null;
    let detail = "the master did not answer";
    // A verdict in the reply (2.7+) comes once the new worker has loaded: `show proc` lists it already.
    let wait = reply.kind === "no-verdict";
    for (;;) {
      if (wait) await this.clock.sleep(this.pollMs);
      wait = true;
      const after = await this.poll();
      if (after instanceof HafleetError) {
        detail = `the master did not answer: ${after.message}`;
      } else {
        last = after;
        if (reply.kind === "failed") throw this.failed(after, stillServing(before, after), reply.reason);
        const verdict = judgeReload(before, after);
        const started = reply.kind === "succeeded" ? startedBy(before, after) : verdict.kind === "reloaded" ? verdict.workers : [];
        if (started.length > 0) return this.succeeded(before, after, started, sentAt);
        if (verdict.kind === "failed" && reply.kind !== "succeeded") throw this.failed(after, verdict.serving, null);
        detail = verdict.kind === "waiting" ? `${verdict.reason} (workers: ${pids(after.proc.workers)}, reloads: ${after.proc.master.reloads})` : "HAProxy answered 'Success=1' but lists no new worker";
      }
      if (this.clock.now() - sentAt >= this.timeoutMs) {
        // HAProxy's own verdict stands even when the master cannot be read back in time.
        if (reply.kind === "failed") throw this.failed(last ?? before, stillServing(before, last ?? before), reply.reason);
        throw new ReloadTimeoutError(this.master.name, this.timeoutMs, last, detail);
      }
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
   * Never sent twice unless HAProxy said it did not try (busy): a connection lost or timed out
   * after the request may still have reloaded, and a second reload would fork another worker.
   * Polling tells what happened. A refusal (a reply that is no verdict) or no connection at all
   * means nothing happened, and is thrown.
   */
  private async send(timeoutMs: number): Promise<ReloadReply> {
    try {
      return (await this.master.reload(timeoutMs)) ?? NO_VERDICT;
    } catch (error) {
      if (!(error instanceof ConnectionLostError || error instanceof TimeoutError)) throw error;
      this.options.logger?.warn({ socket: this.master.name, err: error }, "no clean reply to 'reload'; checking whether it happened");
      return NO_VERDICT;
    }
  }

  private succeeded(before: MasterStatus, after: MasterStatus, workers: ProcessEntry[], sentAt: number): ReloadResult {
    const workerPids = workers.map((worker) => worker.pid);
    const workerPid = workerPids[0] as number;
    this.servingPid = workerPid;
    const result: ReloadResult = {
      workerPid,
      workerPids,
      previousWorkerPids: servingWorkers(before.proc).map((worker) => worker.pid),
      masterPid: after.proc.master.pid,
      reloads: after.proc.master.reloads,
      elapsedMs: this.clock.now() - sentAt,
    };
    this.options.logger?.info({ socket: this.master.name, worker: workerPid, previous: result.previousWorkerPids, elapsedMs: result.elapsedMs }, "HAProxy reloaded");
    return result;
  }

  private failed(after: MasterStatus, serving: ProcessEntry[], reason: string | null): ReloadFailedError {
    this.servingPid = serving[0]?.pid ?? null;
    const error = new ReloadFailedError(this.master.name, serving.map((worker) => worker.pid), after.proc.master.failedReloads, after.prompt.text, reason);
    this.options.logger?.error({ socket: this.master.name, worker: this.servingPid, failedReloads: error.failedReloads, reason }, "HAProxy's reload failed");
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
