import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import { RuntimeApplier } from "../../agent/run/applier.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { serving, silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { startRunner } from "../support/runner.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

// The network between an agent and its controller, broken on purpose through a TCP proxy:
// black-holed (bytes held, sockets open) and reset. The agent's HAProxy must keep serving
// its last state throughout, the controller must let go of the dead stream, and both must
// re-sync once the path is back.

let dir: string;
let catalog: string;
let h: RunningHaproxy;
let controller: RunningController;
let proxy: TcpProxy;
let runner: AgentRunner;

const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.6.${i + 1}`, port: 8400 + i }));
const servingNow = async () => serving(await h.serversState(), "be_app");

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
