import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentRunner } from "../../agent/run/agent-runner.js";
import type { SocketApply } from "../../agent/run/applier.js";
import type { DesiredSet } from "../../agent/run/local-store.js";
import type { FleetStatus } from "../../controller/status/status-schema.js";
import { printLine } from "../bench/report.js";
import { until } from "../support/helpers.js";
import { freePort } from "../support/haproxy.js";
import { seriesValue } from "../support/metrics-text.js";
import { CONTROLLER_BIN, startNode, type NodeProcess } from "../support/processes.js";
import { startRunner } from "../support/runner.js";
import { SimulatedApplier } from "../support/simulated-applier.js";
import { agentBackend, fetchStatus } from "../support/status-api.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

// A storm of large changes while one agent's path is black-holed (the proxy holds the bytes,
// so the controller's writes to that agent back up until its stream blocks). On the real
// controller process: that agent is written one push at most, the others converge on every
// change meanwhile, the stalled stream is let go after deadAfterMs, and once the path is back
// the agent is sent the last change only. The controller's memory is printed, not asserted.

const SERVERS = 4_000;
const CHANGES = 60;
const DEAD_AFTER_MS = 3_000;
const STALLED = "edge-far";
const NEAR = ["edge-a", "edge-b"];

let dir: string;
let catalog: string;
let httpPort: number;
let controller: NodeProcess;
let proxy: TcpProxy;
let far: RecordingApplier;
const runners: AgentRunner[] = [];

/** The simulated HAProxy, remembering which be_big version each apply ran and when. */
class RecordingApplier extends SimulatedApplier {
  readonly applied: Array<{ at: number; version: string }> = [];

  override async apply(desired: DesiredSet): Promise<SocketApply[]> {
    this.applied.push({ at: Date.now(), version: desired.backends.get("be_big")?.version ?? "" });
    return super.apply(desired);
  }
}

/** `count` distinct loopback endpoints: a push of this backend is ~100 KB at 4,000. */
const big = (count: number) => Array.from({ length: count }, (_, i) => ({ address: `127.20.${Math.floor(i / 250)}.${(i % 250) + 1}`, port: 9000 }));

/** Replaced by rename, as a config tool would: the controller never reads half a file. */
async function writeCatalog(servers: number): Promise<void> {
  const next = `${catalog}.next`;
  await writeFile(next, JSON.stringify({ services: { big: big(servers) } }));
  await rename(next, catalog);
}

const status = () => fetchStatus(httpPort);

async function metrics(): Promise<Record<string, number | undefined>> {
  const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const names = ["hafleet_pushes_total", "hafleet_streams_waiting_for_drain", "hafleet_push_cache_bytes", "nodejs_heap_size_used_bytes", "nodejs_external_memory_bytes", "process_resident_memory_bytes"];
  return Object.fromEntries(names.map((name) => [name, seriesValue(body, name)]));
}

/** The controller's "push" log lines to `agent` at or after `since` (epoch ms). */
const pushesTo = (agent: string, since: number) => controller.logs("push").filter((line) => line.agent === agent && Number(line.time) >= since);

/** Every near agent acked the controller's current be_big, which has `servers` servers. */
function nearConverged(now: FleetStatus | undefined, servers: number): boolean {
  const backend = now?.backends.find((candidate) => candidate.backend === "be_big");
  return backend?.servers === servers && NEAR.every((agent) => agentBackend(now, agent, "be_big")?.appliedVersion === backend.version);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-stalled-"));
  catalog = join(dir, "catalog.json");
  await writeCatalog(SERVERS);
  const grpcPort = await freePort();
  httpPort = await freePort();
  const config = join(dir, "controller.json");
  await writeFile(
    config,
    JSON.stringify({
      listen: `127.0.0.1:${grpcPort}`,
      http: { listen: `127.0.0.1:${httpPort}` },
      discovery: { file: catalog },
      backends: [{ backend: "be_big", service: "big" }],
      debounce: { quietMs: 20, maxMs: 200 },
      // grpc-js's server stream is in object mode: its write() returns false once 16 messages
      // wait, whatever their size. At 100 ms, the heartbeats queued behind the held push get
      // there ~1.6 s into the stall, so the later changes meet a blocked stream. deadAfterMs
      // stays under grpc-js's keepalive (an unanswered ping closes the connection after 5 s),
      // so that it is the controller's own silence rule that lets the stalled stream go.
      agents: { heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS },
    }),
  );
  controller = startNode(CONTROLLER_BIN, ["controller", "--config", config]);
  proxy = await startTcpProxy(grpcPort);
  far = new RecordingApplier(["be_big"]);
  runners.push(await startRunner({ id: STALLED, applier: far, labels: {}, controllerPorts: [proxy.port], stateRoot: dir, resyncMs: 600_000 }));
  for (const id of NEAR) runners.push(await startRunner({ id, applier: new SimulatedApplier(["be_big"]), labels: {}, controllerPorts: [grpcPort], stateRoot: dir, resyncMs: 600_000 }));
  await until(async () => {
    const now = await status();
    return now?.summary.connected === 3 && now.summary.inSync && now.backends[0]?.servers === SERVERS;
  }, "three agents in sync on the first set", 30_000);
}, 60_000);

afterAll(async () => {
  await Promise.all(runners.map((runner) => runner.stop()));
  await proxy?.close();
  await controller?.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("a stalled agent stream under a storm of large changes", () => {
  it("one push at most to the stalled agent, every change to the others, the stream let go, the last change only after", async () => {
    const before = await metrics();
    const firstVersion = agentBackend(await status(), STALLED, "be_big")!.appliedVersion;
    const stalledAt = Date.now();
    proxy.stall();

    let changesWhileOpen = 0;
    // Read beside the storm, until the stream is let go: bounded by that wait's own timeout.
    let waitingSeen = 0;
    let storming = true;
    const watching = (async () => {
      while (storming) {
        waitingSeen = Math.max(waitingSeen, (await metrics())["hafleet_streams_waiting_for_drain"] ?? 0);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    for (let change = 1; change <= CHANGES; change++) {
      await writeCatalog(SERVERS + change);
      const now = await until(async () => {
        const read = await status();
        return nearConverged(read, SERVERS + change) && read;
      }, `change ${change} acked by ${NEAR.join(" and ")}`, 20_000);
      if (agentBackend(now, STALLED, "be_big")?.connected) changesWhileOpen++;
    }
    const gone = await until(async () => {
      const agent = (await status())?.agents.find((candidate) => candidate.agent === STALLED);
      return agent?.connected === false && agent;
    }, "the controller letting go of the stalled stream", 30_000).finally(() => (storming = false));
    await watching;
    const afterStorm = await metrics();
    const lastVersion = (await status())!.backends[0]!.version;

    // Later changes came while the stalled stream was still open: they were merged, not written.
    expect(changesWhileOpen).toBeGreaterThanOrEqual(2);
    expect(pushesTo(STALLED, stalledAt)).toHaveLength(1);
    for (const agent of NEAR) expect(pushesTo(agent, stalledAt)).toHaveLength(CHANGES);
    expect(afterStorm["hafleet_pushes_total"]! - before["hafleet_pushes_total"]!).toBe(NEAR.length * CHANGES + 1);
    // The operator sees the stream held back by flow control while it lasts, and nothing once it is let go.
    expect(waitingSeen).toBe(1);
    expect(afterStorm["hafleet_streams_waiting_for_drain"]).toBe(0);
    expect(afterStorm["hafleet_push_cache_bytes"]).toBeLessThanOrEqual(32 * 1024 * 1024);
    expect(gone).toMatchObject({ state: "disconnected", disconnectReason: expect.stringMatching(/^no message from the agent for \d+ ms$/) });
    // Nothing of the storm reached the stalled agent: it kept running what it had.
    expect(far.applied.filter((apply) => apply.at >= stalledAt && apply.version !== firstVersion)).toEqual([]);

    const resumedAt = Date.now();
    proxy.resume();
    await until(async () => {
      const now = await status();
      const backend = agentBackend(now, STALLED, "be_big");
      return backend?.connected === true && backend.state === "in-sync" && backend.appliedVersion === lastVersion;
    }, "the stalled agent back and in sync on the last change", 30_000);
    const afterResume = await metrics();

    expect(pushesTo(STALLED, resumedAt)).toHaveLength(1);
    const appliedAfter = far.applied.filter((apply) => apply.at >= resumedAt).map((apply) => apply.version);
    expect(appliedAfter.length).toBeGreaterThan(0);
    expect(new Set(appliedAfter)).toEqual(new Set([lastVersion]));

    printLine({
      test: "stalled-streams",
      servers: SERVERS,
      changes: CHANGES,
      changesWhileStreamOpen: changesWhileOpen,
      ...Object.fromEntries(
        (["before", "afterStorm", "afterResume"] as const).flatMap((phase) => {
          const figures = { before, afterStorm, afterResume }[phase];
          return [
            [`${phase}HeapMB`, mb(figures["nodejs_heap_size_used_bytes"])],
            [`${phase}ExternalMB`, mb(figures["nodejs_external_memory_bytes"])],
            [`${phase}RssMB`, mb(figures["process_resident_memory_bytes"])],
          ];
        }),
      ),
    });
  }, 240_000);
});

function mb(bytes: number | undefined): number | null {
  return bytes === undefined ? null : Math.round(bytes / 104_857.6) / 10;
}
