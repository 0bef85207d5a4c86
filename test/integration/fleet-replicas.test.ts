import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino, type Logger } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { DesiredSet } from "../../agent/run/local-store.js";
import type { SocketApply } from "../../agent/run/applier.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import type { FleetStatus } from "../../controller/status/status-schema.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { silentLogger } from "../support/apply.js";
import { runHafleet } from "../support/cli.js";
import { until } from "../support/helpers.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";
import { readStatus } from "../support/status-api.js";

// Issue 14, "one fleet whatever the number of replicas": replicas on one (emulated) Consul
// share their agents and the freeze under the leadership key. Any replica's status, wait and
// freeze then speak for every replica's agents; a replica whose session ends leaves the view.

const TOKEN = "replicas-token-0123456789abcdef";
const KEY = "hafleet/test-fleet";
let dir: string;
let consul: ConsulEmulator;
let api: AgentApi;
const controllers: RunningController[] = [];
const runners: AgentRunner[] = [];

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await Promise.all(controllers.splice(0).map((controller) => controller.close()));
  await consul.close();
  await rm(dir, { recursive: true, force: true });
});

/** Applies only while open: an agent whose HAProxy lags behind. */
class GatedApplier extends SimulatedApplier {
  private gate: Promise<void> | null = null;
  private open: () => void = () => undefined;

  override close(): void {
    this.open();
  }

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.gate = null;
    this.open();
  }

  override async apply(desired: DesiredSet): Promise<SocketApply[]> {
    if (this.gate !== null) await this.gate;
    return super.apply(desired);
  }
}

async function setup(): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), "hafleet-replicas-"));
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
  consul = await startConsulEmulator();
  api = new AgentApi(consul.url);
  for (let i = 0; i < 2; i++) await api.register(instance(`web-${i}`, "web", `127.0.6.${i + 1}`, 8400 + i));
}

async function replica(name: string, mapping: Record<string, unknown> = {}, rollout?: Record<string, unknown>, logger: Logger = silentLogger): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    http: { listen: "127.0.0.1:0", tokenFile: join(dir, "token") },
    stateDir: join(dir, name),
    discovery: { consul: { address: consul.url } },
    backends: [{ backend: "be_app", service: "web", ...mapping }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
    ...(rollout === undefined ? {} : { rollout }),
    leadership: { key: KEY, replica: name, lockDelayMs: 50 },
  });
  const controller = await startController(config, logger.child({ replica: name }), { version: "test", rolloutTickMs: 50 });
  controllers.push(controller);
  return controller;
}

/** An agent of one replica only: when it goes, the agent does not move to another. */
async function agent(id: string, applier: SimulatedApplier, on: RunningController): Promise<AgentRunner> {
  const runner = await startRunner({ id, applier, labels: { role: "edge" }, controllerPorts: [on.port], stateRoot: dir, resyncMs: 60_000 });
  runners.push(runner);
  return runner;
}

const status = (controller: RunningController): Promise<FleetStatus> => readStatus(controller.httpPort!);
const url = (controller: RunningController): string => `http://127.0.0.1:${controller.httpPort}`;
const hafleet = (controller: RunningController, args: string[]) => runHafleet([...args, "--url", url(controller)], { HAFLEET_TOKEN: TOKEN });
const explain = (controller: RunningController) => async () => {
  const now = await status(controller);
  return `scope: ${now.summary.scope}; frozen: ${JSON.stringify(now.frozen)}; agents: ${JSON.stringify(now.agents.map((entry) => [entry.agent, entry.replica, entry.state, entry.backends.map((b) => [b.desiredVersion, b.appliedVersion, b.state])]))}`;
};
const holders = async (controller: RunningController): Promise<string> =>
  (await status(controller)).agents
    .map((entry) => `${entry.agent}@${entry.replica}:${entry.connected ? "up" : "down"}`)
    .sort()
    .join(" ");
const viewIs = (controller: RunningController, expected: string, what: string) => until(async () => (await holders(controller)) === expected || undefined, what, 20_000, explain(controller));

function post(controller: RunningController, path: string, body?: unknown): Promise<Response> {
  return fetch(`${url(controller)}/api/v1/${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

describe("status across controller replicas", () => {
  it("each replica shows every replica's agents, naming the replica; a replica that stops or whose session ends leaves the view", async () => {
    await setup();
    const errors: string[] = [];
    const a = await replica("ctl-a", {}, undefined, pino({ level: "error" }, { write: (line: string) => void errors.push(line) }));
    const b = await replica("ctl-b");
    const c = await replica("ctl-c");
    // A report no replica wrote, held by a live session: logged naming its key, and ignored.
    const session = (await (await fetch(`${consul.url}/v1/session/create`, { method: "PUT", body: JSON.stringify({ TTL: "30s", Behavior: "delete" }) })).json()) as { ID: string };
    await fetch(`${consul.url}/v1/kv/${KEY}/replicas/bogus?acquire=${session.ID}`, { method: "PUT", body: "{not a report" });
    await until(() => errors.some((line) => line.includes(`${KEY}/replicas/bogus`) && line.includes("a replica's report is unusable: ignored")) || undefined, "the bogus report logged", 10_000);
    await agent("edge-a", new SimulatedApplier(["be_app"]), a);
    await agent("edge-b", new SimulatedApplier(["be_app"]), b);
    await agent("edge-c", new SimulatedApplier(["be_app"]), c);

    const all = "edge-a@ctl-a:up edge-b@ctl-b:up edge-c@ctl-c:up";
    await Promise.all([viewIs(a, all, "ctl-a seeing the 3 replicas' agents"), viewIs(b, all, "ctl-b seeing them"), viewIs(c, all, "ctl-c seeing them")]);
    await until(async () => (await status(a)).summary.inSync || undefined, "all in sync, seen from ctl-a", 20_000, explain(a));
    const seen = await status(a);
    expect(seen.summary).toMatchObject({ agents: 3, connected: 3, scope: "fleet (3 replicas)" });
    expect(seen.backends[0]).toMatchObject({ backend: "be_app", agents: 3, inSync: 3 });
    const wide = await hafleet(a, ["status", "-o", "wide"]);
    expect(wide.stdout).toMatch(/^3 agent\(s\) \(fleet \(3 replicas\)\), 3 connected/);
    expect(wide.stdout).toMatch(/edge-b\s+ctl-b\s+in-sync/);

    // ctl-c's session ends (Consul expired it): its report no longer counts, its agent leaves the others' view;
    // with a new session, ctl-c reports again.
    consul.expireSession(c.leadership!.sessionId()!);
    await viewIs(a, "edge-a@ctl-a:up edge-b@ctl-b:up", "edge-c gone from ctl-a's view with ctl-c's session");
    await viewIs(a, all, "edge-c back once ctl-c has a new session");

    // ctl-b stops: its report goes with it, and its agent (which knows no other replica) is gone from the fleet.
    await b.close();
    controllers.splice(controllers.indexOf(b), 1);
    await viewIs(a, "edge-a@ctl-a:up edge-c@ctl-c:up", "edge-b gone from ctl-a's view once ctl-b stopped");
    expect((await status(a)).summary.scope).toBe("fleet (2 replicas)");
  });

  it("wait on one replica waits for a lagging agent of another; a freeze on one stops pushes from the other within a second", async () => {
    await setup();
    const a = await replica("ctl-a");
    const b = await replica("ctl-b");
    const onA = new SimulatedApplier(["be_app"]);
    const onB = new GatedApplier(["be_app"]);
    await agent("edge-a", onA, a);
    await agent("edge-b", onB, b);
    await viewIs(a, "edge-a@ctl-a:up edge-b@ctl-b:up", "ctl-a seeing edge-b");
    expect((await hafleet(a, ["wait", "--timeout", "15s", "--interval", "200ms"])).code).toBe(0);

    // edge-b lags behind a change: ctl-a's wait waits for it, naming it, and ends once it caught up.
    onB.hold();
    await api.register(instance("web-2", "web", "127.0.6.3", 8402));
    await until(() => onA.serving("be_app").length === 3 || undefined, "edge-a running 3 servers", 15_000, explain(a));
    const lagging = await hafleet(a, ["wait", "--timeout", "2s", "--interval", "200ms"]);
    expect(lagging.code).not.toBe(0);
    expect(lagging.stdout + lagging.stderr).toContain("edge-b");
    const waiting = hafleet(a, ["wait", "--timeout", "15s", "--interval", "200ms"]);
    await sleep(1_000);
    onB.release();
    expect((await waiting).code).toBe(0);
    expect(onB.serving("be_app")).toHaveLength(3);

    // Frozen on ctl-a: ctl-b holds its pushes within a second, and edge-b does not get a change made meanwhile.
    const asked = Date.now();
    expect((await post(a, "freeze", { reason: "incident 14" })).status).toBe(200);
    await until(() => b.server.frozen !== null || undefined, "ctl-b frozen", 1_000);
    expect(Date.now() - asked).toBeLessThan(1_000);
    expect(b.server.frozen!.reason).toBe("incident 14");
    await api.register(instance("web-3", "web", "127.0.6.4", 8403));
    await until(async () => (await status(b)).backends[0]!.servers === 4 || undefined, "ctl-b seeing the 4th server", 15_000, explain(b));
    await sleep(1_500);
    expect(onB.serving("be_app")).toHaveLength(3);
    expect(onA.serving("be_app")).toHaveLength(3);
    expect((await status(b)).frozen).toMatchObject({ reason: "incident 14" });
    const frozenWait = await hafleet(a, ["wait", "--timeout", "2s", "--interval", "200ms"]);
    expect(frozenWait.code).not.toBe(0);

    // Unfrozen on ctl-b: both replicas push again.
    expect((await post(b, "unfreeze")).status).toBe(200);
    await until(() => (onA.serving("be_app").length === 4 && onB.serving("be_app").length === 4) || undefined, "both agents running 4 servers", 15_000, explain(a));
    expect(a.server.frozen).toBeNull();
    expect((await hafleet(a, ["wait", "--timeout", "15s", "--interval", "200ms"])).code).toBe(0);
    // The pipeline recipe on ctl-a answers for edge-b too, from ctl-b's report of what its HAProxy serves.
    const contains = await hafleet(a, ["wait", "--contains", "be_app=127.0.6.4:8403", "--timeout", "15s", "--interval", "200ms"]);
    expect(contains.stdout + contains.stderr).toContain("all 2 matching agent(s) serve be_app=127.0.6.4:8403");
    expect(contains.code).toBe(0);
    await api.deregister("web-0");
    const lacks = await hafleet(a, ["wait", "--lacks", "be_app=127.0.6.1:8400", "--timeout", "15s", "--interval", "200ms"]);
    expect(lacks.stdout + lacks.stderr).toContain("all 2 matching agent(s) lack be_app=127.0.6.1:8400");
    expect(onB.serving("be_app")).toHaveLength(3);
  });

  it("a rollback on the leader takes the other replica's agents back too", async () => {
    await setup();
    const rollout = { canary: { count: 1 }, waves: [1], bakeMs: 300, waveTimeoutMs: 10_000 };
    const a = await replica("ctl-a", { staged: true }, rollout);
    await until(() => a.leadership!.leading() || undefined, "ctl-a leading", 10_000);
    const b = await replica("ctl-b", { staged: true }, rollout);
    await until(() => b.leadership!.view().leader?.id === "ctl-a" || undefined, "ctl-b following ctl-a", 10_000);
    const onA = new SimulatedApplier(["be_app"]);
    const onB = new SimulatedApplier(["be_app"]);
    await agent("edge-a", onA, a);
    await agent("edge-b", onB, b);
    await until(() => (onA.serving("be_app").length === 2 && onB.serving("be_app").length === 2) || undefined, "both agents on 2 servers", 15_000, explain(a));

    await api.register(instance("web-2", "web", "127.0.6.3", 8402));
    await until(async () => (await status(b)).rollout?.phase === "completed" || undefined, "the rollout completed, as ctl-b serves it", 20_000, explain(b));
    await until(() => onB.serving("be_app").length === 3 || undefined, "edge-b on the change", 15_000, explain(b));

    expect((await post(a, "rollout/rollback")).status).toBe(200);
    await until(() => (onA.serving("be_app").length === 2 && onB.serving("be_app").length === 2) || undefined, "both agents back on 2 servers", 15_000, explain(a));
    expect((await status(b)).rollout?.phase).toBe("rolled-back");
    expect((await hafleet(a, ["wait", "--timeout", "15s", "--interval", "200ms"])).code).toBe(0);
  });
});
