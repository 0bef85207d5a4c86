import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { type FleetStatus } from "../../controller/status/status-schema.js";
import { fetchStatus } from "../support/status-api.js";
import { serving, silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { AGENT_BIN, CONTROLLER_BIN, startNode, type NodeProcess } from "../support/processes.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// The controller process killed with SIGKILL while it pushes a change to a fleet of agents
// (60 agents in this process, one with a real HAProxy). Nothing may be emptied or lost: the
// real HAProxy never serves less than the smaller of the two sets, and once a new controller
// is up every agent converges on the change, which it learns from discovery again.

const AGENTS = 60;
let dir: string;
let catalog: string;
let h: RunningHaproxy;
let grpcPort: number;
let httpPort: number;
let controller: NodeProcess | null = null;
const runners: AgentRunner[] = [];

const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.7.${i + 1}`, port: 8500 + i }));

function startControllerProcess(): NodeProcess {
  controller = startNode(CONTROLLER_BIN, ["controller", "--listen", `127.0.0.1:${grpcPort}`, "--http", `127.0.0.1:${httpPort}`, "--catalog-file", catalog, "--map", "web=be_app"]);
  return controller;
}

const status = (): Promise<FleetStatus | undefined> => fetchStatus(httpPort);

const allOn = (servers: number) =>
  until(async () => {
    const now = await status();
    return now !== undefined && now.summary.connected === AGENTS && now.summary.inSync && now.backends[0]?.servers === servers;
  }, `all ${AGENTS} agents in sync on ${servers} servers`, 30_000);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-chaos-"));
  catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: app(4) } }));
  [grpcPort, httpPort] = [await freePort(), await freePort()];
  h = await startHaproxy({ sections: templateBackend("be_app", { slots: 8 }) });
  startControllerProcess();
  const applier = (id: number) =>
    id === 0 ? new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: join(dir, "agent-0"), drainMs: 300, logger: silentLogger }) : new SimulatedApplier(["be_app"]);
  for (let id = 0; id < AGENTS; id++) {
    runners.push(await startRunner({ id: `agent-${id}`, applier: applier(id), labels: {}, controllerPorts: [grpcPort], stateRoot: dir, resyncMs: 60_000 }));
  }
  await allOn(4);
}, 60_000);

afterAll(async () => {
  await Promise.all(runners.map((runner) => runner.stop()));
  await controller?.kill("SIGKILL");
  await h?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("chaos", () => {
  it("SIGKILL of the controller in the middle of a fan-out: nothing emptied, everything converges after", async () => {
    let fewest = Infinity;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        fewest = Math.min(fewest, serving(await h.serversState(), "be_app").length);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

    try {
      await writeFile(catalog, JSON.stringify({ services: { web: app(8) } }));
      // Killed as soon as one agent has the change: most of the fleet does not have it yet.
      await until(async () => {
        const now = await status();
        const target = now?.backends[0];
        return target?.servers === 8 && now!.agents.some((agent) => agent.backends[0]?.appliedVersion === target.version);
      }, "the fan-out under way", 15_000);
      await controller!.kill("SIGKILL");

      startControllerProcess();
      await allOn(8);
    } finally {
      sampling = false;
      await sampler;
    }
    expect(fewest).toBeGreaterThanOrEqual(4);
    expect(serving(await h.serversState(), "be_app")).toEqual(app(8).map((server) => `${server.address}:${server.port}`).sort());
  });

  it("SIGKILL of an agent in the middle of an apply: it applies its stored state at restart, nothing emptied", async () => {
    const h2 = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
    const args = ["run", "--controller", `127.0.0.1:${grpcPort}`, "--socket", h2.socket, "--id", "agent-cli", "--state-dir", join(dir, "agent-cli"), "--drain-period", "300ms"];
    let agentProcess = startNode(AGENT_BIN, args);
    try {
      await until(async () => serving(await h2.serversState(), "be_app").length === 8, "the CLI agent on 8 servers", 15_000);
      // 40 servers past 4 slots: 36 `add server` and their health checks; killed once the first land.
      await writeFile(catalog, JSON.stringify({ services: { web: app(40) } }));
      await until(async () => serving(await h2.serversState(), "be_app").length > 8, "the apply under way", 15_000);
      await agentProcess.kill("SIGKILL");
      const afterKill = serving(await h2.serversState(), "be_app").length;
      expect(afterKill).toBeGreaterThanOrEqual(8);

      agentProcess = startNode(AGENT_BIN, args);
      await until(async () => serving(await h2.serversState(), "be_app").length === 40, "all 40 served after the restart", 20_000);
      expect(serving(await h2.serversState(), "be_app")).toEqual(app(40).map((server) => `${server.address}:${server.port}`).sort());
    } finally {
      await agentProcess.kill("SIGKILL");
      await h2.stop();
    }
  });
});
