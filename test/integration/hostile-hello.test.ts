import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningController } from "../../controller/controller.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { startCatalogController } from "../support/reload-scenario.js";

// Hellos an attacker with a valid identity can send: each is refused promptly, with a status
// the client receives and that names the problem in a bounded text, and an oversized one is
// refused by counting, before the validation whose cost it was built to inflate.

let dir: string;
let controller: RunningController;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-hostile-hello-"));
  const catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: [{ address: "127.0.0.1", port: 8080 }] } }));
  controller = await startCatalogController(dir, catalog);
});

afterAll(async () => {
  for (const client of clients) client.close();
  await controller?.close();
  await rm(dir, { recursive: true, force: true });
});

async function hello(body: Record<string, unknown>): Promise<grpc.StatusObject> {
  const client = new (loadFleetService().Client)(`127.0.0.1:${controller.port}`, grpc.credentials.createInsecure());
  clients.push(client);
  const call = (client as unknown as { Sync(): grpc.ClientDuplexStream<object, object> }).Sync();
  call.on("data", () => undefined);
  call.on("error", () => undefined);
  call.write({ hello: { agentId: "edge-hostile", labels: {}, hafleetVersion: "test", sockets: [], appliedVersions: {}, ...body } });
  return new Promise((resolve) => call.on("status", resolve));
}

describe("hostile hellos", () => {
  it("a 1 MB backend name: refused at once, the status names it in a bounded text", async () => {
    const status = await hello({ sockets: [{ socket: "/s", backends: [{ name: "b".repeat(1_000_000), slots: 1, serving: 0, dynamic: true }] }] });
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain("(1000000 characters)");
    expect(status.details.length).toBeLessThan(1_000);
  });

  it("64 sockets of 9,999 backends (~12 MB): refused by counting, not by validating it all", async () => {
    const backends = Array.from({ length: 9_999 }, (_, i) => ({ name: `be_${i}`, slots: 4, serving: 4, dynamic: true }));
    const sockets = Array.from({ length: 64 }, (_, i) => ({ socket: `/run/haproxy-${i}.sock`, backends }));
    const cpu = process.cpuUsage();
    const status = await hello({ sockets });
    const used = process.cpuUsage(cpu);
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toBe("the hello's inventory lists 639936 backends over all sockets, over the limit of 20000");
    // Both ends run in this process: this is the client's encoding and the server's decoding, no validation.
    console.log(JSON.stringify({ test: "hostile-hello", sockets: 64, backends_per_socket: 9_999, cpu_ms: Math.round((used.user + used.system) / 1000), rss_mb: Math.round(process.memoryUsage().rss / 1e6) }));
  });
});
