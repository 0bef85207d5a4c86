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
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { serving, silentLogger } from "../support/apply.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// Two controller replicas, one rollout: the replica holding the Consul lock runs the waves
// among its agents and publishes each move in the lock's key; the other serves what it
// published, so its agents (one on a real HAProxy) never run a staged change before the
// leader's rollout completes. When the leader stops, the other takes the lock and leads.

const TOKEN = "leadership-token-0123456789abcdef";
const KEY = "hafleet/test-rollout";
let dir: string;
let consul: ConsulEmulator;
let api: AgentApi;
const controllers: RunningController[] = [];
const runners: AgentRunner[] = [];
const haproxies: RunningHaproxy[] = [];

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await Promise.all(controllers.splice(0).map((controller) => controller.close()));
  await Promise.all(haproxies.splice(0).map((h) => h.stop()));
  await consul.close();
  await rm(dir, { recursive: true, force: true });
});

async function register(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await api.register(instance(`web-${i}`, "web", `127.0.5.${i + 1}`, 8300 + i));
}

async function replica(name: string): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    http: { listen: "127.0.0.1:0", tokenFile: join(dir, "token") },
    stateDir: join(dir, name),
    discovery: { consul: { address: consul.url } },
    backends: [{ backend: "be_app", service: "web", staged: true }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
    rollout: { canary: { count: 1 }, waves: [1], bakeMs: 300, waveTimeoutMs: 10_000 },
    leadership: { key: KEY, replica: name, url: `http://${name}.test:7901`, lockDelayMs: 50 },
  });
  const controller = await startController(config, silentLogger.child({ replica: name }), { version: "test", rolloutTickMs: 50 });
  controllers.push(controller);
  return controller;
}

/** Connects to `first`, and to the other replicas when it goes away. */
async function agent(id: string, applier: Applier, first: RunningController): Promise<AgentRunner> {
  const ports = [first.port, ...controllers.filter((c) => c !== first).map((c) => c.port)];
  const runner = await startRunner({ id, applier, labels: {}, controllerPorts: ports, stateRoot: dir, resyncMs: 60_000 });
  runners.push(runner);
  return runner;
}

const status = (controller: RunningController): Promise<FleetStatus> => readStatus(controller.httpPort!);

function act(controller: RunningController, action: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${controller.httpPort}/api/v1/rollout/${action}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
}

const explain = (controller: RunningController) => async () => JSON.stringify({ rollout: (await status(controller)).rollout, agents: (await status(controller)).agents.map((a) => [a.agent, a.backends]) });

function rolloutOn(controller: RunningController, test: (rollout: RolloutStatus) => boolean, what: string): Promise<RolloutStatus> {
  return until(async () => {
    const rollout = (await status(controller)).rollout;
    return rollout !== null && test(rollout) ? rollout : undefined;
  }, what, 20_000, explain(controller));
}

const inSync = (controller: RunningController) => until(async () => (await status(controller)).summary.inSync, "every agent in sync", 20_000, explain(controller));

describe("rollout leadership across controller replicas", () => {
  it("one replica leads, the other serves its published rollout, and takes over when it stops", async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-leadership-"));
    await writeFile(join(dir, "token"), `${TOKEN}\n`);
    consul = await startConsulEmulator();
    api = new AgentApi(consul.url);
    await register(2);

    const leader = await replica("ctl-a");
    await until(() => leader.leadership!.leading(), "ctl-a leading", 10_000);
    const follower = await replica("ctl-b");
    await until(() => follower.leadership!.view().leader?.id === "ctl-a", "ctl-b following ctl-a", 10_000);
    expect(follower.leadership!.leading()).toBe(false);
    expect((await status(follower)).controller.rolloutLeader).toBe("ctl-a at http://ctl-a.test:7901");
    expect((await status(leader)).controller.rolloutLeader).toBe("ctl-a at http://ctl-a.test:7901 (this replica)");

    const followerHaproxy = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
    haproxies.push(followerHaproxy);
    await agent("lead-1", new SimulatedApplier(["be_app"]), leader);
    await agent("lead-2", new SimulatedApplier(["be_app"]), leader);
    await agent("follow-1", new RuntimeApplier({ sockets: [parseSocketAddress(followerHaproxy.socket)], stateDir: join(dir, "follow-1"), drainMs: 200, logger: silentLogger }), follower);
    const twoServers = ["127.0.5.1:8300", "127.0.5.2:8301"];
    await until(async () => JSON.stringify(serving(await followerHaproxy.serversState(), "be_app")) === JSON.stringify(twoServers) || undefined, "2 servers on the real HAProxy", 20_000, explain(follower));
    await Promise.all([inSync(leader), inSync(follower)]);

    // A staged change: the leader starts the rollout among its agents and pauses it after the canary.
    await register(3);
    const started = await rolloutOn(leader, (r) => r.phase === "applying" || r.phase === "baking", "the leader's rollout under way");
    expect((await act(leader, "pause")).status).toBe(200);
    const published = await rolloutOn(follower, (r) => r.id === started.id && r.phase === "paused", "the follower serving the published, paused rollout");
    expect(published.backends).toEqual(["be_app"]);
    // The follower's agent stays on the baseline on its real HAProxy, and the follower refuses to move the rollout.
    await until(async () => (await status(leader)).agents.filter((a) => a.backends[0]!.serving === 3 && a.backends[0]!.state === "in-sync").length === 1 || undefined, "the canary running 3 servers", 20_000, explain(leader));
    expect(serving(await followerHaproxy.serversState(), "be_app")).toEqual(twoServers);
    const refused = await act(follower, "resume");
    expect(refused.status).toBe(409);
    expect(await refused.text()).toContain("this replica follows: ask the leading one (ctl-a at http://ctl-a.test:7901)");

    // Resumed on the leader, the rollout completes, and the follower's agent gets the change.
    expect((await act(leader, "resume")).status).toBe(200);
    await rolloutOn(follower, (r) => r.id === started.id && r.phase === "completed", "the follower seeing the rollout completed");
    await until(async () => serving(await followerHaproxy.serversState(), "be_app").length === 3 || undefined, "the follower's HAProxy running 3 servers", 20_000, explain(follower));

    // The leader stops: the lock is released, the other replica leads, and rolls the next change out itself.
    await leader.close();
    controllers.splice(controllers.indexOf(leader), 1);
    await until(() => follower.leadership!.leading(), "ctl-b leading", 10_000);
    expect((await status(follower)).controller.rolloutLeader).toBe("ctl-b at http://ctl-b.test:7901 (this replica)");
    await until(async () => (await status(follower)).summary.connected === 3 || undefined, "the agents on ctl-b", 20_000, explain(follower));
    await api.register(instance("web-3", "web", "127.0.5.4", 8303));
    const next = await rolloutOn(follower, (r) => r.id !== started.id && r.phase !== "completed", "a new rollout led by ctl-b");
    expect(next.backends).toEqual(["be_app"]);
    await rolloutOn(follower, (r) => r.id === next.id && r.phase === "completed", "ctl-b's rollout completed");
    await until(async () => serving(await followerHaproxy.serversState(), "be_app").length === 4 || undefined, "4 servers on the real HAProxy", 20_000, explain(follower));
  }, 90_000);
});
