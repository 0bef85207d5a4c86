import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { runAgent } from "../support/cli.js";
import { serving, summary } from "../support/apply.js";

const started: RunningHaproxy[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((h) => h.stop()));
});

async function start(slots = 3): Promise<RunningHaproxy> {
  const h = await startHaproxy({ sections: templateBackend("be_app", { slots }) });
  started.push(h);
  return h;
}

async function desiredFile(h: RunningHaproxy, document: unknown): Promise<string> {
  const path = join(h.dir, `desired-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(path, typeof document === "string" ? document : JSON.stringify(document));
  return path;
}

const good = { address: "127.0.0.11", port: 8001 };

describe("hafleet-agent apply", () => {
  it("applies to several HAProxy at once and reports each, exit 0", async () => {
    const [a, b] = [await start(), await start()];
    const file = await desiredFile(a, { version: "v1", backends: [{ name: "be_app", servers: [good, { address: "127.0.0.12", port: 8002 }] }] });
    const result = await runAgent(["apply", "--socket", a.socket, "--socket", b.socket, "--desired", file, "--state-dir", join(a.dir, "state")]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`${a.socket}: runs the desired state`);
    expect(result.stdout).toContain(`${b.socket}: runs the desired state`);
    for (const h of [a, b]) expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.0.11:8001", "127.0.0.12:8002"]);
  });

  it("prints the plan and changes nothing with --dry-run", async () => {
    const h = await start();
    const before = await h.serversState();
    const file = await desiredFile(h, { backends: [{ name: "be_app", servers: [good] }] });
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--dry-run", "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("set server be_app/srv1 addr 127.0.0.11 port 8001");
    expect(summary(await h.serversState(), "be_app")).toEqual(summary(before, "be_app"));
  });

  it("prints a JSON report with --json", async () => {
    const h = await start();
    const file = await desiredFile(h, { backends: [{ name: "be_app", servers: [good] }] });
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--json", "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as { sockets: Array<{ socket: string; converged: boolean; plan: { steps: Array<{ prepare: string[] }> } }> };
    expect(report.sockets[0]!.converged).toBe(true);
    expect(report.sockets[0]!.plan.steps[0]!.prepare).toEqual(["set server be_app/srv1 addr 127.0.0.11 port 8001"]);
  });

  it("exits 1 and says why when HAProxy cannot run the desired state", async () => {
    const h = await start();
    const file = await desiredFile(h, { backends: [{ name: "be_nope", servers: [good] }] });
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("not placed: be_nope 127.0.0.11:8001 (backend-missing)");
  });

  it("exits 3 naming the socket when HAProxy is not there", async () => {
    const h = await start();
    const file = await desiredFile(h, { backends: [] });
    const result = await runAgent(["apply", "--socket", join(h.dir, "nothing.sock"), "--desired", file, "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(`cannot connect to HAProxy at ${join(h.dir, "nothing.sock")}`);
  });

  const hostile: Array<[string, unknown, string]> = [
    ["a second command after ;", { address: "127.0.0.1;show info", port: 80 }, "backends[0].servers[1].address"],
    ["a newline in an address", { address: "127.0.0.1\nshutdown sessions server be_app/srv1", port: 80 }, "backends[0].servers[1].address"],
    ["extra words in an address", { address: "127.0.0.9 port 4444", port: 80 }, "backends[0].servers[1].address"],
    ["an address out of range", { address: "300.1.1.1", port: 80 }, "backends[0].servers[1].address"],
    ["port 0", { address: "127.0.0.1", port: 0 }, "backends[0].servers[1].port"],
    ["port 65536", { address: "127.0.0.1", port: 65536 }, "backends[0].servers[1].port"],
    ["port 99999", { address: "127.0.0.1", port: 99999 }, "backends[0].servers[1].port"],
    ["port '1e3'", { address: "127.0.0.1", port: "1e3" }, "backends[0].servers[1].port"],
    ["weight 300", { address: "127.0.0.1", port: 80, weight: 300 }, "backends[0].servers[1].weight"],
  ];

  it.each(hostile)("refuses %s, naming the field, and applies nothing at all", async (_, server, field) => {
    const h = await start();
    const before = await h.serversState();
    const file = await desiredFile(h, { backends: [{ name: "be_app", servers: [good, server] }] });
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(field);
    expect(summary(await h.serversState(), "be_app")).toEqual(summary(before, "be_app"));
  });

  it.each([
    ["a space", "be app"],
    ["a quote", 'be"app'],
    ["a semicolon", "be_app;show info"],
  ])("refuses a backend name with %s", async (_, name) => {
    const h = await start();
    const before = await h.serversState();
    const file = await desiredFile(h, { backends: [{ name, servers: [good] }] });
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file, "--state-dir", join(h.dir, "state")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("backends[0].name");
    expect(result.stderr).toContain(JSON.stringify(name));
    expect(summary(await h.serversState(), "be_app")).toEqual(summary(before, "be_app"));
  });

  it("refuses a file that is not JSON", async () => {
    const h = await start();
    const file = await desiredFile(h, "{ backends: ");
    const result = await runAgent(["apply", "--socket", h.socket, "--desired", file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("not valid JSON");
  });
});

describe("hafleet-agent show", () => {
  it("prints what HAProxy runs, as a table and as JSON", async () => {
    const h = await start(2);
    await h.command("set server be_app/srv1 addr 127.0.0.5 port 8080");
    await h.command("set server be_app/srv1 state ready");
    const table = await runAgent(["show", "--socket", h.socket]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/be_app\s+srv1\s+127\.0\.0\.5:8080\s+1\s+ready\s+no check\s+slot/);
    const json = JSON.parse((await runAgent(["show", "--socket", h.socket, "--json"])).stdout) as {
      sockets: Array<{ backends: Array<{ name: string; servers: Array<{ name: string; endpoint: string; admin: string }> }> }>;
    };
    const servers = json.sockets[0]!.backends.find((b) => b.name === "be_app")!.servers;
    expect(servers.map((s) => [s.name, s.endpoint, s.admin])).toEqual([
      ["srv1", "127.0.0.5:8080", "ready"],
      ["srv2", "0.0.0.0:80", "maint"],
    ]);
    expect(summary(await h.serversState(), "be_app").srv1).toBe("127.0.0.5:8080 admin=4 w=1");
  });

  it("has --help for every command", async () => {
    for (const args of [["--help"], ["apply", "--help"], ["show", "--help"]]) {
      const result = await runAgent(args);
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/^Usage: hafleet-agent/);
    }
  });
});
