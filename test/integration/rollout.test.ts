import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier, type Applier } from "../../agent/run/applier.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { type FleetStatus, type RolloutStatus } from "../../controller/status/status-schema.js";
import { readStatus } from "../support/status-api.js";
import { serving, silentLogger } from "../support/apply.js";
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// Staged rollouts against real agents: a change of a staged backend goes to a canary first,
// is judged on what the agents report, and goes on, or halts and rolls back by itself. The
// agents outside the canary are checked on their real HAProxy: they must never run it.

const TOKEN = "rollout-token-0123456789abcdef";
let dir: string;
let catalog: string;
let controller: RunningController | null = null;
const runners: AgentRunner[] = [];
const haproxies: RunningHaproxy[] = [];

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await controller?.close();
  controller = null;
  await Promise.all(haproxies.splice(0).map((h) => h.stop()));
  await rm(dir, { recursive: true, force: true });
});

function app(n: number) {
  return Array.from({ length: n }, (_, i) => ({ address: `127.0.4.${i + 1}`, port: 8200 + i }));
}

async function setCatalog(servers: Array<{ address: string; port: number }>): Promise<void> {
  await writeFile(catalog, JSON.stringify({ services: { web: servers } }));
}

let grpcPort = 0;

/** On the same port each time: a restarted controller is found by the agents where they left it. */
async function startFleetController(rollout: Record<string, unknown>, mapping: Record<string, unknown> = { staged: true }): Promise<RunningController> {
  grpcPort ||= await freePort();
  const config = controllerConfigSchema.parse({
    listen: `127.0.0.1:${grpcPort}`,
    http: { listen: "127.0.0.1:0", tokenFile: join(dir, "token") },
    stateDir: join(dir, "controller"),
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web", ...mapping }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
    rollout,
  });
  controller = await startController(config, silentLogger, { version: "test", rolloutTickMs: 50 });
  return controller;
}

async function agent(id: string, applier: Applier, labels: Record<string, string>): Promise<AgentRunner> {
  const runner = await startRunner({ id, applier, labels, controllerPorts: [controller!.port], stateRoot: dir, resyncMs: 60_000 });
  runners.push(runner);
  return runner;
}

async function haproxy(balance: string, slots: number): Promise<RunningHaproxy> {
  const h = await startHaproxy({ sections: templateBackend("be_app", { slots, balance }) });
  haproxies.push(h);
  return h;
}

function realApplier(h: RunningHaproxy, id: string): Applier {
  return new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: join(dir, id), drainMs: 300, logger: silentLogger });
}

const status = (): Promise<FleetStatus> => readStatus(controller!.httpPort!);


/** What a failed wait says of the fleet. */
async function explain(): Promise<string> {
  const now = await status();
  return `rollout: ${JSON.stringify(now.rollout)}; agents: ${JSON.stringify(now.agents.map((entry) => [entry.agent, entry.backends]))}`;
}

const rolloutIn = (phases: RolloutStatus["phase"][]) =>
  until(async () => {
    const rollout = (await status()).rollout;
    return rollout !== null && phases.includes(rollout.phase) ? rollout : undefined;
  }, `a rollout in ${phases.join(" or ")}`, 15_000, explain);

const allInSync = () => until(async () => (await status()).summary.inSync, "every agent in sync", 15_000, explain);

function act(action: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${controller!.httpPort}/api/v1/rollout/${action}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
}

async function setup(): Promise<void> {
  grpcPort = 0;
  dir = await mkdtemp(join(tmpdir(), "hafleet-rollout-"));
  catalog = join(dir, "catalog.json");
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
  await setCatalog(app(2));
}

describe("staged rollouts", () => {
  it("halts when the canary nacks, rolls back by itself, and no other agent ever runs the change", async () => {
    await setup();
    await startFleetController({ canary: { count: 1 }, canarySelector: { role: "canary" }, waves: [0.5, 1], bakeMs: 300, waveTimeoutMs: 5_000, autoRollback: true });
    // The canary's backend is static-rr with two slots: it cannot take a third server, so it nacks it.
    const [canaryHaproxy, edgeHaproxy] = await Promise.all([haproxy("static-rr", 2), haproxy("roundrobin", 4)]);
    await agent("canary-1", realApplier(canaryHaproxy, "canary-1"), { role: "canary" });
    await agent("edge-1", realApplier(edgeHaproxy, "edge-1"), { role: "edge" });
    await agent("edge-2", new SimulatedApplier(["be_app"]), { role: "edge" });
    await allInSync();
    const before = (await status()).agents.find((entry) => entry.agent === "edge-1")!.backends[0]!.appliedVersion;

    await setCatalog(app(3));
    const rolledBack = await rolloutIn(["rolled-back"]);
    expect(rolledBack.haltReason).toMatch(/canary-1/);
    expect(rolledBack.backends).toEqual(["be_app"]);
    expect(rolledBack.history.map((entry) => entry.event).join("\n")).toMatch(/started \(discovery change of web\)[\s\S]*halted and rolled back automatically/);

    // Back on the baseline everywhere: the canary runs (and acked) the old set again.
    await allInSync();
    const after = await status();
    for (const entry of after.agents) expect(entry.backends[0]).toMatchObject({ state: "in-sync", appliedVersion: before, desiredVersion: before });
    expect(after.agents.map((entry) => entry.rolloutSide)).toEqual(["baseline", "baseline", "baseline"]);
    expect(serving(await edgeHaproxy.serversState(), "be_app")).toEqual(["127.0.4.1:8200", "127.0.4.2:8201"]);
    expect(serving(await canaryHaproxy.serversState(), "be_app")).toEqual(["127.0.4.1:8200", "127.0.4.2:8201"]);
  });

  it("goes out canary first, wave by wave, pauses and resumes on the operator's word, and survives a restart", async () => {
    await setup();
    const rolloutConfig = { canary: { count: 1 }, canarySelector: { role: "canary" }, waves: [0.5, 1], bakeMs: 400, waveTimeoutMs: 10_000, autoRollback: true };
    await startFleetController(rolloutConfig);
    const edgeHaproxy = await haproxy("roundrobin", 4);
    await agent("canary-1", new SimulatedApplier(["be_app"]), { role: "canary" });
    await agent("edge-1", realApplier(edgeHaproxy, "edge-1"), { role: "edge" });
    await agent("edge-2", new SimulatedApplier(["be_app"]), { role: "edge" });
    await allInSync();

    const acks: string[] = [];
    controller!.server.events.on("acked", (agentId, _backend, version) => acks.push(`${agentId}@${version}`));
    await setCatalog(app(3));
    const started = await rolloutIn(["applying", "baking"]);
    expect(started.waves.map((wave) => wave.agents)).toEqual([1, 1, 1]);
    expect((await act("pause")).status).toBe(200);
    expect((await act("pause")).status).toBe(409);
    const paused = (await status()).rollout!;
    expect(paused.phase).toBe("paused");

    // A restarted controller carries on with the same rollout, still paused.
    await controller!.close();
    controller = await startFleetController(rolloutConfig);
    const target = (await status()).backends[0]!.version;
    expect((await status()).rollout).toMatchObject({ id: paused.id, phase: "paused", wave: paused.wave });
    await until(async () => (await status()).summary.connected === 3, "agents back", 15_000, explain);
    // Paused in the canary's wave: the edge agents, on the baseline, still run the old set.
    expect(paused.wave).toBe(0);
    expect(serving(await edgeHaproxy.serversState(), "be_app")).toHaveLength(2);

    expect((await act("resume")).status).toBe(200);
    const done = await rolloutIn(["completed"]);
    expect(done.history.map((entry) => entry.event).join("\n")).toMatch(/paused by the operator[\s\S]*resumed by the operator[\s\S]*completed/);
    await allInSync();
    expect(serving(await edgeHaproxy.serversState(), "be_app")).toEqual(["127.0.4.1:8200", "127.0.4.2:8201", "127.0.4.3:8202"]);
    // The canary ran it first: no other agent acked the new version before it.
    const firstAck = acks.find((entry) => entry.endsWith(`@${target}`));
    expect(firstAck === undefined || firstAck.startsWith("canary-1@")).toBe(true);
    expect((await act("resume")).status).toBe(409);
  });

  it("stages an operator's change of a mapping across a restart (a SIGHUP re-read is one), canary first", async () => {
    await setup();
    const rolloutConfig = { canary: { count: 1 }, canarySelector: { role: "canary" }, waves: [1], bakeMs: 300, waveTimeoutMs: 10_000, autoRollback: true };
    await startFleetController(rolloutConfig, {});
    await agent("canary-1", new SimulatedApplier(["be_app"]), { role: "canary" });
    await agent("edge-1", new SimulatedApplier(["be_app"]), { role: "edge" });
    await allInSync();
    const before = (await status()).backends[0]!.version;
    expect((await status()).rollout).toBeNull();

    // The operator allows the backend to be emptied: a new version of it, from the config alone.
    await controller!.close();
    controller = await startFleetController(rolloutConfig, { allowEmpty: true });
    const rollout = await rolloutIn(["applying", "baking"]);
    expect(rollout).toMatchObject({ reason: "config change of be_app", backends: ["be_app"], wave: 0 });
    const edge = (await status()).agents.find((entry) => entry.agent === "edge-1")!;
    expect(edge).toMatchObject({ rolloutSide: "baseline" });
    expect(edge.backends[0]!.desiredVersion).toBe(before);
    await rolloutIn(["completed"]);
    await allInSync();
    const after = (await status()).agents.map((entry) => entry.backends[0]!.appliedVersion);
    expect(after[0]).not.toBe(before);
    expect(new Set(after).size).toBe(1);
  });

  it("sends a mapping change at once when the config does not stage it", async () => {
    await setup();
    const rolloutConfig = { stageConfigChanges: false };
    await startFleetController(rolloutConfig, {});
    await agent("edge-1", new SimulatedApplier(["be_app"]), { role: "edge" });
    await allInSync();
    await controller!.close();
    controller = await startFleetController(rolloutConfig, { allowEmpty: true });
    await until(async () => (await status()).backends[0]?.version, "discovery read");
    await allInSync();
    expect((await status()).rollout).toBeNull();
  });
});
