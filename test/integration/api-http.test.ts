import { request } from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningController } from "../../controller/controller.js";
import { startCatalogController } from "../support/reload-scenario.js";

// The status API as HTTP clients meet it: a page on another site reaching a loopback controller
// through DNS rebinding, a probe without a token, a lowercase scheme, a wrong method.

const TOKEN = "api-token-0123456789abcdef";
let dir: string;
let controller: RunningController;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(method: string, path: string, headers: Record<string, string> = {}, body = ""): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: controller.httpPort!, method, path, headers: { "content-type": "application/json", ...headers } }, (response) => {
      let text = "";
      response.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-api-http-"));
  const catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: [{ address: "127.0.0.1", port: 8080 }] } }));
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
  controller = await startCatalogController(dir, catalog, [{ backend: "be_app", service: "web" }], { tokenFile: join(dir, "token") });
});

afterAll(async () => {
  await controller?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the status API over HTTP", () => {
  it("refuses a read whose Host is not loopback (DNS rebinding), and answers one that is", async () => {
    const rebound = await call("GET", "/api/v1/status", { host: "evil.example.com" });
    expect(rebound.status).toBe(403);
    expect(rebound.body).not.toContain("be_app");
    for (const host of [`127.0.0.1:${controller.httpPort}`, `localhost:${controller.httpPort}`, `[::1]:${controller.httpPort}`]) {
      expect((await call("GET", "/api/v1/status", { host })).status, host).toBe(200);
    }
  });

  it("answers /healthz with no token and whatever the Host, saying nothing of the fleet", async () => {
    const health = await call("GET", "/healthz", { host: "probe.internal" });
    expect([health.status, health.body]).toEqual([200, "ok\n"]);
  });

  it("takes the token with the scheme in any case; a missing token is a 401 that says how", async () => {
    const missing = await call("POST", "/api/v1/freeze", {}, JSON.stringify({ reason: "drill" }));
    expect(missing.status).toBe(401);
    expect(missing.headers["www-authenticate"]).toBe('Bearer realm="hafleet"');
    expect((await call("POST", "/api/v1/freeze", { authorization: `bearer ${TOKEN}` }, JSON.stringify({ reason: "drill" }))).status).toBe(200);
    expect((await call("POST", "/api/v1/unfreeze", { authorization: `BEARER ${TOKEN}` })).status).toBe(200);
  });

  it("answers a method a path does not take with 405 and the methods it does", async () => {
    const put = await call("PUT", "/api/v1/status");
    expect([put.status, put.headers["allow"]]).toEqual([405, "GET, HEAD"]);
    const get = await call("GET", "/api/v1/freeze");
    expect([get.status, get.headers["allow"]]).toEqual([405, "POST"]);
  });
});
