import { request } from "node:http";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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

function call(method: string, path: string, headers: Record<string, string> = {}, body = "", port = controller.httpPort!): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers: { "content-type": "application/json", ...headers } }, (response) => {
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

describe("reads that need a token: a read token for Prometheus and the page, the operator token to act, an audit of every action", () => {
  const READ = "read-token-0123456789abcdef";
  let guarded: RunningController;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const at = (method: string, path: string, headers: Record<string, string> = {}, body = "") => call(method, path, headers, body, guarded.httpPort!);

  beforeAll(async () => {
    await writeFile(join(dir, "read-token"), `${READ}\n`);
    const guardedDir = join(dir, "guarded");
    guarded = await startCatalogController(guardedDir, join(dir, "catalog.json"), [{ backend: "be_app", service: "web" }], { tokenFile: join(dir, "token"), readTokenFile: join(dir, "read-token"), openLoopbackReads: false });
  });

  afterAll(async () => {
    await guarded?.close();
  });

  it("reads with either token, acts with the operator's only; the page's own files need none", async () => {
    expect((await at("GET", "/api/v1/status")).status).toBe(401);
    expect((await at("GET", "/api/v1/status", bearer(READ))).status).toBe(200);
    expect((await at("GET", "/metrics", bearer(READ))).status).toBe(200);
    expect((await at("GET", "/api/v1/status", bearer(TOKEN))).status).toBe(200);
    expect((await at("GET", "/api/v1/status", bearer("wrong-token-0123456789abcdef"))).status).toBe(403);
    const refused = await at("POST", "/api/v1/freeze", bearer(READ), JSON.stringify({ reason: "x" }));
    expect([refused.status, JSON.parse(refused.body).error]).toEqual([403, "refused: wrong token (actions take the operator token only)"]);
    expect((await at("GET", "/")).status).toBe(200);
  });

  it("records each action, done or refused, with what, when and from where, in the state dir and at /api/v1/audit", async () => {
    expect((await at("POST", "/api/v1/freeze", bearer(TOKEN), JSON.stringify({ reason: "incident 9" }))).status).toBe(200);
    expect((await at("POST", "/api/v1/unfreeze", bearer(TOKEN))).status).toBe(200);
    expect((await at("POST", "/api/v1/forget", bearer(TOKEN), JSON.stringify({ agent: "edge-nosuch" }))).status).toBe(409);
    const audit = JSON.parse((await at("GET", "/api/v1/audit", bearer(READ))).body) as { file: string; entries: Array<Record<string, unknown>> };
    expect(audit.entries.map((entry) => [entry["action"], entry["outcome"], entry["by"], entry["from"]])).toEqual([
      ["forget", "refused", "operator-token", "127.0.0.1"],
      ["unfreeze", "done", "operator-token", "127.0.0.1"],
      ["freeze", "done", "operator-token", "127.0.0.1"],
    ]);
    expect(audit.entries[2]!["detail"]).toEqual({ reason: "incident 9" });
    const lines = (await readFile(audit.file, "utf8")).trim().split("\n").map((line) => JSON.parse(line) as { action: string });
    expect(lines.map((line) => line.action)).toEqual(["freeze", "unfreeze", "forget"]);
  });
});
