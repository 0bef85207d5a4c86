import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConnectError, ConnectionLostError, ReplyParseError } from "../../agent/errors.js";
import { judgeReload, ReloadFailedError, Reloader, ReloadTimeoutError, type Clock, type MasterControl, type ReloaderOptions } from "../../agent/hybrid/reloader.js";
import type { ReloadReply } from "../../agent/hybrid/reload-reply.js";
import { parseMasterStatus, parseShowProc, type MasterStatus } from "../../agent/hybrid/show-proc.js";

function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/haproxy-2.6/${name}.txt`, import.meta.url), "utf8");
}

/** A fixture as the reloader sees it: 2.6 shows [ReloadFailed] exactly while [failed: N] > 0. */
function status(name: string): MasterStatus {
  const proc = parseShowProc(fixture(name));
  const failed = (proc.master.failedReloads ?? 0) > 0;
  return { prompt: { text: failed ? "master[ReloadFailed]> " : "master> ", reloadFailed: failed }, proc };
}

// One 2.6 instance, in the order captured: start, reload, failed reload, failed again, repaired.
const FRESH = status("master-show-proc");
const RELOADED = status("master-show-proc-old-workers");
const FAILED = status("master-show-proc-reload-failed");
const FAILED_TWICE = status("master-show-proc-reload-failed-twice");
const RECOVERED = status("master-show-proc-recovered");

function withMaster(base: MasterStatus, change: Partial<MasterStatus["proc"]["master"]>): MasterStatus {
  return { ...base, proc: { ...base.proc, master: { ...base.proc.master, ...change } } };
}

describe("judgeReload", () => {
  it("sees success in a current worker that was not current before", () => {
    expect(judgeReload(FRESH, RELOADED)).toEqual({ kind: "reloaded", workers: RELOADED.proc.workers });
    expect(judgeReload(FAILED_TWICE, RECOVERED)).toEqual({ kind: "reloaded", workers: RECOVERED.proc.workers });
  });

  it("sees failure once the master reloaded and reports failed reloads", () => {
    expect(judgeReload(RELOADED, FAILED)).toEqual({ kind: "failed", serving: FAILED.proc.workers });
    expect(judgeReload(FAILED, FAILED_TWICE)).toEqual({ kind: "failed", serving: FAILED_TWICE.proc.workers });
  });

  it("does not take an earlier failure for this reload's", () => {
    // Before our reload the master already says [ReloadFailed]; until its counter moves, we wait.
    expect(judgeReload(FAILED, FAILED)).toMatchObject({ kind: "waiting", reason: "the master has not reloaded yet" });
    expect(judgeReload(FRESH, FRESH)).toMatchObject({ kind: "waiting", reason: "the master has not reloaded yet" });
  });

  it("waits when the master counted the reload but lists no new worker and no failure", () => {
    expect(judgeReload(FRESH, withMaster(FRESH, { reloads: 1 }))).toMatchObject({ kind: "waiting", reason: "the master reloaded but lists no new worker yet" });
  });

  it("uses the prompt when the version prints no failed counter", () => {
    const before = withMaster(RELOADED, { failedReloads: null });
    const after = { ...withMaster(FAILED, { failedReloads: null }), prompt: { text: "master[ReloadFailed]> ", reloadFailed: true } };
    expect(judgeReload(before, after)).toMatchObject({ kind: "failed" });
    expect(judgeReload(before, { ...after, prompt: { text: "master> ", reloadFailed: false } })).toMatchObject({ kind: "waiting" });
  });

  it("after a master restart, trusts only a new worker: the counters started over", () => {
    const restarted = withMaster(FAILED, { pid: 9999, reloads: 0, failedReloads: 0 });
    expect(judgeReload(RELOADED, withMaster(restarted, { reloads: 7, failedReloads: 3 }))).toMatchObject({ kind: "waiting", reason: expect.stringContaining("restarted") });
    expect(judgeReload(FAILED, withMaster(RECOVERED, { pid: 9999 }))).toMatchObject({ kind: "reloaded" });
  });

  it("reads the prompt-framed fixtures the same way", () => {
    expect(parseMasterStatus(fixture("master-prompt-show-proc-reload-failed"))).toEqual(FAILED);
    expect(parseMasterStatus(fixture("master-prompt-show-proc"))).toEqual(FRESH);
  });
});

/** The same cycle on each version (reload-cycle-*.txt): judged from `show proc` alone, as 2.6 needs. */
describe.each(["2.6", "2.8", "3.0", "3.2", "3.4"])("judgeReload on HAProxy %s", (version) => {
  const cycle = (name: string, failed: boolean): MasterStatus => ({
    prompt: { text: failed ? "master[ReloadFailed]> " : "master> ", reloadFailed: failed },
    proc: parseShowProc(readFileSync(new URL(`../fixtures/haproxy-${version}/reload-cycle-${name}.txt`, import.meta.url), "utf8")),
  });
  const fresh = cycle("0-show-proc-fresh", false);
  const reloaded = cycle("1-show-proc-reloaded", false);
  const failed = cycle("2-show-proc-failed", true);
  const failedAgain = cycle("3-show-proc-failed-again", true);
  const recovered = cycle("4-show-proc-recovered", false);
  const serving = reloaded.proc.workers[0]!;

  it("sees each reload's outcome, and the worker that still serves after a failure", () => {
    expect(judgeReload(fresh, reloaded)).toEqual({ kind: "reloaded", workers: reloaded.proc.workers });
    expect(judgeReload(reloaded, failed)).toMatchObject({ kind: "failed", serving: [{ pid: serving.pid }] });
    expect(judgeReload(failed, failedAgain)).toMatchObject({ kind: "failed", serving: [{ pid: serving.pid }] });
    expect(judgeReload(failedAgain, recovered)).toEqual({ kind: "reloaded", workers: recovered.proc.workers });
  });

  it("waits while the master has not moved", () => {
    for (const status of [fresh, reloaded, failed, failedAgain, recovered]) expect(judgeReload(status, status)).toMatchObject({ kind: "waiting" });
  });
});

/** Sleeps take no real time, only clock time: the tests see exactly when each reload was sent. */
class InstantClock implements Clock {
  time = 0;
  now(): number {
    return this.time;
  }
  async sleep(ms: number): Promise<void> {
    this.time += ms;
  }
}

type Outcome = "ok" | "fail" | "lost" | "ok-connection-lost" | "refused" | "busy";

/**
 * A master CLI that behaves as 2.6's did: refuses connections while it re-executes, resets
 * failures on success, answers `reload` with nothing. `since` makes it behave as a later version:
 * 2.7+ answers with a verdict, 3.1+ also moves the serving worker to the old ones on a failure
 * and counts only the latest reload's failure.
 */
class SimulatedMaster implements MasterControl {
  readonly name = "/run/haproxy-master.sock";
  since: "2.6" | "2.7" | "3.1" = "2.6";
  masterPid = 100;
  reloads = 0;
  failed = 0;
  workers = [200];
  oldWorkers: number[] = [];
  nextPid = 201;
  /** Polls answered with ECONNREFUSED after each reload. */
  reexecPolls = 2;
  refusing = 0;
  outcomes: Outcome[] = [];
  sentAt: number[] = [];
  events: string[] = [];
  gate: Promise<void> | null = null;

  constructor(private readonly clock: Clock) {}

  async status(): Promise<MasterStatus> {
    this.events.push("status");
    if (this.refusing > 0) {
      this.refusing--;
      throw new ConnectError(this.name, "connect ECONNREFUSED");
    }
    const entry = (pid: number) => ({ pid, type: "worker", relativePid: null, reloads: 0, uptimeSeconds: 0, version: "2.6.12" });
    return {
      prompt: { text: this.failed > 0 ? "master[ReloadFailed]> " : "master> ", reloadFailed: this.failed > 0 },
      proc: {
        master: { pid: this.masterPid, reloads: this.reloads, failedReloads: this.failed, uptimeSeconds: 5, version: "2.6.12" },
        workers: this.workers.map(entry),
        oldWorkers: this.oldWorkers.map(entry),
        programs: [],
        oldPrograms: [],
      },
    };
  }

  async reload(): Promise<ReloadReply | void> {
    this.events.push("reload");
    this.sentAt.push(this.clock.now());
    if (this.gate) await this.gate;
    const outcome = this.outcomes.shift() ?? "ok";
    if (outcome === "refused") throw new ReplyParseError("reload", "expected an empty reply or 'Success=0|1', got \"Unknown command\"");
    if (outcome === "busy") return { kind: "busy", log: "Another reload is still in progress." };
    if (outcome === "lost") return;
    this.reloads++;
    this.refusing = this.reexecPolls;
    if (outcome === "fail") {
      this.failed = this.since === "3.1" ? 1 : this.failed + 1;
      if (this.since === "3.1") {
        this.oldWorkers = [...this.workers, ...this.oldWorkers];
        this.workers = [];
      }
      if (this.since !== "2.6") return { kind: "failed", log: ALERT, reason: ALERT };
      return;
    }
    this.failed = 0;
    this.workers = [this.nextPid++];
    if (outcome === "ok-connection-lost") throw new ConnectionLostError(this.name, 0, 1);
    if (this.since !== "2.6") return { kind: "succeeded", log: "[NOTICE]   (100) : Loading success." };
  }
}

const ALERT = "[ALERT]    (100) : config : parsing [/etc/haproxy/haproxy.cfg:18] : unknown keyword 'bogus_keyword' in 'backend' section";

function setup(options: Partial<ReloaderOptions> = {}) {
  const clock = new InstantClock();
  const master = new SimulatedMaster(clock);
  const reloader = new Reloader(master, {
    clock,
    pollMs: 50,
    prepare: async () => {
      master.events.push("prepare");
    },
    ...options,
  });
  return { clock, master, reloader };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

describe("Reloader", () => {
  it("saves, reloads once, waits out the re-exec, and returns the new worker", async () => {
    const { master, reloader } = setup();
    expect(reloader.workerPid).toBeNull();
    const result = await reloader.reload();
    expect(result).toEqual({ workerPid: 201, workerPids: [201], previousWorkerPids: [200], masterPid: 100, reloads: 1, elapsedMs: 150 });
    expect(reloader.workerPid).toBe(201);
    expect(master.events).toEqual(["status", "prepare", "reload", "status", "status", "status"]);
  });

  it("reports a failed reload with the worker that still serves", async () => {
    const { master, reloader } = setup();
    master.outcomes = ["fail"];
    const error = await reloader.reload().catch((caughtError: unknown) => caughtError);
    expect(error).toBeInstanceOf(ReloadFailedError);
    const failed = error as ReloadFailedError;
    expect(failed).toMatchObject({ code: "HAFLEET_RELOAD_FAILED", servingPids: [200], failedReloads: 1, prompt: "master[ReloadFailed]> ", socket: master.name });
    expect(failed.message).toBe(
      "HAProxy's reload failed: the master at /run/haproxy-master.sock reports '[failed: 1]' in 'show proc', prompt \"master[ReloadFailed]> \"; worker 200 still serves with the previous configuration",
    );
    expect(reloader.workerPid).toBe(200);
    expect(master.sentAt).toHaveLength(1);
  });

  it.each(["2.7", "3.1"] as const)("takes HAProxy's own verdict on %s+, and its [ALERT] lines as the reason", async (since) => {
    const { master, reloader } = setup({ minIntervalMs: 0 });
    master.since = since;
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 201, previousWorkerPids: [200] });
    master.outcomes = ["fail", "fail"];
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = (await reloader.reload().catch((caughtError: unknown) => caughtError)) as ReloadFailedError;
      expect(error).toBeInstanceOf(ReloadFailedError);
      expect(error).toMatchObject({ servingPids: [201], reason: ALERT, failedReloads: since === "3.1" ? 1 : attempt + 1 });
      expect(error.message).toContain(`worker 201 still serves with the previous configuration. HAProxy says:\n${ALERT}`);
      expect(reloader.workerPid).toBe(201);
    }
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 202, previousWorkerPids: [201] });
    expect(master.sentAt).toHaveLength(4);
  });

  it("on 3.1+ without a verdict in the reply (connection lost), still finds the worker that serves after a failure", async () => {
    const { master, reloader } = setup({ minIntervalMs: 0 });
    master.since = "3.1";
    master.outcomes = ["fail"];
    const reload = master.reload.bind(master);
    master.reload = async () => {
      await reload();
      throw new ConnectionLostError(master.name, 0, 1);
    };
    await expect(reloader.reload()).rejects.toMatchObject({ servingPids: [200], failedReloads: 1, reason: null });
    expect(reloader.workerPid).toBe(200);
  });

  it("sends again when HAProxy says another reload is in progress (3.1+): that one was never tried", async () => {
    const { master, reloader } = setup();
    master.since = "3.1";
    master.outcomes = ["busy", "busy", "ok"];
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 201 });
    expect(master.sentAt).toEqual([0, 100, 200]);
  });

  it("gives up on a reload that stays busy as a timeout: nothing was reloaded", async () => {
    const { master, reloader } = setup({ timeoutMs: 1_000 });
    master.since = "3.1";
    master.outcomes = Array(100).fill("busy");
    const error = (await reloader.reload().catch((caughtError: unknown) => caughtError)) as ReloadTimeoutError;
    expect(error).toBeInstanceOf(ReloadTimeoutError);
    expect(error.detail).toBe("another reload is still in progress: Another reload is still in progress.");
    expect(master.reloads).toBe(0);
  });

  it("succeeds after an earlier failure, and fails again when the config is still bad", async () => {
    const { master, reloader } = setup({ minIntervalMs: 0 });
    master.failed = 1;
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 201 });
    master.outcomes = ["fail", "fail"];
    await expect(reloader.reload()).rejects.toMatchObject({ failedReloads: 1, servingPids: [201] });
    await expect(reloader.reload()).rejects.toMatchObject({ failedReloads: 2, servingPids: [201] });
  });

  it("never sends 'reload' twice, even when the connection broke after it", async () => {
    const { master, reloader } = setup();
    master.outcomes = ["ok-connection-lost"];
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 201 });
    expect(master.sentAt).toHaveLength(1);
  });

  it("stops at a refusal to reload, without polling", async () => {
    const { master, reloader } = setup();
    master.outcomes = ["refused"];
    await expect(reloader.reload()).rejects.toBeInstanceOf(ReplyParseError);
    expect(master.events).toEqual(["status", "prepare", "reload"]);
  });

  it("times out when the reload never happens, with what the master last said", async () => {
    const { clock, master, reloader } = setup({ timeoutMs: 1_000 });
    master.outcomes = ["lost"];
    const error = await reloader.reload().catch((caughtError: unknown) => caughtError);
    expect(error).toBeInstanceOf(ReloadTimeoutError);
    const timeout = error as ReloadTimeoutError;
    expect(timeout.code).toBe("HAFLEET_RELOAD_TIMEOUT");
    expect(timeout.last?.proc.master.reloads).toBe(0);
    expect(timeout.message).toBe("no new worker within 1000 ms of 'reload' on /run/haproxy-master.sock: the master has not reloaded yet (workers: 200, reloads: 0)");
    expect(clock.now()).toBe(1_000);
  });

  it("times out with no status at all when the master never answers again", async () => {
    const { master, reloader } = setup({ timeoutMs: 500 });
    master.reexecPolls = Number.POSITIVE_INFINITY;
    const error = (await reloader.reload().catch((caughtError: unknown) => caughtError)) as ReloadTimeoutError;
    expect(error).toBeInstanceOf(ReloadTimeoutError);
    expect(error.last).toBeNull();
    expect(error.detail).toContain("the master did not answer: cannot connect to HAProxy at /run/haproxy-master.sock");
  });

  it("does nothing when the master cannot be reached first", async () => {
    const { master, reloader } = setup();
    master.refusing = 1;
    await expect(reloader.reload()).rejects.toBeInstanceOf(ConnectError);
    expect(master.events).toEqual(["status"]);
  });

  it("does not reload when prepare (saving the state file) fails", async () => {
    const { master, reloader } = setup({
      prepare: async () => {
        throw new ReplyParseError("show servers state", "garbled");
      },
    });
    await expect(reloader.reload()).rejects.toThrow("garbled");
    expect(master.sentAt).toEqual([]);
  });

  it("coalesces concurrent calls into one reload", async () => {
    const { master, reloader } = setup();
    const results = await Promise.all([reloader.reload(), reloader.reload(), reloader.reload(), reloader.reload(), reloader.reload()]);
    expect(master.sentAt).toHaveLength(1);
    for (const result of results) expect(result).toBe(results[0]);
  });

  it("runs one reload at a time and queues one more for every caller that came meanwhile", async () => {
    const { master, reloader } = setup({ minIntervalMs: 0 });
    const gate = deferred();
    master.gate = gate.promise;
    const first = reloader.reload();
    while (master.sentAt.length === 0) await Promise.resolve();
    // The first has sent 'reload': callers now may have changed things it did not see.
    const later = [reloader.reload(), reloader.reload(), reloader.reload()];
    expect(later[1]).toBe(later[0]);
    expect(later[2]).toBe(later[0]);
    master.gate = null;
    gate.resolve();
    const [firstResult, laterResult] = await Promise.all([first, later[0]]);
    expect(master.sentAt).toHaveLength(2);
    expect(firstResult.workerPid).toBe(201);
    expect(laterResult!.workerPid).toBe(202);
    expect(laterResult!.previousWorkerPids).toEqual([201]);
  });

  it("keeps the minimum interval between the starts of two reloads", async () => {
    const { master, reloader } = setup({ minIntervalMs: 2_000 });
    await reloader.reload();
    await reloader.reload();
    await reloader.reload();
    expect(master.sentAt).toEqual([0, 2_000, 4_000]);
  });

  it("rejects every sharer of a failed reload, and the next call tries again", async () => {
    const { master, reloader } = setup({ minIntervalMs: 0 });
    master.outcomes = ["fail"];
    const shared = await Promise.allSettled([reloader.reload(), reloader.reload()]);
    expect(shared.map((settled) => settled.status)).toEqual(["rejected", "rejected"]);
    await expect(reloader.reload()).resolves.toMatchObject({ workerPid: 201 });
    expect(master.sentAt).toHaveLength(2);
  });
});
