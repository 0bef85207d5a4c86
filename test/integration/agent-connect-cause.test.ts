import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControllerLink } from "../../agent/run/controller-link.js";
import { clientCredentials } from "../../agent/tls/client-credentials.js";
import type { TlsFiles } from "../../agent/tls/tls-files.js";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { startController, type RunningController } from "../../controller/controller.js";
import { validityFor, type LeafProfile } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { until } from "../support/helpers.js";

// Why an agent cannot connect, as it logs it: the real cause (refused, an HTTP port, TLS on one
// side only, a certificate of another CA either way, a host missing from the SAN), once per
// cause however many times it retries. Real controllers (in-process) and plain sockets.

type Line = Record<string, unknown>;

let root: string;
let fleet: TlsFiles;
let tlsController: RunningController;
let plainController: RunningController;
let http: Server;
let closedPort: number;
const links: ControllerLink[] = [];

async function issue(dir: string, profile: LeafProfile): Promise<TlsFiles> {
  const pair = await issueCertificate(dir, profile, validityFor(30, Date.now()));
  return { ca: join(dir, "ca.crt"), ...pair };
}

async function controller(tls: TlsFiles | undefined): Promise<RunningController> {
  const catalog = join(root, "catalog.json");
  const config = controllerConfigSchema.parse({
    listen: "127.0.0.1:0",
    ...(tls === undefined ? {} : { tls }),
    http: { listen: null },
    discovery: { file: catalog },
    backends: [{ backend: "be_app", service: "web" }],
    agents: { heartbeatMs: 200, deadAfterMs: 2_000 },
  });
  return startController(config, pino({ level: "silent" }), { version: "test" });
}

/** Runs a link to `address` until it failed `attempts` times; returns its log. */
async function failures(address: string, credentials: (() => grpc.ChannelCredentials) | undefined, attempts = 3): Promise<Line[]> {
  const lines: Line[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) });
  const link = new ControllerLink(
    {
      hello: async () => ({ agentId: "edge-1", labels: {}, hafleetVersion: "test", sockets: [], appliedVersions: {} }),
      opened: () => undefined,
      received: () => undefined,
    },
    { addresses: [address], heartbeatMs: 200, deadAfterMs: 2_000, backoff: { initialMs: 10, maxMs: 20 }, logger, ...(credentials === undefined ? {} : { credentials }) },
  );
  links.push(link);
  link.start();
  const failed = () => lines.filter((line) => line.msg === "cannot connect to the controller" || line.msg === "still cannot connect to the controller, same cause");
  await until(() => failed().length >= attempts, `${attempts} failed attempts`, 20_000);
  await link.stop();
  return lines;
}

/** The one warning the link logged for all its attempts, and its cause. */
function onlyCause(lines: Line[]): string {
  const warnings = lines.filter((line) => line.level === 40);
  expect(warnings.map((line) => line.msg)).toEqual(["cannot connect to the controller"]);
  return String(warnings[0]!.reason);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "hafleet-connect-cause-"));
  await writeFile(join(root, "catalog.json"), JSON.stringify({ services: { web: [] } }));
  await initFleetCa(join(root, "fleet"), 30);
  fleet = await issue(join(root, "fleet"), { kind: "agent", id: "edge-1" });
  const server = await issue(join(root, "fleet"), { kind: "controller", name: "ctl", dns: ["ctl.example"], ips: ["127.0.0.1"] });
  tlsController = await controller(server);
  plainController = await controller(undefined);
  http = createHttpServer((_, response) => response.end("the status page\n"));
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const closed = createTcpServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  closedPort = (closed.address() as { port: number }).port;
  await new Promise((resolve) => closed.close(resolve));
});

afterAll(async () => {
  await Promise.all(links.map((link) => link.stop()));
  await tlsController?.close();
  await plainController?.close();
  http?.close();
  await rm(root, { recursive: true, force: true });
});

describe("an agent that cannot connect says why, once per cause", () => {
  it("a closed port: refused, nothing listens there", async () => {
    const cause = onlyCause(await failures(`127.0.0.1:${closedPort}`, undefined));
    expect(cause).toMatch(/ECONNREFUSED 127\.0\.0\.1:\d+: nothing listens there/);
  });

  it("an HTTP/1 port (the controller's status API, say): not gRPC", async () => {
    const cause = onlyCause(await failures(`127.0.0.1:${(http.address() as { port: number }).port}`, undefined));
    expect(cause).toMatch(/HTTP\/1\.1 400 Bad Request.*not gRPC.*http\.listen/);
  });

  it("plaintext against a TLS controller", async () => {
    const cause = onlyCause(await failures(`127.0.0.1:${tlsController.port}`, undefined));
    expect(cause).toMatch(/speaks TLS there and this agent plaintext|may speak TLS there/);
  });

  it("TLS against a plaintext controller", async () => {
    const cause = onlyCause(await failures(`127.0.0.1:${plainController.port}`, clientCredentials(fleet)));
    expect(cause).toMatch(/does not speak TLS there/);
  });

  it("an agent certificate from another CA: the controller closes after the handshake", async () => {
    await initFleetCa(join(root, "other"), 30);
    const stranger = await issue(join(root, "other"), { kind: "agent", id: "edge-1" });
    const cause = onlyCause(await failures(`127.0.0.1:${tlsController.port}`, clientCredentials({ ...stranger, ca: fleet.ca })));
    expect(cause).toMatch(/closed the connection after the TLS handshake: it most likely refused this agent's certificate: not signed by the fleet CA/);
  });

  it("an agent trusting another CA than the controller's", async () => {
    await initFleetCa(join(root, "trust"), 30);
    const other = join(root, "trust", "ca.crt");
    const cause = onlyCause(await failures(`127.0.0.1:${tlsController.port}`, clientCredentials({ ...fleet, ca: other })));
    expect(cause).toMatch(/certificate.*not signed by this agent's tls\.ca/);
  });

  it("no client certificate: the controller's alert, without OpenSSL's source location", async () => {
    const bare = (): grpc.ChannelCredentials => grpc.credentials.createSsl(readFileSync(fleet.ca));
    const cause = onlyCause(await failures(`127.0.0.1:${tlsController.port}`, bare));
    expect(cause).toBe("tlsv13 alert certificate required: the controller requires a client certificate: give this agent tls (ca, cert, key)");
  });

  it("a host missing from the controller's SAN", async () => {
    const cause = onlyCause(await failures(`localhost:${tlsController.port}`, clientCredentials(fleet)));
    expect(cause).toMatch(/Hostname\/IP does not match certificate's altnames: Host: localhost.*SAN/);
  });

  it("says a new cause again, and a known one only once", async () => {
    const lines = await failures(`127.0.0.1:${closedPort}`, undefined, 5);
    expect(lines.filter((line) => line.msg === "cannot connect to the controller")).toHaveLength(1);
    expect(lines.filter((line) => line.msg === "still cannot connect to the controller, same cause").length).toBeGreaterThanOrEqual(4);
  });
});
