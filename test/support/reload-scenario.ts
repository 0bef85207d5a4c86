import { request, createServer, type Server } from "node:http";
import { join } from "node:path";
import type { HybridSession } from "../../agent/hybrid/hybrid-session.js";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { serving, silentLogger } from "./apply.js";
import { startRunner } from "./runner.js";
import type { RunningHaproxy } from "./haproxy.js";
import { fetchStatus, agentBackend } from "./status-api.js";

/*
 * What an operator's reload does to a site, measured from outside: upstream web servers, a
 * bounded HTTP load through HAProxy counting failed requests, and a watcher that samples, side
 * by side, what HAProxy's serving worker runs (a fresh connection each time) and what the
 * controller's status says of the agent. Shared by the reload tests and the reload benchmark.
 */

export interface Upstreams {
  ports: number[];
  close(): Promise<void>;
}

export async function startUpstreams(count: number): Promise<Upstreams> {
  const servers: Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    const server = createServer((_request, response) => response.end("ok\n"));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    servers.push(server);
    ports.push((server.address() as { port: number }).port);
  }
  return {
    ports,
    close: async () => {
      for (const server of servers) server.closeAllConnections();
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    },
  };
}

export interface LoadResult {
  ok: number;
  failed: number;
  /** The first few failures, for the test's message. */
  failures: string[];
}

export interface Load {
  readonly result: LoadResult;
  stop(): Promise<LoadResult>;
}

/**
 * `clients` sequential request loops through HAProxy, a new connection per request (a kept-alive
 * one would pin an old worker, which is exactly what must not be blamed on the agent).
 * Bounded by count and time whatever the test does.
 */
export function startLoad(port: number, options: { clients?: number; maxRequests?: number; maxMs?: number; intervalMs?: number } = {}): Load {
  const result: LoadResult = { ok: 0, failed: 0, failures: [] };
  const deadline = Date.now() + (options.maxMs ?? 120_000);
  const maxRequests = options.maxRequests ?? 200_000;
  let running = true;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const req = request({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 5_000 }, (response) => {
        response.resume();
        response.on("end", () => {
          if (response.statusCode === 200) result.ok++;
          else fail(`HTTP ${response.statusCode}`);
          resolve();
        });
      });
      const fail = (why: string): void => {
        result.failed++;
        if (result.failures.length < 10) result.failures.push(`${new Date().toISOString()} ${why}`);
      };
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (error) => {
        fail(error.message);
        resolve();
      });
      req.end();
    });
  // Paced: a refused request returns at once, and an unpaced loop would count an outage's
  // failures by the thousand; at a steady rate, failures measure the time the site failed.
  const intervalMs = options.intervalMs ?? 10;
  const loop = async (): Promise<void> => {
    while (running && Date.now() < deadline && result.ok + result.failed < maxRequests) {
      const started = Date.now();
      await one();
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - (Date.now() - started))));
    }
  };
  const loops = Array.from({ length: options.clients ?? 2 }, loop);
  return {
    result,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return result;
    },
  };
}

export interface TruthSample {
  at: number;
  /** Desired endpoints HAProxy's serving worker has ready; null: it did not answer. */
  serving: number | null;
  /** The agent's state for the backend in the controller's status; null: none. */
  status: string | null;
}

export interface TruthWatch {
  readonly samples: readonly TruthSample[];
  stop(): Promise<TruthSample[]>;
}

const WATCH_LIMITS = { samples: 50_000, ms: 240_000 };

/** Samples HAProxy and the status together, until stopped (or its bounds). */
export function watchTruth(h: RunningHaproxy, httpPort: number, agent: string, backend: string, desired: readonly string[], intervalMs = 25): TruthWatch {
  const samples: TruthSample[] = [];
  const wanted = new Set(desired);
  let running = true;
  const deadline = Date.now() + WATCH_LIMITS.ms;
  const loop = (async () => {
    while (running && Date.now() < deadline && samples.length < WATCH_LIMITS.samples) {
      const at = Date.now();
      const [rows, status] = await Promise.all([h.serversState(backend).catch(() => null), fetchStatus(httpPort)]);
      samples.push({
        at,
        serving: rows === null ? null : serving(rows, backend).filter((endpoint) => wanted.has(endpoint)).length,
        status: agentBackend(status, agent, backend)?.state ?? null,
      });
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    samples,
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}

/**
 * Status samples that said in-sync although HAProxy's serving worker had served none of the
 * desired servers for all of the `graceMs` before (the agent's detection and report take a
 * moment: a status may lag that much, never more).
 */
export function falseInSync(samples: readonly TruthSample[], graceMs: number): TruthSample[] {
  return samples.filter((sample) => {
    if (sample.status !== "in-sync") return false;
    const window = samples.filter((other) => other.at >= sample.at - graceMs && other.at <= sample.at);
    return window.length >= 3 && window[0]!.at <= sample.at - graceMs * 0.8 && window.every((other) => other.serving === 0);
  });
}

/**
 * A controller on loopback whose discovery is a catalog file, tuned for tests (fast debounce
 * and heartbeats); its status API on a free port, open to loopback readers.
 */
export function startCatalogController(dir: string, catalog: string, backends: ReadonlyArray<Record<string, unknown>> = [{ backend: "be_app", service: "web" }], http: { tokenFile?: string; readTokenFile?: string; openLoopbackReads?: boolean } = {}): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    http: { listen: "127.0.0.1:0", ...http },
    stateDir: join(dir, "controller"),
    discovery: { file: catalog },
    backends,
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 2_000 },
  });
  return startController(config, silentLogger, { version: "test" });
}

/**
 * A real agent run loop on one HAProxy, probing at the production default (every 250 ms:
 * agent-runner.ts), with a resync only every minute, so that a repair is never the periodic
 * resync's doing. Started; the caller stops it.
 */
export function startReloadAgent(options: { id: string; labels?: Record<string, string>; controllerPort: number; socket: string; stateRoot: string; hybrid?: HybridSession }): Promise<AgentRunner> {
  const applier = new RuntimeApplier({ sockets: [parseSocketAddress(options.socket)], stateDir: join(options.stateRoot, options.id), drainMs: 300, logger: silentLogger, ...(options.hybrid ? { hybrid: options.hybrid } : {}) });
  return startRunner({ id: options.id, applier, labels: options.labels ?? {}, controllerPorts: [options.controllerPort], stateRoot: options.stateRoot, resyncMs: 60_000, probeMs: 250 });
}
