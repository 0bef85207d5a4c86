import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import type { Applier } from "../../agent/run/applier.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { loadFreeze } from "../../controller/status/freeze-file.js";
import { fleetStatusSchema, type AgentStatus, type FleetStatus } from "../../controller/status/status-schema.js";
import { serving, silentLogger } from "../support/apply.js";
import { runHafleet } from "../support/cli.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// The controller's view of its fleet, caused for real: an agent whose HAProxy lacks the
// backend nacks, an operator drains a server by hand, someone moves a server behind an agent's
// back, an agent dies; the status API (and `hafleet status`) must say each, as it happens.

const TOKEN = "test-token-0123456789abcdef";
let dir: string;
let catalog: string;
let controller: RunningController;
let url: string;
const haproxies: RunningHaproxy[] = [];
const runners: AgentRunner[] = [];

function app(n: number) {
  return Array.from({ length: n }, (_, i) => ({ address: `127.0.3.${i + 1}`, port: 8100 + i }));
}

async function setCatalog(servers: Array<{ address: string; port: number }>): Promise<void> {
  await writeFile(catalog, JSON.stringify({ services: { web: servers } }));
}

async function agent(id: string, applier: Applier, labels: Record<string, string>): Promise<AgentRunner> {
  const runner = await startRunner({ id, applier, labels, controllerPorts: [controller!.port], stateRoot: dir, resyncMs: 300 });
  runners.push(runner);
  return runner;
}

async function status(query = ""): Promise<FleetStatus> {
  const response = await fetch(`${url}/api/v1/status${query}`);
  expect(response.status).toBe(200);
  return fleetStatusSchema.parse(await response.json());
}


/** The agent's status once it satisfies `test`. */
function agentWhen(id: string, test: (agent: AgentStatus) => boolean, what: string): Promise<AgentStatus> {
  return until(async () => (await status()).agents.find((agent) => agent.agent === id && test(agent)), `${id}: ${what}`);
}

function post(path: string, body: object = {}, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${url}/api/v1/${path}`, { method: "POST", headers: { "content-type": "application/json", ...(token === null ? {} : { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body) });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-status-"));
  catalog = join(dir, "catalog.json");
  await setCatalog(app(2));
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    http: { listen: "127.0.0.1:0", tokenFile: join(dir, "token") },
    stateDir: join(dir, "controller"),
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web" }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
  });
  controller = await startController(config, silentLogger, { version: "test" });
  url = `http://127.0.0.1:${controller.httpPort}`;
  const [withApp, withoutApp] = await Promise.all([
    startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) }),
    startHaproxy({ sections: templateBackend("be_other", { slots: 1 }) }),
  ]);
  haproxies.push(withApp, withoutApp);
  const applier = (h: RunningHaproxy, id: string) => new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: join(dir, id), drainMs: 300, logger: silentLogger });
  await agent("edge-real", applier(withApp, "edge-real"), { region: "eu" });
  await agent("edge-nack", applier(withoutApp, "edge-nack"), { region: "us" });
  await agent("edge-sim", new SimulatedApplier(["be_app"]), { region: "eu" });
});

afterAll(async () => {
  await Promise.all(runners.map((runner) => runner.stop()));
  await controller?.close();
  await Promise.all(haproxies.map((h) => h.stop()));
  await rm(dir, { recursive: true, force: true });
});

describe("fleet status, caused for real", () => {
  it("shows in sync, and a nack with HAProxy's reason, per agent and per backend", async () => {
    await agentWhen("edge-real", (agent) => agent.state === "in-sync", "in sync");
    const nack = await agentWhen("edge-nack", (agent) => agent.state === "rejected", "rejected");
    expect(nack.backends[0]!.error).toMatch(/backend-missing: the backend does not exist in this HAProxy/);
    const whole = await status();
    expect(whole.backends).toEqual([expect.objectContaining({ backend: "be_app", servers: 2, inSync: 2, agents: 3 })]);
    expect(whole.summary).toMatchObject({ agents: 3, connected: 3, inSync: false });
    expect((await status("?problems=1")).agents.map((agent) => agent.agent)).toEqual(["edge-nack"]);
  });

  it("shows a server an operator drained by hand as held, and in sync again once released", async () => {
    const h = haproxies[0]!;
    const row = (await h.serversState("be_app")).find((server) => server["srv_addr"] === "127.0.3.1")!;
    await h.command(`set server be_app/${row["srv_name"]} state drain`);
    const held = await agentWhen("edge-real", (agent) => agent.state === "held", "held");
    expect(held.backends[0]!.drift).toEqual([{ endpoint: "127.0.3.1:8100", state: "held" }]);
    await h.command(`set server be_app/${row["srv_name"]} state ready`);
    await agentWhen("edge-real", (agent) => agent.state === "in-sync", "in sync after the release");
  });

  it("shows a server changed behind the agent's back as drift, which the agent repairs", async () => {
    const h = haproxies[0]!;
    const row = (await h.serversState("be_app")).find((server) => server["srv_addr"] === "127.0.3.2")!;
    await h.command(`set server be_app/${row["srv_name"]} addr 127.0.3.99 port 9999`);
    const drifted = await agentWhen("edge-real", (agent) => agent.state === "drifted", "drifted");
    expect(drifted.backends[0]!.drift).toContainEqual({ endpoint: "127.0.3.2:8101", state: "missing" });
    await agentWhen("edge-real", (agent) => agent.state === "in-sync", "in sync after the repair");
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.3.1:8100", "127.0.3.2:8101"]);
  });

  it("freezes pushes with the token only, keeps the freeze on disk, and catches up when unfrozen", async () => {
    expect((await post("freeze", { reason: "incident 42" }, null)).status).toBe(401);
    expect((await post("freeze", { reason: "incident 42" }, "wrong-token-0123456789abcdef")).status).toBe(403);
    expect((await post("freeze", {})).status).toBe(400);
    expect((await post("freeze", { reason: "incident 42" })).status).toBe(200);
    expect((await status()).frozen).toMatchObject({ reason: "incident 42" });
    expect(await loadFreeze(join(dir, "controller"))).toMatchObject({ reason: "incident 42" });

    await setCatalog(app(3));
    const waiting = await agentWhen("edge-real", (agent) => agent.state === "not-sent", "the new version held back by the freeze");
    expect(waiting.backends[0]!.appliedVersion).not.toBe(waiting.backends[0]!.desiredVersion);
    expect(serving(await haproxies[0]!.serversState(), "be_app")).toHaveLength(2);

    expect((await post("unfreeze")).status).toBe(200);
    await agentWhen("edge-real", (agent) => agent.state === "in-sync", "in sync after the unfreeze");
    expect(serving(await haproxies[0]!.serversState(), "be_app")).toHaveLength(3);
    expect(await loadFreeze(join(dir, "controller"))).toBeNull();
    const change = (await status()).changes[0]!;
    expect(change).toMatchObject({ agents: 3, acked: 2, outcome: "failed", outcomeDetail: expect.stringMatching(/^edge-nack rejected be_app /) });
  });

  it("hafleet status and hafleet wait read the same, with exit codes for scripts", async () => {
    const shown = await runHafleet(["status", "--url", url]);
    expect(shown.code).toBe(1);
    expect(shown.stdout.split("\n")[0]).toMatch(/^3 agent\(s\) \(this replica's agents\), 3 connected, NOT in sync: 1 rejected, 2 in-sync$/);
    expect(shown.stdout).toMatch(/^edge-nack\s+rejected\s+0\/1\s+\d+s ago\s+test\s+region=us\s+be_app: nack: /m);
    const wide = await runHafleet(["status", "--url", url, "-o", "wide", "--selector", "region=us"]);
    expect(wide.stdout).toMatch(/edge-nack\s+rejected\s+be_app/);
    expect(wide.stdout).not.toMatch(/edge-real|edge-sim/);
    const rows = await runHafleet(["status", "--url", url, "--no-headers"]);
    expect(rows.stdout.trimEnd().split("\n").map((line) => line.split(/\s+/)[0])).toEqual(["edge-nack", "edge-real", "edge-sim"]);
    const json = await runHafleet(["status", "--url", url, "--json", "--agent", "edge-real"]);
    expect(json.code).toBe(0);
    expect(fleetStatusSchema.parse(JSON.parse(json.stdout)).agents.map((agent) => agent.agent)).toEqual(["edge-real"]);

    const failed = await runHafleet(["wait", "--url", url, "--timeout", "5s"]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/^failed: edge-nack rejected be_app/);
    const timedOut = await runHafleet(["wait", "--url", url, "--version", "0123456789abcdef", "--timeout", "1s", "--interval", "200ms"]);
    expect(timedOut.code).toBe(1);
    expect(timedOut.stderr).toMatch(/^not done within 1s: no backend's desired version is 0123456789abcdef yet/);
    const converged = await runHafleet(["wait", "--url", url, "--selector", "region=eu", "--timeout", "10s"]);
    expect(converged.code).toBe(0);
    expect(converged.stdout).toMatch(/^done: all 2 matching agent\(s\) run the desired state: be_app=[0-9a-f]+\n$/);
    const unreachable = await runHafleet(["status", "--url", "http://127.0.0.1:1"]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toMatch(/unreachable/);
  });

  it("shows an agent that died as disconnected, with the version it had", async () => {
    const sim = runners[2]!;
    const before = await agentWhen("edge-sim", (agent) => agent.state === "in-sync", "in sync");
    await sim.stop();
    const gone = await agentWhen("edge-sim", (agent) => agent.state === "disconnected", "disconnected");
    expect(gone).toMatchObject({ connected: false, disconnectedAt: expect.any(Number) });
    expect(gone.backends[0]).toMatchObject({ state: "disconnected", appliedVersion: before.backends[0]!.appliedVersion });
  });
});
