import { fork, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileAtomic } from "../../agent/files/write-file-atomic.js";
import { type FleetStatus } from "../../controller/status/status-schema.js";
import { fetchStatus } from "../support/status-api.js";
import type { AgentCensus } from "../bench/fleet-agents.js";
import { command as send, nextReport } from "../bench/fleet-ipc.js";
import { until } from "../support/helpers.js";
import { freePort } from "../support/haproxy.js";
import { CONTROLLER_BIN, startNode, type NodeProcess } from "../support/processes.js";
import { endpointsDigest } from "../support/simulated-applier.js";

// The controller process killed with SIGKILL while thousands of agents (the real AgentRunner
// and gRPC link over a simulated HAProxy, in the fleet benchmark's child process) connect, and
// again while it fans a large change out. A new controller on the same config and port must
// bring every agent to discovery's state, push nothing to an agent that already runs it, push
// to every agent the killed one had sent nothing, and no agent's HAProxy may ever serve a
// backend with fewer servers than the smaller of the two sets.

/**
 * Both tests take 40-70 s on a 2-core machine loaded (load average 5-7) by other work; 3,000
 * agents took 53-90 s there, too near the budget (figures printed).
 */
const AGENTS = 2_000;
/** The fleet's agent ids, as the child names them. */
const FLEET = Array.from({ length: AGENTS }, (_, i) => `agent-${i}`);
const AGENTS_BIN = fileURLToPath(new URL("../../dist/test/bench/fleet-agents.js", import.meta.url));
/** Backend -> service; from A to B one grows by hundreds of servers, one shrinks (under the guard's 50%), one stays. */
const MAPPINGS = { be_app: "app", be_api: "api", be_static: "static" } as const;
type Backend = keyof typeof MAPPINGS;
type Sizes = Record<Backend, number>;
const BACKENDS = Object.keys(MAPPINGS) as Backend[];
const A: Sizes = { be_app: 20, be_api: 40, be_static: 10 };
const B: Sizes = { be_app: 220, be_api: 24, be_static: 10 };
/** Generous: thousands of agents reconnecting at once, on a machine shared with other tests. */
const CONVERGE_MS = 120_000;
/** The status with its summary and per-backend counts, without thousands of agent entries (no agent has this id). */
const SUMMARY_ONLY = "?agent=(none)";
/**
 * Building the status walks every agent, and a census every agent of the child: polled no
 * faster, so the controller and the agents keep their CPU for the reconnection under test.
 */
const POLL_PAUSE_MS = 250;

let dir: string;
let catalog: string;
let config: string;
let grpcPort: number;
let httpPort: number;
let controller: NodeProcess | null = null;
let fleet: ChildProcess | null = null;

/** Loopback addresses: a simulated HAProxy never connects to them. */
function instances(backend: Backend, count: number) {
  const block = BACKENDS.indexOf(backend) + 1;
  return Array.from({ length: count }, (_, i) => ({ address: `127.${block}.${Math.floor(i / 250)}.${(i % 250) + 1}`, port: 8080 }));
}

/** Written whole (temp file, rename): the controller never reads half a catalog. */
function writeCatalog(sizes: Sizes): Promise<void> {
  const services = Object.fromEntries(BACKENDS.map((backend) => [MAPPINGS[backend], instances(backend, sizes[backend])]));
  return writeFileAtomic(catalog, JSON.stringify({ services }));
}

/** SIGKILLs `target` as soon as its log shows an ack; resolves once it is dead and all it wrote was read. */
async function killAtFirstAck(target: NodeProcess): Promise<NodeProcess> {
  const output = target.child.stderr!;
  const drained = new Promise<void>((resolve) => output.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      output.off("data", onData);
      reject(new Error(`no ack logged within ${CONVERGE_MS} ms`));
    }, CONVERGE_MS);
    const onData = (chunk: string): void => {
      if (!chunk.includes('"msg":"ack"')) return;
      output.off("data", onData);
      clearTimeout(timer);
      target.kill("SIGKILL").then(resolve, reject);
    };
    output.on("data", onData);
  });
  await drained;
  return target;
}

function startController(): NodeProcess {
  controller = startNode(CONTROLLER_BIN, ["controller", "--config", config]);
  return controller;
}

const status = (query = ""): Promise<FleetStatus | undefined> => fetchStatus(httpPort, query);

async function pausedSummary(): Promise<FleetStatus | undefined> {
  await sleep(POLL_PAUSE_MS);
  return status(SUMMARY_ONLY);
}

/** Every agent connected to the running controller and in sync on `sizes`. */
function inSyncOn(sizes: Sizes): Promise<FleetStatus> {
  let last: FleetStatus | undefined;
  return until(
    async () => {
      last = await pausedSummary();
      const backendsOk = last?.backends.every((backend) => backend.servers === sizes[backend.backend as Backend] && backend.inSync === AGENTS);
      return last !== undefined && last.summary.connected === AGENTS && last.summary.inSync && backendsOk === true && last;
    },
    `all ${AGENTS} agents in sync on ${JSON.stringify(sizes)}`,
    CONVERGE_MS,
    async () => `last status: ${JSON.stringify(last?.summary)} ${JSON.stringify(last?.backends.map(({ backend, servers, inSync }) => ({ backend, servers, inSync })))}`,
  );
}

async function allConnected(): Promise<void> {
  await until(async () => (await pausedSummary())?.summary.connected === AGENTS, `all ${AGENTS} agents connected`, CONVERGE_MS);
}

/** Each agent as it sees itself, by id. */
async function census(): Promise<Map<string, AgentCensus>> {
  const answer = nextReport(fleet!, "census", 30_000);
  send(fleet!, { type: "census" });
  return new Map((await answer).agents.map((agent) => [agent.agent, agent]));
}

/** Whether the agent's simulated HAProxy serves exactly `sizes`' sets. */
function serves(agent: AgentCensus, sizes: Sizes): boolean {
  return BACKENDS.every((backend) => agent.backends[backend]?.digest === endpointsDigest(instances(backend, sizes[backend])));
}

/** Pushes `agent` received between two censuses (one that does not list it: it was not started). */
function pushesBetween(agent: string, earlier: ReadonlyMap<string, AgentCensus>, later: ReadonlyMap<string, AgentCensus>): number {
  return (later.get(agent)?.pushes ?? 0) - (earlier.get(agent)?.pushes ?? 0);
}

function ids(agents: Iterable<AgentCensus>): string[] {
  return [...agents].map((agent) => agent.agent);
}

/** The fleet after a kill: each agent either runs the target, or was sent nothing since the baseline. */
interface AtKill {
  census: Map<string, AgentCensus>;
  ranTarget: string[];
  sentNothing: string[];
}

/**
 * The census once the fleet has settled after the kill: every stream closed (nothing more of the
 * killed controller can arrive) and every push received since `baseline` applied, so that each
 * agent either runs `target` or was sent nothing.
 */
async function settledAfterKill(target: Sizes, baseline: ReadonlyMap<string, AgentCensus>): Promise<AtKill> {
  const settled = await until(
    async () => {
      await sleep(POLL_PAUSE_MS);
      const agents = await census();
      return [...agents.values()].every((agent) => !agent.connected && (pushesBetween(agent.agent, baseline, agents) === 0 || serves(agent, target))) && agents;
    },
    "every agent's stream closed and what it was sent applied",
    CONVERGE_MS,
  );
  return {
    census: settled,
    ranTarget: FLEET.filter((agent) => settled.has(agent) && serves(settled.get(agent)!, target)),
    sentNothing: FLEET.filter((agent) => pushesBetween(agent, baseline, settled) === 0),
  };
}

/**
 * What the replacement pushed, by the agents' own counts and by its log: nothing to an agent
 * that ran the target at the kill, something to every agent it had not been sent. Returns how
 * many agents it pushed to.
 */
function expectPushedOnlyWhereLacking(atKill: AtKill, after: ReadonlyMap<string, AgentCensus>, replacement: NodeProcess): number {
  const pushedTo = new Set(replacement.logs("push").map((line) => String(line["agent"])));
  const pushedAfterKill = (agent: string) => pushesBetween(agent, atKill.census, after) > 0;
  expect(atKill.ranTarget.filter((agent) => pushedTo.has(agent) || pushedAfterKill(agent)), "agents that ran the target at the kill, pushed again").toEqual([]);
  expect(atKill.sentNothing.filter((agent) => !pushedTo.has(agent) || !pushedAfterKill(agent)), "agents sent nothing before the kill, not pushed by the replacement").toEqual([]);
  return pushedTo.size;
}

/** Every agent connected and serving `target`; no backend of any agent ever served fewer than `floor`'s count. */
function expectServing(agents: ReadonlyMap<string, AgentCensus>, target: Sizes, floor: Sizes): void {
  expect(agents.size).toBe(AGENTS);
  expect(ids([...agents.values()].filter((agent) => !agent.connected || !serves(agent, target))), "agents not connected, or not serving the target").toEqual([]);
  for (const backend of BACKENDS) {
    const below = [...agents.values()].filter((agent) => (agent.backends[backend]?.fewest ?? 0) < floor[backend]);
    expect(ids(below), `${backend}: agents that ever served fewer than ${floor[backend]}`).toEqual([]);
  }
}

/** Asks the child to stop its agents (it then removes their state files); killed if it does not. */
async function stopFleet(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stopped = nextReport(child, "stopped", 20_000).catch(() => child.kill("SIGTERM"));
  send(child, { type: "stop" });
  await stopped;
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-chaos-fleet-"));
  catalog = join(dir, "catalog.json");
  config = join(dir, "controller.json");
  [grpcPort, httpPort] = [await freePort(), await freePort()];
  await writeCatalog(A);
  // Heartbeats at their defaults: a SIGKILL closes the sockets, so agents see it at once; a
  // shorter dead-after would only cut off agents whose child is short of CPU.
  await writeFile(
    config,
    JSON.stringify({
      listen: `127.0.0.1:${grpcPort}`,
      http: { listen: `127.0.0.1:${httpPort}` },
      discovery: { file: catalog },
      backends: BACKENDS.map((backend) => ({ backend, service: MAPPINGS[backend] })),
      stateDir: join(dir, "controller-state"),
    }),
  );
});

afterAll(async () => {
  if (fleet !== null) await stopFleet(fleet);
  await controller?.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("chaos, a fleet of thousands", () => {
  it(`SIGKILL of the controller while ${AGENTS} agents connect: the replacement brings every one to discovery's state`, async () => {
    startController();
    fleet = fork(AGENTS_BIN, [String(AGENTS), `127.0.0.1:${grpcPort}`, "0", BACKENDS.join(",")], { stdio: ["ignore", "ignore", "inherit", "ipc"], execArgv: [] });
    const ready = nextReport(fleet, "ready", 2 * CONVERGE_MS);
    ready.catch(() => undefined); // awaited after the kill: a failure before then is reported there, not as unhandled
    await until(async () => ((await pausedSummary())?.summary.connected ?? 0) >= AGENTS / 4, "a quarter of the fleet connected", CONVERGE_MS);
    await controller!.kill("SIGKILL");
    const killedAt = performance.now();
    const atKill = await settledAfterKill(A, new Map());
    const restartedMs = performance.now() - killedAt;
    // The child starts its agents in batches, each once the last got its first push: the ramp
    // stops at the kill, with some agents running A and the others never sent anything.
    expect(atKill.ranTarget.length).toBeGreaterThan(0);
    expect(atKill.sentNothing.length).toBeGreaterThan(0);

    const replacement = startController();
    await allConnected();
    const reconnectedMs = performance.now() - killedAt;
    await ready;
    await inSyncOn(A);
    const convergedMs = performance.now() - killedAt;

    const after = await census();
    expectServing(after, A, A);
    const pushedTo = expectPushedOnlyWhereLacking(atKill, after, replacement);
    console.log(JSON.stringify({ test: "chaos-fleet", kill: "ramp", agents: AGENTS, ran_target_at_kill: atKill.ranTarget.length, pushed_by_replacement: pushedTo, kill_to_replacement_start_ms: Math.round(restartedMs), kill_to_all_reconnected_ms: Math.round(reconnectedMs), kill_to_all_converged_ms: Math.round(convergedMs) }));
  }, 3 * CONVERGE_MS);

  it(`SIGKILL of the controller while it fans a large change out to ${AGENTS} agents: all converge, nothing resent, nothing emptied`, async () => {
    const onA = await inSyncOn(A);
    const versionsA = Object.fromEntries(onA.backends.map((backend) => [backend.backend, backend.version]));
    const beforeChange = await census();
    const acksBefore = controller!.logs("ack").length;

    // Killed at its first ack of the change: the fleet is idle on A, so any ack is one of B.
    const killing = killAtFirstAck(controller!);
    await writeCatalog(B);
    const killed = await killing;
    const killedAt = performance.now();
    // Every ack it handled is in its log: some agents acked B before it died, most had not.
    const changeAcks = killed.logs("ack").slice(acksBefore);
    const ackedAtKill = new Set(changeAcks.map((line) => String(line["agent"])));
    expect(ackedAtKill.size).toBeGreaterThan(0);
    expect(ackedAtKill.size).toBeLessThan(AGENTS);
    const atKill = await settledAfterKill(B, beforeChange);
    expect([...ackedAtKill].filter((agent) => !atKill.ranTarget.includes(agent)), "agents whose ack the killed controller had, not running B").toEqual([]);
    const restartedMs = performance.now() - killedAt;

    const replacement = startController();
    await allConnected();
    const reconnectedMs = performance.now() - killedAt;
    const onB = await inSyncOn(B);
    const convergedMs = performance.now() - killedAt;
    // The same discovery state gives the same versions: how the replacement knows who runs B.
    const versionsB = Object.fromEntries(onB.backends.map((backend) => [backend.backend, backend.version]));
    expect(changeAcks.filter((line) => line["version"] !== versionsB[String(line["backend"])])).toEqual([]);
    expect(versionsB["be_static"]).toBe(versionsA["be_static"]);

    // The replacement's view, agent by agent: each acked B's version of every backend.
    const full = await status();
    expect(full?.agents).toHaveLength(AGENTS);
    const offB = full!.agents.filter((agent) => !agent.connected || agent.state !== "in-sync" || agent.backends.some((backend) => backend.appliedVersion !== versionsB[backend.backend]));
    expect(offB.map((agent) => agent.agent)).toEqual([]);

    // The agents' own view: each simulated HAProxy serves B, and never served fewer than min(|A|, |B|).
    const after = await census();
    const floor = Object.fromEntries(BACKENDS.map((backend) => [backend, Math.min(A[backend], B[backend])])) as Sizes;
    expectServing(after, B, floor);
    const pushedTo = expectPushedOnlyWhereLacking(atKill, after, replacement);

    console.log(
      JSON.stringify({
        test: "chaos-fleet",
        kill: "fan-out",
        agents: AGENTS,
        acked_at_kill: ackedAtKill.size,
        ran_target_at_kill: atKill.ranTarget.length,
        pushed_by_replacement: pushedTo,
        kill_to_replacement_start_ms: Math.round(restartedMs),
        kill_to_all_reconnected_ms: Math.round(reconnectedMs),
        kill_to_all_converged_ms: Math.round(convergedMs),
      }),
    );
  }, 3 * CONVERGE_MS);
});
