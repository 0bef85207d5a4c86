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
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { startRunner } from "../support/runner.js";

// Two controller replicas on the same discovery compute the same versions for the same
// content, so an agent can fail over between them and be sent nothing it already runs.

let dir: string;
let catalog: string;
let h: RunningHaproxy;
let runner: AgentRunner;
const ports: number[] = [];
const replicas: Array<RunningController | null> = [null, null];
const pushes: string[] = [];

async function startReplica(index: number): Promise<RunningController> {
  const config = controllerConfigSchema.parse({
    listen: `127.0.0.1:${ports[index]}`,
    http: { listen: null },
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web" }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 1_000 },
  });
  const replica = await startController(config, silentLogger, { version: "test" });
  replica.server.events.on("pushed", (agent, push) => pushes.push(`${index}:${agent}:${push.backends.map((backend) => backend.version).join(",")}`));
  replicas[index] = replica;
  return replica;
}

const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.5.${i + 1}`, port: 8300 + i }));
const connectedTo = (index: number) => until(() => replicas[index]?.server.stream("edge-1") !== undefined, `the agent on replica ${index}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-failover-"));
  catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: app(2) } }));
  ports.push(await freePort(), await freePort());
  h = await startHaproxy({ sections: templateBackend("be_app", { slots: 4 }) });
  await startReplica(0);
  await startReplica(1);
  runner = await startRunner({
    id: "edge-1",
    applier: new RuntimeApplier({ sockets: [parseSocketAddress(h.socket)], stateDir: join(dir, "edge-1"), drainMs: 300, logger: silentLogger }),
    labels: {},
    controllerPorts: ports,
    stateRoot: dir,
    resyncMs: 60_000,
  });
});

afterAll(async () => {
  await runner?.stop();
  await Promise.all(replicas.map((replica) => replica?.close()));
  await h?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("controller failover", () => {
  it("computes the same version on every replica for the same content", async () => {
    await until(() => replicas.every((replica) => replica?.store.all().length === 1), "both replicas read discovery");
    expect(replicas[0]!.store.all()[0]!.version).toBe(replicas[1]!.store.all()[0]!.version);
  });

  it("fails over to the other replica, which sends nothing the agent already runs", async () => {
    await connectedTo(0);
    await until(() => replicas[0]!.status.agent("edge-1")?.state === "in-sync", "the first set acked");
    const before = pushes.length;
    await replicas[0]!.close();
    replicas[0] = null;
    await connectedTo(1);
    expect(pushes.slice(before).filter((push) => push.startsWith("1:"))).toEqual([]);
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.5.1:8300", "127.0.5.2:8301"]);
  });

  it("takes a change from the replica it is on; the replica that comes back sends nothing new", async () => {
    await writeFile(catalog, JSON.stringify({ services: { web: app(3) } }));
    await until(async () => serving(await h.serversState(), "be_app").length === 3, "HAProxy serving the change");
    // Acked: the agent counts it as applied (and says so in its next hello) once the apply is done.
    await until(() => replicas[1]!.status.agent("edge-1")?.state === "in-sync", "the change acked");
    await startReplica(0);
    const before = pushes.length;
    await replicas[1]!.close();
    replicas[1] = null;
    await connectedTo(0);
    await until(() => replicas[0]!.status.agent("edge-1")?.state === "in-sync", "in sync on the replica that came back");
    expect(pushes.slice(before)).toEqual([]);
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.5.1:8300", "127.0.5.2:8301", "127.0.5.3:8302"]);
  });
});
