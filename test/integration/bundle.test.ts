import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { serving } from "../support/apply.js";
import { freePort, isHaproxyInstalled, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";

/*
 * The self-contained bundles (npm run bundle), built into a temp dir with no node_modules above
 * it, run as real processes under Debian bookworm's own Node 18 (the oldest supported; unpacked
 * by deploy/install-deps.sh) and under this Node.
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const NODE18 = "/var/cache/hafleet-test/node18/bin/node";
const RUNTIMES = [
  { name: "Debian's Node 18", node: NODE18 },
  { name: `Node ${process.versions.node}`, node: process.execPath },
];
const VERSION = (JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
/** How long a process may take to show what a test waits for, before the test fails saying what. */
const PATIENCE_MS = 25_000;

let bundle = "";
const agentBundle = () => join(bundle, "hafleet-agent.mjs");
const controllerBundle = () => join(bundle, "hafleet.mjs");
const processes = new Set<ChildProcess>();
const haproxies: RunningHaproxy[] = [];

beforeAll(async () => {
  if (!(await isHaproxyInstalled())) throw new Error("haproxy is not installed: run bash deploy/install-deps.sh");
  if (!existsSync(NODE18)) throw new Error(`Debian's Node 18 is not unpacked at ${NODE18}: run bash deploy/install-deps.sh`);
  if (process.getuid?.() !== 0) throw new Error("these tests run Node 18 in a mount namespace of its own (unshare): run them as root");
  const node18 = await run(NODE18, ["--version"]);
  if (!node18.stdout.startsWith("v18.")) throw new Error(`${NODE18} is not Node 18: ${node18.stdout}${node18.stderr}`);
  bundle = await mkdtemp(join(tmpdir(), "hafleet-bundle-"));
  const built = await run(process.execPath, [join(ROOT, "deploy/package/bundle.mjs"), "--out", bundle]);
  if (built.code !== 0) throw new Error(`npm run bundle failed:\n${built.stderr}`);
}, 60_000);

afterAll(async () => {
  for (const child of processes) child.kill("SIGKILL");
  await Promise.all(haproxies.map((h) => h.stop()));
  if (bundle !== "") await rm(bundle, { recursive: true, force: true });
});

async function haproxy(sections: string): Promise<RunningHaproxy> {
  const h = await startHaproxy({ sections });
  haproxies.push(h);
  return h;
}

describe.each(RUNTIMES)("the bundles under $name", ({ node }) => {
  it("print hafleet's version, with no node_modules to read it from", async () => {
    expect(await run(node, [agentBundle(), "--version"])).toMatchObject({ code: 0, stdout: `hafleet-agent ${VERSION}\n` });
    expect(await run(node, [controllerBundle(), "--version"])).toMatchObject({ code: 0, stdout: `hafleet ${VERSION}\n` });
  });

  it("apply a desired state to a real HAProxy", async () => {
    const h = await haproxy(templateBackend("be_app", { slots: 3 }));
    const desired = join(h.dir, "desired.json");
    await writeFile(desired, JSON.stringify({ version: "v1", backends: [{ name: "be_app", servers: [{ address: "127.0.0.11", port: 8001 }, { address: "::1", port: 8002 }] }] }));
    const result = await run(node, [agentBundle(), "apply", "--socket", h.socket, "--desired", desired, "--state-dir", join(h.dir, "state")]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`${h.socket}: runs the desired state`);
    expect(serving(await h.serversState(), "be_app")).toEqual(["127.0.0.11:8001", "::1:8002"]);
  });

  it("run a controller and an agent over gRPC, each re-reading its config file on SIGHUP", async () => {
    const h = await haproxy(templateBackend("be_a", { slots: 2 }) + templateBackend("be_b", { slots: 2 }));
    const port = await freePort();
    await writeFile(join(h.dir, "catalog-1.json"), JSON.stringify({ services: { web: [{ address: "127.0.0.21", port: 8021 }], api: [{ address: "127.0.0.31", port: 8031 }] } }));
    await writeFile(join(h.dir, "catalog-2.json"), JSON.stringify({ services: { web: [{ address: "127.0.0.21", port: 8021 }], api: [{ address: "127.0.0.32", port: 8032 }] } }));
    const controllerFile = join(h.dir, "controller.yaml");
    const controllerConfig = (catalog: string) =>
      [
        `listen: 127.0.0.1:${port}`,
        // The status API some controllers have would take a fixed port: none here.
        ...("http" in controllerConfigSchema.shape ? ["http: { listen: null }"] : []),
        `discovery: { file: ${catalog} }`,
        "backends:",
        "  - { backend: be_a, service: web, agents: { role: a } }",
        "  - { backend: be_b, service: api, agents: { role: b } }",
      ].join("\n");
    const agentFile = join(h.dir, "agent.yaml");
    const agentConfig = (role: string) =>
      [`controllers: [127.0.0.1:${port}]`, `sockets: [${h.socket}]`, "id: edge-1", `labels: { role: ${role} }`, "stateDir: state", "resync: 1s", "drainPeriod: 0"].join("\n");
    await writeFile(controllerFile, controllerConfig("catalog-1.json"));
    await writeFile(agentFile, agentConfig("a"));
    const controller = start(node, [controllerBundle(), "controller", "--config", controllerFile]);
    const agent = start(node, [agentBundle(), "run", "--config", agentFile]);
    const servingNow = async (backend: string) => serving(await h.serversState(), backend);

    await until(async () => (await servingNow("be_a")).join() === "127.0.0.21:8021", "be_a serves web", agent);

    // A file that is not valid is refused, naming its line, and the agent carries on as it was.
    await writeFile(agentFile, agentConfig("a") + "\nsocket: /typo.sock");
    agent.child.kill("SIGHUP");
    const refused = await agent.logged("SIGHUP: the new configuration is refused; the running one stays");
    // A user's mistake is logged as its one-line message, no stack.
    expect(String(refused.err)).toContain("socket: line 8:1: unknown field");
    // A valid one replaces it: new labels, so the controller now sends be_b.
    await writeFile(agentFile, agentConfig("b"));
    agent.child.kill("SIGHUP");
    await agent.logged("restarted with the new configuration");
    await until(async () => (await servingNow("be_b")).join() === "127.0.0.31:8031", "be_b serves api after the agent's reload", agent);

    await writeFile(controllerFile, controllerConfig("catalog-2.json").replace("backends:", "backends: []\nunused:"));
    controller.child.kill("SIGHUP");
    await controller.logged("SIGHUP: the new configuration is refused; the running one stays");
    await writeFile(controllerFile, controllerConfig("catalog-2.json"));
    controller.child.kill("SIGHUP");
    await controller.logged("restarted with the new configuration");
    await until(async () => (await servingNow("be_b")).join() === "127.0.0.32:8032", "be_b follows the controller's new catalog", agent);

    // One that cannot start (its port is taken) brings the running one back: the agent reconnects.
    const taken = createServer().listen(0, "127.0.0.1");
    await once(taken, "listening");
    const connections = agent.logs("connected to the controller").length;
    await writeFile(controllerFile, controllerConfig("catalog-2.json").replace(`127.0.0.1:${port}`, `127.0.0.1:${(taken.address() as AddressInfo).port}`));
    controller.child.kill("SIGHUP");
    await controller.logged("the new configuration did not start; starting the previous one again");
    await until(async () => agent.logs("connected to the controller").length > connections, "the agent connected to the previous configuration again", agent);
    taken.close();

    expect(await agent.stop()).toBe(0);
    expect(await controller.stop()).toBe(0);
    expect(agent.logs("SIGHUP: configuration re-read, restarting with it")).toHaveLength(1);
  }, 60_000);
});

describe("the agent bundle under Debian's Node 18", () => {
  it("logs SIGHUP and carries on when started with flags, having no file to re-read", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hafleet-flags-"));
    try {
      const agent = start(NODE18, [agentBundle(), "run", "--controller", "127.0.0.1:1", "--socket", join(dir, "none.sock"), "--id", "edge-2", "--state-dir", dir]);
      await agent.logged("stored desired state loaded, applying it");
      agent.child.kill("SIGHUP");
      await agent.logged("SIGHUP ignored: started without --config, there is no file to re-read");
      expect(await agent.stop()).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("prints pretty logs on a terminal", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hafleet-pretty-"));
    try {
      // `script` gives the agent a terminal; its own output is the terminal's. A user's mistake is one
      // plain line, not a log record (see agent-cli-mistakes), so the run loop's own logs show the format.
      const agent = [NODE18, agentBundle(), "run", "--controller", "127.0.0.1:1", "--socket", join(dir, "none.sock"), "--id", "edge-pretty", "--state-dir", dir].join(" ");
      const result = await run("script", ["--quiet", "--return", "--command", `timeout -s TERM 3 ${agent}`, "/dev/null"]);
      const text = result.stdout.replace(/\u001b\[[0-9;]*m/g, "");
      expect(text).toMatch(/ERROR \(\d+\): cannot apply to this HAProxy/);
      expect(text).not.toContain('{"level"');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; killed (and so failing) if it has not ended in PATIENCE_MS. */
function run(command: string, args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HAFLEET_LOG_LEVEL: "warn" } });
    processes.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), PATIENCE_MS);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      processes.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

interface Service {
  child: ChildProcess;
  /** JSON log lines whose `msg` is `msg`. */
  logs(msg: string): Array<Record<string, unknown>>;
  /** Waits for one more line `msg` than there were when the last wait for it ended. */
  logged(msg: string): Promise<Record<string, unknown>>;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
  output(): string;
}

/** A long-running hafleet process, logging JSON at info level; killed in afterAll whatever happens. */
function start(node: string, args: string[]): Service {
  const child = spawn(node, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HAFLEET_LOG_LEVEL: "info" } });
  processes.add(child);
  let output = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  void exited.then(() => processes.delete(child));
  const seen = new Map<string, number>();
  const logs = (msg: string) =>
    output
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === msg);
  const service: Service = {
    child,
    logs,
    output: () => output,
    logged: async (msg) => {
      const count = (seen.get(msg) ?? 0) + 1;
      await until(async () => logs(msg).length >= count, `log line '${msg}'`, service);
      seen.set(msg, count);
      return logs(msg)[count - 1]!;
    },
    stop: async () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
  return service;
}

/** Polls `condition` until it holds; fails naming what it waited for, with the process's output. */
async function until(condition: () => Promise<boolean>, what: string, service: Service): Promise<void> {
  const deadline = Date.now() + PATIENCE_MS;
  while (!(await condition())) {
    if (service.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`${what}: not seen (process ${service.child.exitCode === null ? "running" : `exited ${service.child.exitCode}`}); its output:\n${service.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
