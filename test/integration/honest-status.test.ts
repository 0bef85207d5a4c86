import { existsSync } from "node:fs";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier, type Applier } from "../../agent/run/applier.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import type { FleetStatus, RolloutStatus } from "../../controller/status/status-schema.js";
import { serving, silentLogger } from "../support/apply.js";
import { runHafleet } from "../support/cli.js";
import { appInstances, FleetProcesses, writeCatalog } from "../support/fleet-fixture.js";
import { freePort, startHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";
import { readStatus } from "../support/status-api.js";

// Issue 14, tried as an operator would, on real processes: each case is one way `hafleet wait`
// or `hafleet status` used to say something false (converged during wave 1/3, after a
// rollback, with every agent gone, for a selector matching nothing; "all in sync" with
// discovery down; a rolled-back change "converging" for ever...). Each must now say what is so.

const TOKEN = "honest-token-0123456789abcdef";
let dir: string;
let catalog: string;
const fleet = new FleetProcesses();
let grpcPort = 0;

afterEach(() => fleet.stop(dir));

const app = appInstances;
const setCatalog = (servers: Array<{ address: string; port: number }>): Promise<void> => writeCatalog(catalog, servers);

async function setup(): Promise<void> {
  grpcPort = 0;
  dir = await mkdtemp(join(tmpdir(), "hafleet-honest-"));
  catalog = join(dir, "catalog.json");
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
  await setCatalog(app(2));
}

async function start(options: { rollout?: Record<string, unknown>; mapping?: Record<string, unknown>; discovery?: Record<string, unknown> } = {}): Promise<RunningController> {
  grpcPort ||= await freePort();
  const config = controllerConfigSchema.parse({
    listen: `127.0.0.1:${grpcPort}`,
    http: { listen: "127.0.0.1:0", tokenFile: join(dir, "token") },
    stateDir: join(dir, "controller"),
    discovery: options.discovery ?? { file: catalog },
    backends: [{ backend: "be_app", service: "web", ...(options.mapping ?? {}) }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
    ...(options.rollout === undefined ? {} : { rollout: options.rollout }),
  });
  fleet.controller = await startController(config, silentLogger, { version: "test", rolloutTickMs: 50 });
  return fleet.controller;
}

async function agent(id: string, applier: Applier, labels: Record<string, string> = { role: "edge" }): Promise<AgentRunner> {
  const runner = await startRunner({ id, applier, labels, controllerPorts: [fleet.controller!.port], stateRoot: dir, resyncMs: 60_000 });
  fleet.runners.push(runner);
  return runner;
}

const url = (): string => `http://127.0.0.1:${fleet.controller!.httpPort}`;
const status = (): Promise<FleetStatus> => readStatus(fleet.controller!.httpPort!);
const hafleet = (args: string[]) => runHafleet([...args, "--url", url()], { HAFLEET_TOKEN: TOKEN });

async function explain(): Promise<string> {
  const now = await status();
  return `summary: ${JSON.stringify(now.summary)}; backends: ${JSON.stringify(now.backends)}; rollout: ${JSON.stringify(now.rollout)}; agents: ${JSON.stringify(now.agents.map((entry) => [entry.agent, entry.problem, entry.backends]))}`;
}

const rolloutIn = (phases: RolloutStatus["phase"][], id?: string) =>
  until(async () => {
    const rollout = (await status()).rollout;
    return rollout !== null && phases.includes(rollout.phase) && (id === undefined || rollout.id !== id) ? rollout : undefined;
  }, `a rollout in ${phases.join(" or ")}`, 20_000, explain);

const allInSync = () => until(async () => (await status()).summary.inSync, "every agent in sync", 15_000, explain);

describe("hafleet wait says done only when it is", () => {
  it("fails a selector, backend or agent matching nothing; waits through a rollout's waves; fails on its rollback; retry starts over; the change log keeps how it ended", async () => {
    await setup();
    const rollout = { canary: { count: 1 }, canarySelector: { role: "canary" }, waves: [0.5, 1], bakeMs: 1_500, waveTimeoutMs: 10_000, autoRollback: true };
    await start({ rollout, mapping: { staged: true } });
    const sims = [new SimulatedApplier(["be_app"]), new SimulatedApplier(["be_app"]), new SimulatedApplier(["be_app"])];
    await agent("canary-1", sims[0]!, { role: "canary" });
    await agent("edge-1", sims[1]!);
    await agent("edge-2", sims[2]!);
    await allInSync();
    const before = (await status()).backends[0]!.version;

    const noMatch = await hafleet(["wait", "--selector", "role=nosuch", "--timeout", "5s"]);
    expect(noMatch.code).toBe(1);
    expect(noMatch.stderr.split("\n")[0]).toBe("failed: no agent matches --selector role=nosuch (3 agent(s) known)");
    const noBackend = await hafleet(["wait", "--backend", "be_nosuch", "--timeout", "5s"]);
    expect(noBackend.code).toBe(1);
    expect(noBackend.stderr.split("\n")[0]).toBe("failed: no backend be_nosuch: the controller maps be_app");
    const noAgent = await hafleet(["status", "--agent", "nosuch"]);
    expect(noAgent).toMatchObject({ code: 1, stdout: "" });
    expect(noAgent.stderr).toBe("no agent 'nosuch' is known to the controller (3 agent(s) known)\n");
    expect((await hafleet(["status", "--backend", "be_nosuch"])).code).toBe(1);
    const badEndpoint = await hafleet(["wait", "--contains", "be_app=10.0.0.1"]);
    expect(badEndpoint.code).toBe(2);
    expect(badEndpoint.stderr).toMatch(/--contains.*ADDR:PORT/);

    // A staged change: wave 1/3 is the canary; the two others stay on the old set meanwhile.
    await setCatalog(app(3));
    const started = await rolloutIn(["applying", "baking"]);
    expect(started.waves.map((wave) => wave.agents)).toEqual([1, 1, 1]);
    const early = await hafleet(["wait", "--timeout", "1s", "--interval", "200ms"]);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/^not done within 1s: .*edge-\d be_app on [0-9a-f]+ until its rollout wave \(the fleet heads to [0-9a-f]+\)/);
    expect(early.stdout).toBe("");
    const target = (await status()).backends[0]!.version;
    expect(target).not.toBe(before);

    // --contains: done once every agent's own report shows the new instance served.
    const contains = await hafleet(["wait", "--contains", "be_app=127.0.4.3:8202", "--timeout", "15s", "--interval", "200ms"]);
    expect(contains.stderr).toBe("");
    expect(contains).toMatchObject({ code: 0, stdout: "done: all 3 matching agent(s) serve be_app=127.0.4.3:8202\n" });
    for (const sim of sims) expect(sim.serving("be_app").map((server) => server.port)).toContain(8202);
    // Served everywhere once the last wave acked, though it may still bake: the last wave it is.
    const reached = (await status()).rollout!;
    expect(reached.phase === "completed" || reached.wave === reached.waves.length - 1, JSON.stringify(reached)).toBe(true);
    expect((await hafleet(["wait", "--version", target, "--timeout", "5s"])).code).toBe(0);
    await rolloutIn(["completed"]);

    // Rolled back by the operator: 'rollout' exits non-zero; the row shows what agents run now.
    const rolledBack = await hafleet(["rollout", "rollback"]);
    expect(rolledBack.code).toBe(1);
    expect(rolledBack.stdout).toMatch(/rolled-back/);
    expect((await hafleet(["rollout", "status"])).code).toBe(1);
    await until(async () => {
      const now = await status();
      return now.backends[0]!.version === before && now.backends[0]!.inSync === 3 && now.summary.inSync;
    }, "the row on the baseline, 3/3", 15_000, explain);
    const changes = (await status()).changes;
    expect(changes.find((change) => change.backends.some((entry) => entry.version === target))).toMatchObject({ outcome: "rolled-back", outcomeDetail: expect.stringContaining("rolled back by the operator") });
    const shown = await hafleet(["status"]);
    expect(shown.stdout).toMatch(new RegExp(`be_app\\s+${before}\\s+2\\s+3/3`));
    const rolledBackVersion = await hafleet(["wait", "--version", target, "--timeout", "5s"]);
    expect(rolledBackVersion.code).toBe(1);
    expect(rolledBackVersion.stderr.split("\n")[0]).toMatch(new RegExp(`^failed: version ${target} was rolled back by rollout r-`));
    const lacks = await hafleet(["wait", "--lacks", "be_app=127.0.4.3:8202", "--timeout", "10s", "--interval", "200ms"]);
    expect(lacks).toMatchObject({ code: 0, stdout: "done: all 3 matching agent(s) lack be_app=127.0.4.3:8202\n" });

    // Retry: the same change, from its canary again.
    const retried = await hafleet(["rollout", "retry"]);
    expect(retried.code).toBe(0);
    const again = await rolloutIn(["applying", "baking", "completed"], started.id);
    expect(again.reason).toBe(`retry of ${started.id}: discovery change of web`);
    expect(again.history[0]!.event).toMatch(/^started \(retry of r-.*\): 3 agents in 3 waves of 1, 1, 1; wave 1\/3 applying$/);
    await rolloutIn(["completed"], started.id);
    await allInSync();
    expect((await status()).backends[0]!.version).toBe(target);

    // The recent changes, and how each ended, survive a restart.
    await fleet.controller!.close();
    await start({ rollout, mapping: { staged: true } });
    const restored = (await status()).changes;
    expect(restored.some((change) => change.outcome === "rolled-back" && change.backends.some((entry) => entry.version === target)), JSON.stringify(restored)).toBe(true);
    expect(restored.every((change) => change.outcome !== "converging"), JSON.stringify(restored)).toBe(true);
  }, 90_000);

  it("fails at once on a freeze that blocks it, saying frozen in status; --contains/--lacks follow a real HAProxy; waits for a disconnected agent; forget drops it", async () => {
    await setup();
    await start();
    const real = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
    fleet.haproxies.push(real);
    await agent("edge-1", new RuntimeApplier({ sockets: [parseSocketAddress(real.socket)], stateDir: join(dir, "edge-1"), drainMs: 300, logger: silentLogger }));
    await agent("edge-2", new SimulatedApplier(["be_app"]));
    await allInSync();
    expect((await hafleet(["freeze", "--reason", "incident 4711"])).code).toBe(0);
    await setCatalog(app(3));
    await until(async () => (await status()).agents.every((entry) => entry.backends[0]!.state === "not-sent"), "both not sent", 10_000, explain);
    const frozenStatus = await hafleet(["status", "-o", "wide"]);
    expect(frozenStatus.code).toBe(1);
    expect(frozenStatus.stdout).toMatch(/edge-1\s+not-sent\s+be_app\s+.*frozen: incident 4711/);
    expect(frozenStatus.stdout).not.toMatch(/waiting for its rollout wave/);
    const blocked = await hafleet(["wait", "--timeout", "30s"]);
    expect(blocked.code).toBe(1);
    expect(blocked.stderr.split("\n")[0]).toMatch(/^failed: the fleet is frozen since .* \(incident 4711\): nothing is pushed until 'hafleet unfreeze'; 2 not there yet/);
    expect((await hafleet(["unfreeze"])).code).toBe(0);
    const served = await hafleet(["wait", "--contains", "be_app=127.0.4.3:8202", "--timeout", "15s", "--interval", "100ms"]);
    expect(served).toMatchObject({ code: 0, stdout: "done: all 2 matching agent(s) serve be_app=127.0.4.3:8202\n" });
    expect(serving(await real.serversState(), "be_app")).toContain("127.0.4.3:8202");
    // The instance leaves: --lacks is done only once the real HAProxy no longer serves it.
    await setCatalog(app(2));
    const gone = await hafleet(["wait", "--lacks", "be_app=127.0.4.3:8202", "--timeout", "15s", "--interval", "100ms"]);
    expect(gone).toMatchObject({ code: 0, stdout: "done: all 2 matching agent(s) lack be_app=127.0.4.3:8202\n" });
    expect(serving(await real.serversState(), "be_app")).not.toContain("127.0.4.3:8202");
    await allInSync();

    await fleet.runners[1]!.stop();
    await until(async () => (await status()).agents.find((entry) => entry.agent === "edge-2")?.connected === false, "edge-2 disconnected", 10_000, explain);
    const away = await hafleet(["wait", "--timeout", "1s", "--interval", "200ms"]);
    expect(away.code).toBe(1);
    expect(away.stderr).toMatch(/^not done within 1s: 1 not there yet: edge-2 be_app disconnected \d+s ago/);
    const ignoring = await hafleet(["wait", "--ignore-disconnected", "--timeout", "5s"]);
    expect(ignoring).toMatchObject({ code: 0, stdout: expect.stringMatching(/^done: all 1 matching agent\(s\) run the desired state: be_app=[0-9a-f]+ \(1 disconnected agent\(s\) left out/) });

    const refused = await hafleet(["forget", "edge-1"]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/agent edge-1 is connected/);
    const forgotten = await hafleet(["forget", "edge-2"]);
    expect(forgotten).toMatchObject({ code: 0, stdout: "agent edge-2 forgotten\n" });
    expect((await status()).agents.map((entry) => entry.agent)).toEqual(["edge-1"]);
    expect((await hafleet(["status"])).code).toBe(0);
    expect((await hafleet(["forget", "edge-2"])).code).toBe(3);
  }, 60_000);
});

describe("hafleet status tells what is true", () => {
  it("does not say all in sync with discovery down at start, nor ok with a catalog turned invalid", async () => {
    await setup();
    const deadPort = await freePort();
    await start({ discovery: { consul: { address: `http://127.0.0.1:${deadPort}` } } });
    const down = await until(async () => {
      const now = await status();
      return now.backends[0]?.discovery.state === "failing" ? now : undefined;
    }, "discovery failing", 10_000, explain);
    expect(down.backends[0]).toMatchObject({ backend: "be_app", version: "", discovery: { state: "failing", error: expect.stringContaining("never answered") } });
    const shown = await hafleet(["status"]);
    expect(shown.code).toBe(1);
    expect(shown.stdout.split("\n")[0]).toBe("0 agent(s) (this replica's agents), 0 connected, discovery NOT ok for 1 backend(s): no agents");
    expect(shown.stdout).toMatch(/be_app\s+-\s+0\s+0\/0\s+-\s+failing since .*never answered/);
    await fleet.controller!.close();
    fleet.controller = null;

    await start();
    await agent("edge-1", new SimulatedApplier(["be_app"]));
    await allInSync();
    expect((await status()).backends[0]!.discovery.state).toBe("ok");
    expect((await hafleet(["status"])).code).toBe(0);
    await writeFile(catalog, "{ not json");
    const broken = await until(async () => {
      const now = await status();
      return now.backends[0]!.discovery.state === "failing" ? now : undefined;
    }, "discovery failing", 10_000, explain);
    expect(broken.summary).toMatchObject({ inSync: true, discoveryProblems: 1 });
    const brokenShown = await hafleet(["status"]);
    expect(brokenShown.code).toBe(1);
    expect(brokenShown.stdout.split("\n")[0]).toMatch(/discovery NOT ok for 1 backend\(s\)/);
    const metrics = await (await fetch(`${url()}/metrics`)).text();
    expect(metrics).toMatch(/hafleet_backend_discovery\{backend="be_app",state="failing"\} 1/);
    expect(metrics).toMatch(/hafleet_discovery_errors_total\{service="web"\} [1-9]/);
    // The same catalog as before, readable again: ok, though nothing changed.
    await setCatalog(app(2));
    await until(async () => (await status()).backends[0]!.discovery.state === "ok", "discovery ok again", 10_000, explain);
    expect((await hafleet(["status"])).code).toBe(0);
  }, 60_000);

  it("shows two hosts with one id as a problem of that id", async () => {
    await setup();
    await start();
    await agent("twin", new SimulatedApplier(["be_app"]));
    await agent("twin", new SimulatedApplier(["be_app"]));
    const seen = await until(async () => (await status()).agents.find((entry) => entry.agent === "twin" && entry.problem !== null), "the duplicate id seen", 15_000, explain);
    expect(seen.problem).toMatch(/^duplicate id: \d+ connections .* contended for one stream \d+ times in 60 s; give each host its own --id$/);
    const shown = await hafleet(["status"]);
    expect(shown.code).toBe(1);
    expect(shown.stdout.split("\n")[0]).toMatch(/1 agent\(s\) with a problem of their own/);
    expect(shown.stdout).toMatch(/^twin\s+\S+\s+\d\/1\s+\d+s ago\s+test\s+role=edge\s+PROBLEM: duplicate id/m);
  }, 40_000);
});

describe("rollouts an operator can steer", () => {
  it("leaves an agent already rejecting the backend out of the waves, and a cordoned one, saying so in the history", async () => {
    await setup();
    const rollout = { canary: { count: 1 }, waves: [1], bakeMs: 300, waveTimeoutMs: 10_000, autoRollback: true };
    await start({ rollout, mapping: { staged: true } });
    const lacking = await startHaproxy({ sections: templateBackend("be_other", { slots: 1 }) });
    fleet.haproxies.push(lacking);
    await agent("edge-nack", new RuntimeApplier({ sockets: [parseSocketAddress(lacking.socket)], stateDir: join(dir, "edge-nack"), drainMs: 300, logger: silentLogger }));
    await agent("edge-1", new SimulatedApplier(["be_app"]));
    await agent("edge-2", new SimulatedApplier(["be_app"]));
    await until(async () => (await status()).agents.find((entry) => entry.agent === "edge-nack")?.state === "rejected", "edge-nack rejecting", 15_000, explain);

    await setCatalog(app(3));
    const done = await rolloutIn(["completed", "rolled-back", "halted"]);
    expect(done.phase, JSON.stringify(done.history)).toBe("completed");
    expect(done.history[0]!.event).toMatch(/^started \(discovery change of web\): 2 agents in 2 waves of 1, 1; wave 1\/2 applying; left out of the waves, on the baseline until it completes: edge-nack \(already rejecting be_app \(.*backend.*\)\)$/);

    const cordoned = await hafleet(["cordon", "edge-2", "--reason", "disk swap"]);
    expect(cordoned).toMatchObject({ code: 0, stdout: "agent edge-2 cordoned: kept out of rollouts (disk swap)\n" });
    expect(JSON.parse(await readFile(join(dir, "controller", "cordons.json"), "utf8"))).toMatchObject({ agents: { "edge-2": { reason: "disk swap" } } });
    expect((await hafleet(["cordon", "nosuch", "--reason", "x"])).code).toBe(3);
    expect((await hafleet(["cordon", "edge-1"])).code).toBe(2);
    await setCatalog(app(4));
    const next = await rolloutIn(["completed"], done.id);
    expect(next.history[0]!.event).toMatch(/^started \(discovery change of web\): 1 agents in 1 waves of 1; .*left out of the waves, on the baseline until it completes: .*edge-2 \(cordoned: disk swap\)/);
    expect(next.history[0]!.event).toMatch(/edge-nack \(already rejecting be_app/);
    const shown = await hafleet(["status", "--agent", "edge-2"]);
    expect(shown.stdout).toMatch(/cordoned: disk swap/);
    expect((await hafleet(["uncordon", "edge-2"])).code).toBe(0);
    expect(existsSync(join(dir, "controller", "cordons.json"))).toBe(true);
    expect(JSON.parse(await readFile(join(dir, "controller", "cordons.json"), "utf8"))).toEqual({ format: 1, agents: {} });
  }, 60_000);
});
