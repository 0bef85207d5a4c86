import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { RunningController } from "../../controller/controller.js";
import { serving } from "../support/apply.js";
import { templateBackend } from "../support/haproxy-config.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { until } from "../support/helpers.js";
import { hybridSessionFor, startRendered } from "../support/hybrid-rendered.js";
import { startCatalogController, startLoad, startReloadAgent, startUpstreams, type Upstreams } from "../support/reload-scenario.js";
import { agentBackend, fetchStatus } from "../support/status-api.js";
import { armTimeLimit, printLine, round } from "./report.js";

/**
 * Operator reloads under a running agent (`reload` on the master CLI and SIGUSR2, alternately),
 * with a bounded HTTP load through HAProxy, side by side in one run:
 *  - runtime: pure Runtime API mode; the new worker starts from the config's empty slots and
 *    the agent must notice and repair it;
 *  - hybrid: the agent keeps the config and server-state files as HAProxy runs, so the new
 *    worker starts with what the old one ran.
 * Per mode: from the new worker first answering the admin socket (and from the reload's start)
 * to HAProxy's own `show servers state` serving the desired servers; failed requests.
 *
 *   node dist/test/bench/reloads.js   (RELOADS, default 20 per mode; RELOAD_MODES, default runtime,hybrid)
 */

const BENCH = "operator-reloads";
const RELOADS = Number(process.env["RELOADS"] ?? 20);
const MODES = new Set((process.env["RELOAD_MODES"] ?? "runtime,hybrid").split(","));
const SERVERS = 3;
const RELOAD_SPACING_MS = 1_000;

interface Bed {
  h: RunningHaproxy;
  port: number;
  runner: AgentRunner;
  stop(): Promise<void>;
}

async function measure(mode: string, bed: Bed, controller: RunningController, desired: string): Promise<void> {
  const inSync = async (): Promise<boolean> =>
    agentBackend(await fetchStatus(controller.httpPort!), mode, "be_app")?.state === "in-sync" && serving(await bed.h.serversState("be_app"), "be_app").join(",") === desired;
  await until(inSync, `${mode}: in sync before the reloads`, 30_000);
  const load = startLoad(bed.port, { clients: 2, maxMs: 10 * 60_000 });
  const fromWorker: number[] = [];
  const fromReload: number[] = [];
  for (let i = 0; i < RELOADS; i++) {
    const started = performance.now();
    await bed.h.reload(i % 2 === 0 ? "master-cli" : "sigusr2");
    const answered = performance.now();
    // Polled on fresh connections: what a client of the new worker gets.
    await until(async () => serving(await bed.h.serversState("be_app"), "be_app").join(",") === desired, `${mode}: reload ${i + 1} served`, 30_000);
    const served = performance.now();
    fromWorker.push(served - answered);
    fromReload.push(served - started);
    await until(inSync, `${mode}: reload ${i + 1} in sync`, 30_000);
    // HAProxy 2.6's master can miss a SIGUSR2 that comes within moments of its last re-exec;
    // operators reload seconds apart, not milliseconds.
    await new Promise((resolve) => setTimeout(resolve, RELOAD_SPACING_MS));
  }
  const result = await load.stop();
  printLine({
    bench: BENCH,
    mode,
    reloads: RELOADS,
    servers: SERVERS,
    new_worker_to_serving_ms: stats(fromWorker),
    reload_to_serving_ms: stats(fromReload),
    requests: result.ok + result.failed,
    failed: result.failed,
    old_workers_left: (await bed.h.processes()).oldWorkers.length,
  });
}

function stats(values: readonly number[]): { p50: number; p99: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0);
  return { p50: at(0.5), p99: at(0.99), max: round(sorted[sorted.length - 1] ?? 0) };
}

async function main(): Promise<void> {
  armTimeLimit(BENCH, 10 * 60_000);
  const dir = await mkdtemp(join(tmpdir(), "hafleet-bench-reloads-"));
  const catalog = join(dir, "catalog.json");
  let upstreams: Upstreams | undefined;
  let controller: RunningController | undefined;
  const beds: Bed[] = [];
  try {
    upstreams = await startUpstreams(SERVERS);
    const servers = upstreams.ports.map((port) => ({ address: "127.0.0.1", port }));
    const desired = servers.map((server) => `${server.address}:${server.port}`).sort().join(",");
    await writeFile(catalog, JSON.stringify({ services: { web: servers } }));
    controller = await startCatalogController(dir, catalog);

    if (MODES.has("runtime")) {
    const runtime = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }), defaultBackend: "be_app", masterWorker: true, quiet: true });
    const runtimeBed: Bed = { h: runtime, port: runtime.frontendPort!, runner: await startReloadAgent({ id: "runtime", controllerPort: controller.port, socket: runtime.socket, stateRoot: dir }), stop: () => runtime.stop() };
    beds.push(runtimeBed);
    await measure("runtime", runtimeBed, controller, desired);
    }
    if (MODES.has("hybrid")) {

    const rendered = await startRendered([{ name: "be_app", balance: "roundrobin", servers }], 2);
    const hybrid = await hybridSessionFor(rendered, 2);
    const hybridBed: Bed = { h: rendered.h, port: rendered.port, runner: await startReloadAgent({ id: "hybrid", controllerPort: controller.port, socket: rendered.h.socket, stateRoot: dir, hybrid }), stop: () => rendered.h.stop() };
    beds.push(hybridBed);
    await measure("hybrid", hybridBed, controller, desired);
    }
  } finally {
    for (const bed of beds) await bed.runner.stop();
    await controller?.close();
    for (const bed of beds) await bed.stop();
    await upstreams?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
