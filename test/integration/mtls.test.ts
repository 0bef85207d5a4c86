import { X509Certificate } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentRunner } from "../../agent/run/agent-runner.js";
import { clientCredentials } from "../../agent/tls/client-credentials.js";
import type { TlsFiles } from "../../agent/tls/tls-files.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { validityFor, type LeafProfile, type Validity } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { until } from "../support/helpers.js";
import { SimulatedApplier } from "../support/simulated-applier.js";

// The controller's mTLS on loopback, with certificates made by `hafleet certs`' own functions:
// who gets in (a fleet certificate, for the id it claims), who does not (another CA, an expired
// certificate, plaintext, another agent's id), and a server certificate replaced while running.

type Line = Record<string, unknown>;

function capturingLogger(lines: Line[], level = "info") {
  return pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) });
}

const controllerLog: Line[] = [];
let root: string;
let caDir: string;
/** The files the controller is configured with; the reload test replaces their contents. */
let serverFiles: TlsFiles;
let controller: RunningController;
let address: string;
const clients: grpc.Client[] = [];
const runners: AgentRunner[] = [];

async function issue(dir: string, profile: LeafProfile, validity: Validity = validityFor(30, Date.now())): Promise<TlsFiles> {
  const pair = await issueCertificate(dir, profile, validity);
  return { ca: join(dir, "ca.crt"), ...pair };
}

async function runner(id: string, tls: TlsFiles | undefined, logger = pino({ level: "silent" })): Promise<{ runner: AgentRunner; applier: SimulatedApplier }> {
  const applier = new SimulatedApplier(["be_app"]);
  const agent = new AgentRunner({
    agentId: id,
    labels: {},
    hafleetVersion: "test",
    controllers: [address],
    applier,
    stateDir: join(root, "agents", id),
    resyncMs: 60_000,
    heartbeatMs: 200,
    deadAfterMs: 2_000,
    backoff: { initialMs: 20, maxMs: 200 },
    ...(tls === undefined ? {} : { tls }),
    logger,
  });
  runners.push(agent);
  await agent.start();
  return { runner: agent, applier };
}

/** A raw Sync stream that says `hello` as `agentId`: what came back, and how it ended. */
async function rawSync(credentials: grpc.ChannelCredentials, agentId: string, target = address): Promise<{ status: grpc.StatusObject; bodies: string[] }> {
  const client = new (loadFleetService().Client)(target, credentials);
  clients.push(client);
  const call = (client as unknown as { Sync(): grpc.ClientDuplexStream<object, { body: string }> }).Sync();
  const bodies: string[] = [];
  call.on("data", (message: { body: string }) => {
    bodies.push(message.body);
    // A push is all this test wants to know of: end the stream as soon as one comes.
    if (message.body === "push") call.cancel();
  });
  call.on("error", () => undefined);
  call.write({ hello: { agentId, labels: {}, hafleetVersion: "test", sockets: [], appliedVersions: {} } });
  const status = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  return { status, bodies };
}

function ssl(files: TlsFiles): Promise<grpc.ChannelCredentials> {
  return Promise.all([readFile(files.ca), readFile(files.key), readFile(files.cert)]).then(([ca, key, cert]) => grpc.credentials.createSsl(ca, key, cert));
}

/** The SHA-256 fingerprint of the certificate the controller presents to a new connection. */
function presentedFingerprint(agent: TlsFiles): Promise<string> {
  return Promise.all([readFile(agent.ca), readFile(agent.cert), readFile(agent.key)]).then(
    ([ca, cert, key]) =>
      new Promise((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: controller.port, ca, cert, key, ALPNProtocols: ["h2"] }, () => {
          resolve(socket.getPeerCertificate().fingerprint256);
          socket.destroy();
        });
        socket.on("error", reject);
      }),
  );
}

async function fingerprintOf(path: string): Promise<string> {
  return new X509Certificate(await readFile(path)).fingerprint256;
}

let edge1: TlsFiles;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "hafleet-mtls-"));
  caDir = join(root, "fleet");
  await initFleetCa(caDir, 30);
  edge1 = await issue(caDir, { kind: "agent", id: "edge-1" });
  const issued = await issue(caDir, { kind: "controller", name: "ctl", dns: ["ctl.example"], ips: ["127.0.0.1"] });
  await mkdir(join(root, "server"));
  serverFiles = { ca: join(root, "server", "ca.crt"), cert: join(root, "server", "ctl.crt"), key: join(root, "server", "ctl.key") };
  for (const which of ["ca", "cert", "key"] as const) await copyFile(issued[which], serverFiles[which]);
  const catalog = join(root, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: [{ address: "127.0.3.1", port: 8100 }] } }));
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    tls: serverFiles,
    http: { listen: null },
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web" }],
    debounce: { quietMs: 20, maxMs: 200 },
    agents: { heartbeatMs: 200, deadAfterMs: 2_000 },
  });
  controller = await startController(config, capturingLogger(controllerLog), { version: "test" });
  address = `127.0.0.1:${controller.port}`;
});

afterAll(async () => {
  clients.forEach((client) => client.close());
  await Promise.all(runners.map((agent) => agent.stop()));
  await controller?.close();
  await rm(root, { recursive: true, force: true });
});

describe("mTLS between agents and the controller", () => {
  it("lets in an agent with its fleet certificate, which gets its push; the controller is checked by its IP SAN", async () => {
    const { applier } = await runner("edge-1", edge1);
    await applier.firstPush;
    expect(controllerLog.some((line) => line.msg === "agent connected" && line.agent === "edge-1")).toBe(true);
  });

  it("reads the agent's TLS files at each attempt: files that appear later are used without a restart", async () => {
    const dir = join(root, "late");
    const files = { ca: edge1.ca, cert: join(dir, "agent-edge-4.crt"), key: join(dir, "agent-edge-4.key") };
    const agentLog: Line[] = [];
    const { applier } = await runner("edge-4", files, capturingLogger(agentLog));
    await until(() => agentLog.find((line) => line.msg === "cannot connect to the controller"), "a failed attempt");
    expect(agentLog.find((line) => line.msg === "cannot connect to the controller")!.reason).toBe(`TLS files: cert: ${files.cert}: cannot be read (ENOENT)`);
    await mkdir(dir);
    await copyFile(join(caDir, "ca.crt"), join(dir, "ca.crt"));
    await copyFile(join(caDir, "ca.key"), join(dir, "ca.key"));
    await issueCertificate(dir, { kind: "agent", id: "edge-4" }, validityFor(30, Date.now()));
    await applier.firstPush;
  });

  it("checks the controller's certificate against the address dialled", async () => {
    // localhost reaches the same port, but the certificate names ctl.example and 127.0.0.1 only.
    const { status, bodies } = await rawSync(clientCredentials(edge1)(), "edge-1", `localhost:${controller.port}`);
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toMatch(/Hostname\/IP does not match certificate's altnames: Host: localhost/);
    expect(bodies).toEqual([]);
  });

  it("refuses an agent whose certificate another CA signed; the agent logs and retries with backoff", async () => {
    const otherCa = join(root, "other");
    await initFleetCa(otherCa, 30);
    const stranger = await issue(otherCa, { kind: "agent", id: "edge-9" });
    // It trusts the fleet CA (so the controller is fine), but its own certificate is not the fleet's.
    const agentLog: Line[] = [];
    await runner("edge-9", { ...stranger, ca: edge1.ca }, capturingLogger(agentLog, "debug"));
    const retries = () => agentLog.filter((line) => line.msg === "cannot connect to the controller" || line.msg === "still cannot connect to the controller, same cause");
    await until(() => retries().length >= 3, "three failed attempts");
    expect(retries()[0]).toMatchObject({ controller: address, retryInMs: expect.any(Number) });
    // grpc-js (1.14) only fails to connect; the agent's own probe says why, once.
    expect(retries()[0]!.reason).toMatch(/refused this agent's certificate/);
    expect(agentLog.filter((line) => line.msg === "cannot connect to the controller")).toHaveLength(1);
    expect(controllerLog.some((line) => line.agent === "edge-9")).toBe(false);
    expect(controller.server.stream("edge-9")).toBeUndefined();
  });

  it("refuses an expired certificate of the fleet CA", async () => {
    const expired = await issue(caDir, { kind: "agent", id: "edge-old" }, { notBefore: new Date("2020-01-01T00:00:00Z"), notAfter: new Date("2020-02-01T00:00:00Z") });
    // The agent's own check would not even try (clientCredentials reads the dates): go around it.
    expect(() => clientCredentials(expired)()).toThrow(/expired on 2020-02-01T00:00:00.000Z/);
    const { status, bodies } = await rawSync(await ssl(expired), "edge-old");
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(bodies).toEqual([]);
    expect(controllerLog.some((line) => line.agent === "edge-old")).toBe(false);
  });

  it("refuses a plaintext agent", async () => {
    const { status, bodies } = await rawSync(grpc.credentials.createInsecure(), "edge-1");
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(bodies).toEqual([]);
  });

  it("ends with PERMISSION_DENIED the stream of an agent that claims another's id, which keeps its own", async () => {
    const edge2 = await issue(caDir, { kind: "agent", id: "edge-2" });
    const { applier } = await runner("edge-2", edge2);
    await applier.firstPush;
    const legitimate = controller.server.stream("edge-2");
    expect(legitimate).toBeDefined();

    const { status, bodies } = await rawSync(clientCredentials(edge1)(), "edge-2");
    expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(status.details).toBe("the hello claims agent edge-2, the client certificate is agent edge-1's");
    expect(bodies).toEqual([]);
    expect(controller.server.stream("edge-2")).toBe(legitimate);
    const warning = controllerLog.find((line) => line.msg === "agent refused: its hello does not match its certificate");
    expect(warning).toMatchObject({ level: 40, agent: "edge-1", claimed: "edge-2", peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), certificate: { cn: "edge-1", san: "URI:hafleet://agent/edge-1" } });
  });

  it("takes a replaced server certificate on reload(), and keeps it when the next files are broken", async () => {
    const before = await fingerprintOf(serverFiles.cert);
    expect(await presentedFingerprint(edge1)).toBe(before);
    expect(controller.server.reloadTls()).toBe("unchanged");

    const renewed = await issue(caDir, { kind: "controller", name: "ctl-renewed", dns: ["ctl.example"], ips: ["127.0.0.1"] });
    await copyFile(renewed.key, serverFiles.key);
    await copyFile(renewed.cert, serverFiles.cert);
    expect(controller.server.reloadTls()).toBe("reloaded");
    const after = await fingerprintOf(renewed.cert);
    expect(after).not.toBe(before);
    expect(await presentedFingerprint(edge1)).toBe(after);
    const edge3 = await issue(caDir, { kind: "agent", id: "edge-3" });
    expect((await rawSync(clientCredentials(edge3)(), "edge-3")).bodies).toContain("push");

    await writeFile(serverFiles.key, "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n");
    expect(controller.server.reloadTls()).toBe("refused");
    expect(controllerLog.find((line) => line.msg === "TLS files not reloaded: the controller keeps its previous certificates")).toMatchObject({
      level: 50,
      err: expect.stringContaining(`key: ${serverFiles.key}: not a private key`),
    });
    expect(await presentedFingerprint(edge1)).toBe(after);
    expect((await rawSync(clientCredentials(edge3)(), "edge-3")).bodies).toContain("push");
  });
});
