import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MasterCli } from "../../agent/hybrid/master-cli.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import { AGENT_BIN, CONTROLLER_BIN, ready, UPSTREAMS_BIN } from "../demo/demo-setup.js";
import type { DemoProcess, DemoStack } from "../demo/demo-stack.js";
import { logLines } from "../demo/observe.js";
import { instanceConfig, templateBackend } from "../support/haproxy-config.js";
import { freePort } from "../support/haproxy.js";
import type { MemoryTarget } from "./memory.js";

/*
 * The soak's processes, each in the demo's process stack (a process group and a log file of its
 * own in the temp dir): the demo's upstream web servers, the real controller watching Consul,
 * a real master-worker HAProxy with one template backend per service, and the real agent.
 */

export const AGENT_ID = "soak-edge-1";
export const SLOT_PREFIX = "srv";

export interface HafleetShape {
  consulUrl: string;
  /** Backend i is fed by service i. */
  services: readonly string[];
  backends: readonly string[];
  /** `server-template` slots per backend: the soak grows past them. */
  slots: number;
  debounce: { quietMs: number; maxMs: number };
  /** The agent's --drain-period. */
  drainPeriod: string;
}

export interface Hafleet {
  frontendPort: number;
  adminSocket: string;
  master: MasterCli;
  /** The worker serving at start: a reload would replace it. */
  workerPid: number;
  controller: DemoProcess;
  agent: DemoProcess;
  haproxy: DemoProcess;
  /** What the memory sampler reads: the controller, the agent and HAProxy's worker. */
  memory: Record<"controller" | "agent" | "haproxy", MemoryTarget>;
}

/** `count` upstream web servers in one process; their ports. */
export async function startUpstreams(stack: DemoStack, count: number): Promise<{ process: DemoProcess; ports: number[] }> {
  const portsFile = join(stack.dir, "upstreams.json");
  const upstreams = stack.start("upstreams", process.execPath, [UPSTREAMS_BIN, String(count), portsFile]);
  const ports = await ready("the upstream web servers", stack, upstreams, async () => JSON.parse(await readFile(portsFile, "utf8")) as number[]);
  return { process: upstreams, ports };
}

/** Controller, HAProxy and agent, started in that order; resolves once each one answers. */
export async function startHafleet(stack: DemoStack, shape: HafleetShape): Promise<Hafleet> {
  const dir = stack.dir;
  const env = { ...process.env, HAFLEET_LOG_LEVEL: "info" };
  const controllerConfig = join(dir, "controller.yaml");
  await writeFile(controllerConfig, controllerYaml(shape));
  const controller = stack.start("controller", process.execPath, [CONTROLLER_BIN, "controller", "--config", controllerConfig], env);
  const [grpcPort, httpPort] = await ready("the controller", stack, controller, async () => {
    const grpc = (await logLines(controller.log, "controller listening"))[0]?.port;
    const http = (await logLines(controller.log, "status API listening"))[0]?.port;
    return typeof grpc === "number" && typeof http === "number" && [grpc, http];
  });

  const adminSocket = join(dir, "admin.sock");
  const masterSocket = join(dir, "master.sock");
  const frontendPort = await freePort();
  const haproxyConfig = join(dir, "haproxy.cfg");
  await writeFile(haproxyConfig, haproxyCfg(shape, adminSocket, frontendPort));
  const haproxy = stack.start("haproxy", "haproxy", ["-W", "-db", "-S", masterSocket, "-f", haproxyConfig]);
  const master = new MasterCli(parseSocketAddress(masterSocket));
  const workerPid = await ready("HAProxy's master socket", stack, haproxy, async () => {
    const proc = await master.showProc();
    return proc.workers.length === 1 && proc.workers[0]!.pid;
  });

  const agentArgs = ["run", "--controller", `127.0.0.1:${grpcPort}`, "--socket", adminSocket, "--id", AGENT_ID];
  agentArgs.push("--state-dir", join(dir, "agent-state"), "--drain-period", shape.drainPeriod, "--metrics-listen", "127.0.0.1:0");
  const agent = stack.start("agent", process.execPath, [AGENT_BIN, ...agentArgs], env);
  const agentMetricsPort = await ready("the agent's metrics", stack, agent, async () => {
    const port = (await logLines(agent.log, "metrics listening"))[0]?.port;
    return typeof port === "number" && port;
  });

  return {
    frontendPort,
    adminSocket,
    master,
    workerPid,
    controller,
    agent,
    haproxy,
    memory: {
      controller: { pid: controller.pid, metricsUrl: `http://127.0.0.1:${httpPort}/metrics` },
      agent: { pid: agent.pid, metricsUrl: `http://127.0.0.1:${agentMetricsPort}/metrics` },
      haproxy: { pid: workerPid, metricsUrl: null },
    },
  };
}

function controllerYaml(shape: HafleetShape): string {
  const backends = shape.backends.map((backend, index) => `  - { backend: ${backend}, service: ${shape.services[index]} }`);
  return [
    "# The soak's controller, written by test/soak/soak-stack.ts.",
    "listen: 127.0.0.1:0",
    "http: { listen: 127.0.0.1:0 }",
    `discovery: { consul: { address: ${JSON.stringify(shape.consulUrl)}, weights: meta } }`,
    `debounce: { quietMs: ${shape.debounce.quietMs}, maxMs: ${shape.debounce.maxMs} }`,
    "backends:",
    ...backends,
    "",
  ].join("\n");
}

/** Every request goes to one of the backends at random, so traffic crosses every scale event. */
function haproxyCfg(shape: HafleetShape, adminSocket: string, frontendPort: number): string {
  const prefix = shape.backends[0]!.replace(/\d+$/, "");
  if (!shape.backends.every((backend, index) => backend === `${prefix}${index}`)) throw new Error(`backends must be named ${prefix}0..${prefix}${shape.backends.length - 1}`);
  const frontend = ["frontend fe_soak", `    bind 127.0.0.1:${frontendPort}`, `    use_backend ${prefix}%[rand(${shape.backends.length})]`, ""].join("\n");
  const backends = shape.backends.map((backend) => templateBackend(backend, { slots: shape.slots, prefix: SLOT_PREFIX, check: true, weight: 10 }));
  return instanceConfig({ adminSocket, sections: [frontend, ...backends].join("\n"), quiet: true });
}
