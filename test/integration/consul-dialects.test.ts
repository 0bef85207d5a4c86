import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { ConsulSource, type ConsulSourceOptions } from "../../controller/discovery/consul/consul-source.js";
import type { ServiceSnapshot, SnapshotListener, WatchScope } from "../../controller/discovery/service-snapshot.js";
import { validityFor } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "../consul-emulator/consul-emulator.js";
import { startTlsFront, type TlsFront } from "../consul-emulator/tls-front.js";
import { silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";

// The dialects of real Consul setups: per mapping a datacenter, namespace, partition, peer,
// sameness group, filter, several tags and a tagged address; credentials as Consul users keep
// them (a client certificate, a server name, a token file re-read on change, Consul's env vars).

let consul: ConsulEmulator | undefined;
let dir: string | undefined;
let front: TlsFront | undefined;
const sources: ConsulSource[] = [];
const controllers: RunningController[] = [];

afterEach(async () => {
  await Promise.all(controllers.splice(0).map((controller) => controller.close()));
  await Promise.all(sources.splice(0).map((source) => source.close()));
  await front?.close();
  await consul?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  consul = front = dir = undefined;
});

class Recorder implements SnapshotListener {
  last: ServiceSnapshot | null = null;
  readonly errors: Error[] = [];
  snapshot(snapshot: ServiceSnapshot): void {
    this.last = snapshot;
  }
  error(_key: string, error: Error): void {
    this.errors.push(error);
  }
  get servers(): string[] {
    return (this.last?.servers ?? []).map((server) => `${server.address}:${server.port}${server.weight === undefined ? "" : `@${server.weight}`}`).sort();
  }
}

async function start(emulator: ConsulEmulatorOptions = {}, options: Partial<ConsulSourceOptions> = {}) {
  consul = await startConsulEmulator(emulator);
  const source = new ConsulSource({ address: consul.url, wait: 5_000, backoff: { initialMs: 20, maxMs: 200 }, logger: silentLogger, ...options });
  sources.push(source);
  return { consul, source, api: new AgentApi(consul.url, emulator.token) };
}

function watching(source: ConsulSource, service: string, tag: string | null, scope: WatchScope = {}): Recorder {
  const recorder = new Recorder();
  source.watch(service, tag, recorder, scope);
  return recorder;
}

const answered = (...recorders: Recorder[]) => until(() => recorders.every((recorder) => recorder.last !== null) || undefined, "every watch answered");

describe("per-mapping Consul dialects", () => {
  it("looks a service up in another datacenter, namespace, partition or peer, each its own watch, with Consul's parameters", async () => {
    const { consul, source, api } = await start({ otherDatacenters: ["dc2"] });
    await api.register(instance("local", "web", "10.0.0.1", 80));
    await api.register(instance("far", "web", "10.2.0.1", 80, { Datacenter: "dc2" }));
    await api.register(instance("team", "web", "10.3.0.1", 80, { Namespace: "team-a", Partition: "p1" }));
    await api.register(instance("imported", "web", "10.4.0.1", 80, { PeerName: "east" }));
    const plain = watching(source, "web", null);
    const far = watching(source, "web", null, { dc: "dc2" });
    const team = watching(source, "web", null, { ns: "team-a", partition: "p1" });
    const peered = watching(source, "web", null, { peer: "east" });
    await answered(plain, far, team, peered);
    expect([plain.servers, far.servers, team.servers, peered.servers]).toEqual([["10.0.0.1:80"], ["10.2.0.1:80"], ["10.3.0.1:80"], ["10.4.0.1:80"]]);
    const params = consul.queryLog.filter((query) => query.index === null).map((query) => query.params);
    expect(params).toContainEqual(expect.objectContaining({ dc: "dc2" }));
    expect(params).toContainEqual(expect.objectContaining({ ns: "team-a", partition: "p1" }));
    expect(params).toContainEqual(expect.objectContaining({ peer: "east" }));
    expect(source.health().map((health) => health.key).sort()).toEqual(["web", "web?dc=dc2", "web?ns=team-a&partition=p1", "web?peer=east"]);
  });

  it("fails over along a sameness group, filters with Consul's expression, asks several tags, and uses a tagged address", async () => {
    const { consul, source, api } = await start({ samenessGroups: { prod: ["", "east"] } });
    await api.register(instance("local", "pay", "10.0.0.1", 80, { Check: { CheckID: "pay-ttl", TTL: "60s", Status: "critical" } }));
    await api.register(instance("east", "pay", "10.4.0.1", 80, { PeerName: "east" }));
    await api.register(instance("v1", "api", "10.5.0.1", 80, { Tags: ["blue", "canary"], Meta: { version: "1" } }));
    await api.register(instance("v2", "api", "10.5.0.2", 80, { Tags: ["blue", "canary"], Meta: { version: "2" } }));
    await api.register(instance("v3", "api", "10.5.0.3", 80, { Tags: ["blue"], Meta: { version: "2" } }));
    await api.register(instance("dual", "db", "10.6.0.1", 5432, { TaggedAddresses: { wan_ipv4: { Address: "198.51.100.6", Port: 15432 } } }));
    const group = watching(source, "pay", null, { samenessGroup: "prod" });
    const filtered = watching(source, "api", null, { filter: 'Service.Meta.version == "2"' });
    const tagged = watching(source, "api", "blue", { tags: ["canary"] });
    const wan = watching(source, "db", null, { address: "service:wan_ipv4" });
    await answered(group, filtered, tagged, wan);
    expect(group.servers).toEqual(["10.4.0.1:80"]);
    expect(filtered.servers).toEqual(["10.5.0.2:80", "10.5.0.3:80"]);
    expect(tagged.servers).toEqual(["10.5.0.1:80", "10.5.0.2:80"]);
    expect(wan.servers).toEqual(["198.51.100.6:15432"]);
    expect(consul.queryLog.find((query) => query.params["filter"] !== undefined)?.params["filter"]).toBe('Service.Meta.version == "2"');
    expect(consul.queryLog.find((query) => query.tags.length === 2)?.tags).toEqual(["blue", "canary"]);
    expect(consul.queryLog.find((query) => query.params["sameness-group"] !== undefined)?.params["sameness-group"]).toBe("prod");
  });

  it("reports a filter Consul refuses as a configuration problem", async () => {
    const { source, api } = await start({}, { configurationRetryMs: 60_000 });
    await api.register(instance("a", "api", "10.5.0.1", 80));
    watching(source, "api", null, { filter: "Service.Meta.version ~= 2" });
    await until(() => source.health()[0]?.state === "failing" || undefined, "the refusal");
    expect(source.health()[0]).toMatchObject({ failure: "configuration" });
    expect(source.health()[0]!.error).toContain("Failed to create boolean expression evaluator");
  });

  it("scales Consul weights above 256 into HAProxy's range, keeping their shares", async () => {
    const { source, api } = await start({}, { weights: "consul" });
    await api.register(instance("a", "web", "10.0.0.1", 80, { Weights: { Passing: 300, Warning: 1 } }));
    await api.register(instance("b", "web", "10.0.0.2", 80, { Weights: { Passing: 1000, Warning: 1 } }));
    const recorder = watching(source, "web", null);
    await until(() => recorder.servers.length === 2 || undefined, "both instances");
    expect(recorder.servers).toEqual(["10.0.0.1:80@77", "10.0.0.2:80@256"]);
  });

  it("refuses a DNS-name Service.Address by name, and takes the service's tagged IP when the mapping says so", async () => {
    const { source, api } = await start();
    await api.register(instance("ext", "legacy", "legacy.example.com", 443, { TaggedAddresses: { lan_ipv4: { Address: "10.9.0.1", Port: 443 } } }));
    const plain = watching(source, "legacy", null);
    const tagged = watching(source, "legacy", null, { address: "service:lan_ipv4" });
    await answered(plain, tagged);
    expect(plain.servers).toEqual([]);
    expect(plain.last?.dropped[0]?.reason).toMatch(/address "legacy.example.com" is a DNS name/);
    expect(tagged.servers).toEqual(["10.9.0.1:443"]);
  });

  it("takes the dialect from the config's mappings: two backends of one service in two datacenters", async () => {
    consul = await startConsulEmulator({ otherDatacenters: ["dc2"] });
    const api = new AgentApi(consul.url);
    await api.register(instance("local", "web", "10.0.0.1", 80));
    await api.register(instance("far", "web", "10.2.0.1", 80, { Datacenter: "dc2" }));
    const config = controllerConfigSchema.parse({
      listen: "127.0.0.1:0",
      http: { listen: null },
      discovery: { consul: { address: consul.url } },
      backends: [
        { backend: "be_web", service: "web" },
        { backend: "be_web_dc2", service: "web", dc: "dc2", tags: ["a", "b"], filter: "Service.Port == 80", address: "service" },
      ],
    });
    expect(config.backends[1]).toMatchObject({ dc: "dc2", tags: ["a", "b"], filter: "Service.Port == 80", address: "service" });
    const running = await startController({ ...config, backends: [config.backends[0]!, { ...config.backends[1]!, tags: [], filter: 'Service.ID == "far"' }] }, silentLogger);
    controllers.push(running);
    await until(() => running.store.all().length === 2 || undefined, "both backends published");
    const servers = new Map(running.store.all().map((state) => [state.name as string, state.servers.map((server) => server.address)]));
    expect(servers.get("be_web")).toEqual(["10.0.0.1"]);
    expect(servers.get("be_web_dc2")).toEqual(["10.2.0.1"]);
    expect(() => controllerConfigSchema.parse({ discovery: { consul: { address: consul!.url } }, backends: [{ backend: "b", service: "s", peer: "east", samenessGroup: "prod" }] })).toThrow(/cannot go with peer/);
  });
});

describe("credentials the way Consul users keep them", () => {
  it("re-reads the token file when it changes: a rotated token needs no restart", async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-token-file-"));
    const tokenFile = join(dir, "consul.token");
    await writeFile(tokenFile, "old-token-0123456789\n");
    consul = await startConsulEmulator({ token: "root", readTokens: { "old-token-0123456789": ["web"], "new-token-0123456789": ["web", "pay"] } });
    const api = new AgentApi(consul.url, "root");
    await api.register(instance("a", "pay", "10.0.0.1", 80));
    const source = new ConsulSource({ address: consul.url, tokenFile, wait: 1_000, configurationRetryMs: 300, logger: silentLogger });
    sources.push(source);
    const recorder = watching(source, "pay", null);
    await until(() => source.health()[0]?.state === "failing" || undefined, "the old token refused");
    await writeFile(tokenFile, "new-token-0123456789\n");
    await until(() => recorder.servers.length === 1 || undefined, "read with the new token", 5_000);
  });

  it("takes Consul's environment variables for what the config leaves out; the config wins", () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, {
        CONSUL_HTTP_ADDR: "consul.internal:8501",
        CONSUL_HTTP_SSL: "true",
        CONSUL_HTTP_TOKEN_FILE: "/etc/consul/token",
        CONSUL_CACERT: "/etc/consul/ca.pem",
        CONSUL_CLIENT_CERT: "/etc/consul/client.pem",
        CONSUL_CLIENT_KEY: "/etc/consul/client-key.pem",
        CONSUL_TLS_SERVER_NAME: "server.dc1.consul",
        CONSUL_NAMESPACE: "team-a",
        CONSUL_PARTITION: "p1",
      });
      const parse = (consul: Record<string, unknown>) => {
        const config = controllerConfigSchema.parse({ discovery: { consul }, backends: [{ backend: "b", service: "s" }] });
        return "consul" in config.discovery ? config.discovery.consul : null;
      };
      expect(parse({})).toMatchObject({
        address: "https://consul.internal:8501",
        tokenFile: "/etc/consul/token",
        caFile: "/etc/consul/ca.pem",
        certFile: "/etc/consul/client.pem",
        keyFile: "/etc/consul/client-key.pem",
        tlsServerName: "server.dc1.consul",
        namespace: "team-a",
        partition: "p1",
      });
      const own = parse({ address: "http://127.0.0.1:8500", token: "inline-token", namespace: "mine" });
      expect(own).toMatchObject({ address: "http://127.0.0.1:8500", token: "inline-token", namespace: "mine" });
      expect(own).not.toHaveProperty("tokenFile");
      process.env["CONSUL_HTTP_TOKEN"] = "env-token";
      expect(parse({})).toMatchObject({ token: "env-token" });
      expect(parse({})).not.toHaveProperty("tokenFile");
    } finally {
      for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
      Object.assign(process.env, saved);
    }
  });

  it("presents a client certificate to a verify_incoming Consul and checks its certificate against tlsServerName", async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-consul-mtls-"));
    const authority = await initFleetCa(dir, 1);
    // Consul's certificate names server.dc1.consul, not the IP we dial.
    const server = await issueCertificate(dir, { kind: "controller", name: "server.dc1.consul", dns: ["server.dc1.consul"], ips: [] }, validityFor(1, Date.now()));
    const client = await issueCertificate(dir, { kind: "agent", id: "hafleet-controller" }, validityFor(1, Date.now()));
    consul = await startConsulEmulator();
    await new AgentApi(consul.url).register(instance("a", "web", "10.0.0.1", 80));
    // verify_incoming: a client certificate of the CA is required.
    front = await startTlsFront(consul.url, { cert: await readFile(server.cert), key: await readFile(server.key), ca: await readFile(authority.cert), requestCert: true, rejectUnauthorized: true });
    const address = front.address;

    const withCert = new ConsulSource({ address, caFile: authority.cert, certFile: client.cert, keyFile: client.key, tlsServerName: "server.dc1.consul", wait: 1_000, backoff: { initialMs: 20, maxMs: 200 }, logger: silentLogger });
    const noName = new ConsulSource({ address, caFile: authority.cert, certFile: client.cert, keyFile: client.key, wait: 1_000, backoff: { initialMs: 20, maxMs: 200 }, logger: silentLogger });
    const noCert = new ConsulSource({ address, caFile: authority.cert, tlsServerName: "server.dc1.consul", wait: 1_000, backoff: { initialMs: 20, maxMs: 200 }, logger: silentLogger });
    sources.push(withCert, noName, noCert);
    const good = watching(withCert, "web", null);
    const wrongName = watching(noName, "web", null);
    const refused = watching(noCert, "web", null);
    await until(() => (good.servers.length === 1 && wrongName.errors.length > 0 && refused.errors.length > 0) || undefined, "one read, two refusals");
    expect(wrongName.errors[0]!.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID|altname/i);
    expect(() => new ConsulSource({ address, certFile: client.cert })).toThrow(/needs both certFile and keyFile/);
  });
});
