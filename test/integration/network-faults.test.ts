import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import type { DesiredPush } from "../../proto/messages.js";
import { serving, silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { startRunner } from "../support/runner.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

// The network between an agent and its controller, broken on purpose through a TCP proxy:
// black-holed (bytes held, sockets open), reset, and slowed. The agent's HAProxy must keep
// serving its last state throughout, the controller must let go of a dead stream (and only of
// a dead one: latency alone is no reason), and both must re-sync once the path is back,
// without the controller re-sending what the agent runs.

let dir: string;
let catalog: string;
let h: RunningHaproxy;
let controller: RunningController;
let proxy: TcpProxy;
let runner: AgentRunner;

const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.6.${i + 1}`, port: 8400 + i }));
const servingNow = async () => serving(await h.serversState(), "be_app");
const endpointsOf = (servers: ReadonlyArray<{ address: string; port: number }>) => servers.map((server) => `${server.address}:${server.port}`).sort();

/** What the controller does with edge-1 from now on, as its own events tell. */
function watchEdge(): { pushes: DesiredPush[]; connects: number; disconnects: string[]; stop(): void } {
  const seen = { pushes: [] as DesiredPush[], connects: 0, disconnects: [] as string[], stop: () => {} };
  const pushed = (agent: string, push: DesiredPush) => agent === "edge-1" && seen.pushes.push(push);
  const connected = (agent: string) => agent === "edge-1" && seen.connects++;
  const disconnected = (agent: string, reason: string) => agent === "edge-1" && seen.disconnects.push(reason);
  controller.server.events.on("pushed", pushed);
  controller.server.events.on("connected", connected);
  controller.server.events.on("disconnected", disconnected);
  seen.stop = () => {
    controller.server.events.off("pushed", pushed);
    controller.server.events.off("connected", connected);
    controller.server.events.off("disconnected", disconnected);
  };
  return seen;
}

/** edge-1 acked the controller's current version of be_app and its HAProxy serves exactly `servers`. */
async function landed(servers: ReadonlyArray<{ address: string; port: number }>, what: string): Promise<void> {
  await until(async () => JSON.stringify(await servingNow()) === JSON.stringify(endpointsOf(servers)), `${what}: HAProxy serving it`, 20_000, async () => `serving ${JSON.stringify(await servingNow())}`);
  await until(() => {
    const agent = controller.status.agent("edge-1");
    return agent?.state === "in-sync" && agent.backends[0]?.appliedVersion === controller.store.all()[0]?.version;
  }, `${what}: the controller seeing edge-1 in sync on it`, 20_000);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-netfault-"));
  catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: app(2) } }));
  h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    http: { listen: null },
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web" }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
  });
  controller = await startController(config, silentLogger, { version: "test" });
  proxy = await startTcpProxy(controller.port);
  runner = await startRunner({
    id: "edge-1",
    applier: new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: join(dir, "edge-1"), drainMs: 300, logger: silentLogger }),
    labels: {},
    controllerPorts: [proxy.port],
    stateRoot: dir,
    resyncMs: 60_000,
  });
  await until(() => controller.status.agent("edge-1")?.state === "in-sync", "the agent in sync");
});

afterAll(async () => {
  await runner?.stop();
  await proxy?.close();
  await controller?.close();
  await h?.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  proxy.resume();
  proxy.delay(0);
});

describe("a broken network between agent and controller", () => {
  it("black-holed: the controller lets the stream go, HAProxy keeps serving, and a change made meanwhile arrives once the path is back", async () => {
    proxy.stall();
    await until(() => controller.server.stream("edge-1") === undefined, "the controller letting go of the silent stream");
    expect(controller.status.agent("edge-1")).toMatchObject({ state: "disconnected", connected: false });
    await writeFile(catalog, JSON.stringify({ services: { web: app(3) } }));
    await until(() => controller.store.all()[0]?.servers.length === 3, "the controller reading the change");
    expect(await servingNow()).toEqual(["127.0.6.1:8400", "127.0.6.2:8401"]);

    proxy.resume();
    await until(async () => (await servingNow()).length === 3, "the change applied after the path came back", 15_000);
    await until(() => controller.status.agent("edge-1")?.state === "in-sync", "in sync again");
    expect(controller.server.connected().map((stream) => stream.session?.agentId)).toEqual(["edge-1"]);
  });

  it("reset: the agent reconnects at once and is sent nothing it already runs", async () => {
    const pushes: string[] = [];
    let reconnects = 0;
    controller.server.events.on("pushed", (agent) => pushes.push(agent));
    controller.server.events.on("connected", () => reconnects++);
    proxy.drop();
    await until(() => reconnects > 0 && controller.status.agent("edge-1")?.state === "in-sync", "reconnected and in sync");
    expect(pushes).toEqual([]);
    expect(await servingNow()).toEqual(["127.0.6.1:8400", "127.0.6.2:8401", "127.0.6.3:8402"]);
  });
});

describe("a slow network between agent and controller", () => {
  it("400 ms each way: every change lands exactly in HAProxy, pushed once, on the same stream", async () => {
    const before = controller.status.agent("edge-1")!;
    const edge = watchEdge();
    try {
      proxy.delay(400);
      const steps = [app(4), app(4).slice(1), app(4).slice(1, 3), app(4).slice(0, 3)];
      const versions: string[] = [];
      for (const [index, servers] of steps.entries()) {
        await writeFile(catalog, JSON.stringify({ services: { web: servers } }));
        await landed(servers, `change ${index + 1}`);
        versions.push(controller.store.all()[0]!.version);
      }
      expect(edge.pushes.map((push) => push.backends.map((backend) => backend.version))).toEqual(versions.map((version) => [version]));
      expect(new Set(edge.pushes.map((push) => push.nonce)).size).toBe(steps.length);
      expect({ connects: edge.connects, disconnects: edge.disconnects }).toEqual({ connects: 0, disconnects: [] });
      expect(controller.status.agent("edge-1")).toMatchObject({ connected: true, connectedAt: before.connectedAt, peer: before.peer });
    } finally {
      edge.stop();
    }
  });

  it("latency beyond deadAfterMs: the controller drops the stream, HAProxy keeps serving, and the agent re-syncs without being re-sent what it runs", async () => {
    const running = await servingNow();
    const edge = watchEdge();
    try {
      // 1.5 s each way: the controller hears nothing from the agent for longer than its 1 s.
      proxy.delay(1_500);
      await until(() => edge.disconnects.length > 0, "the controller dropping the slow stream", 15_000);
      expect(edge.disconnects[0]).toMatch(/^no message from the agent for \d+ ms$/);
      expect(controller.status.agent("edge-1")).toMatchObject({ state: "disconnected", connected: false, disconnectReason: edge.disconnects[0] });
      expect(await servingNow()).toEqual(running);

      proxy.delay(0);
      await until(() => controller.server.stream("edge-1") !== undefined && controller.status.agent("edge-1")?.state === "in-sync", "edge-1 back and in sync", 20_000);
      expect(edge.connects).toBeGreaterThan(0);
      expect(edge.pushes).toEqual([]);
      expect(await servingNow()).toEqual(running);

      // The stream it re-synced on carries changes again, each once.
      const next = app(4).slice(1);
      await writeFile(catalog, JSON.stringify({ services: { web: next } }));
      await landed(next, "a change after the re-sync");
      expect(edge.pushes.map((push) => push.backends.map((backend) => backend.version))).toEqual([[controller.store.all()[0]!.version]]);
    } finally {
      edge.stop();
    }
  });
});
