import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { isProcessAlive } from "../support/haproxy.js";
import type { SoakRecord } from "../soak/soak-run.js";

/*
 * The soak (test/soak/soak-run.ts) at CI size, run as the built program: the Consul emulator,
 * the demo's upstream web servers, a real master-worker HAProxy with 32 backends of 4
 * template slots, the real controller and agent. 1,500 scale events in Consul (registrations,
 * deregistrations, checks failing and passing, weight changes), each awaited until HAProxy's
 * own `show servers state` shows it, under 100 requests/s through HAProxy. About 50 s on a
 * loaded 2-core machine (load average 9.5).
 *
 * Memory is not asserted here: the controller's and agent's heap readings swing by ~20 MB
 * between collections (25-45 MB measured) and their RSS grows by ~20 MB through the first
 * thousands of events before levelling off, so over 1,500 events only a leak above ~15 KB per
 * event would stand out. The benchmark (test/bench/soak.ts) runs longer and judges the slope.
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SOAK_BIN = join(ROOT, "dist/test/soak/soak-main.js");
const SIZE = { events: 1_500, backends: 32, phases: 5, rate: 100 };
const SLOTS = 4;
/** The soak's own bound; the test's timeout leaves it time to stop what it started. */
const SOAK_MAX_MS = 240_000;
const TEST_TIMEOUT_MS = SOAK_MAX_MS + 60_000;

type Checkpoint = Extract<SoakRecord, { record: "checkpoint" }>;
type Result = Extract<SoakRecord, { record: "result" }>;
type Started = Extract<SoakRecord, { record: "started" }>;
type Printed = SoakRecord | { record: "error"; message: string };

interface Finished {
  code: number | null;
  records: Printed[];
  stderr: string;
}

function runSoak(dir: string, onStarted: (started: Started) => void): { done: Promise<Finished>; stop(): void } {
  const flags = ["--dir", dir, "--events", SIZE.events, "--backends", SIZE.backends, "--phases", SIZE.phases, "--rate", SIZE.rate, "--max-ms", SOAK_MAX_MS].map(String);
  const child = spawn(process.execPath, [SOAK_BIN, ...flags], { stdio: ["ignore", "pipe", "pipe"] });
  const records: Printed[] = [];
  let pending = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    const lines = (pending + chunk).split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      const record = JSON.parse(line) as Printed;
      if (record.record === "started") onStarted(record);
      records.push(record);
    }
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const done = new Promise<Finished>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, records, stderr }));
  });
  return { done, stop: () => child.kill("SIGTERM") };
}

/** The soak starts each process as the leader of its group (HAProxy's worker is in its master's). */
function killGroup(pid: number): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, "SIGKILL");
      return;
    } catch {
      // Not a group leader (the worker), or gone meanwhile.
    }
  }
}

/** Servers in service per backend, as HAProxy showed them at one checkpoint. */
function sizes(checkpoint: Checkpoint): number[] {
  return Object.values(checkpoint.haproxy).map((servers) => servers.length);
}

describe("soak", () => {
  it(`lands ${SIZE.events} scale events in HAProxy under load: no failed request, no reload, every checkpoint as Consul says`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "hafleet-soak-"));
    let pids: number[] = [];
    const run = runSoak(dir, (started) => (pids = Object.values(started.pids)));
    let finished: Finished;
    let leftBehind: number[] = [];
    try {
      finished = await run.done;
    } finally {
      run.stop();
      await run.done.catch(() => undefined);
      // The soak stops its process groups itself; should it have failed to, they go here.
      leftBehind = pids.filter(isProcessAlive);
      leftBehind.forEach(killGroup);
      await rm(dir, { recursive: true, force: true });
    }
    const { code, records, stderr } = finished;
    const failure = records.find((record) => record.record === "error");
    expect(failure, stderr).toBeUndefined();
    expect(code).toBe(0);

    const checkpoints = records.filter((record): record is Checkpoint => record.record === "checkpoint");
    expect(checkpoints.map((checkpoint) => checkpoint.phase)).toEqual([1, 2, 3, 4, 5]);
    for (const [index, checkpoint] of checkpoints.entries()) {
      const phase = `phase ${checkpoint.phase}`;
      expect(Object.keys(checkpoint.haproxy), phase).toHaveLength(SIZE.backends);
      // The events changed what Consul answers from one checkpoint to the next.
      if (index > 0) expect(checkpoint.consul, phase).not.toEqual(checkpoints[index - 1]!.consul);
      // HAProxy's own state, read with nothing in flight, against Consul's own health answer.
      expect(checkpoint.haproxy, phase).toEqual(checkpoint.consul);
      expect(checkpoint.traffic.failed, `${phase}: ${JSON.stringify(checkpoint.traffic.failures)}`).toBe(0);
      // Traffic ran all through: at least one request served per event of the phase, spread over upstreams.
      expect(checkpoint.traffic.served, phase).toBeGreaterThanOrEqual(checkpoint.events);
      expect(checkpoint.traffic.upstreams, phase).toBeGreaterThan(1);
    }
    // The backends went past their template slots, and some came back within them.
    expect(Math.max(...checkpoints.flatMap(sizes))).toBeGreaterThan(SLOTS);
    expect(Math.min(...checkpoints.flatMap(sizes))).toBeLessThanOrEqual(SLOTS);

    const result = records.find((record): record is Result => record.record === "result")!;
    expect(result).toBeDefined();
    expect(result.landed).toBe(SIZE.events);
    expect(result.requests.failed, JSON.stringify(result.requests.failures)).toBe(0);
    expect(result.requests.served).toBeGreaterThanOrEqual(SIZE.events);
    expect(result.reloads).toBe(0);
    expect(result.workerReplaced).toBe(false);
    expect(result.haproxy).toEqual(result.consul);
    // Nothing half-done once the drains ran out: no server draining, no added server left undeleted.
    expect(result.unsettled).toEqual([]);

    expect(pids).toHaveLength(5);
    expect(leftBehind).toEqual([]);
  });
});
