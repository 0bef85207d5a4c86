import { fork, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { cpus, setPriority } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { writeHeapSnapshot } from "node:v8";
import { pino } from "pino";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import type { FleetServer } from "../../controller/server/fleet-server.js";
import type { FleetReport } from "./fleet-agents.js";
import { command, nextReport } from "./fleet-ipc.js";
import { MemorySource, type MemoryInstance } from "./memory-source.js";
import { printLine, round } from "./report.js";

/**
 * Fleet convergence: one controller and N agents (the real AgentRunner and its gRPC link over
 * a simulated HAProxy, in child processes). Once every agent has acked the initial state, one
 * discovery change is made and each agent's ack of it is timed, as the controller sees it.
 * Also: the controller's memory per connected agent, its CPU for one change and at rest.
 * Then the modelled convergence of the designs this one replaces, and the targets.
 *
 * Each fleet size runs in a fresh process (this script again, FLEET_ONE_SIZE=N) holding only
 * the controller: memory freed by a smaller size would otherwise stay in the RSS "before"
 * figure of the next, and understate its memory per agent.
 *
 *   npm run bench     (or: node --expose-gc dist/test/bench/fleet.js)
 *   FLEET_SIZES=100,1000   FLEET_RUNS=3   FLEET_AGENTS_PER_CHILD=2500   FLEET_BATCH=100
 *   FLEET_TIME_LIMIT_MS=1200000   FLEET_AGENT_NICE=10 (0: agents not niced)
 *   FLEET_PROFILE_DIR=/tmp/prof   for whoever fixes a slow path: CPU profiles of the controller
 *     over each change (t0 to last ack) and over the idle window, a heap snapshot with the
 *     agents connected, and --cpu-prof of each agent child. Figures taken so are slower.
 */

const BENCH = "fleet-convergence";
const SERVICE = "web";
const BACKEND = "be_app";
const SIZES = sizeList(process.env["FLEET_SIZES"], [100, 1_000, 10_000]);
const RUNS = positiveInt(process.env["FLEET_RUNS"], 3);
const AGENTS_PER_CHILD = positiveInt(process.env["FLEET_AGENTS_PER_CHILD"], 2_500);
/** Below this, one more child costs more (a Node process) than it spreads. */
const MIN_AGENTS_PER_CHILD = 250;
/** The whole benchmark; past it every process is killed and the exit code is 2. */
const TIME_LIMIT_MS = positiveInt(process.env["FLEET_TIME_LIMIT_MS"], 20 * 60_000);
/** One change that has not reached every agent by then is reported as it stands (acked < N). */
const CHANGE_TIMEOUT_MS = 60_000;
/** Time after the ramp and between changes for late messages (observed reports) to be handled. */
const SETTLE_MS = 1_000;
/** The controller's CPU with the fleet connected and nothing changing: one heartbeat period. */
const IDLE_WINDOW_MS = 5_000;
const STOP_TIMEOUT_MS = 20_000;
/** File descriptors the controller process needs besides one per agent stream. */
const FD_MARGIN = 64;
/** Niceness of the agent children (0: none); see lowerPriority. */
const AGENT_NICE = nonNegativeInt(process.env["FLEET_AGENT_NICE"], 10);
const TARGET = { agents: 10_000, p99Ms: 1_000, rssPerAgentKb: 100 };
const DEBOUNCE = { quietMs: 100, maxMs: 1_000 };

const ONE_SIZE = process.env["FLEET_ONE_SIZE"];
const PROFILE_DIR = process.env["FLEET_PROFILE_DIR"];
const SELF = fileURLToPath(import.meta.url);
const AGENTS_SCRIPT = fileURLToPath(new URL("./fleet-agents.js", import.meta.url));
const live = new Set<ChildProcess>();
const silent = pino({ level: "silent" });

// ---------------------------------------------------------------------------------------------
// Agent children

/** Ramp budget for N agents: generous, it only trips on a controller that stopped answering. */
function rampTimeoutMs(agents: number): number {
  return 60_000 + agents * 30;
}

/**
 * At most AGENTS_PER_CHILD per child, and at least one child per core once there are enough
 * agents: one child is one thread, and the agents' work (a real agent's per-push CPU, which
 * in production runs on its own host) must not be held to one core while another idles.
 */
function childCount(agents: number): number {
  return Math.min(Math.ceil(agents / MIN_AGENTS_PER_CHILD), Math.max(cpus().length, Math.ceil(agents / AGENTS_PER_CHILD)));
}

function spawnChildren(agents: number, address: string): ChildProcess[] {
  const children: ChildProcess[] = [];
  const perChild = Math.ceil(agents / childCount(agents));
  for (let offset = 0; offset < agents; offset += perChild) {
    const count = Math.min(perChild, agents - offset);
    // Not this process's flags (--expose-gc): the agents get their own profile, if any.
    const execArgv = PROFILE_DIR === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", PROFILE_DIR];
    const child = fork(AGENTS_SCRIPT, [String(count), address, String(offset), BACKEND], { stdio: ["ignore", "ignore", "inherit", "ipc"], execArgv });
    track(child);
    lowerPriority(child);
    children.push(child);
  }
  return children;
}

/**
 * In production the controller has its own cores; here the agents share this VM's with it.
 * Niced, they still get every cycle the controller leaves idle, but do not delay the
 * controller's own work, so its latency is not that of a process starved by its agents.
 */
function lowerPriority(child: ChildProcess): void {
  if (child.pid === undefined || AGENT_NICE === 0) return;
  try {
    setPriority(child.pid, AGENT_NICE);
  } catch {
    // Not allowed here: the agents then compete with the controller as equals.
  }
}

/** Total CPU of the agent children so far, in ms. */
async function childrenCpuMs(children: readonly ChildProcess[]): Promise<number> {
  const reports = await Promise.all(
    children.map((child) => {
      const answer = nextReport(child, "cpu", 10_000);
      command(child, { type: "cpu" });
      return answer;
    }),
  );
  return reports.reduce((sum, report) => sum + report.micros, 0) / 1000;
}

/** Asks each child to stop its agents; one that does not in time is killed. */
async function stopChildren(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      try {
        const stopped = nextReport(child, "stopped", STOP_TIMEOUT_MS);
        command(child, { type: "stop" });
        await stopped;
      } catch {
        child.kill("SIGKILL");
      }
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Acks, as the controller sees them

interface Completion {
  /** Per agent that acked, ms from t0 to its ack, in arrival order. */
  latencies: number[];
  /** The controller process's CPU from t0 to the last ack (or to the timeout). */
  cpuMs: number;
  complete: boolean;
}

interface Tracking {
  version: string;
  expected: number;
  t0: number;
  cpuAtT0: NodeJS.CpuUsage;
  seen: Set<string>;
  latencies: number[];
  done: (completion: Completion) => void;
}

/** Times, per agent, the first ack of one backend version; counts disconnections throughout. */
class AckClock {
  disconnects = 0;
  /** Why streams ended, and how often: what a failed ramp or run is explained by. */
  readonly disconnectReasons = new Map<string, number>();
  private tracking: Tracking | null = null;

  constructor(events: FleetServer["events"]) {
    events.on("acked", (agent, backend, version) => this.acked(agent, backend, version));
    events.on("disconnected", (_agent, reason) => {
      this.disconnects++;
      this.disconnectReasons.set(reason, (this.disconnectReasons.get(reason) ?? 0) + 1);
    });
  }

  /** How far an unfinished tracking got. */
  get progress(): number {
    return this.tracking?.seen.size ?? 0;
  }

  /** Resolves once `expected` agents acked `version`, or at the timeout with what there is. */
  track(version: string, expected: number, t0: number, cpuAtT0: NodeJS.CpuUsage, timeoutMs: number): Promise<Completion> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.finish(false), timeoutMs);
      const done = (completion: Completion): void => {
        clearTimeout(timer);
        this.tracking = null;
        resolve(completion);
      };
      this.tracking = { version, expected, t0, cpuAtT0, seen: new Set(), latencies: [], done };
    });
  }

  /** Ends any tracking under way (resolving it as incomplete), so no timer outlives a failure. */
  stop(): void {
    this.finish(false);
  }

  private acked(agent: string, backend: string, version: string): void {
    const tracking = this.tracking;
    if (tracking === null || backend !== BACKEND || version !== tracking.version || tracking.seen.has(agent)) return;
    tracking.seen.add(agent);
    tracking.latencies.push(performance.now() - tracking.t0);
    if (tracking.seen.size === tracking.expected) this.finish(true);
  }

  private finish(complete: boolean): void {
    const tracking = this.tracking;
    if (tracking === null) return;
    const cpu = process.cpuUsage(tracking.cpuAtT0);
    tracking.done({ latencies: tracking.latencies, cpuMs: (cpu.user + cpu.system) / 1000, complete });
  }
}

interface Fanout {
  /** performance.now() when the debounce fired the last push fan-out, and how long it ran. */
  last: { startedAt: number; ms: number } | null;
}

/**
 * Times the controller's push fan-out: the debouncer calls `server.desiredChanged()`, which
 * writes to every idle stream in one synchronous loop (no ack is read until it returns).
 * Wrapped on the instance, for measurement only; the controller's code is unchanged.
 */
function timeFanout(server: FleetServer): Fanout {
  const fanout: Fanout = { last: null };
  const desiredChanged = server.desiredChanged.bind(server);
  server.desiredChanged = () => {
    const startedAt = performance.now();
    desiredChanged();
    fanout.last = { startedAt, ms: performance.now() - startedAt };
  };
  return fanout;
}

// ---------------------------------------------------------------------------------------------
// Measuring the controller process

/** RSS and heap after a full, forced collection: garbage must not count as memory per agent. */
async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  for (let pass = 0; pass < 3; pass++) {
    globalThis.gc?.();
    await nextTurn();
  }
  return process.memoryUsage();
}

/** This process's CPU over IDLE_WINDOW_MS, as a share of one core: heartbeats and keepalives. */
async function idleCpuPercent(agents: number): Promise<number> {
  return profiled(`controller-${agents}-idle`, async () => {
    const start = process.cpuUsage();
    const startedAt = performance.now();
    await sleep(IDLE_WINDOW_MS);
    const used = process.cpuUsage(start);
    return ((used.user + used.system) / 1000 / (performance.now() - startedAt)) * 100;
  });
}

/** With FLEET_PROFILE_DIR: `task` under the V8 CPU profiler, written as NAME.cpuprofile. */
async function profiled<T>(name: string, task: () => Promise<T>): Promise<T> {
  if (PROFILE_DIR === undefined) return task();
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  try {
    return await task();
  } finally {
    const { profile } = await session.post("Profiler.stop");
    await writeFile(join(PROFILE_DIR, `${name}.cpuprofile`), JSON.stringify(profile));
    session.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// One fleet size, in this process

function servers(count: number): MemoryInstance[] {
  return Array.from({ length: count }, (_, index) => ({ address: `10.0.${Math.floor(index / 250)}.${(index % 250) + 1}`, port: 8080 }));
}

async function startBenchController(source: MemorySource): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    // Never read: the benchmark passes its own source. The schema wants one named.
    discovery: { file: "memory" },
    backends: [{ backend: BACKEND, service: SERVICE }],
    debounce: DEBOUNCE,
  });
  return startController(config, silent, { source });
}

function backendVersion(controller: RunningController): string {
  const state = controller.store.all().find((backend) => backend.name === BACKEND);
  if (state === undefined) throw new Error(`the controller has no desired state for ${BACKEND}`);
  return state.version;
}

interface SizeBench {
  agents: number;
  controller: RunningController;
  source: MemorySource;
  clock: AckClock;
  fanout: Fanout;
  children: readonly ChildProcess[];
}

interface ChangeRun {
  servers: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  acked: number;
  controller_cpu_ms: number;
  agents_cpu_ms: number;
  /** From t0 to the debounce firing. */
  debounce_ms: number;
  /** The synchronous loop that writes every agent's push. */
  push_fanout_ms: number;
  /** Streams that ended during the run (a starved agent or controller misses heartbeats). */
  disconnects: number;
}

/** One discovery change: add a server to `web` at t0, time every agent's ack of it. */
async function changeRun(bench: SizeBench, run: number, serverCount: number): Promise<ChangeRun> {
  const { agents, controller, source, clock, fanout, children } = bench;
  // Collected here, not during the run: every run starts from the same clean heap.
  await settledMemory();
  const agentsCpuBefore = await childrenCpuMs(children);
  const disconnectsBefore = clock.disconnects;
  const completion = await profiled(`controller-${agents}-change-${run}`, async () => {
    const t0 = performance.now();
    const cpuAtT0 = process.cpuUsage();
    source.set(SERVICE, servers(serverCount));
    // The store took the snapshot synchronously; no ack of the new version can predate this.
    const tracked = await clock.track(backendVersion(controller), agents, t0, cpuAtT0, CHANGE_TIMEOUT_MS);
    return { ...tracked, t0 };
  });
  const agentsCpuMs = (await childrenCpuMs(children)) - agentsCpuBefore;
  const sorted = [...completion.latencies].sort((a, b) => a - b);
  const fired = fanout.last !== null && fanout.last.startedAt >= completion.t0 ? fanout.last : null;
  return {
    servers: serverCount,
    p50_ms: round(percentile(sorted, 0.5)),
    p99_ms: round(percentile(sorted, 0.99)),
    max_ms: round(sorted.at(-1) ?? Number.NaN),
    acked: sorted.length,
    controller_cpu_ms: round(completion.cpuMs),
    agents_cpu_ms: round(agentsCpuMs),
    debounce_ms: fired === null ? Number.NaN : round(fired.startedAt - completion.t0),
    push_fanout_ms: fired === null ? Number.NaN : round(fired.ms),
    disconnects: clock.disconnects - disconnectsBefore,
  };
}

interface Ramp {
  children: ChildProcess[];
  ready: Array<Extract<FleetReport, { type: "ready" }>>;
  seconds: number;
  connected: number;
}

/** Starts the agents (into `children` as they are forked) and waits until every one acked the initial state. */
async function rampUp(agents: number, controller: RunningController, clock: AckClock, children: ChildProcess[]): Promise<Ramp> {
  const rampStart = performance.now();
  const ramp = clock.track(backendVersion(controller), agents, rampStart, process.cpuUsage(), rampTimeoutMs(agents));
  children.push(...spawnChildren(agents, `127.0.0.1:${controller.port}`));
  const ready = await Promise.all(children.map((child) => nextReport(child, "ready", rampTimeoutMs(agents)))).catch((error: unknown) => {
    throw new RampError(error, clock, controller, rampStart);
  });
  const initial = await ramp;
  if (!initial.complete) throw new RampError(new Error(`not every agent acked the initial state within ${rampTimeoutMs(agents)} ms`), clock, controller, rampStart);
  return { children, ready, seconds: (performance.now() - rampStart) / 1000, connected: controller.server.connected().length };
}

async function runSize(agents: number): Promise<Record<string, unknown>> {
  const source = new MemorySource();
  const initialServers = 3;
  source.set(SERVICE, servers(initialServers));
  const controller = await startBenchController(source);
  const clock = new AckClock(controller.server.events);
  const fanout = timeFanout(controller.server);
  const children: ChildProcess[] = [];
  try {
    // The same treatment as the "after" figure: a pause (V8 returns freed pages lazily), then GC.
    await sleep(SETTLE_MS);
    const before = await settledMemory();
    const ramp = await rampUp(agents, controller, clock, children);
    await sleep(SETTLE_MS);
    const idleCpuPct = await idleCpuPercent(agents);
    const after = await settledMemory();

    const bench: SizeBench = { agents, controller, source, clock, fanout, children };
    const runs: ChangeRun[] = [];
    for (let run = 0; run < RUNS; run++) {
      runs.push(await changeRun(bench, run, initialServers + run + 1));
      await sleep(SETTLE_MS);
    }
    // Last: writing a snapshot of 10,000 streams blocks this process for longer than the agents'
    // dead-after, and they would all reconnect in the middle of the runs.
    if (PROFILE_DIR !== undefined) writeHeapSnapshot(join(PROFILE_DIR, `controller-${agents}.heapsnapshot`));
    return sizeRecord(agents, { before, after }, idleCpuPct, ramp, clock, runs);
  } finally {
    clock.stop();
    await stopChildren(children);
    await controller.close();
  }
}

function sizeRecord(agents: number, memory: { before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage }, idleCpuPct: number, ramp: Ramp, clock: AckClock, runs: ChangeRun[]): Record<string, unknown> {
  const { before, after } = memory;
  const median = medianRun(runs, agents);
  const mb = (bytes: number): number => round(bytes / 1024 / 1024);
  return {
    bench: BENCH,
    agents,
    p50_ms: median.p50_ms,
    p99_ms: median.p99_ms,
    max_ms: median.max_ms,
    acked: median.acked,
    rss_per_agent_kb: round((after.rss - before.rss) / agents / 1024),
    rss_delta_mb: mb(after.rss - before.rss),
    heap_per_agent_kb: round((after.heapUsed - before.heapUsed) / agents / 1024),
    controller_cpu_ms: median.controller_cpu_ms,
    agents_cpu_ms: median.agents_cpu_ms,
    push_fanout_ms: median.push_fanout_ms,
    controller_idle_cpu_pct: round(idleCpuPct),
    controller_change_cpu_ms: round(Math.max(0, median.controller_cpu_ms - (idleCpuPct / 100) * median.max_ms)),
    ramp_s: round(ramp.seconds),
    connected: ramp.connected,
    disconnects: clock.disconnects,
    disconnect_reasons: topReasons(clock),
    children: ramp.children.length,
    agent_children_rss_mb: mb(ramp.ready.reduce((sum, report) => sum + report.rssBytes, 0)),
    // maxRSS is in KiB.
    controller_rss_mb: { before: mb(before.rss), after: mb(after.rss), peak: round(process.resourceUsage().maxRSS / 1024) },
    gc_forced: typeof globalThis.gc === "function",
    runs,
    note: sizeNote(runs.length),
  };
}

/** The commonest reasons streams ended, with their counts. */
function topReasons(clock: AckClock): Record<string, number> {
  // Reasons quote durations ("no message from the agent for 15234 ms"): group them without.
  const grouped = new Map<string, number>();
  for (const [reason, count] of clock.disconnectReasons) {
    const key = reason.replace(/\d+ ms/g, "N ms");
    grouped.set(key, (grouped.get(key) ?? 0) + count);
  }
  return Object.fromEntries([...grouped].sort((a, b) => b[1] - a[1]).slice(0, 5));
}

/** A ramp that did not finish, with what the controller saw of it. */
class RampError extends Error {
  readonly details: Record<string, unknown>;

  constructor(cause: unknown, clock: AckClock, controller: RunningController, rampStart: number) {
    super(`ramp: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.details = {
      ramp_s: round((performance.now() - rampStart) / 1000),
      connected: controller.server.connected().length,
      acked_initial: clock.progress,
      disconnects: clock.disconnects,
      disconnect_reasons: topReasons(clock),
    };
  }
}

function sizeNote(runs: number): string {
  return (
    `median of ${runs} runs by p99; each run adds one server to '${SERVICE}' at t0 and times every agent's ack of the new ${BACKEND} version ` +
    `as the controller receives it: includes the controller's debounce (quiet ${DEBOUNCE.quietMs} ms, max ${DEBOUNCE.maxMs} ms, the defaults), ` +
    `the push, the agent's store (fsync, on tmpfs), its apply (simulated HAProxy) and the ack. Controller log level silent, so logging does not dominate. ` +
    `rss/heap per agent: a fresh controller process after forced GC, agents connected minus before any connected, over N ` +
    `(at small N the RSS delta is within allocator noise; heap is steadier). ` +
    `controller_cpu_ms: the controller process from t0 to the last ack; agents_cpu_ms: the agent children over the same run, on the same ` +
    `${cpus().length} cores (niced to ${AGENT_NICE}; in production each agent has its own host). disconnects: streams ended, and why (defaults: heartbeat 5 s, dead after 15 s). push_fanout_ms: the controller's synchronous loop ` +
    `writing every push. controller_idle_cpu_pct: its CPU (share of one core) over ${IDLE_WINDOW_MS} ms with every agent connected and nothing changing ` +
    `(heartbeats, keepalives). controller_change_cpu_ms, an estimate: controller_cpu_ms - idle share x max_ms, the CPU the change itself cost.`
  );
}

/** The median by p99, a run that did not reach every agent counting as the slowest. */
function medianRun(runs: readonly ChangeRun[], agents: number): ChangeRun {
  const rank = (run: ChangeRun): number => (run.acked < agents ? Number.POSITIVE_INFINITY : run.p99_ms);
  const sorted = [...runs].sort((a, b) => rank(a) - rank(b));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** The FLEET_ONE_SIZE process: one size, its line on stdout, exit 1 if it failed. */
async function runOneSize(agents: number): Promise<void> {
  if (!Number.isInteger(agents) || agents < 1) throw new Error(`FLEET_ONE_SIZE: expected a number of agents, got '${ONE_SIZE}'`);
  guardTime();
  try {
    printLine(await runSize(agents));
  } catch (error) {
    const details = error instanceof RampError ? error.details : {};
    printLine({ bench: BENCH, agents, failed: true, error: error instanceof Error ? error.message : String(error), ...details });
    process.exitCode = 1;
  }
}

// ---------------------------------------------------------------------------------------------
// The coordinating process: one fresh process per size

/** Runs one size in its own process; forwards its lines; returns its result, if it printed one. */
async function runSizeProcess(agents: number): Promise<Record<string, unknown> | null> {
  const child = spawn(process.execPath, [...process.execArgv, SELF], { env: { ...process.env, FLEET_ONE_SIZE: String(agents) }, stdio: ["ignore", "pipe", "inherit"] });
  track(child);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let result: Record<string, unknown> | null = null;
  let reported = false;
  for await (const line of createInterface({ input: child.stdout! })) {
    process.stdout.write(`${line}\n`);
    const record = parseRecord(line);
    if (record?.["agents"] !== agents) continue;
    reported = true;
    if (typeof record["p99_ms"] === "number") result = record;
  }
  const code = await exited;
  if (code !== 0) process.exitCode = 1;
  // Killed or crashed before it could say why: say that much.
  if (!reported) printLine({ bench: BENCH, agents, failed: true, error: `the size's process exited with ${code} and no result` });
  return result;
}

function parseRecord(line: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

async function coordinate(): Promise<void> {
  guardTime();
  const limits = machineLimits();
  printLine({
    bench: BENCH,
    machine: {
      cpus: cpus().length,
      node: process.version,
      open_files: limits.openFiles === null ? null : { soft: String(limits.openFiles.soft), hard: String(limits.openFiles.hard) },
      ephemeral_ports: limits.ephemeralPorts,
      agents_per_child_max: AGENTS_PER_CHILD,
      gc_forced: typeof globalThis.gc === "function",
    },
  });
  if (typeof globalThis.gc !== "function") console.error("fleet bench: run with node --expose-gc, or memory per agent includes garbage");

  const results = new Map<number, Record<string, unknown>>();
  for (const agents of SIZES) {
    const reasons = limitsFor(agents, limits);
    if (reasons.length > 0) {
      printLine({ bench: BENCH, agents, skipped: true, limited_by: reasons });
      results.set(agents, { skipped: true, limited_by: reasons });
      continue;
    }
    const result = await runSizeProcess(agents);
    if (result !== null) results.set(agents, result);
  }
  for (const model of MODELS) printLine(modelLine(model));
  printLine(targetsLine(results));
}

/** Past TIME_LIMIT_MS: every child ended (see the exit hook), exit 2. */
function guardTime(): void {
  const limit = setTimeout(() => {
    console.error(`fleet bench: over ${TIME_LIMIT_MS} ms, giving up`);
    process.exit(2);
  }, TIME_LIMIT_MS);
  limit.unref();
}

function track(child: ChildProcess): void {
  live.add(child);
  child.once("exit", () => live.delete(child));
}

// ---------------------------------------------------------------------------------------------
// Machine limits

interface Limits {
  openFiles: { soft: number; hard: number } | null;
  ephemeralPorts: number | null;
}

function machineLimits(): Limits {
  return { openFiles: openFilesLimit(), ephemeralPorts: ephemeralPortCount() };
}

/** Node cannot call getrlimit; Linux shows this process's limits in /proc. */
function openFilesLimit(): { soft: number; hard: number } | null {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").match(/^Max open files\s+(\S+)\s+(\S+)/m);
    if (line === null) return null;
    const value = (text: string): number => (text === "unlimited" ? Number.POSITIVE_INFINITY : Number(text));
    return { soft: value(line[1]!), hard: value(line[2]!) };
  } catch {
    return null;
  }
}

/** Every agent connects to the same address and port, so each takes its own local port. */
function ephemeralPortCount(): number | null {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return low !== undefined && high !== undefined ? high - low + 1 : null;
  } catch {
    return null;
  }
}

/** Why N agents cannot run here, or an empty list. Children inherit this process's limit. */
function limitsFor(agents: number, limits: Limits): string[] {
  const reasons: string[] = [];
  const files = limits.openFiles;
  if (files !== null) {
    const controllerNeeds = agents + FD_MARGIN;
    // Per agent: its stream's socket, and one state file open while it stores a push.
    const childNeeds = Math.ceil(agents / childCount(agents)) * 2 + FD_MARGIN;
    const needs = Math.max(controllerNeeds, childNeeds);
    if (needs > files.soft) {
      // Node has no setrlimit: the limit can only be raised before this process starts.
      const remedy = needs <= files.hard ? `run 'ulimit -n ${files.hard}' first` : `the hard limit is below it too: raise it as root (limits.conf, LimitNOFILE)`;
      reasons.push(`open files: soft limit ${files.soft} (hard ${files.hard}) < ${needs} needed, one socket per agent in the controller process; ${remedy}`);
    }
  }
  if (limits.ephemeralPorts !== null && agents > limits.ephemeralPorts) {
    reasons.push(`ephemeral ports: ${limits.ephemeralPorts} in net.ipv4.ip_local_port_range < ${agents} connections to one address`);
  }
  return reasons;
}

// ---------------------------------------------------------------------------------------------
// Models of the designs this one replaces, and the targets

interface Model {
  design: string;
  note: string;
  /** Convergence delay at quantile q, in ms. */
  quantile(q: number): number;
}

const MODELS: readonly Model[] = [
  {
    design: "cron-poll-60s",
    note: "the original design: a cron job polls every 60 s, so a change waits U(0, 60 s) for the next run; delay(q) = q x 60 s",
    quantile: (q) => q * 60_000,
  },
  {
    design: "reload-peer-poll-5s",
    note: "a reload-based peer: polls every 5 s, then reloads after a 5 s delay; delay = U(0, 5 s) + 5 s, delay(q) = 5 s + q x 5 s",
    quantile: (q) => 5_000 + q * 5_000,
  },
];

function modelLine(model: Model): Record<string, unknown> {
  return {
    bench: BENCH,
    design: model.design,
    model: true,
    p50_ms: round(model.quantile(0.5)),
    p99_ms: round(model.quantile(0.99)),
    max_ms: round(model.quantile(1)),
    note: `${model.note}; analytical, not measured; the same for any N`,
  };
}

function targetsLine(results: ReadonlyMap<number, Record<string, unknown>>): Record<string, unknown> {
  const outcome = results.get(TARGET.agents);
  const measured = outcome?.["skipped"] === true ? undefined : outcome;
  const p99 = typeof measured?.["p99_ms"] === "number" ? measured["p99_ms"] : null;
  const rss = typeof measured?.["rss_per_agent_kb"] === "number" ? measured["rss_per_agent_kb"] : null;
  const complete = measured?.["acked"] === TARGET.agents;
  return {
    bench: BENCH,
    targets: { agents: TARGET.agents, p99_ms_under: TARGET.p99Ms, rss_per_agent_kb_under: TARGET.rssPerAgentKb },
    measured_at_target: measured === undefined ? null : { acked: measured["acked"], p99_ms: p99, rss_per_agent_kb: rss },
    ...(outcome?.["skipped"] === true ? { not_measured: outcome["limited_by"] } : {}),
    p99_met: p99 === null ? null : complete && p99 < TARGET.p99Ms,
    rss_met: rss === null ? null : rss < TARGET.rssPerAgentKb,
    note: "from the issue; printed, not asserted",
  };
}

// ---------------------------------------------------------------------------------------------

/** Nearest rank: the smallest value with at least q of the values at or below it. */
function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function positiveInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

function nonNegativeInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return text !== undefined && text !== "" && Number.isInteger(value) && value >= 0 ? value : fallback;
}

function sizeList(text: string | undefined, fallback: number[]): number[] {
  if (text === undefined || text.trim() === "") return fallback;
  const sizes = text.split(",").map((part) => Number(part.trim().replaceAll("_", "")));
  if (sizes.some((size) => !Number.isInteger(size) || size < 1)) throw new Error(`FLEET_SIZES: expected a list like 100,1000, got '${text}'`);
  return sizes;
}

// Whatever ends this process, no child outlives it. SIGTERM, not SIGKILL: an agent child then
// still removes its state files, and one that cannot react also leaves when its IPC parent is gone.
process.on("exit", () => {
  for (const child of live) child.kill("SIGTERM");
});

(ONE_SIZE === undefined ? coordinate() : runOneSize(Number(ONE_SIZE))).catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
