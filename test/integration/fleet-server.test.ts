import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { until } from "../support/helpers.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import { DesiredStore } from "../../controller/core/desired-store.js";
import { FleetServer } from "../../controller/server/fleet-server.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { controllerMessageSchema, parseMessage, type ControllerMessage } from "../../proto/messages.js";
import { silentLogger } from "../support/apply.js";

const { Client } = loadFleetService();
let server: FleetServer | undefined;
const clients: grpc.Client[] = [];
afterEach(async () => {
  clients.splice(0).forEach((client) => client.close());
  await server?.close(200);
  server = undefined;
});

function servers(...ports: number[]) {
  return parseDesiredState({ backends: [{ name: "b", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
}

const LIMITS_DEFAULT = { maxMessageBytes: 16 * 1024 * 1024, backendsPerAgent: 1_000, pushesPerSecond: 1_000 };

async function start(options: { heartbeatMs?: number; deadAfterMs?: number; maxAgents?: number; limits?: Partial<typeof LIMITS_DEFAULT> } = {}) {
  const store = new DesiredStore([{ backend: nameSchema.parse("be_app"), service: "app", allowEmpty: false, staged: false }], { maxDropShare: 0.5, maxServers: 10_000 });
  store.apply({ key: "app", servers: servers(80, 81), dropped: [] });
  server = new FleetServer((_agent, labels) => store.backendsFor(labels), { heartbeatMs: options.heartbeatMs ?? 1_000, deadAfterMs: options.deadAfterMs ?? 5_000, forgetAfterMs: 60_000, maxAgents: options.maxAgents ?? 100, maxConnectionAgeMs: 600_000, limits: { ...LIMITS_DEFAULT, ...options.limits }, logger: silentLogger });
  const port = await server.listen("127.0.0.1:0");
  return { store, port };
}

/** A raw agent stream: what it receives is queued, validated with the protocol's schema. */
function connect(port: number) {
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  clients.push(client);
  const call = (client as unknown as { Sync(): grpc.ClientDuplexStream<object, unknown> }).Sync();
  const received: ControllerMessage[] = [];
  const waiters: Array<() => void> = [];
  let status: grpc.StatusObject | null = null;
  call.on("data", (raw: unknown) => {
    received.push(parseMessage(controllerMessageSchema, raw, "controller message"));
    waiters.splice(0).forEach((wake) => wake());
  });
  call.on("error", () => undefined);
  call.on("status", (s: grpc.StatusObject) => {
    status = s;
    waiters.splice(0).forEach((wake) => wake());
  });
  const next = async (body: ControllerMessage["body"], timeoutMs = 3_000): Promise<ControllerMessage> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = received.findIndex((message) => message.body === body);
      if (index !== -1) return received.splice(index, 1)[0]!;
      if (Date.now() > deadline || status) throw new Error(`no ${body} message (status ${JSON.stringify(status)})`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  };
  const ended = async (): Promise<grpc.StatusObject> => {
    const deadline = Date.now() + 8_000;
    while (!status && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    if (!status) throw new Error("stream did not end");
    return status;
  };
  return { call, next, ended, received };
}

const hello = (appliedVersions: Record<string, string> = {}) => ({
  hello: { agentId: "agent-1", labels: { region: "eu" }, hafleetVersion: "0.1.0", sockets: [], appliedVersions },
});

describe("the controller's gRPC stream", () => {
  it("answers a hello with a push of the agent's backends, and takes the ack", async () => {
    const { port } = await start();
    const acks: string[] = [];
    server!.events.on("acked", (agent, backend) => acks.push(`${agent}/${backend}`));
    const agent = connect(port);
    agent.call.write(hello());
    const message = await agent.next("push");
    if (message.body !== "push") throw new Error("unreachable");
    const { push } = message;
    expect(push.backends.map((b) => [b.name, b.servers.map((s) => s.port)])).toEqual([["be_app", [80, 81]]]);
    agent.call.write({ response: { nonce: push.nonce, results: [{ backend: "be_app", version: push.backends[0]!.version, error: "", appliedVersion: push.backends[0]!.version }] } });
    await expect.poll(() => acks).toEqual(["agent-1/be_app"]);
  });

  it("sends nothing to an agent that says it already runs the current version", async () => {
    const { store, port } = await start();
    const agent = connect(port);
    agent.call.write(hello({ be_app: store.all()[0]!.version }));
    await agent.next("heartbeat");
    expect(agent.received.filter((m) => m.body === "push")).toEqual([]);
  });

  it("pushes a change once the previous push is answered, and never resends a nacked version", async () => {
    const { store, port } = await start();
    const agent = connect(port);
    agent.call.write(hello());
    const first = await agent.next("push");
    if (first.body !== "push") throw new Error("unreachable");
    // A change while the first push is in flight waits for the response.
    store.apply({ key: "app", servers: servers(80, 81, 82), dropped: [] });
    server!.desiredChanged();
    const version = first.push.backends[0]!.version;
    agent.call.write({ response: { nonce: first.push.nonce, results: [{ backend: "be_app", version, error: "no-free-slot", appliedVersion: "" }] } });
    const second = await agent.next("push");
    if (second.body !== "push") throw new Error("unreachable");
    expect(second.push.backends[0]!.servers.map((s) => s.port)).toEqual([80, 81, 82]);
    agent.call.write({ response: { nonce: second.push.nonce, results: [{ backend: "be_app", version: second.push.backends[0]!.version, error: "no-free-slot", appliedVersion: "" }] } });
    server!.desiredChanged();
    await agent.next("heartbeat");
    await agent.next("heartbeat");
    expect(agent.received.filter((m) => m.body === "push")).toEqual([]);
  });

  it("ends the stream with INVALID_ARGUMENT naming the field of a malformed message", async () => {
    const { port } = await start();
    const agent = connect(port);
    agent.call.write({ hello: { agentId: "bad id;", labels: {}, hafleetVersion: "", sockets: [], appliedVersions: {} } });
    const status = await agent.ended();
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain("hello.agentId");
  });

  it("refuses an agent past agents.max with RESOURCE_EXHAUSTED, and takes a known one back", async () => {
    const { port } = await start({ maxAgents: 1 });
    const first = connect(port);
    first.call.write(hello());
    await first.next("push");
    const second = connect(port);
    second.call.write({ hello: { ...hello().hello, agentId: "agent-2" } });
    const refused = await second.ended();
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.details).toContain("limit of 1 agents (agents.max)");
    // The known agent, reconnecting once its old stream has ended, is not a new one.
    first.call.cancel();
    await until(() => server!.disconnected().some((agent) => agent.hello.agentId === "agent-1"), "agent-1's first stream ended");
    const again = connect(port);
    again.call.write(hello());
    expect((await again.next("push")).body).toBe("push");
  });

  it("without mTLS, refuses a second stream for an agent whose stream is alive: nothing proves it is the same agent", async () => {
    const { port } = await start();
    const real = connect(port);
    real.call.write(hello());
    await real.next("push");
    const impostor = connect(port);
    impostor.call.write(hello());
    const refused = await impostor.ended();
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.details).toMatch(/^agent agent-1 is connected from 127\.0\.0\.1:\d+ and alive; without mTLS nothing proves this stream is the same agent/);
    // The real agent's stream goes on: a change still reaches it.
    real.call.write({ heartbeat: { sentAtMs: Date.now() } });
    expect(server!.disconnected().some((agent) => agent.hello.agentId === "agent-1")).toBe(false);
  });

  it("refuses an agent whose labels select more backends than limits.backendsPerAgent", async () => {
    const { port } = await start({ limits: { backendsPerAgent: 0 } });
    const agent = connect(port);
    agent.call.write(hello());
    const refused = await agent.ended();
    expect([refused.code, refused.details]).toEqual([grpc.status.RESOURCE_EXHAUSTED, "this agent's labels select 1 backends, over the limit of 0 (limits.backendsPerAgent)"]);
  });

  it("ends the stream of an agent whose message is over limits.maxMessageBytes", async () => {
    const { port } = await start({ limits: { maxMessageBytes: 65_536 } });
    const agent = connect(port);
    agent.call.write(hello());
    await agent.next("push");
    agent.call.write({ heartbeat: { sentAtMs: 1 } });
    agent.call.write({ observed: { digest: "x".repeat(70_000), backends: [], appliedVersions: {} } });
    const status = await agent.ended();
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toMatch(/larger than max/);
  });

  it("merges a storm of changes into fewer pushes past limits.pushesPerSecond, the last change last", async () => {
    const { store, port } = await start({ limits: { pushesPerSecond: 0.5 } });
    const agent = connect(port);
    const ack = (message: ControllerMessage) => {
      if (message.body !== "push") throw new Error("unreachable");
      const results = message.push.backends.map((b) => ({ backend: b.name, version: b.version, error: "", appliedVersion: b.version }));
      agent.call.write({ response: { nonce: message.push.nonce, results } });
      return message.push;
    };
    agent.call.write(hello());
    ack(await agent.next("push"));
    // The burst (one) is spent: every change in the next two seconds waits for one push.
    for (let port = 82; port < 90; port++) {
      store.apply({ key: "app", servers: servers(80, 81, port), dropped: [] });
      server!.desiredChanged();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const merged = ack(await agent.next("push", 6_000));
    expect(merged.backends[0]!.servers.map((s) => s.port)).toEqual([80, 81, 89]);
    expect(agent.received.filter((m) => m.body === "push")).toEqual([]);
  });

  it("ends a stream whose first message is not a hello", async () => {
    const { port } = await start();
    const agent = connect(port);
    agent.call.write({ heartbeat: { sentAtMs: 1 } });
    const status = await agent.ended();
    expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it("ends the stream of an agent that falls silent", async () => {
    const { port } = await start({ heartbeatMs: 100, deadAfterMs: 400 });
    const agent = connect(port);
    agent.call.write(hello());
    const status = await agent.ended();
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toMatch(/no message from the agent/);
  });
});
