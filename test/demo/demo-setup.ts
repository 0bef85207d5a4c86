import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../support/haproxy.js";
import type { DemoProcess, DemoStack } from "./demo-stack.js";
import { logLines, Observer } from "./observe.js";
import { UPSTREAMS } from "./scenario.js";

/** Starts the demo's pieces in the temp dir, each one answering before the next starts. */

export const BACKEND = "be_app";
export const SERVICE = "web";
export const AGENT_ID = "demo-edge-1";
/** The demo's guard: one step may drop up to 70% of the servers, so that 6 -> 2 passes. */
const MAX_DROP_SHARE = 0.7;
const READY_TIMEOUT_MS = 15_000;

// Paths as built: this file runs as dist/test/demo/demo-setup.js.
const ROOT = new URL("../../../", import.meta.url);
export const AGENT_BIN = fileURLToPath(new URL("dist/agent/cli/main.js", ROOT));
export const CONTROLLER_BIN = fileURLToPath(new URL("dist/controller/cli/main.js", ROOT));
const HAPROXY_TEMPLATE = fileURLToPath(new URL("deploy/demo/haproxy.cfg", ROOT));
export const UPSTREAMS_BIN = fileURLToPath(new URL("./upstreams.js", import.meta.url));

export interface DemoSetup {
  dir: string;
  haproxy: DemoProcess;
  workerPid: number;
  haproxyVersion: string;
  controller: DemoProcess;
  agent: DemoProcess;
  upstreams: DemoProcess;
  /** Port of upstream i. */
  upstreamPorts: number[];
  frontendPort: number;
  grpcPort: number;
  statusUrl: string;
  adminSocket: string;
  catalogFile: string;
  observer: Observer;
}

export async function setUp(stack: DemoStack): Promise<DemoSetup> {
  const dir = stack.dir;
  const adminSocket = join(dir, "admin.sock");
  const masterSocket = join(dir, "master.sock");
  const catalogFile = join(dir, "catalog.json");
  const env = { ...process.env, HAFLEET_LOG_LEVEL: "info" };

  const portsFile = join(dir, "upstreams.json");
  const upstreams = stack.start("upstreams", process.execPath, [UPSTREAMS_BIN, String(UPSTREAMS), portsFile]);
  const upstreamPorts = await ready("the upstream web servers", stack, upstreams, async () => JSON.parse(await readFile(portsFile, "utf8")) as number[]);

  // No service yet: the first step's catalog is a change the demo can time, not a start-up.
  await writeCatalog(catalogFile, []);
  const controllerConfig = join(dir, "controller.yaml");
  await writeFile(controllerConfig, controllerYaml(catalogFile));
  const controller = stack.start("controller", process.execPath, [CONTROLLER_BIN, "controller", "--config", controllerConfig], env);
  // It listens on ports the system picks, and logs them.
  const [grpcPort, httpPort] = await ready("the controller", stack, controller, async () => {
    const grpc = (await logLines(controller.log, "controller listening"))[0]?.port;
    const http = (await logLines(controller.log, "status API listening"))[0]?.port;
    return typeof grpc === "number" && typeof http === "number" && [grpc, http];
  });
  const statusUrl = `http://127.0.0.1:${httpPort}/`;

  // Only HAProxy needs a port chosen beforehand, for its config: chosen last, to leave others the least time to take it.
  const frontendPort = await freePort();
  const template = await readFile(HAPROXY_TEMPLATE, "utf8");
  const config = join(dir, "haproxy.cfg");
  await writeFile(config, template.replaceAll("__DIR__", dir).replaceAll("__PORT__", String(frontendPort)));
  const haproxy = stack.start("haproxy", "haproxy", ["-W", "-db", "-S", masterSocket, "-f", config]);
  const observer = await Observer.open({ backend: BACKEND, agentId: AGENT_ID, adminSocket, masterSocket, statusUrl });
  const proc = await ready("HAProxy's admin and master sockets", stack, haproxy, async () => {
    await observer.haproxy();
    const shown = await observer.showProc();
    return shown.workers.length === 1 && shown;
  });

  const agentArgs = ["run", "--controller", `127.0.0.1:${grpcPort}`, "--socket", adminSocket, "--id", AGENT_ID, "--label", "region=local"];
  agentArgs.push("--state-dir", join(dir, "agent-state"), "--drain-period", "2s");
  const agent = stack.start("agent", process.execPath, [AGENT_BIN, ...agentArgs], env);
  await ready("the agent, in sync", stack, agent, async () => (await observer.sync()).agent === "in-sync");

  return {
    dir,
    haproxy,
    workerPid: proc.workers[0]!.pid,
    haproxyVersion: proc.master.version,
    controller,
    agent,
    upstreams,
    upstreamPorts,
    frontendPort,
    grpcPort,
    statusUrl,
    adminSocket,
    catalogFile,
    observer,
  };
}

export interface CatalogEntry {
  address: string;
  port: number;
}

/** Replaces the catalog at once, as a deploy tool would: never a half-written file. */
export async function writeCatalog(file: string, entries: readonly CatalogEntry[]): Promise<void> {
  const next = `${file}.next`;
  await writeFile(next, JSON.stringify({ services: entries.length === 0 ? {} : { [SERVICE]: entries } }, null, 2) + "\n");
  await rename(next, file);
}

function controllerYaml(catalogFile: string): string {
  return `# The demo's controller, written by test/demo/demo-setup.ts.
listen: 127.0.0.1:0
http: { listen: 127.0.0.1:0 }
discovery: { file: ${JSON.stringify(catalogFile)} }
backends:
  - { backend: ${BACKEND}, service: ${SERVICE} }
# Scaling 6 -> 2 drops 67% of the servers in one step: allowed here, held by the default 0.5.
guards: { maxDropShare: ${MAX_DROP_SHARE} }
`;
}

/** Polls `probe` until it gives a value; fails naming `what` and the log if the process died or time ran out. */
export async function ready<T>(what: string, stack: DemoStack, started: DemoProcess, probe: () => Promise<T | false>): Promise<T> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = "";
  for (;;) {
    try {
      const value = await probe();
      if (value !== false) return value;
    } catch (error) {
      last = ` (last: ${(error as Error).message})`;
    }
    if (!stack.alive(started.name)) throw new Error(`${what}: ${started.name} exited; see ${started.log}`);
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${READY_TIMEOUT_MS / 1000} s${last}; see ${started.log}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
