import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { writeConfig } from "../../agent/hybrid/config-writer.js";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import { Reloader } from "../../agent/hybrid/reloader.js";
import { loadTemplate, type ConfigTemplate, type TemplateVars } from "../../agent/hybrid/render-config.js";
import { fromDesired } from "../../agent/hybrid/render-model.js";
import { parseDesiredState, type DesiredState } from "../../agent/model/desired-state.js";
import { LedgerStore } from "../../agent/reconcile/ledger-store.js";
import { reconcileSocket } from "../../agent/reconcile/reconciler.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { serving, silentLogger } from "../support/apply.js";
import { templateBackend } from "../support/haproxy-config.js";
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { sendRaw } from "../support/raw-socket.js";
import { armTimeLimit, printLine, round } from "./report.js";

/**
 * Scale events on one real HAProxy 2.6 in master-worker mode, started from the default hybrid
 * template, with a `roundrobin` backend of template slots in front of local HTTP upstreams and
 * a bounded HTTP load running through its frontend. Side by side in one run:
 *  - hafleet-runtime-api: each event applied by the reconciler through the Runtime API; the
 *    slots hold the largest state, so no event needs a reload;
 *  - render-check-reload: the template-and-reload way (consul-template, reload-based peers):
 *    render the file, `haproxy -c` it, reload through the master CLI, wait for the new worker.
 * Each method ends with HAProxy's own `show servers state` checked against the last event.
 *
 *   node dist/test/bench/hybrid.js   (HYBRID_EVENTS, default 1000; HYBRID_RELOAD_EVENTS, default 100)
 */

const BENCH = "hybrid-scale-events";
const BACKEND = "be_app";
const UPSTREAMS = 8;
const MIN_SERVERS = 2;
const EVENTS = positiveInt(process.env["HYBRID_EVENTS"], 1_000);
/** A reload costs 100-300 ms plus ~60 ms of `haproxy -c`: 1,000 of them would take minutes. */
const RELOAD_EVENTS = positiveInt(process.env["HYBRID_RELOAD_EVENTS"], 100);
const LOAD_CONCURRENCY = 4;
/** Per method; the load stops when the method does, this only bounds a runaway. */
const LOAD_MAX_REQUESTS = 200_000;
const LOAD_TIMEOUT_MS = 5_000;
/** A hard ceiling: both methods together take well under a minute; this only trips on a hang. */
const TIME_LIMIT_MS = 5 * 60_000;
const DEFAULT_TEMPLATE = fileURLToPath(new URL("../../../deploy/hybrid/haproxy.cfg.njk", import.meta.url));

interface Upstream {
  server: Server;
  port: number;
}

interface Bed {
  haproxy: RunningHaproxy;
  upstreams: Upstream[];
  template: ConfigTemplate;
  vars: TemplateVars;
  frontendPort: number;
}

interface LoadStats {
  requests: number;
  failed: number;
  failures: Record<string, number>;
}

interface Measured {
  events: number;
  ms: number;
  reloads: number;
  load: LoadStats;
  extra: Record<string, unknown>;
}

/**
 * Event `index`: between 2 and 8 servers, starting at a rotating upstream, so that events both
 * scale and swap which upstreams are in. Consecutive events always differ (the count steps by 3
 * modulo 7, never by 0), so every event is real work for both methods.
 */
function desiredAt(bed: Bed, index: number): DesiredState {
  const count = MIN_SERVERS + ((index * 3) % (UPSTREAMS - MIN_SERVERS + 1));
  const offset = Math.floor(index / 3) % UPSTREAMS;
  const servers = Array.from({ length: count }, (_, k) => ({ address: "127.0.0.1", port: bed.upstreams[(offset + k) % UPSTREAMS]!.port }));
  return parseDesiredState({ version: `event-${index}`, backends: [{ name: BACKEND, servers }] }, "bench");
}

/** Spare slots up to the largest event: the hafleet method fills them at runtime. */
function renderWithSlots(bed: Bed, desired: DesiredState): string {
  const spareSlots = UPSTREAMS - (desired.backends[0]?.servers.length ?? 0);
  return bed.template.render(fromDesired(desired, { spareSlots }), bed.vars);
}

/** A reload-based peer renders exactly the desired servers: it has no use for slots. */
function renderExact(bed: Bed, desired: DesiredState): string {
  return bed.template.render(fromDesired(desired, { spareSlots: 0 }), bed.vars);
}

async function hafleetRuntimeApi(bed: Bed): Promise<Measured> {
  const ledgerDir = await mkdtemp(join(tmpdir(), "hafleet-bench-hybrid-"));
  const client = new RuntimeClient(parseSocketAddress(bed.haproxy.socket));
  const store = new LedgerStore(ledgerDir, client.name);
  // drainMs 0: a removed server goes straight to maintenance, as a reload would drop it.
  const options = { drainMs: 0, waitMs: 2_000, pollMs: 10, allowEmpty: false, dryRun: false, logger: silentLogger };
  try {
    const states = Array.from({ length: EVENTS }, (_, index) => desiredAt(bed, index + 1));
    return await measured(bed, EVENTS, async () => {
      for (const desired of states) {
        const report = await reconcileSocket(client, desired, store, options);
        if (!report.converged) throw new Error(`hafleet-runtime-api: ${desired.version} did not converge`);
      }
      return { last: states[states.length - 1]! };
    });
  } finally {
    client.close();
    await rm(ledgerDir, { recursive: true, force: true });
  }
}

async function renderCheckReload(bed: Bed): Promise<Measured> {
  const master = new MasterCli(parseSocketAddress(bed.haproxy.masterSocket!));
  // No rate limit: the peer reloads once per event, as fast as HAProxy lets it.
  const reloader = new Reloader(master, { minIntervalMs: 0, pollMs: 10 });
  const states = Array.from({ length: RELOAD_EVENTS }, (_, index) => desiredAt(bed, EVENTS + index + 1));
  let changed = 0;
  let reloadMs = 0;
  const result = await measured(bed, RELOAD_EVENTS, async () => {
    for (const desired of states) {
      const written = await writeConfig(bed.haproxy.configPath, renderExact(bed, desired));
      if (!written.changed) continue;
      changed += 1;
      reloadMs += (await reloader.reload()).elapsedMs;
      await waitServedBy(bed.haproxy, reloader.workerPid);
    }
    return { last: states[states.length - 1]! };
  });
  result.extra = { files_changed: changed, reload_wait_ms_avg: round(reloadMs / Math.max(changed, 1)) };
  return result;
}

/** Times `body` under the load, counts the master's reloads, and checks the last state runs. */
async function measured(bed: Bed, events: number, body: () => Promise<{ last: DesiredState }>): Promise<Measured> {
  const before = await masterReloads(bed.haproxy);
  const load = await startLoadThread(bed.frontendPort);
  const started = performance.now();
  // The load stops on every path: left running, it would outlive a failed method.
  const outcome = await body().then(
    (value) => ({ value, error: null }),
    (error: unknown) => ({ value: null, error }),
  );
  const ms = performance.now() - started;
  const stats = await load.stop();
  if (outcome.value === null) throw outcome.error;
  const { last } = outcome.value;
  const reloads = (await masterReloads(bed.haproxy)) - before;
  await verify(bed.haproxy, last);
  return { events, ms, reloads, load: stats, extra: {} };
}

/** The master's reload counter, read with a regex rather than the product's parser. */
async function masterReloads(haproxy: RunningHaproxy): Promise<number> {
  const text = await sendRaw(haproxy.masterSocket!, "show proc");
  const counters = /^\d+ +master +(\d+) \[failed: (\d+)\]/m.exec(text);
  if (!counters) throw new Error(`unexpected show proc: ${text}`);
  if (Number(counters[2]) !== 0) throw new Error(`the master counts ${counters[2]} failed reload(s)`);
  return Number(counters[1]);
}

async function servingPid(haproxy: RunningHaproxy): Promise<number> {
  return Number(/^Pid: (\d+)$/m.exec(await haproxy.command("show info"))?.[1]);
}

/** The admin socket belongs to the worker: the next event must talk to the new one. */
async function waitServedBy(haproxy: RunningHaproxy, pid: number | null): Promise<void> {
  const deadline = Date.now() + 3_000;
  while ((await servingPid(haproxy)) !== pid) {
    if (Date.now() > deadline) throw new Error(`worker ${pid} does not serve the admin socket after 3 s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Outside the timing: a method that answers fast but did not apply must not look good. */
async function verify(haproxy: RunningHaproxy, desired: DesiredState): Promise<void> {
  const running = serving(await haproxy.serversState(BACKEND), BACKEND);
  const wanted = desired.backends.flatMap((backend) => backend.servers.map((server) => `${server.address}:${server.port}`)).sort();
  if (JSON.stringify(running) !== JSON.stringify(wanted)) {
    throw new Error(`HAProxy does not run ${desired.version}: serving ${running.join(" ")}, wanted ${wanted.join(" ")}`);
  }
}

/**
 * The load runs in its own thread: on the benchmark's event loop it would delay the reconciler
 * and the reloader between every socket reply (measured: more than twice the time per event).
 */
function startLoadThread(port: number): Promise<{ stop(): Promise<LoadStats> }> {
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { port } });
  const stopped = new Promise<LoadStats>((resolve, reject) => {
    worker.once("message", (stats: LoadStats) => resolve(stats));
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`load thread exited (${code}) before reporting`)));
  });
  // Started only when the thread says so: the timing must not begin before the load does.
  return new Promise((resolve, reject) => {
    worker.once("online", () => resolve({ stop: () => (worker.postMessage("stop"), stopped) }));
    worker.once("error", reject);
  });
}

/** In the load thread: `LOAD_CONCURRENCY` sequential clients, a new connection per request, bounded in count. */
async function runLoadThread(port: number): Promise<void> {
  let stopped = false;
  parentPort!.once("message", () => (stopped = true));
  let sent = 0;
  const stats: LoadStats = { requests: 0, failed: 0, failures: {} };
  const fail = (reason: string) => {
    stats.failed += 1;
    stats.failures[reason] = (stats.failures[reason] ?? 0) + 1;
  };
  const one = () =>
    new Promise<void>((resolve) => {
      const request = httpRequest({ host: "127.0.0.1", port, path: "/", agent: false, headers: { connection: "close" }, timeout: LOAD_TIMEOUT_MS }, (response) => {
        response.resume();
        response.on("end", () => {
          stats.requests += 1;
          if (response.statusCode !== 200) fail(`HTTP ${response.statusCode}`);
          resolve();
        });
      });
      request.on("timeout", () => request.destroy(new Error("timeout")));
      request.on("error", (error) => {
        stats.requests += 1;
        fail(error.message);
        resolve();
      });
      request.end();
    });
  await Promise.all(
    Array.from({ length: LOAD_CONCURRENCY }, async () => {
      while (!stopped && sent < LOAD_MAX_REQUESTS) {
        sent += 1;
        await one();
      }
    }),
  );
  // Past the count bound, wait for the stop all the same: stats are sent once, as the reply.
  while (!stopped) await new Promise((resolve) => setTimeout(resolve, 10));
  parentPort!.postMessage(stats);
}

function httpUpstream(): Promise<Upstream> {
  return new Promise((resolve, reject) => {
    const server = createServer((_request, response) => response.end("ok\n"));
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("no port"));
      resolve({ server, port: address.port });
    });
  });
}

function closeUpstream(upstream: Upstream): Promise<void> {
  upstream.server.closeAllConnections();
  return new Promise((resolve) => upstream.server.close(() => resolve()));
}

/** HAProxy restarted from the default template, rendered for event 0 with slots for 8 servers. */
async function startBed(upstreams: Upstream[]): Promise<Bed> {
  const haproxy = await startHaproxy({ masterWorker: true, quiet: true, sections: templateBackend("be_placeholder", { slots: 1 }) });
  try {
    const frontendPort = await freePort();
    const vars: TemplateVars = { adminSocket: haproxy.socket, stateFile: join(haproxy.dir, "server-state"), bind: `127.0.0.1:${frontendPort}`, nbthread: "1" };
    const bed: Bed = { haproxy, upstreams, template: await loadTemplate(DEFAULT_TEMPLATE), vars, frontendPort };
    const initial = desiredAt(bed, 0);
    await writeFile(haproxy.configPath, renderWithSlots(bed, initial));
    await haproxy.restart();
    await verify(haproxy, initial);
    return bed;
  } catch (error) {
    await haproxy.stop();
    throw error;
  }
}

function report(method: string, result: Measured, note?: string): void {
  printLine({
    bench: BENCH,
    method,
    events: result.events,
    ms: round(result.ms),
    events_per_s: round((result.events / result.ms) * 1000),
    ms_per_event: round(result.ms / result.events),
    reloads: result.reloads,
    requests: result.load.requests,
    failed_requests: result.load.failed,
    ...(result.load.failed > 0 ? { failures: result.load.failures } : {}),
    ...result.extra,
    ...(note === undefined ? {} : { note }),
  });
}

async function main(): Promise<void> {
  armTimeLimit("bench", TIME_LIMIT_MS);

  const upstreams: Upstream[] = [];
  try {
    for (let index = 0; index < UPSTREAMS; index += 1) upstreams.push(await httpUpstream());
    const bed = await startBed(upstreams);
    try {
      const hafleet = await hafleetRuntimeApi(bed);
      report("hafleet-runtime-api", hafleet);
      const reload = await renderCheckReload(bed);
      report(
        "render-check-reload",
        reload,
        `${RELOAD_EVENTS} events, not ${EVENTS}: each costs a render, a haproxy -c and a reload (a new worker), so ${EVENTS} would take minutes; compare ms_per_event and events_per_s`,
      );
      // Checked after printing: the figures of a failed run are still worth seeing.
      if (hafleet.reloads !== 0) throw new Error(`hafleet-runtime-api: ${hafleet.reloads} reload(s), expected 0`);
      if (reload.reloads !== reload.extra["files_changed"]) throw new Error(`render-check-reload: ${reload.reloads} reloads for ${String(reload.extra["files_changed"])} changed files`);
    } finally {
      await bed.haproxy.stop();
    }
  } finally {
    await Promise.all(upstreams.map(closeUpstream));
  }
  // maxRSS is in KiB.
  printLine({ bench: BENCH, peak_rss_mb: round(process.resourceUsage().maxRSS / 1024) });
}

function positiveInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

function isLoadData(data: unknown): data is { port: number } {
  return typeof data === "object" && data !== null && typeof (data as { port?: unknown }).port === "number";
}

if (isMainThread) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exitCode = 1;
  });
} else if (isLoadData(workerData)) {
  await runLoadThread(workerData.port);
}
