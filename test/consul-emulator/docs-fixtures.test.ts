import { readFile } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { readKeyAnswer } from "../../controller/leadership/consul-lock-api.js";
import { parseAddressChoice, parseHealthAnswer } from "../../controller/discovery/consul/consul-response.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "./consul-emulator.js";

// The emulator against the sample responses of Consul's API docs (fixtures/README.md): the same
// fields with the same JSON types, and hafleet's readers take the docs' own samples.

let consul: ConsulEmulator | undefined;
afterEach(async () => {
  await consul?.close();
  consul = undefined;
});

async function fixture(name: string): Promise<unknown> {
  return JSON.parse(await readFile(new URL(`./fixtures/${name}`, import.meta.url), "utf8")) as unknown;
}

/** Every path of `value` with its JSON type; arrays by all their elements, maps under `anyKeys` by any key. */
function shape(value: unknown, path = "", out = new Map<string, string>(), anyKeys: readonly string[] = []): Map<string, string> {
  const type = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  out.set(path, type);
  if (Array.isArray(value)) for (const element of value) shape(element, `${path}[]`, out, anyKeys);
  else if (type === "object") {
    for (const [key, child] of Object.entries(value as Record<string, unknown>)) shape(child, anyKeys.includes(path) ? `${path}.*` : `${path}.${key}`, out, anyKeys);
  }
  return out;
}

/** The docs' paths missing from the emulator's answer, or of another type there. */
function differences(docs: unknown, emulated: unknown, anyKeys: readonly string[], allowed: Readonly<Record<string, string>> = {}): string[] {
  const expected = shape(docs, "", new Map(), anyKeys);
  const actual = shape(emulated, "", new Map(), anyKeys);
  const problems: string[] = [];
  for (const [path, type] of expected) {
    const found = actual.get(path);
    if (found === type) continue;
    // "null" in the docs (a nil slice) may be a list in the emulator, and the other way round.
    if ((type === "null" && found === "array") || (type === "array" && found === "null")) continue;
    if (allowed[path] !== undefined) continue;
    problems.push(`${path}: docs ${type}, emulator ${found ?? "absent"}`);
  }
  return problems;
}

describe("the emulator against Consul's documented answers", () => {
  it("GET /v1/health/service/:service has the documented fields and types, and hafleet reads the docs' sample", async () => {
    const docs = await fixture("health-service.json");
    const parsed = parseHealthAnswer(JSON.stringify(docs), { service: "redis", healthy: "passing", weights: "consul" });
    expect(parsed.instances).toEqual([{ id: "foobar/redis", address: "10.1.10.12", port: 8000, weight: 10 }]);
    const wan = parseHealthAnswer(JSON.stringify(docs), { service: "redis", healthy: "passing", weights: "meta", address: parseAddressChoice("service:wan") });
    expect(wan.instances).toEqual([{ id: "foobar/redis", address: "198.18.1.2", port: 80 }]);

    consul = await startConsulEmulator();
    const api = new AgentApi(consul.url);
    await api.register(
      instance("redis", "redis", "10.1.10.12", 8000, {
        Tags: ["primary"],
        Meta: { redis_version: "4.0" },
        Weights: { Passing: 10, Warning: 1 },
        TaggedAddresses: { lan: { Address: "10.1.10.12", Port: 8000 }, wan: { Address: "198.18.1.2", Port: 80 } },
        Check: { CheckID: "service:redis", Name: "Service 'redis' check", TTL: "60s", Status: "passing" },
      }),
    );
    const emulated = (await (await fetch(`${consul.url}/v1/health/service/redis`)).json()) as unknown;
    const anyKeys = ["[].Node.TaggedAddresses", "[].Node.Meta", "[].Service.TaggedAddresses", "[].Service.Meta"];
    // The docs' address/port (fixtures/README.md): the emulator answers Address/Port, as Consul does.
    expect(differences(docs, emulated, anyKeys, { "[].Service.TaggedAddresses.*.address": "Address", "[].Service.TaggedAddresses.*.port": "Port" })).toEqual([]);
    expect(shape(emulated, "", new Map(), anyKeys).get("[].Service.TaggedAddresses.*.Address")).toBe("string");
  });

  it("GET /v1/kv/:key has the documented fields, answers with the entry's ModifyIndex, and KV writes do not move a service's index", async () => {
    const docs = await fixture("kv-read.json");
    const read = readKeyAnswer({ status: 200, headers: { "x-consul-index": "200" }, body: JSON.stringify(docs) }, "zip");
    expect(read).toEqual({ index: 200, entry: { session: "adf4238a-882b-9ddc-4a9d-5b6758e4159e", value: "dGVzdA==", modifyIndex: 200 } });

    consul = await startConsulEmulator();
    await new AgentApi(consul.url).register(instance("a", "web", "10.0.0.1", 80));
    const serviceIndex = consul.serviceIndex("web");
    const missingIndex = consul.serviceIndex("nothing-here");
    const session = ((await (await fetch(`${consul.url}/v1/session/create`, { method: "PUT", body: "{}" })).json()) as { ID: string }).ID;
    await fetch(`${consul.url}/v1/kv/zip?acquire=${session}`, { method: "PUT", body: "test" });
    const zip = await fetch(`${consul.url}/v1/kv/zip`);
    const entries = (await zip.json()) as Array<{ ModifyIndex: number }>;
    expect(differences(docs, entries, [])).toEqual([]);
    // Another key written later: zip's index stays its own ModifyIndex (the docs: "corresponds to the X-Consul-Index header").
    await fetch(`${consul.url}/v1/kv/other`, { method: "PUT", body: "x" });
    const again = await fetch(`${consul.url}/v1/kv/zip`);
    expect(again.headers.get("x-consul-index")).toBe(String(entries[0]!.ModifyIndex));
    expect(consul.index).toBeGreaterThan(entries[0]!.ModifyIndex);
    // KV writes and sessions moved the raft index, not the catalog's.
    expect(consul.serviceIndex("web")).toBe(serviceIndex);
    expect(consul.serviceIndex("nothing-here")).toBe(missingIndex);
  });

  it("GET /v1/session/info/:uuid has the documented fields and types", async () => {
    const docs = await fixture("session-info.json");
    consul = await startConsulEmulator();
    const created = (await (await fetch(`${consul.url}/v1/session/create`, { method: "PUT", body: JSON.stringify({ Name: "test-session", TTL: "30s" }) })).json()) as { ID: string };
    const emulated = (await (await fetch(`${consul.url}/v1/session/info/${created.ID}`)).json()) as unknown;
    expect(differences(docs, emulated, [])).toEqual([]);
    expect(emulated).toMatchObject([{ ID: created.ID, Name: "test-session", LockDelay: 15_000_000_000, Behavior: "release", TTL: "30s", NodeChecks: ["serfHealth"] }]);
  });
});
