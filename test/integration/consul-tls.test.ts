import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { ServiceSnapshot } from "../../controller/discovery/service-snapshot.js";
import { ConsulSource } from "../../controller/discovery/consul/consul-source.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { validityFor } from "../../controller/tls/cert-profiles.js";
import { AgentApi, instance, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { startTlsFront, type TlsFront } from "../consul-emulator/tls-front.js";
import { silentLogger } from "../support/apply.js";
import { until } from "../support/helpers.js";

// Consul over TLS (its https port, 8501 by default): the emulator behind a TLS front with a
// certificate from a test CA. The watch reads through it when told the CA, and is refused by
// the TLS check when not, rather than reading without one.

let dir: string;
let consul: ConsulEmulator;
let front: TlsFront;
const sources: ConsulSource[] = [];

afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.close()));
  await front.close();
  await consul.close();
  await rm(dir, { recursive: true, force: true });
});

/** The emulator behind TLS on 127.0.0.1; returns its https:// address and the CA file. */
async function consulOverTls(): Promise<{ address: string; ca: string }> {
  dir = await mkdtemp(join(tmpdir(), "hafleet-consul-tls-"));
  const authority = await initFleetCa(dir, 1);
  const files = await issueCertificate(dir, { kind: "controller", name: "consul", dns: [], ips: ["127.0.0.1"] }, validityFor(1, Date.now()));
  consul = await startConsulEmulator();
  front = await startTlsFront(consul.url, { cert: await readFile(files.cert), key: await readFile(files.key) });
  await new AgentApi(consul.url).register(instance("a", "web", "10.0.0.1", 80));
  return { address: front.address, ca: authority.cert };
}

function watch(options: ConstructorParameters<typeof ConsulSource>[0]) {
  const source = new ConsulSource({ wait: 5_000, backoff: { initialMs: 20, maxMs: 200 }, logger: silentLogger, ...options });
  sources.push(source);
  const heard: { snapshots: ServiceSnapshot[]; errors: Error[] } = { snapshots: [], errors: [] };
  source.watch("web", null, { snapshot: (snapshot) => heard.snapshots.push(snapshot), error: (_key, error) => heard.errors.push(error) });
  return heard;
}

describe("Consul over https", () => {
  it("reads through TLS, trusting the CA file given", async () => {
    const { address, ca } = await consulOverTls();
    const heard = watch({ address, caFile: ca });
    const snapshot = await until(() => heard.snapshots[0], "a snapshot over TLS", 10_000);
    expect(snapshot.servers.map((server) => `${server.address}:${server.port}`)).toEqual(["10.0.0.1:80"]);
    expect(heard.errors).toEqual([]);
  });

  it("refuses a certificate it cannot verify (no CA file: the system's store), and reads nothing", async () => {
    const { address } = await consulOverTls();
    const heard = watch({ address });
    const error = await until(() => heard.errors[0], "a TLS error", 10_000);
    expect(error.message).toMatch(/^cannot reach Consul at https:.*UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
    expect(heard.snapshots).toEqual([]);
  });

  it("names a CA file it cannot read, at start", async () => {
    const { address } = await consulOverTls();
    expect(() => new ConsulSource({ address, caFile: join(dir, "missing.crt") })).toThrow(/caFile: cannot read it: ENOENT/);
  });
});
