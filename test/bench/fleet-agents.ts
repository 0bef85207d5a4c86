import { existsSync, rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import type { DesiredServer } from "../../agent/model/desired-state.js";
import { AgentRunner } from "../../agent/run/agent-runner.js";
import type { RunnerObserver } from "../../agent/run/runner-observer.js";
import { endpointsDigest, SimulatedApplier } from "../support/simulated-applier.js";

/**
 * Child process of the fleet benchmark: many agents running the real AgentRunner and
 * ControllerLink (gRPC, acks, local store with fsync) over a simulated HAProxy, so the
 * controller's process holds only the controller.
 *
 *   node fleet-agents.js COUNT HOST:PORT OFFSET [BACKENDS]
 *
 * Agents are `agent-<OFFSET + i>`. They connect in batches (FLEET_BATCH, default 100), each
 * batch only once the previous one got its first push, so the ramp never piles up more
 * handshakes than the controller can take. Talks to the parent over IPC only.
 */

/** Parent -> child. */
export type FleetCommand = { type: "stop" } | { type: "cpu" } | { type: "census" };

/** One agent as it sees itself (for tests that check the agents' side, not the controller's). */
export interface AgentCensus {
  agent: string;
  /** Pushes received since the agent started, from any controller. */
  pushes: number;
  /** Whether its stream to a controller is open. */
  connected: boolean;
  /** Per backend it was ever sent: what its simulated HAProxy serves now, and the fewest it ever served. */
  backends: Record<string, { servers: number; digest: string; fewest: number }>;
}

/** Child -> parent. */
export type FleetReport =
  | { type: "ready"; agents: number; ms: number; rssBytes: number }
  | { type: "cpu"; micros: number }
  | { type: "census"; agents: AgentCensus[] }
  | { type: "stopped" }
  | { type: "failed"; error: string };

const BATCH = positiveInt(process.env["FLEET_BATCH"], 100);
/** A batch that gets no push in this time means the controller is stuck: fail, not hang. */
const BATCH_TIMEOUT_MS = 120_000;
/** Bounded: a runner that will not stop must not keep the child (and the benchmark) alive. */
const STOP_TIMEOUT_MS = 15_000;
/**
 * Resync and probe only call the simulated applier, yet with thousands of agents their
 * timers would burn CPU that the controller needs on the same cores. Heartbeats stay at the
 * defaults: the controller handles them, so they are part of what is measured.
 */
const IDLE_TIMER_MS = 3_600_000;

const silent = pino({ level: "silent" });

interface SimulatedAgent {
  id: string;
  runner: AgentRunner;
  applier: SimulatedApplier;
  link: LinkCounter;
}

/** Counts pushes and follows the stream's state; a counter and a flag, nothing the benchmark feels. */
class LinkCounter implements RunnerObserver {
  pushes = 0;
  connected = false;
  controllerConnected(): void {
    this.connected = true;
  }
  controllerDisconnected(): void {
    this.connected = false;
  }
  pushReceived(): void {
    this.pushes++;
  }
  acked(): void {}
  nacked(): void {}
  applied(): void {}
  driftRepaired(): void {}
}

function createAgent(id: number, address: string, backends: readonly string[], stateRoot: string): SimulatedAgent {
  const applier = new SimulatedApplier(backends);
  const link = new LinkCounter();
  const runner = new AgentRunner({
    agentId: `agent-${id}`,
    labels: { bench: "fleet" },
    hafleetVersion: "bench",
    controllers: [address],
    applier,
    stateDir: join(stateRoot, `agent-${id}`),
    resyncMs: IDLE_TIMER_MS,
    probeMs: IDLE_TIMER_MS,
    observer: link,
    logger: silent,
  });
  return { id: `agent-${id}`, runner, applier, link };
}

/** Per applied server list: a census is taken often while thousands of agents reconnect, on their one thread. */
const digests = new WeakMap<readonly DesiredServer[], string>();

function digestOf(servers: readonly DesiredServer[]): string {
  let digest = digests.get(servers);
  if (digest === undefined) {
    digest = endpointsDigest(servers);
    digests.set(servers, digest);
  }
  return digest;
}

function census(agents: readonly SimulatedAgent[], backends: readonly string[]): AgentCensus[] {
  return agents.map(({ id, applier, link }) => {
    const seen: AgentCensus["backends"] = {};
    for (const backend of backends) {
      const fewest = applier.fewestServing(backend);
      if (fewest === undefined) continue;
      const servers = applier.serving(backend);
      seen[backend] = { servers: servers.length, digest: digestOf(servers), fewest };
    }
    return { agent: id, pushes: link.pushes, connected: link.connected, backends: seen };
  });
}

async function startAll(count: number, offset: number, address: string, backends: readonly string[], stateRoot: string, agents: SimulatedAgent[]): Promise<void> {
  for (let first = 0; first < count; first += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, count - first) }, (_, index) => createAgent(offset + first + index, address, backends, stateRoot));
    agents.push(...batch);
    await Promise.all(batch.map((agent) => agent.runner.start()));
    await bounded(
      Promise.all(batch.map((agent) => agent.applier.firstPush)),
      BATCH_TIMEOUT_MS,
      `agents ${offset + first}..${offset + first + batch.length - 1}: no push within ${BATCH_TIMEOUT_MS} ms`,
    );
  }
}

async function stopAll(agents: readonly SimulatedAgent[]): Promise<void> {
  await bounded(
    Promise.all(agents.map((agent) => agent.runner.stop())),
    STOP_TIMEOUT_MS,
    `agents did not stop within ${STOP_TIMEOUT_MS} ms`,
  );
}

/** tmpfs when there is one: the real agent fsyncs every push, and 10,000 of them would time the disk. */
function stateBase(): string {
  return existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
}

function bounded<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function report(message: FleetReport): void {
  process.send?.(message);
}

function positiveInt(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

function parseArgs(argv: readonly string[]): { count: number; address: string; offset: number; backends: string[] } {
  const [countText, address, offsetText, backendsText] = argv;
  const count = Number(countText);
  const offset = Number(offsetText);
  if (!Number.isInteger(count) || count < 1 || address === undefined || !Number.isInteger(offset) || offset < 0) {
    throw new Error("usage: fleet-agents COUNT HOST:PORT OFFSET [BACKEND,...]");
  }
  return { count, address, offset, backends: (backendsText ?? "be_app").split(",") };
}

async function main(): Promise<void> {
  if (process.send === undefined) throw new Error("fleet-agents runs as a child of the fleet benchmark (it reports over IPC)");
  const { count, address, offset, backends } = parseArgs(process.argv.slice(2));
  const stateRoot = await mkdtemp(join(stateBase(), `hafleet-fleet-${offset}-`));
  // Whatever way the child ends, its state files go: 10,000 dirs would otherwise fill tmpfs runs.
  process.on("exit", () => rmSync(stateRoot, { recursive: true, force: true }));
  let stopped = false;
  // The parent gone (killed by its time limit, or crashed): nothing is left to report to.
  process.on("disconnect", () => process.exit(stopped ? 0 : 1));
  // Exit through the exit hook, which removes the state files; the default would skip it.
  process.on("SIGTERM", () => process.exit(1));

  const agents: SimulatedAgent[] = [];
  process.on("message", (command: FleetCommand) => {
    if (command.type === "cpu") {
      const usage = process.cpuUsage();
      report({ type: "cpu", micros: usage.user + usage.system });
    } else if (command.type === "census") {
      report({ type: "census", agents: census(agents, backends) });
    } else if (command.type === "stop") {
      void stopAll(agents)
        .then(() => {
          stopped = true;
          report({ type: "stopped" });
        })
        .catch((error: unknown) => report({ type: "failed", error: String(error) }))
        .finally(() => process.disconnect());
    }
  });

  const started = performance.now();
  await startAll(count, offset, address, backends, stateRoot, agents);
  report({ type: "ready", agents: count, ms: Math.round(performance.now() - started), rssBytes: process.memoryUsage().rss });
}

main().catch((error: unknown) => {
  report({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  // Let the IPC message go out before leaving.
  setTimeout(() => process.exit(1), 100);
});
