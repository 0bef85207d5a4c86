import http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { AgentApi, instance, parseGoDuration, startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "./consul-emulator.js";

let emulator: ConsulEmulator | undefined;
afterEach(async () => {
  await emulator?.close();
  emulator = undefined;
});

async function start(options: ConsulEmulatorOptions = {}): Promise<{ consul: ConsulEmulator; api: AgentApi }> {
  emulator = await startConsulEmulator({ random: () => 0.5, ...options });
  return { consul: emulator, api: new AgentApi(emulator.url, options.token) };
}

interface Answer {
  status: number;
  index: string | null;
  headers: Headers;
  text: string;
  ms: number;
}

async function get(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const started = Date.now();
  const response = await fetch(`${emulator!.url}${path}`, { headers });
  const text = await response.text();
  return { status: response.status, index: response.headers.get("x-consul-index"), headers: response.headers, text, ms: Date.now() - started };
}

interface Entry {
  Node: { Node: string; Address: string };
  Service: { ID: string; Service: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string>; Weights: { Passing: number; Warning: number } };
  Checks: { CheckID: string; Status: string; ServiceID: string; Name: string; Output: string }[];
}

function entries(answer: Answer): Entry[] {
  expect(answer.status).toBe(200);
  return JSON.parse(answer.text) as Entry[];
}

function ids(answer: Answer): string[] {
  return entries(answer).map((entry) => entry.Service.ID);
}

describe("the emulated health endpoint", () => {
  it("answers with Node, Service and Checks, the node's serfHealth included, and an index", async () => {
    const { api } = await start({ nodeAddress: "10.9.9.9" });
    await api.register({ ID: "web-1", Name: "web", Port: 8080, Tags: ["v1"], Meta: { "hafleet-weight": "7" }, Check: { TTL: "10m", Status: "passing" } });

    const answer = await get("/v1/health/service/web");

    const [entry] = entries(answer);
    expect(entry?.Node).toMatchObject({ Node: "emulator-node", Address: "10.9.9.9" });
    expect(entry?.Service).toMatchObject({ ID: "web-1", Service: "web", Address: "", Port: 8080, Tags: ["v1"], Meta: { "hafleet-weight": "7" }, Weights: { Passing: 1, Warning: 1 } });
    expect(entry?.Checks.map((check) => [check.CheckID, check.Status, check.ServiceID])).toEqual([
      ["serfHealth", "passing", ""],
      ["service:web-1", "passing", "web-1"],
    ]);
    expect(entry?.Checks[1]?.Name).toBe("Service 'web' check");
    expect(Number(answer.index)).toBeGreaterThan(5);
    expect(answer.headers.get("content-type")).toBe("application/json");
  });

  it("registers checks critical unless told otherwise, and numbers default check IDs when there are several", async () => {
    const { api } = await start();
    await api.register({ ID: "api-1", Name: "api", Port: 1, Checks: [{ TTL: "10m" }, { TTL: "10m", Status: "passing" }, { CheckID: "own", TTL: "10m" }] });

    const [entry] = entries(await get("/v1/health/service/api"));

    expect(entry?.Checks.map((check) => [check.CheckID, check.Status])).toEqual([
      ["own", "critical"],
      ["serfHealth", "passing"],
      ["service:api-1:1", "critical"],
      ["service:api-1:2", "passing"],
    ]);
  });

  it("?passing leaves out an instance with any check not passing: its own, its node's, maintenance", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    await api.register(instance("b", "web", "10.0.0.2", 80));
    await api.register(instance("c", "web", "10.0.0.3", 80));
    expect(ids(await get("/v1/health/service/web?passing"))).toEqual(["a", "b", "c"]);

    await api.warn("service:a");
    await api.maintenance("b", true, "deploy");
    expect(ids(await get("/v1/health/service/web?passing=1"))).toEqual(["c"]);
    expect(ids(await get("/v1/health/service/web?passing=false"))).toEqual(["a", "b", "c"]);
    const maintenance = entries(await get("/v1/health/service/web")).find((entry) => entry.Service.ID === "b")?.Checks.find((check) => check.CheckID === "_service_maintenance:b");
    expect(maintenance).toMatchObject({ Status: "critical", Name: "Service Maintenance Mode" });

    consul.setNodeHealth("critical");
    expect(ids(await get("/v1/health/service/web?passing"))).toEqual([]);
    expect((await get("/v1/health/service/web?passing=maybe")).status).toBe(400);
  });

  it("filters on every tag given, case-insensitively, and finds the service whatever its case", async () => {
    const { api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80, { Tags: ["Primary", "v1"] }));
    await api.register(instance("b", "web", "10.0.0.2", 80, { Tags: ["primary"] }));
    await api.register(instance("c", "web", "10.0.0.3", 80, { Tags: [] }));

    expect(ids(await get("/v1/health/service/web?tag=primary"))).toEqual(["a", "b"]);
    expect(ids(await get("/v1/health/service/web?tag=primary&tag=V1"))).toEqual(["a"]);
    expect(ids(await get("/v1/health/service/WEB"))).toEqual(["a", "b", "c"]);
  });

  it("refuses a foreign datacenter, a bad index and a bad wait as Consul does", async () => {
    await start();
    expect(await get("/v1/health/service/web?dc=dc1")).toMatchObject({ status: 200 });
    expect(await get("/v1/health/service/web?dc=eu-west")).toMatchObject({ status: 500, text: "No path to datacenter" });
    expect(await get("/v1/health/service/web?index=abc")).toMatchObject({ status: 400, text: "Invalid index" });
    expect(await get("/v1/health/service/web?index=1&wait=10")).toMatchObject({ status: 400, text: "Invalid wait time" });
    expect(await get("/v1/health/service/")).toMatchObject({ status: 400, text: "Missing service name" });
    expect(await get("/v1/health/services/web")).toMatchObject({ status: 404 });
  });
});

describe("the emulated index and blocking", () => {
  it("holds a query at the current index and releases it promptly when the service changes", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const first = await get("/v1/health/service/web");

    const blocked = get(`/v1/health/service/web?index=${first.index}&wait=5s`);
    await until(() => consul.heldQueries === 1);
    await sleep(150);
    expect(consul.heldQueries).toBe(1);
    await api.register(instance("b", "web", "10.0.0.2", 80));
    const second = await blocked;

    expect(second.ms).toBeLessThan(1000);
    expect(Number(second.index)).toBeGreaterThan(Number(first.index));
    expect(ids(second)).toEqual(["a", "b"]);
    expect(consul.heldQueries).toBe(0);
  });

  it("returns the same index when the wait expires, after wait plus its jitter (wait/16 at most)", async () => {
    const { api } = await start({ random: () => 1 });
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const first = await get("/v1/health/service/web");

    const second = await get(`/v1/health/service/web?index=${first.index}&wait=320ms`);

    expect(second.index).toBe(first.index);
    expect(second.ms).toBeGreaterThanOrEqual(335);
    expect(second.ms).toBeLessThan(1000);
  });

  it("does not move a service's index for a write that changes nothing, nor for another service's change", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const index = consul.serviceIndex("web");

    await api.pass("service:a");
    await api.register(instance("a", "web", "10.0.0.1", 80));
    await api.register(instance("x", "other", "10.0.0.9", 80));
    expect(consul.serviceIndex("web")).toBe(index);

    await api.pass("service:a", "new output");
    expect(consul.serviceIndex("web")).toBe(consul.index);
  });

  it("answers a service with no instance left with the index of its extinction, and releases its watchers", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const first = await get("/v1/health/service/web");

    const blocked = get(`/v1/health/service/web?index=${first.index}&wait=5s`);
    await until(() => consul.heldQueries === 1);
    await api.deregister("a");
    const second = await blocked;

    expect(ids(second)).toEqual([]);
    expect(Number(second.index)).toBe(consul.index);
    await api.register(instance("x", "other", "10.0.0.9", 80));
    expect((await get("/v1/health/service/web")).index).toBe(second.index);
  });

  it("turns a TTL check critical when it is not renewed in time", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80, { Check: { TTL: "150ms", Status: "passing" } }));
    const registered = consul.index;
    expect(ids(await get("/v1/health/service/web?passing"))).toEqual(["a"]);

    await until(() => consul.index > registered);
    const [entry] = entries(await get("/v1/health/service/web"));
    const check = entry?.Checks.find((candidate) => candidate.CheckID === "service:a");
    expect(check?.Status).toBe("critical");
    expect(check?.Output).toMatch(/^TTL expired/);
  });

  it("answers pass/warn/fail on an unknown check with 404, and on a non-TTL check with 500", async () => {
    const { api } = await start();
    await expect(api.pass("service:nope")).rejects.toThrow(/HTTP 404: Unknown check ID "service:nope"/);
    await expect(api.fail("serfHealth")).rejects.toThrow(/HTTP 500: CheckID "serfHealth" does not have associated TTL/);
    await expect(api.deregister("nope")).rejects.toThrow(/HTTP 404: Unknown service ID "nope"/);
    await expect(api.register({ Name: "", Port: 1 })).rejects.toThrow(/HTTP 400: Missing service name/);
    await expect(api.register({ Name: "web", Port: "80" })).rejects.toThrow(/HTTP 400: Request decode failed/);
  });
});

describe("the emulated ACLs", () => {
  it("refuses an unknown token with 403 'ACL not found'", async () => {
    await start({ token: "root" });
    expect(await get("/v1/health/service/web", { "X-Consul-Token": "wrong" })).toMatchObject({ status: 403, text: "ACL not found" });
  });

  it("refuses a write without permission with 403 'Permission denied'", async () => {
    const { consul } = await start({ token: "root" });
    await expect(new AgentApi(consul.url).register(instance("a", "web", "10.0.0.1", 80))).rejects.toThrow(/HTTP 403: Permission denied/);
  });

  it("filters reads: empty for the anonymous token without telling, flagged for a token that lacks the service", async () => {
    const { api } = await start({ token: "root", readTokens: { "only-api": ["api"] } });
    await api.register(instance("a", "web", "10.0.0.1", 80));

    const anonymous = await get("/v1/health/service/web");
    expect(ids(anonymous)).toEqual([]);
    expect(anonymous.headers.get("x-consul-results-filtered-by-acls")).toBeNull();
    const limited = await get("/v1/health/service/web", { "X-Consul-Token": "only-api" });
    expect(ids(limited)).toEqual([]);
    expect(limited.headers.get("x-consul-results-filtered-by-acls")).toBe("true");
    expect(ids(await get("/v1/health/service/web", { "X-Consul-Token": "root" }))).toEqual(["a"]);
    expect(ids(await get("/v1/health/service/web", { Authorization: "Bearer root" }))).toEqual(["a"]);
  });
});

describe("the emulator's faults", () => {
  it("failNext answers n queries with the error, held ones first, then serves again", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    const first = await get("/v1/health/service/web");
    const blocked = get(`/v1/health/service/web?index=${first.index}&wait=5s`);
    await until(() => consul.heldQueries === 1);

    consul.failNext(2, 500, "rpc error: No cluster leader");

    expect(await blocked).toMatchObject({ status: 500, text: "rpc error: No cluster leader", index: null });
    expect((await get("/v1/health/service/web")).status).toBe(500);
    expect(ids(await get("/v1/health/service/web"))).toEqual(["a"]);
  });

  it("resetIndex sends the index back and releases held queries at once", async () => {
    const { consul, api } = await start();
    await api.register(instance("a", "web", "10.0.0.1", 80));
    await api.register(instance("b", "web", "10.0.0.2", 80));
    const first = await get("/v1/health/service/web");
    const blocked = get(`/v1/health/service/web?index=${first.index}&wait=5s`);
    await until(() => consul.heldQueries === 1);

    consul.resetIndex(2);
    const second = await blocked;

    expect(second.ms).toBeLessThan(1000);
    expect(second.index).toBe("2");
    expect(ids(second)).toEqual(["a", "b"]);
    await api.deregister("b");
    expect((await get("/v1/health/service/web")).index).toBe("3");
  });

  it("respondWith serves a raw body once, with a new index, a given one, or none", async () => {
    const { consul } = await start();
    consul.respondWith('[{"Node": 1}', { service: "web" });
    consul.respondWith("[]", { index: "abc" });
    consul.respondWith("[]", { index: null });

    const raw = await get("/v1/health/service/web");
    expect(raw).toMatchObject({ status: 200, text: '[{"Node": 1}' });
    expect(Number(raw.index)).toBe(consul.index);
    expect((await get("/v1/health/service/web")).index).toBe("abc");
    expect((await get("/v1/health/service/web")).index).toBeNull();
    expect(await get("/v1/health/service/web")).toMatchObject({ status: 200, text: "[]" });
  });

  it("respondWith can cut the connection in the middle of an announced body", async () => {
    const { consul } = await start();
    consul.respondWith(`[${"x".repeat(1000)}]`, { cutAfter: 10 });
    await expect(rawGet(`${consul.url}/v1/health/service/web`)).rejects.toThrow();
  });

  it("delay holds every health query before it is looked at", async () => {
    const { consul } = await start();
    consul.delay(200);
    expect((await get("/v1/health/service/web")).ms).toBeGreaterThanOrEqual(190);
    consul.delay(0);
    expect((await get("/v1/health/service/web")).ms).toBeLessThan(150);
  });

  it("counts health queries per service", async () => {
    const { consul } = await start();
    await get("/v1/health/service/web");
    await get("/v1/health/service/WEB?passing");
    await get("/v1/health/service/api");
    expect(consul.healthQueryCount("web")).toBe(2);
    expect(consul.healthQueryCount()).toBe(3);
    expect(consul.requestCount).toBe(3);
  });
});

describe("parseGoDuration", () => {
  it.each([
    ["5s", 5000],
    ["10m", 600_000],
    ["300ms", 300],
    ["1.5h", 5_400_000],
    ["2h45m", 9_900_000],
    ["1m30s", 90_000],
    ["0", 0],
    ["-1s", -1000],
    ["250us", 0.25],
  ])("reads %s as %d ms", (text, ms) => {
    expect(parseGoDuration(text)).toBeCloseTo(ms, 6);
  });

  it.each(["", "10", "5 s", "s", "5x", "1.2.3s"])("refuses %j", (text) => {
    expect(parseGoDuration(text)).toBeNull();
  });
});

async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(10);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function rawGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.on("end", () => resolve(text));
        response.on("error", reject);
      })
      .on("error", reject);
  });
}
