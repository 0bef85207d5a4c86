import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { RunningController } from "../../controller/controller.js";
import { serving } from "../support/apply.js";
import { isProcessAlive, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { falseInSync, startCatalogController, startLoad, startReloadAgent, startUpstreams, watchTruth, type Upstreams } from "../support/reload-scenario.js";
import { agentBackend, fetchStatus } from "../support/status-api.js";

// An operator reloads HAProxy under a running agent, every way there is. Whatever replaced the
// worker, HAProxy's own serving worker (read on a fresh connection) must be back on the desired
// servers within a second, no old worker may live on because of the agent, and the controller's
// status must never say in sync while the serving worker serves none of them.

let dir: string;
let catalog: string;
let controller: RunningController;
let upstreams: Upstreams;
const runners: AgentRunner[] = [];
const haproxies: RunningHaproxy[] = [];
let desired: string[];

async function setCatalog(ports: readonly number[]): Promise<void> {
  await writeFile(catalog, JSON.stringify({ services: { web: ports.map((port) => ({ address: "127.0.0.1", port })) } }));
}

async function agent(id: string, h: RunningHaproxy, labels: Record<string, string> = {}): Promise<void> {
  runners.push(await startReloadAgent({ id, labels, controllerPort: controller.port, socket: h.socket, stateRoot: dir }));
}

async function stateOf(id: string, backend: string): Promise<string | undefined> {
  return agentBackend(await fetchStatus(controller.httpPort!), id, backend)?.state;
}

async function servesDesired(h: RunningHaproxy): Promise<boolean> {
  return serving(await h.serversState("be_app"), "be_app").join(",") === desired.join(",");
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-reload-"));
  catalog = join(dir, "catalog.json");
  upstreams = await startUpstreams(3);
  desired = upstreams.ports.map((port) => `127.0.0.1:${port}`).sort();
  await setCatalog(upstreams.ports);
  controller = await startCatalogController(dir, catalog, [
    { backend: "be_app", service: "web" },
    { backend: "be_new", service: "web", agents: { new: "yes" } },
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all(runners.map((runner) => runner.stop()));
  await controller?.close();
  await Promise.all(haproxies.map((h) => h.stop()));
  await upstreams?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("an operator's reload under a running agent", () => {
  it("master CLI, SIGUSR2 and restart, three times each under load: back within a second, no old worker kept, status never lying", async () => {
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }), defaultBackend: "be_app", masterWorker: true });
    haproxies.push(h);
    await agent("edge-mw", h);
    await until(async () => (await stateOf("edge-mw", "be_app")) === "in-sync" && (await servesDesired(h)), "in sync before the reloads");

    const watch = watchTruth(h, controller.httpPort!, "edge-mw", "be_app", desired);
    const load = startLoad(h.frontendPort!, { maxMs: 90_000 });
    const times: Array<{ how: string; ms: number }> = [];
    for (const how of ["master-cli", "sigusr2", "restart"] as const) {
      for (let round = 0; round < 3; round++) {
        const before = how === "restart" ? null : await h.workerPid();
        if (how === "restart") await h.restart();
        else await h.reload(how);
        // From the new worker answering: what the agent can be held to.
        const started = Date.now();
        await until(() => servesDesired(h), `${how} #${round + 1}: the new worker serving the desired servers`, 10_000);
        times.push({ how, ms: Date.now() - started });
        if (before !== null) {
          // The old worker ends once its connections do: none of them may be the agent's.
          await until(async () => !((await h.processes().catch(() => null))?.oldWorkers.includes(before) ?? true) && !isProcessAlive(before), `${how} #${round + 1}: old worker ${before} gone`, 5_000, async () => JSON.stringify(await h.processes()));
        }
        await until(async () => (await stateOf("edge-mw", "be_app")) === "in-sync", `${how} #${round + 1}: in sync again`, 10_000);
      }
    }
    const result = await load.stop();
    const samples = await watch.stop();
    console.log(JSON.stringify({ test: "reload-truth", mode: "runtime", reloads: times, requests: result.ok + result.failed, failed: result.failed, first_failures: result.failures.slice(0, 3) }));

    expect(falseInSync(samples, 1_500)).toEqual([]);
    // Each repair was seen as a problem before it was in sync again: the watcher saw a state other than in-sync.
    expect(samples.some((sample) => sample.status !== "in-sync")).toBe(true);
    expect((await h.processes()).oldWorkers).toEqual([]);
    expect(result.ok).toBeGreaterThan(0);
  }, 180_000);

  it("picks up a backend that the reload added, without waiting for a resync", async () => {
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }), masterWorker: true });
    haproxies.push(h);
    await agent("edge-new", h, { new: "yes" });
    await until(async () => (await stateOf("edge-new", "be_new")) === "rejected", "be_new rejected: HAProxy lacks it");

    await appendFile(h.configPath, "\n" + templateBackend("be_new", { slots: 4 }));
    const started = Date.now();
    await h.reload("master-cli");
    await until(async () => serving(await h.serversState("be_new"), "be_new").sort().join(",") === desired.join(","), "be_new served by the new worker", 5_000);
    const pickedUpMs = Date.now() - started;
    await until(async () => (await stateOf("edge-new", "be_new")) === "in-sync", "be_new in sync");
    console.log(JSON.stringify({ test: "reload-truth", case: "backend added by a reload", picked_up_ms: pickedUpMs }));
  }, 60_000);

  it("the legacy -sf handover (no master): the new process serves the desired servers, the old one exits", async () => {
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }), defaultBackend: "be_app" });
    haproxies.push(h);
    await agent("edge-sf", h);
    await until(async () => (await stateOf("edge-sf", "be_app")) === "in-sync" && (await servesDesired(h)), "in sync before the handovers");
    const watch = watchTruth(h, controller.httpPort!, "edge-sf", "be_app", desired);
    const load = startLoad(h.frontendPort!, { maxMs: 60_000 });
    for (let round = 0; round < 3; round++) {
      const before = await h.workerPid();
      await h.reload("handover");
      await until(() => servesDesired(h), `handover #${round + 1}: the new process serving the desired servers`, 10_000);
      await until(() => !isProcessAlive(before), `handover #${round + 1}: old process ${before} gone`, 5_000);
      await until(async () => (await stateOf("edge-sf", "be_app")) === "in-sync", `handover #${round + 1}: in sync again`, 10_000);
    }
    const result = await load.stop();
    const samples = await watch.stop();
    console.log(JSON.stringify({ test: "reload-truth", mode: "runtime", reload: "handover", requests: result.ok + result.failed, failed: result.failed }));
    expect(falseInSync(samples, 1_500)).toEqual([]);
  }, 120_000);
});
