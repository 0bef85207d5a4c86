import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Soak, type SoakRecord } from "../soak/soak-run.js";
import { parseSoakSize, soakSettings } from "../soak/soak-settings.js";
import { printLine, round } from "./report.js";

/**
 * The soak (test/soak/soak-run.ts), bigger than the CI test runs it: thousands of scale events
 * in Consul, each landed in a real HAProxy through the real controller and agent, under a
 * steady HTTP load through HAProxy. One line per phase (the trend), then the summary: events,
 * pace, requests served and failed, convergence per event (Consul write -> HAProxy's own
 * `show servers state` shows it), and each process's memory after the first phase (the
 * warm-up): start, end, max, and the least-squares slope in KB per 1,000 events, through every
 * sample and through the lowest of each tenth of the run (the floor the garbage collector
 * returns to), from which "memory flat" is judged.
 *
 *   node dist/test/bench/soak.js   (SOAK_EVENTS, default 6000; SOAK_BACKENDS 32; SOAK_PHASES 12; SOAK_RATE 100 requests/s)
 */

const BENCH = "soak";
const READING_NAMES = { rssKb: "rss_kb", heapKb: "heap_kb" } as const;

async function main(): Promise<number> {
  const env = process.env;
  const size = parseSoakSize(
    { events: env["SOAK_EVENTS"] ?? 6_000, backends: env["SOAK_BACKENDS"] ?? 32, phases: env["SOAK_PHASES"] ?? 12, rate: env["SOAK_RATE"] ?? 100 },
    "SOAK_* environment",
  );
  const settings = soakSettings(size);
  const dir = await mkdtemp(join(tmpdir(), "hafleet-bench-soak-"));
  const results: Array<Extract<SoakRecord, { record: "result" }>> = [];
  const soak = new Soak(settings, dir, (record) => {
    if (record.record === "checkpoint") printPhase(record);
    if (record.record === "result") results.push(record);
  });
  // The run bounds itself (settings.maxMs); this only trips on a hang, and still stops what it started.
  setTimeout(() => {
    console.error(`${BENCH}: over ${settings.maxMs + 30_000} ms, giving up; logs in ${dir}`);
    void soak.stop().finally(() => process.exit(2));
  }, settings.maxMs + 30_000).unref();
  try {
    await soak.run();
  } catch (error) {
    console.error(`${BENCH}: ${(error as Error).message}; logs in ${dir}`);
    return 1;
  }
  const result = results[0];
  const problems = result === undefined ? ["no result"] : printSummary(result, settings);
  if (problems.length > 0) {
    console.error(`${BENCH}: ${problems.join("; ")}; logs in ${dir}`);
    return 1;
  }
  await rm(dir, { recursive: true, force: true });
  return 0;
}

function printPhase(checkpoint: Extract<SoakRecord, { record: "checkpoint" }>): void {
  const processes = checkpoint.memory.processes;
  printLine({
    bench: BENCH,
    phase: checkpoint.phase,
    events: checkpoint.totalEvents,
    phase_events_per_s: round((checkpoint.events / checkpoint.ms) * 1000),
    convergence_ms_p50: checkpoint.convergenceMs.p50,
    convergence_ms_p99: checkpoint.convergenceMs.p99,
    requests_served: checkpoint.traffic.served,
    requests_failed: checkpoint.traffic.failed,
    rss_kb: Object.fromEntries(Object.entries(processes).map(([name, memory]) => [name, memory.rssKb])),
    heap_kb: Object.fromEntries(Object.entries(processes).flatMap(([name, memory]) => (memory.heapKb === null ? [] : [[name, memory.heapKb]]))),
  });
}

/** Prints the summary line; what makes the run a failure, if anything. */
function printSummary(result: Extract<SoakRecord, { record: "result" }>, settings: ReturnType<typeof soakSettings>): string[] {
  const mismatched = Object.keys(result.consul).filter((backend) => JSON.stringify(result.consul[backend]) !== JSON.stringify(result.haproxy[backend]));
  printLine({
    bench: BENCH,
    events: result.events,
    landed: result.landed,
    backends: settings.backends,
    ms: result.ms,
    events_per_s: round((result.landed / result.ms) * 1000),
    convergence_ms_p50: result.convergenceMs.p50,
    convergence_ms_p99: result.convergenceMs.p99,
    convergence_ms_max: result.convergenceMs.max,
    requests_served: result.requests.served,
    requests_failed: result.requests.failed,
    ...(result.requests.failed > 0 ? { failures: result.requests.failures } : {}),
    reloads: result.reloads,
    memory_samples: result.samples,
    memory_from_events: Math.floor(settings.events / settings.phases),
    memory: Object.fromEntries(
      Object.entries(result.memory).map(([name, readings]) => [
        name,
        Object.fromEntries(
          Object.entries(readings).flatMap(([reading, trend]) => (trend === null ? [] : [[READING_NAMES[reading as keyof typeof READING_NAMES], { start: trend.start, end: trend.end, max: trend.max, per_1000_events: trend.kbPer1000Events, floor_per_1000_events: trend.floorKbPer1000Events }]])),
        ),
      ]),
    ),
    ...(mismatched.length > 0 ? { mismatched_backends: mismatched } : {}),
    ...(result.unsettled.length > 0 ? { unsettled: result.unsettled } : {}),
    debounce_ms: settings.debounce,
    load_per_s: settings.ratePerSecond,
  });
  return [
    ...(result.landed !== result.events ? [`${result.landed} of ${result.events} events landed`] : []),
    ...(result.requests.failed > 0 ? [`${result.requests.failed} failed request(s)`] : []),
    ...(result.reloads !== 0 || result.workerReplaced ? [`HAProxy reloaded (${result.reloads})`] : []),
    ...(mismatched.length > 0 ? [`HAProxy differs from Consul on ${mismatched.join(", ")}`] : []),
    ...(result.unsettled.length > 0 ? [`not settled: ${result.unsettled.join(", ")}`] : []),
  ];
}

process.exit(await main());
