import http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { accessorOf, AgentApi, instance, parseGoDuration, startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "./consul-emulator.js";

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

// ---- Sessions and KV ----

async function put(path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return request("PUT", path, body, headers);
}

async function request(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  const started = Date.now();
  const response = await fetch(`${emulator!.url}${path}`, { method, headers, body: body ?? null });
  const text = await response.text();
  return { status: response.status, index: response.headers.get("x-consul-index"), headers: response.headers, text, ms: Date.now() - started };
}

async function createSession(fields: Record<string, unknown> = {}): Promise<string> {
  const answer = await put("/v1/session/create", JSON.stringify(fields));
  expect(answer.status, answer.text).toBe(200);
  return (JSON.parse(answer.text) as { ID: string }).ID;
}

interface KvEntry {
  LockIndex: number;
  Key: string;
  Flags: number;
  Value: string | null;
  Session?: string;
  CreateIndex: number;
  ModifyIndex: number;
}

async function readKey(key: string): Promise<KvEntry | null> {
  const answer = await get(`/v1/kv/${key}`);
  if (answer.status === 404) return null;
  expect(answer.status, answer.text).toBe(200);
  return (JSON.parse(answer.text) as KvEntry[])[0]!;
}

function decoded(entry: KvEntry | null): string | null {
  return entry?.Value == null ? null : Buffer.from(entry.Value, "base64").toString("utf8");
}

describe("the emulated sessions", () => {
  it("creates a session with Consul's defaults, reads it back, and answers [] for an unknown one", async () => {
    await start();
    const id = await createSession({ Name: "hafleet-controller ctl-1", TTL: "15s" });

    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const info = await get(`/v1/session/info/${id}`);
    expect(JSON.parse(info.text)).toEqual([
      { ID: id, Name: "hafleet-controller ctl-1", Node: "emulator-node", LockDelay: 15_000_000_000, Behavior: "release", TTL: "15s", NodeChecks: ["serfHealth"], ServiceChecks: null, CreateIndex: Number(info.index), ModifyIndex: Number(info.index) },
    ]);
    expect(await get("/v1/session/info/2f5a3f1e-0000-0000-0000-000000000000")).toMatchObject({ status: 200, text: "[]" });
  });

  it("checks TTL, Behavior, LockDelay and checks as Consul does", async () => {
    await start();
    expect(await put("/v1/session/create", '{"TTL": "5s"}')).toMatchObject({ status: 500, text: "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]" });
    expect(await put("/v1/session/create", '{"TTL": "25h"}')).toMatchObject({ status: 500, text: "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]" });
    expect(await put("/v1/session/create", '{"TTL": "soon"}')).toMatchObject({ status: 500, text: 'Session TTL \'soon\' invalid: time: invalid duration "soon"' });
    expect(await put("/v1/session/create", '{"Behavior": "keep"}')).toMatchObject({ status: 500, text: "Invalid Behavior setting 'keep'" });
    expect(await put("/v1/session/create", '{"NodeChecks": ["nope"]}')).toMatchObject({ status: 500, text: "Missing check 'nope' registration" });
    expect(await put("/v1/session/create", '{"Node": "elsewhere"}')).toMatchObject({ status: 500, text: "Missing node registration" });
    expect((await put("/v1/session/create", "{not json")).status).toBe(400);

    // A number below 1000 is taken as seconds, as Consul's FixupLockDelay does; "0s" means none.
    const lockDelays = [];
    for (const LockDelay of [5, "250ms", "0s", 2_000_000_000]) {
      const id = await createSession({ LockDelay, TTL: "86400s" });
      lockDelays.push((JSON.parse((await get(`/v1/session/info/${id}`)).text) as { LockDelay: number }[])[0]?.LockDelay);
    }
    expect(lockDelays).toEqual([5_000_000_000, 250_000_000, 0, 2_000_000_000]);
  });

  it("reads a create's body only when its length is announced, as Consul does", async () => {
    await start();
    // A chunked body with a TTL Consul would refuse: ignored, the session gets the defaults.
    const text = await chunkedPut(`${emulator!.url}/v1/session/create`, '{"Name": "ignored", "TTL": "1s"}');
    const id = (JSON.parse(text) as { ID: string }).ID;
    expect(JSON.parse((await get(`/v1/session/info/${id}`)).text)).toMatchObject([{ Name: "", TTL: "" }]);
  });

  it("renew answers the session and keeps it alive past its TTL; destroy answers true, then renew 404", async () => {
    const { consul } = await start({ sessionTtlMinMs: 100 });
    const id = await createSession({ TTL: "600ms" });

    // Ten renewals 100 ms apart outlive the TTL: each one restarted it.
    for (let round = 0; round < 10; round += 1) {
      const renewed = await put(`/v1/session/renew/${id}`);
      expect(renewed.status).toBe(200);
      expect(JSON.parse(renewed.text)).toMatchObject([{ ID: id, TTL: "600ms" }]);
      await sleep(100);
    }
    expect(consul.sessionIds()).toEqual([id]);

    expect(await put(`/v1/session/destroy/${id}`)).toMatchObject({ status: 200, text: "true" });
    expect(await put(`/v1/session/destroy/${id}`)).toMatchObject({ status: 200, text: "true" });
    expect(await put(`/v1/session/renew/${id}`)).toMatchObject({ status: 404, text: `Session id '${id}' not found` });
    expect(await put("/v1/session/renew/")).toMatchObject({ status: 400, text: "Missing session" });
    expect((await get(`/v1/session/renew/${id}`)).status).toBe(405);
  });

  it("expires a session not renewed within its TTL, releasing its lock and starting the key's lock-delay", async () => {
    const { consul } = await start({ sessionTtlMinMs: 100 });
    const id = await createSession({ TTL: "200ms", LockDelay: "60s" });
    expect(await put(`/v1/kv/leader?acquire=${id}`, "me")).toMatchObject({ status: 200, text: "true" });
    const held = await readKey("leader");

    await until(() => consul.lockHolder("leader") === null);

    const released = await readKey("leader");
    expect(released).toMatchObject({ Key: "leader", LockIndex: 1, CreateIndex: held!.CreateIndex });
    expect(released?.Session).toBeUndefined();
    expect(released!.ModifyIndex).toBeGreaterThan(held!.ModifyIndex);
    expect(decoded(released)).toBe("me");
    expect(await get(`/v1/session/info/${id}`)).toMatchObject({ text: "[]" });
    expect((await put(`/v1/session/renew/${id}`)).status).toBe(404);
    const other = await createSession({ TTL: "10s" });
    expect(await put(`/v1/kv/leader?acquire=${other}`, "other")).toMatchObject({ status: 200, text: "false" });
  });

  it("expireSession invalidates at once; Behavior delete deletes the keys the session held", async () => {
    const { consul } = await start();
    const releasing = await createSession({ TTL: "10s" });
    const deleting = await createSession({ TTL: "10s", Behavior: "delete" });
    await put(`/v1/kv/a?acquire=${releasing}`, "a");
    await put(`/v1/kv/b?acquire=${deleting}`, "b");

    consul.expireSession(releasing);
    consul.expireSession(deleting);

    expect(await readKey("a")).toMatchObject({ Key: "a", LockIndex: 1 });
    expect((await readKey("a"))?.Session).toBeUndefined();
    expect(await readKey("b")).toBeNull();
    expect(consul.sessionIds()).toEqual([]);
    expect(() => consul.expireSession(releasing)).toThrow(/no session/);
  });

  it("invalidates the sessions bound to serfHealth when it goes critical, and refuses new ones meanwhile", async () => {
    const { consul } = await start();
    const bound = await createSession({ TTL: "10s" });
    const free = await createSession({ TTL: "10s", NodeChecks: [] });
    await put(`/v1/kv/leader?acquire=${bound}`, "x");

    consul.setNodeHealth("critical");

    expect(consul.sessionIds()).toEqual([free]);
    expect(consul.lockHolder("leader")).toBeNull();
    expect(await put("/v1/session/create", "{}")).toMatchObject({ status: 500, text: "Check 'serfHealth' is in critical state" });
  });

  it("needs the management token for sessions and keys; session info is filtered instead", async () => {
    const { consul } = await start({ token: "root", readTokens: { "only-web": ["web"] } });
    // Consul's acl.PermissionDeniedError: the token's AccessorID (the anonymous token's is fixed), the permission, the resource.
    const anonymous = "00000000-0000-0000-0000-000000000002";
    expect(await put("/v1/session/create", "{}")).toMatchObject({ status: 403, text: `Permission denied: token with AccessorID '${anonymous}' lacks permission 'session:write' on "${consul.nodeName}"` });
    expect(await put("/v1/session/create", "{}", { "X-Consul-Token": "only-web" })).toMatchObject({ status: 403, text: `Permission denied: token with AccessorID '${accessorOf("only-web")}' lacks permission 'session:write' on "${consul.nodeName}"` });
    expect(await put("/v1/session/create", "{}", { "X-Consul-Token": "wrong" })).toMatchObject({ status: 403, text: "ACL not found" });
    const created = await put("/v1/session/create", "{}", { "X-Consul-Token": "root" });
    const id = (JSON.parse(created.text) as { ID: string }).ID;
    expect(await get(`/v1/session/info/${id}`)).toMatchObject({ status: 200, text: "[]" });
    expect(JSON.parse((await get(`/v1/session/info/${id}`, { "X-Consul-Token": "root" })).text)).toMatchObject([{ ID: id }]);
    expect(await get("/v1/kv/leader")).toMatchObject({ status: 403, text: `Permission denied: token with AccessorID '${anonymous}' lacks permission 'key:read' on "leader"` });
    expect(await put("/v1/kv/leader", "x", { "X-Consul-Token": "only-web" })).toMatchObject({ status: 403, text: `Permission denied: token with AccessorID '${accessorOf("only-web")}' lacks permission 'key:write' on "leader"` });
    expect(await put("/v1/kv/leader", "x", { "X-Consul-Token": "root" })).toMatchObject({ status: 200, text: "true" });
  });
});

describe("the emulated KV store", () => {
  it("stores the raw body and answers Consul's entry: base64 Value (null when empty), flags, indexes; 404 when absent", async () => {
    const { consul } = await start();
    const absent = await get("/v1/kv/hafleet/leader");
    expect(absent).toMatchObject({ status: 404, text: "" });
    expect(Number(absent.index)).toBeGreaterThanOrEqual(1);

    expect(await put("/v1/kv/hafleet/leader?flags=42", '{"a": "é"}')).toMatchObject({ status: 200, text: "true" });
    const answer = await get("/v1/kv/hafleet/leader");

    expect(answer.headers.get("content-type")).toBe("application/json");
    expect(answer.index).toBe(String(consul.index));
    expect(JSON.parse(answer.text)).toEqual([{ LockIndex: 0, Key: "hafleet/leader", Flags: 42, Value: Buffer.from('{"a": "é"}').toString("base64"), CreateIndex: consul.index, ModifyIndex: consul.index }]);
    expect((await get("/v1/kv/hafleet/leader?raw")).text).toBe('{"a": "é"}');
    await put("/v1/kv/hafleet/leader");
    expect((await readKey("hafleet/leader"))?.Value).toBeNull();

    expect(await get("/v1/kv/")).toMatchObject({ status: 400, text: "Missing key name" });
    const tree = await get("/v1/kv/hafleet/?recurse");
    expect(tree.status).toBe(200);
    expect(JSON.parse(tree.text).map((entry: { Key: string }) => entry.Key)).toEqual(["hafleet/leader"]);
    expect((await get("/v1/kv/nothing/?recurse")).status).toBe(404);
    expect((await get("/v1/kv/hafleet?keys")).status).toBe(400);
    expect((await put("/v1/kv/big", "x".repeat(512 * 1024 + 1))).status).toBe(413);
  });

  it("acquire: true on a free key, false while another session holds it; the holder updates the value; release frees it", async () => {
    await start();
    const one = await createSession({ TTL: "10s" });
    const two = await createSession({ TTL: "10s" });

    expect((await put(`/v1/kv/leader?acquire=${one}`, "one")).text).toBe("true");
    expect(await readKey("leader")).toMatchObject({ LockIndex: 1, Session: one });
    expect((await put(`/v1/kv/leader?acquire=${two}`, "two")).text).toBe("false");
    expect((await put(`/v1/kv/leader?acquire=${one}`, "one again")).text).toBe("true");
    const updated = await readKey("leader");
    expect(updated).toMatchObject({ LockIndex: 1, Session: one });
    expect(decoded(updated)).toBe("one again");
    // A plain write goes through a held lock, and keeps it held.
    expect((await put("/v1/kv/leader", "plain")).text).toBe("true");
    expect(await readKey("leader")).toMatchObject({ Session: one });

    expect((await put(`/v1/kv/leader?release=${two}`, "x")).text).toBe("false");
    expect((await put(`/v1/kv/leader?release=${one}`, "released")).text).toBe("true");
    const released = await readKey("leader");
    expect(released?.Session).toBeUndefined();
    expect(decoded(released)).toBe("released");
    // Released by hand, not invalidated: no lock-delay.
    expect((await put(`/v1/kv/leader?acquire=${two}`, "two")).text).toBe("true");
    expect(await readKey("leader")).toMatchObject({ LockIndex: 2, Session: two });

    expect(await put("/v1/kv/leader?acquire=2f5a3f1e-0000-0000-0000-000000000000", "x")).toMatchObject({ status: 500, text: 'invalid session "2f5a3f1e-0000-0000-0000-000000000000"' });
    expect(await put("/v1/kv/leader?acquire=", "x")).toMatchObject({ status: 500, text: "missing session" });
    expect(await put(`/v1/kv/leader?acquire=${two}&cas=1`, "x")).toMatchObject({ status: 400, text: `Conflicting flags: acquire=${two}&cas=1\n` });
  });

  it("refuses an acquire during the lock-delay of a destroyed session, grants it after; LockDelay 0s has none", async () => {
    const { consul } = await start();
    const holder = await createSession({ TTL: "10s", LockDelay: "400ms" });
    const waiting = await createSession({ TTL: "10s" });
    await put(`/v1/kv/leader?acquire=${holder}`, "x");

    await put(`/v1/session/destroy/${holder}`);

    expect(consul.lockHolder("leader")).toBeNull();
    expect((await put(`/v1/kv/leader?acquire=${waiting}`, "y")).text).toBe("false");
    let granted = false;
    for (let attempt = 0; attempt < 60 && !granted; attempt += 1) {
      await sleep(50);
      granted = (await put(`/v1/kv/leader?acquire=${waiting}`, "y")).text === "true";
    }
    expect(granted).toBe(true);

    const quick = await createSession({ TTL: "10s", LockDelay: "0s" });
    await put(`/v1/kv/other?acquire=${quick}`, "x");
    consul.expireSession(quick);
    expect((await put(`/v1/kv/other?acquire=${waiting}`, "y")).text).toBe("true");
  });

  it("cas: 0 creates only when absent, an index writes only when it matches; DELETE with and without cas", async () => {
    await start();
    expect((await put("/v1/kv/k?cas=0", "first")).text).toBe("true");
    expect((await put("/v1/kv/k?cas=0", "second")).text).toBe("false");
    const index = (await readKey("k"))!.ModifyIndex;
    expect((await put(`/v1/kv/k?cas=${index + 1}`, "stale")).text).toBe("false");
    expect((await put(`/v1/kv/k?cas=${index}`, "third")).text).toBe("true");
    expect(decoded(await readKey("k"))).toBe("third");
    expect(await put("/v1/kv/k?cas=x", "x")).toMatchObject({ status: 500, text: 'strconv.ParseUint: parsing "x": invalid syntax' });

    expect((await request("DELETE", `/v1/kv/k?cas=${index}`)).text).toBe("false");
    expect((await request("DELETE", "/v1/kv/k")).text).toBe("true");
    expect(await readKey("k")).toBeNull();
    expect((await request("DELETE", "/v1/kv/k?cas=5")).text).toBe("true");
  });

  it("holds a read at the current index until that key changes: not for another key, and its deletion counts", async () => {
    const { consul } = await start();
    await put("/v1/kv/leader", "v1");
    const first = await get("/v1/kv/leader");

    // A wait longer than the test's timeout: only the change can answer it.
    const blocked = get(`/v1/kv/leader?index=${first.index}&wait=60s`);
    await until(() => consul.heldQueries === 1);
    await put("/v1/kv/elsewhere", "x");
    await sleep(150);
    expect(consul.heldQueries).toBe(1);
    // Consul answers a key with its own ModifyIndex (kvs_endpoint.go), not the table's: another key's write moves nothing.
    const fresh = await get(`/v1/kv/leader?index=${Number(first.index) - 1}&wait=5s`);
    expect(fresh.index).toBe(first.index);
    expect(Number(first.index)).toBe((JSON.parse(first.text) as Array<{ ModifyIndex: number }>)[0]!.ModifyIndex);

    await put("/v1/kv/leader", "v2");
    const second = await blocked;
    expect(Number(second.index)).toBe(consul.index);
    expect(decoded((JSON.parse(second.text) as KvEntry[])[0]!)).toBe("v2");

    const gone = get(`/v1/kv/leader?index=${second.index}&wait=60s`);
    await until(() => consul.heldQueries === 1);
    await request("DELETE", "/v1/kv/leader");
    expect(await gone).toMatchObject({ status: 404, index: String(consul.index) });
  });

  it("answers a held read with the same index when the wait expires, and a read on an absent key when it appears", async () => {
    const { consul } = await start({ random: () => 1 });
    await put("/v1/kv/leader", "v1");
    const first = await get("/v1/kv/leader");

    const expired = await get(`/v1/kv/leader?index=${first.index}&wait=320ms`);
    expect(expired).toMatchObject({ status: 200, index: first.index });

    const absent = await get("/v1/kv/later");
    const appearing = get(`/v1/kv/later?index=${absent.index}&wait=60s`);
    await until(() => consul.heldQueries === 1);
    await put("/v1/kv/later", "here");
    expect(decoded((JSON.parse((await appearing).text) as KvEntry[])[0]!)).toBe("here");
  });

  it("does not move the index for a write that changes nothing", async () => {
    const { consul } = await start();
    const id = await createSession({ TTL: "10s" });
    await put(`/v1/kv/leader?acquire=${id}`, "same");
    const index = consul.index;
    await put(`/v1/kv/leader?acquire=${id}`, "same");
    await put("/v1/kv/leader", "same");
    expect(consul.index).toBe(index);
  });
});

describe("the emulator's faults on sessions and keys", () => {
  it("failNext scoped to a session fails its renewals alone, which then renew nothing", async () => {
    const { consul } = await start({ sessionTtlMinMs: 100 });
    const failing = await createSession({ TTL: "300ms" });
    const healthy = await createSession({ TTL: "10s" });

    consul.failNext(100, 500, "rpc error: No cluster leader", { endpoint: "session", target: failing });

    expect(await put(`/v1/session/renew/${failing}`)).toMatchObject({ status: 500, text: "rpc error: No cluster leader" });
    expect((await put(`/v1/session/renew/${healthy}`)).status).toBe(200);
    for (let round = 0; round < 20 && consul.sessionIds().includes(failing); round += 1) {
      await put(`/v1/session/renew/${failing}`);
      await sleep(50);
    }
    expect(consul.sessionIds()).toEqual([healthy]);
    consul.clearFaults();
    expect((await put(`/v1/session/renew/${failing}`)).status).toBe(404);
  });

  it("failNext scoped to a key's reads fails a held read at once and leaves its writes alone", async () => {
    const { consul } = await start();
    await put("/v1/kv/leader", "v1");
    const first = await get("/v1/kv/leader");
    const blocked = get(`/v1/kv/leader?index=${first.index}&wait=5s`);
    await until(() => consul.heldQueries === 1);

    consul.failNext(2, 503, "down", { endpoint: "kv", target: "leader", method: "GET" });

    expect(await blocked).toMatchObject({ status: 503, text: "down" });
    expect((await put("/v1/kv/leader", "v2")).text).toBe("true");
    expect((await get("/v1/kv/leader")).status).toBe(503);
    expect(decoded(await readKey("leader"))).toBe("v2");
  });

  it("delay scoped to a session holds its requests alone", async () => {
    const { consul } = await start();
    const slow = await createSession({ TTL: "10s" });
    const quick = await createSession({ TTL: "10s" });
    consul.delay(3000, { endpoint: "session", target: slow });

    let slowAnswered = false;
    const slowRenew = put(`/v1/session/renew/${slow}`).then((answer) => {
      slowAnswered = true;
      return answer;
    });
    expect((await put(`/v1/session/renew/${quick}`)).status).toBe(200);
    expect(slowAnswered).toBe(false);
    expect((await slowRenew).status).toBe(200);
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

/** A PUT whose body goes chunked, with no Content-Length. */
function chunkedPut(url: string, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(url, { method: "PUT", headers: { "transfer-encoding": "chunked" } }, (response) => {
      let text = "";
      response.on("data", (chunk: Buffer) => (text += chunk.toString()));
      response.on("end", () => resolve(text));
      response.on("error", reject);
    });
    outgoing.on("error", reject);
    outgoing.end(body);
  });
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
