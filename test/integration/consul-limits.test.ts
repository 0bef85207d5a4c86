import { createServer, connect, type Server, type Socket } from "node:net";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { ConsulSource, type ConsulSourceOptions } from "../../controller/discovery/consul/consul-source.js";
import type { ServiceSnapshot, SnapshotListener } from "../../controller/discovery/service-snapshot.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "../consul-emulator/consul-emulator.js";
import { until } from "../support/helpers.js";

// A real cluster's load and limits: a proxy cutting idle requests, 429 and 503 with
// Retry-After, the per-client connection limit, compressed and oversized answers, stale reads.

let consul: ConsulEmulator | undefined;
let source: ConsulSource | undefined;
let proxy: { server: Server; sockets: Set<Socket> } | undefined;

afterEach(async () => {
  await source?.close();
  if (proxy !== undefined) {
    for (const socket of proxy.sockets) socket.destroy();
    await new Promise((resolve) => proxy!.server.close(resolve));
  }
  await consul?.close();
  source = consul = proxy = undefined;
});

interface LogLine {
  level: number;
  msg: string;
}

class Recorder implements SnapshotListener {
  readonly snapshots = new Map<string, ServiceSnapshot>();
  readonly errors: Error[] = [];
  snapshot(snapshot: ServiceSnapshot): void {
    this.snapshots.set(snapshot.key, snapshot);
  }
  error(_key: string, error: Error): void {
    this.errors.push(error);
  }
  servers(key: string): string[] {
    return (this.snapshots.get(key)?.servers ?? []).map((server) => `${server.address}:${server.port}`).sort();
  }
}

async function setup(options: Partial<ConsulSourceOptions> = {}, emulatorOptions: ConsulEmulatorOptions = {}) {
  consul = await startConsulEmulator(emulatorOptions);
  const logs: LogLine[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => logs.push(JSON.parse(line) as LogLine) });
  const failed: string[] = [];
  source = new ConsulSource({
    address: consul.url,
    wait: 5_000,
    backoff: { initialMs: 20, maxMs: 200 },
    rateLimit: { burst: 2, refillPerSecond: 20 },
    logger,
    observer: { discoveryAnswered: () => {}, discoveryFailed: (service) => failed.push(service) },
    ...options,
  });
  return { consul, source, api: new AgentApi(consul.url, emulatorOptions.token), logs, failed };
}

/** A TCP proxy that closes a connection idle for `idleMs`, as a load balancer in front of Consul does. */
async function idleCuttingProxy(target: string, idleMs: number): Promise<string> {
  const { port: targetPort } = new URL(target);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(targetPort), "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.setTimeout(idleMs, () => {
      client.destroy();
      upstream.destroy();
    });
    upstream.on("close", () => client.destroy());
    client.on("close", () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy = { server, sockets };
  const address = server.address();
  return `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("Consul behind a proxy that cuts idle requests", () => {
  it("takes a cut blocking query as a normal end: no error, no backoff, and changes still arrive", async () => {
    consul = await startConsulEmulator();
    const api = new AgentApi(consul.url);
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const address = await idleCuttingProxy(consul.url, 1_300);
    const failed: string[] = [];
    source = new ConsulSource({ address, wait: 5_000, backoff: { initialMs: 2_000, maxMs: 2_000 }, observer: { discoveryAnswered: () => {}, discoveryFailed: (service) => failed.push(service) } });
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await until(() => recorder.servers("web").length === 1 || undefined, "the first answer");
    // Two cuts at 1.3 s each, then a change: seen within the same blocking cycle, not after a 2 s backoff.
    await sleep(2_800);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await until(() => recorder.servers("web").length === 2 || undefined, "the change after the cuts", 1_500);
    expect(recorder.errors).toEqual([]);
    expect(failed).toEqual([]);
    expect(source.health()[0]).toMatchObject({ state: "ok", error: null });
    // Every cut query was sent again with the same index: blocking, not polling.
    const blocking = consul.queryLog.filter((query) => query.index !== null);
    expect(blocking.length).toBeGreaterThanOrEqual(3);
  });

  it("has a 60 s blocking wait by default, settable in the config up to Consul's 10 minutes", () => {
    const parse = (consul: Record<string, unknown>) => controllerConfigSchema.safeParse({ discovery: { consul: { address: "http://127.0.0.1:8500", ...consul } }, backends: [{ backend: "b", service: "s" }] });
    const defaults = parse({});
    expect(defaults.success && "consul" in defaults.data.discovery && defaults.data.discovery.consul.wait).toBe(60_000);
    const set = parse({ wait: "45s" });
    expect(set.success && "consul" in set.data.discovery && set.data.discovery.consul.wait).toBe(45_000);
    expect(parse({ wait: "11m" }).success).toBe(false);
  });
});

describe("429 and 503 from Consul's limits", () => {
  it("honours Retry-After on a 503 (back off) and on a 429 (retry soon, when told)", async () => {
    const { consul, api, source } = await setup();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    consul.failNext(1, 503, "rate limit exceeded", { target: "web", retryAfter: "1" });
    const startedAt = Date.now();
    source.watch("web", null, recorder);
    // The backoff alone would have retried after 10-20 ms.
    await sleep(500);
    expect(consul.healthQueryCount("web")).toBe(1);
    await until(() => recorder.servers("web").length === 1 || undefined, "the answer after the 503");
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(950);
    expect(source.health()[0]).toMatchObject({ state: "ok" });

    consul.failNext(1, 429, "rate limit exceeded", { target: "web", retryAfter: "1" });
    const limitedAt = Date.now();
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await until(() => recorder.servers("web").length === 2 || undefined, "the answer after the 429");
    expect(Date.now() - limitedAt).toBeGreaterThanOrEqual(950);
    expect(recorder.errors.map((error) => (error as { status?: number }).status)).toEqual([503, 429]);
  });
});

describe("the per-client connection limit", () => {
  it("keeps within maxConnections, so Consul's limit never refuses a watch, and says so at start", async () => {
    const { consul, api, source, logs } = await setup({ maxConnections: 4, wait: 4_000 }, { maxConnsPerClient: 5 });
    const services = Array.from({ length: 8 }, (_, i) => `svc-${i}`);
    for (const [i, name] of services.entries()) await api.register(instance(`${name}-a`, name, `10.0.${i}.1`, 80));
    const recorder = new Recorder();
    for (const name of services) source.watch(name, null, recorder);
    await until(() => services.every((name) => recorder.servers(name).length === 1) || undefined, "every watch answered");
    // A change to a watch waiting for its turn arrives within a shortened wait (4 s * 4 / 8).
    await api.register(instance("svc-7-b", "svc-7", "10.0.7.2", 80));
    await until(() => recorder.servers("svc-7").length === 2 || undefined, "the change of a watch taking turns", 5_000);
    expect(consul.refusedConnections).toBe(0);
    // The source's 4, and the test's own registration client.
    expect(consul.connectionsFrom()).toBeLessThanOrEqual(5);
    expect(recorder.errors).toEqual([]);
    const said = logs.find((line) => line.msg.includes("Consul watches need"));
    expect(said?.msg).toMatch(/^8 Consul watches need 8 connections, over the budget of 4 \(consul.maxConnections\)/);
  });

  it("the emulator refuses a connection past the limit with Consul's raw 429", async () => {
    consul = await startConsulEmulator({ maxConnsPerClient: 1 });
    const first = connect(Number(new URL(consul.url).port), "127.0.0.1");
    await new Promise((resolve) => first.once("connect", resolve));
    await until(() => consul!.connectionsFrom() === 1 || undefined, "the first connection counted");
    const response = await fetch(`${consul.url}/v1/health/service/web`).catch((error: unknown) => error);
    first.destroy();
    expect(response).toBeInstanceOf(Response);
    expect((response as Response).status).toBe(429);
    expect(await (response as Response).text()).toBe("Your IP is issuing too many concurrent connections, please rate limit your calls\n");
  });
});

describe("answer size", () => {
  it("asks for gzip, applies maxBodyBytes to the plain size, names the service over it, and serves the others", async () => {
    const { consul, api, source, logs } = await setup({ maxBodyBytes: 256 * 1024, configurationRetryMs: 60_000 });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    for (let i = 0; i < 100; i++) await api.register(instance(`big-${i}`, "big", `10.1.0.${i + 1}`, 80, { Meta: { notes: "x".repeat(4_000) } }));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    source.watch("big", null, recorder);
    await until(() => source!.health().every((health) => health.state !== "pending") || undefined, "both answered or failed");
    expect(recorder.servers("web")).toEqual(["10.0.0.1:80"]);
    const big = source.health().find((health) => health.key === "big")!;
    expect(big).toMatchObject({ state: "failing", failure: "configuration" });
    expect(big.error).toMatch(/service 'big' is unusable: body is over the 262144-byte limit \(maxBodyBytes\)/);
    expect(consul.queryLog.every((query) => query.gzip)).toBe(true);
    expect(logs.filter((line) => line.level === 50 && line.msg.includes("over maxBodyBytes"))).toHaveLength(1);
  });
});

describe("consistency", () => {
  it("reads stale by default from the config, and asks the leader when the answering server is too far behind", async () => {
    const parsed = controllerConfigSchema.parse({ discovery: { consul: { address: "http://127.0.0.1:8500" } }, backends: [{ backend: "b", service: "s" }] });
    const consulConfig = "consul" in parsed.discovery ? parsed.discovery.consul : null;
    expect(consulConfig).toMatchObject({ consistency: "stale", maxStaleMs: 2_000 });

    const { consul, api, source } = await setup({ consistency: "stale", maxStaleMs: 1_000 });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    consul.setLastContact(5_000);
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await until(() => recorder.servers("web").length === 1 || undefined, "the first answer");
    expect(consul.queryLog.slice(0, 2).map((query) => query.consistency)).toEqual(["stale", "default"]);

    consul.setLastContact(100);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await until(() => recorder.servers("web").length === 2 || undefined, "the change, read stale");
    expect(consul.queryLog.at(-1)?.consistency).toBe("stale");
  });

  it("sends ?consistent when asked, and the emulator refuses stale and consistent together", async () => {
    const { consul, api, source } = await setup({ consistency: "consistent" });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const recorder = new Recorder();
    source.watch("web", null, recorder);
    await until(() => recorder.servers("web").length === 1 || undefined, "the first answer");
    expect(consul.queryLog[0]?.consistency).toBe("consistent");
    const both = await fetch(`${consul.url}/v1/health/service/web?stale&consistent`);
    expect(both.status).toBe(400);
  });
});
