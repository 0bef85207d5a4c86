import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { RunningController } from "../../controller/controller.js";
import { serving } from "../support/apply.js";
import { until } from "../support/helpers.js";
import { hybridSessionFor, startRendered, type RenderedHaproxy } from "../support/hybrid-rendered.js";
import { falseInSync, startCatalogController, startLoad, startReloadAgent, startUpstreams, watchTruth, type Upstreams } from "../support/reload-scenario.js";
import { agentBackend, fetchStatus } from "../support/status-api.js";

// Hybrid mode keeps the config file (and the server-state file) as HAProxy runs, so an
// operator's reload, which hafleet does not see coming, starts the new worker with every
// server it had: not one request may fail, and status must never lie meanwhile.

let dir: string;
let catalog: string;
let controller: RunningController;
let upstreams: Upstreams;
let s: RenderedHaproxy;
let runner: AgentRunner;

async function setCatalog(ports: readonly number[]): Promise<void> {
  await writeFile(catalog, JSON.stringify({ services: { web: ports.map((port) => ({ address: "127.0.0.1", port })) } }));
}

const endpoints = (ports: readonly number[]): string => ports.map((port) => `127.0.0.1:${port}`).sort().join(",");

async function converged(ports: readonly number[]): Promise<boolean> {
  const state = agentBackend(await fetchStatus(controller.httpPort!), "edge-hybrid", "be_app")?.state;
  return state === "in-sync" && serving(await s.h.serversState("be_app"), "be_app").join(",") === endpoints(ports);
}

async function explain(): Promise<string> {
  const status = agentBackend(await fetchStatus(controller.httpPort!), "edge-hybrid", "be_app");
  return `status ${JSON.stringify(status)}; HAProxy serves ${serving(await s.h.serversState("be_app"), "be_app").join(",")}; state ${JSON.stringify(await s.h.serversState("be_app"))}`;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-reload-hybrid-"));
  catalog = join(dir, "catalog.json");
  upstreams = await startUpstreams(3);
  await setCatalog(upstreams.ports.slice(0, 2));
  s = await startRendered([{ name: "be_app", balance: "roundrobin", servers: upstreams.ports.slice(0, 2).map((port) => ({ address: "127.0.0.1", port })) }], 2);
  controller = await startCatalogController(dir, catalog);
  const hybrid = await hybridSessionFor(s, 2);
  runner = await startReloadAgent({ id: "edge-hybrid", controllerPort: controller.port, socket: s.h.socket, stateRoot: dir, hybrid });
}, 60_000);

afterAll(async () => {
  await runner?.stop();
  await controller?.close();
  await s?.h.stop();
  await upstreams?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("an operator's reload in hybrid mode", () => {
  it("loses nothing: six reloads (master CLI, SIGUSR2) between scale changes, zero failed requests", async () => {
    await until(() => converged(upstreams.ports.slice(0, 2)), "in sync on two servers");
    const watch = watchTruth(s.h, controller.httpPort!, "edge-hybrid", "be_app", upstreams.ports.map((port) => `127.0.0.1:${port}`));
    const load = startLoad(s.port, { maxMs: 90_000 });
    const sets = [upstreams.ports, upstreams.ports.slice(1), upstreams.ports];
    let reloads = 0;
    for (const how of ["master-cli", "sigusr2"] as const) {
      for (const ports of sets) {
        await setCatalog(ports);
        await until(() => converged(ports), `in sync on ${ports.length} servers`, 10_000, explain);
        const before = await s.h.workerPid();
        await s.h.reload(how);
        reloads++;
        await until(() => converged(ports), `${how}: in sync again on ${ports.length} servers`, 10_000, explain);
        // The old worker ends once its connections do: none of them may be the agent's.
        await until(async () => !((await s.h.processes().catch(() => null))?.oldWorkers.includes(before) ?? true), `${how}: old worker ${before} gone`, 5_000, async () => JSON.stringify(await s.h.processes()));
      }
    }
    const result = await load.stop();
    const samples = await watch.stop();
    console.log(JSON.stringify({ test: "reload-hybrid", reloads, requests: result.ok + result.failed, failed: result.failed, first_failures: result.failures.slice(0, 3) }));
    expect(result.failures).toEqual([]);
    expect(result.ok).toBeGreaterThan(0);
    expect(falseInSync(samples, 1_500)).toEqual([]);
  }, 120_000);
});
