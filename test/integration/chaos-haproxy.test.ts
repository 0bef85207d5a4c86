import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { serving } from "../support/apply.js";
import { runAgent } from "../support/cli.js";
import { until } from "../support/helpers.js";
import { freePort, startHaproxy, type RunningHaproxy } from "../support/haproxy.js";
import { templateBackend } from "../support/haproxy-config.js";
import { scrapeSeries } from "../support/metrics-text.js";
import { AGENT_BIN, CONTROLLER_BIN, startNode, type NodeProcess } from "../support/processes.js";
import { fewestServing, startServingSampler, type ServingSampler } from "../support/serving-sampler.js";
import { agentBackend, fetchStatus } from "../support/status-api.js";

// HAProxy SIGKILLed under hafleet: in the middle of a big batch of `add server` (2,000 servers
// past 8 template slots), or idle and left down a while. Real HAProxy, the real agent
// (`hafleet-agent run` or `apply` from dist/) and, for `run`, the real controller process.
// Truth is HAProxy's own `show servers state` and the controller's status API; "no server
// emptied": whenever HAProxy answers, before a kill and once the agent re-applied after a
// restart, the backend serves at least the old set.

const SLOTS = 8;
const OLD = 4;
const BIG = 2_000;
const AGENT = "edge-1";

/** 2,000 distinct loopback endpoints at most: 127.0.(20+i/250).(1+i%250):9000+i. */
const app = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `127.0.${20 + Math.floor(i / 250)}.${(i % 250) + 1}`, port: 9000 + i }));
const endpoints = (servers: Array<{ address: string; port: number }>) => servers.map((server) => `${server.address}:${server.port}`).sort();

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Fleet {
  h: RunningHaproxy;
  controller: NodeProcess;
  agent: NodeProcess;
  httpPort: number;
  metricsPort: number;
  setCatalog(servers: Array<{ address: string; port: number }>): Promise<void>;
}

/** HAProxy with SLOTS slots, a controller on a catalog file of OLD servers, an agent in sync on them. */
async function startFleet(resync: string): Promise<Fleet> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-chaos-haproxy-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const catalog = join(dir, "catalog.json");
  const setCatalog = (servers: Array<{ address: string; port: number }>) => writeFile(catalog, JSON.stringify({ services: { web: servers } }));
  await setCatalog(app(OLD));
  // quiet: 2,000 servers changing state would each print a warning.
  const h = await startHaproxy({ sections: templateBackend("be_app", { slots: SLOTS }), quiet: true });
  cleanups.push(() => h.stop());
  const [grpcPort, httpPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  const controller = startNode(CONTROLLER_BIN, ["controller", "--listen", `127.0.0.1:${grpcPort}`, "--http", `127.0.0.1:${httpPort}`, "--catalog-file", catalog, "--map", "web=be_app"]);
  cleanups.push(() => controller.kill("SIGKILL"));
  const agent = startNode(AGENT_BIN, [
    "run",
    ...["--controller", `127.0.0.1:${grpcPort}`, "--socket", h.socket, "--id", AGENT, "--state-dir", join(dir, "agent")],
    ...["--resync", resync, "--drain-period", "300ms", "--metrics-listen", `127.0.0.1:${metricsPort}`],
  ]);
  cleanups.push(() => agent.kill("SIGKILL"));
  const fleet = { h, controller, agent, httpPort, metricsPort, setCatalog };
  await reportsServing(fleet, OLD);
  return fleet;
}

/** What a failed wait says: the agent's status and the ends of both logs. */
const explain = (fleet: Fleet) => async () =>
  `status: ${JSON.stringify(agentBackend(await fetchStatus(fleet.httpPort), AGENT, "be_app"))}; agent log tail: ${fleet.agent.output().slice(-1_500)}; controller log tail: ${fleet.controller.output().slice(-1_500)}`;

/**
 * Waits until HAProxy serves exactly `count` servers and the agent's observed report (as the
 * controller's status API shows it) says the same with no drift: what the agent reports is
 * what HAProxy runs, not a report from before a kill.
 */
async function reportsServing(fleet: Fleet, count: number): Promise<void> {
  await until(
    async () => {
      const entry = agentBackend(await fetchStatus(fleet.httpPort), AGENT, "be_app");
      return entry?.connected === true && entry.serving === count && entry.drift.length === 0 && serving(await fleet.h.serversState("be_app"), "be_app").length === count;
    },
    `HAProxy serving ${count} and the agent reporting it`,
    60_000,
    explain(fleet),
  );
}

function track(sampler: ServingSampler): ServingSampler {
  cleanups.push(() => sampler.stop());
  return sampler;
}

/**
 * SIGKILLs HAProxy once its own answer shows some, not all, of the servers being added (8 slots
 * at the start, BIG rows once every `add server` ran): the batch is on the wire, half done.
 */
async function killMidBatch(h: RunningHaproxy, sampler: ServingSampler): Promise<void> {
  let last = 0;
  await until(
    async () => {
      last = (await h.serversState("be_app")).length;
      return last > SLOTS && last < BIG ? last : undefined;
    },
    "HAProxy in the middle of the add-server batch",
    30_000,
    async () => `its backend had ${last} servers at the last look`,
  );
  await kill(h, sampler);
}

/** SIGKILL; the samples begun from here on are no longer held to the old set. */
async function kill(h: RunningHaproxy, sampler: ServingSampler): Promise<void> {
  sampler.enter("killed");
  await h.kill();
}

/** From the same config: a fresh process, its slots back to disabled, the added servers gone. */
async function restart(h: RunningHaproxy, sampler: ServingSampler): Promise<void> {
  sampler.enter("restarted");
  await h.restart();
}

/** What the agent and `apply` say when HAProxy dies with a batch on the wire. */
const lostConnection = (prefix: string, socket: string) =>
  new RegExp(`^${prefix}connection to ${socket.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} lost after \\d+ of \\d+ replies$`);

/** Agent log lines written after `from` characters of its output. */
const linesSince = (agent: NodeProcess, from: number) => agent.output().slice(from).split("\n").filter((line) => line.startsWith("{"));

const stillRunning = (node: NodeProcess) => node.child.exitCode === null && node.child.signalCode === null;

/**
 * No server emptied: at least the old set serving in every answer HAProxy gave before the kill
 * and, after the restart (a fresh process serves nothing), from the agent's re-apply on.
 */
async function expectNothingEmptied(sampler: ServingSampler): Promise<void> {
  await sampler.stop();
  const before = sampler.samples.filter((sample) => sample.phase === "start");
  expect(before.filter((sample) => sample.serving !== null).length).toBeGreaterThan(0);
  expect(fewestServing(before)).toBeGreaterThanOrEqual(OLD);
  const after = sampler.samples.filter((sample) => sample.phase === "restarted");
  const reapplied = after.findIndex((sample) => sample.serving !== null && sample.serving >= OLD);
  expect(reapplied).toBeGreaterThanOrEqual(0);
  expect(fewestServing(after.slice(reapplied))).toBeGreaterThanOrEqual(OLD);
}

/** The scale-up to BIG killed in the middle, HAProxy restarted. */
async function scaleUpKilledMidBatch(fleet: Fleet, sampler: ServingSampler): Promise<void> {
  await fleet.setCatalog(app(BIG));
  await killMidBatch(fleet.h, sampler);
  await restart(fleet.h, sampler);
}

describe("HAProxy SIGKILLed under the agent", () => {
  it("in the middle of a 2,000-server batch, then restarted: the agent survives, re-applies, HAProxy runs exactly the desired set, its report matches, nothing emptied", async () => {
    const fleet = await startFleet("2s");
    const sampler = track(startServingSampler(fleet.h, "be_app"));
    await scaleUpKilledMidBatch(fleet, sampler);

    await reportsServing(fleet, BIG);
    expect(serving(await fleet.h.serversState("be_app"), "be_app")).toEqual(endpoints(app(BIG)));
    // Read once the agent is quiet (its last resync repaired nothing): a log read mid-write may end in half
    // a line. It lost the connection mid-batch and said so (a resync during the restart may add a
    // "cannot connect" after), saw HAProxy back, and still runs.
    expect(fleet.agent.logs("cannot apply to this HAProxy")[0]?.err).toMatch(lostConnection("", fleet.h.socket));
    expect(fleet.agent.logs("HAProxy reachable again").length).toBeGreaterThanOrEqual(1);
    expect(stillRunning(fleet.agent)).toBe(true);
    await expectNothingEmptied(sampler);
  }, 120_000);

  // The push under way when HAProxy died is nacked ("connection to ... lost"); the agent applies it
  // by itself once HAProxy is back and says so in its observed report (its applied versions), which
  // turns the controller's nack into an ack.
  it("in the middle of a batch, then restarted: the controller's status says in sync once HAProxy runs the set, not the nack from the kill", async () => {
    const fleet = await startFleet("2s");
    const sampler = track(startServingSampler(fleet.h, "be_app"));
    await scaleUpKilledMidBatch(fleet, sampler);
    await reportsServing(fleet, BIG);
    await until(async () => agentBackend(await fetchStatus(fleet.httpPort), AGENT, "be_app")?.state === "in-sync", "the agent in sync", 30_000, explain(fleet));
    const status = await fetchStatus(fleet.httpPort);
    expect(agentBackend(status, AGENT, "be_app")).toMatchObject({ state: "in-sync", error: null, serving: BIG, drift: [] });
    expect(status!.summary.inSync).toBe(true);
  }, 120_000);

  it("and left down: the agent keeps running, nacks a change naming the socket, logs the outage once, retries only at its resync period, and converges when HAProxy is back", async () => {
    const fleet = await startFleet("1s");
    const sampler = track(startServingSampler(fleet.h, "be_app"));
    const failed = () => scrapeSeries(fleet.metricsPort, 'hafleet_agent_applies_total{outcome="failed"}');
    const failedBefore = (await failed()) ?? 0;
    const logFrom = fleet.agent.output().length;
    await kill(fleet.h, sampler);
    const downSince = Date.now();

    // A change while HAProxy is down: nacked, the error naming the socket HAProxy does not answer on.
    await fleet.setCatalog(app(6));
    const nacked = await until(
      async () => {
        const entry = agentBackend(await fetchStatus(fleet.httpPort), AGENT, "be_app");
        return entry?.state === "rejected" ? entry : undefined;
      },
      "the change nacked",
      30_000,
      explain(fleet),
    );
    expect(nacked.connected).toBe(true);
    expect(nacked.error).toContain(`${fleet.h.socket}: cannot connect to HAProxy at ${fleet.h.socket}`);

    // "A while": several resyncs fail.
    await until(async () => ((await failed()) ?? 0) - failedBefore >= 5 || undefined, "five failed applies", 30_000, explain(fleet));
    const attempts = ((await failed()) ?? 0) - failedBefore;
    const downMs = Date.now() - downSince;
    const lines = linesSince(fleet.agent, logFrom);
    // No spin: one apply per resync (1 s) and the push, whatever the load; the log says it once, not per retry.
    expect(attempts).toBeLessThanOrEqual(Math.floor(downMs / 1_000) + 3);
    expect(fleet.agent.logs("cannot apply to this HAProxy")).toHaveLength(1);
    expect(lines.length).toBeLessThanOrEqual(6);
    expect(stillRunning(fleet.agent)).toBe(true);

    await restart(fleet.h, sampler);
    await reportsServing(fleet, 6);
    expect(serving(await fleet.h.serversState("be_app"), "be_app")).toEqual(endpoints(app(6)));
    expect(stillRunning(fleet.agent)).toBe(true);
    await expectNothingEmptied(sampler);
  }, 120_000);

  // A socket whose HAProxy cannot be reached is reported as serving nothing, every desired server
  // missing: the status must not say in sync while HAProxy is dead.
  it("and left down with no change: the controller's status shows the agent's HAProxy is not serving", async () => {
    const fleet = await startFleet("1s");
    await fleet.h.kill();
    const entry = await until(
      async () => {
        const now = agentBackend(await fetchStatus(fleet.httpPort), AGENT, "be_app");
        return now !== undefined && now.serving !== OLD ? now : undefined;
      },
      "a report after the kill",
      30_000,
      explain(fleet),
    );
    expect(entry.state).not.toBe("in-sync");
    expect((await fetchStatus(fleet.httpPort))!.summary.inSync).toBe(false);
  }, 60_000);
});

describe("hafleet-agent apply with HAProxy SIGKILLed mid-batch", () => {
  it("exits 3 with one line naming the lost connection, no stack trace; a re-run after the restart converges exactly", async () => {
    const h = await startHaproxy({ sections: templateBackend("be_app", { slots: SLOTS }), quiet: true });
    cleanups.push(() => h.stop());
    const desired = async (n: number) => {
      const file = join(h.dir, `desired-${n}.json`);
      await writeFile(file, JSON.stringify({ version: `v${n}`, backends: [{ name: "be_app", servers: app(n) }] }));
      return file;
    };
    const apply = async (n: number) => runAgent(["apply", "--socket", h.socket, "--desired", await desired(n), "--state-dir", join(h.dir, "state")]);
    expect((await apply(OLD)).code).toBe(0);

    const sampler = track(startServingSampler(h, "be_app"));
    const running = apply(BIG);
    // Settled before the temp dirs go, whatever fails below.
    cleanups.push(() => running.then(() => undefined, () => undefined));
    await killMidBatch(h, sampler);
    const killed = await running;
    expect(killed.code).toBe(3);
    const stderr = killed.stderr.trimEnd().split("\n");
    expect(stderr.at(-1)).toMatch(lostConnection("hafleet-agent apply: ", h.socket));
    expect(killed.stderr).not.toContain("unexpected error");
    // Log lines are JSON (a stack inside one stays on its line): no bare "    at ..." frame.
    expect(stderr.filter((line) => /^\s+at /.test(line))).toEqual([]);

    await restart(h, sampler);
    const rerun = await apply(BIG);
    expect(rerun.code).toBe(0);
    expect(rerun.stdout).toContain(`${h.socket}: runs the desired state`);
    expect(serving(await h.serversState("be_app"), "be_app")).toEqual(endpoints(app(BIG)));
    await expectNothingEmptied(sampler);
  }, 120_000);
});
