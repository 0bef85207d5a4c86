import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Reloader, type MasterControl } from "../../agent/hybrid/reloader.js";
import { parseMasterStatus, type MasterStatus } from "../../agent/hybrid/show-proc.js";
import { AgentMetrics } from "../../agent/metrics/agent-metrics.js";
import { isLoopbackHost } from "../../agent/metrics/http-endpoint.js";
import { addressSchema, nameSchema, portSchema, weightSchema } from "../../agent/model/values.js";
import { RuntimeCommand } from "../../agent/runtime/commands.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import type { HealthAnswer } from "../../controller/discovery/consul/consul-client.js";
import { ConsulSource } from "../../controller/discovery/consul/consul-source.js";
import { ConsulWatch, type WatchClock } from "../../controller/discovery/consul/consul-watch.js";
import { ControllerMetrics, type FleetGauges } from "../../controller/metrics/controller-metrics.js";
import { buildFleetStatus, type AgentView } from "../../controller/status/fleet-status.js";
import { SYNC_STATES, type SyncState } from "../../controller/status/status-schema.js";
import { startConsulEmulator } from "../consul-emulator/consul-emulator.js";

/** The value of one series, written exactly as the exposition writes it; undefined when absent. */
function value(body: string, series: string): number | undefined {
  const line = body.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function counts(partial: Partial<Record<SyncState, number>> = {}): Record<SyncState, number> {
  return Object.fromEntries(SYNC_STATES.map((state) => [state, partial[state] ?? 0])) as Record<SyncState, number>;
}

const quietFleet = (): FleetGauges => ({ summary: { connected: 0, states: counts() }, backends: [], rollout: null, frozen: null });
const quietStreams = () => ({ waitingForDrain: 0, pushCacheBytes: 0 });

describe("ControllerMetrics", () => {
  it("counts pushes, acks, nacks, drift, guard holds and discovery per backend or service, and times convergence", async () => {
    const metrics = new ControllerMetrics({ fleet: quietFleet, streams: quietStreams });
    metrics.pushed();
    metrics.pushed();
    metrics.acked("be_app", 0.2, 0.05);
    metrics.acked("be_app", null, 0.04);
    metrics.nacked("be_api");
    metrics.drift("be_app");
    metrics.guardHeld("be_app");
    metrics.discoveryFailed("web#eu");
    metrics.discoveryAnswered("web", 0.03, false);
    metrics.discoveryAnswered("web", 240, true);

    const { body, contentType } = await metrics.render();

    expect(contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(value(body, "hafleet_pushes_total")).toBe(2);
    expect(value(body, 'hafleet_acks_total{backend="be_app"}')).toBe(2);
    expect(value(body, 'hafleet_nacks_total{backend="be_api"}')).toBe(1);
    expect(value(body, 'hafleet_drift_reports_total{backend="be_app"}')).toBe(1);
    expect(value(body, 'hafleet_guard_held_total{backend="be_app"}')).toBe(1);
    expect(value(body, 'hafleet_discovery_errors_total{service="web#eu"}')).toBe(1);
    // An ack that completes no recorded change has a round trip but no convergence time.
    expect(value(body, "hafleet_convergence_seconds_count")).toBe(1);
    expect(value(body, "hafleet_convergence_seconds_sum")).toBe(0.2);
    expect(value(body, 'hafleet_convergence_seconds_bucket{le="0.1"}')).toBe(0);
    expect(value(body, 'hafleet_convergence_seconds_bucket{le="0.25"}')).toBe(1);
    expect(value(body, 'hafleet_convergence_seconds_bucket{le="0.01"}')).toBe(0);
    expect(value(body, 'hafleet_convergence_seconds_bucket{le="60"}')).toBe(1);
    expect(value(body, "hafleet_push_round_trip_seconds_count")).toBe(2);
    // A blocking query's minutes must not pass for Consul's latency.
    expect(value(body, 'hafleet_discovery_request_duration_seconds_count{service="web"}')).toBe(1);
    expect(value(body, 'hafleet_discovery_request_duration_seconds_sum{service="web"}')).toBe(0.03);
    expect(value(body, 'hafleet_discovery_blocking_query_seconds_count{service="web"}')).toBe(1);
    expect(value(body, 'hafleet_discovery_blocking_query_seconds_bucket{le="120",service="web"}')).toBe(0);
    expect(value(body, 'hafleet_discovery_blocking_query_seconds_bucket{le="300",service="web"}')).toBe(1);
    expect(value(body, "process_cpu_seconds_total")).toBeGreaterThanOrEqual(0);
  });

  it("reads the fleet's gauges at every scrape, every sync state present even at 0", async () => {
    let fleet: FleetGauges = {
      summary: { connected: 3, states: counts({ "in-sync": 2, pending: 1, disconnected: 1 }) },
      backends: [
        { backend: "be_app", states: counts({ "in-sync": 2, pending: 1 }) },
        { backend: "be_old", states: counts({ disconnected: 1 }) },
      ],
      rollout: { phase: "baking", wave: 2 },
      frozen: { since: 1, reason: "incident" },
    };
    const metrics = new ControllerMetrics({ fleet: () => fleet, streams: quietStreams });

    const first = (await metrics.render()).body;
    expect(value(first, "hafleet_agents_connected")).toBe(3);
    for (const state of SYNC_STATES) {
      const expected = fleet.summary.states[state];
      expect(value(first, `hafleet_agents{state="${state}"}`), state).toBe(expected);
      expect(value(first, `hafleet_backend_agents{backend="be_app",state="${state}"}`), state).toBe(fleet.backends[0]!.states[state]);
    }
    expect(value(first, 'hafleet_agents{state="drifted"}')).toBe(0);
    expect(value(first, 'hafleet_backend_agents{backend="be_old",state="disconnected"}')).toBe(1);
    expect(value(first, 'hafleet_rollout_phase{phase="baking"}')).toBe(1);
    expect(value(first, 'hafleet_rollout_phase{phase="applying"}')).toBe(0);
    expect(value(first, "hafleet_rollout_wave")).toBe(2);
    expect(value(first, "hafleet_frozen")).toBe(1);

    fleet = { summary: { connected: 2, states: counts({ "in-sync": 2 }) }, backends: [{ backend: "be_app", states: counts({ "in-sync": 2 }) }], rollout: null, frozen: null };
    const second = (await metrics.render()).body;
    expect(value(second, "hafleet_agents_connected")).toBe(2);
    expect(value(second, 'hafleet_agents{state="pending"}')).toBe(0);
    expect(second).not.toContain('backend="be_old"');
    expect(second.split("\n").filter((line) => line.startsWith("hafleet_rollout_phase{")).map((line) => line.endsWith(" 0"))).toEqual(Array(7).fill(true));
    expect(value(second, "hafleet_frozen")).toBe(0);
  });

  it("takes the status API's own FleetStatus, and never labels a series with an agent", async () => {
    const backend: DesiredBackendState = { name: nameSchema.parse("be_app"), servers: [], version: "v2", allowEmpty: false, held: null, dropped: [] };
    const view = (agent: string, departed: AgentView["departed"]): AgentView => ({
      agent,
      labels: { region: "eu" },
      hafleetVersion: "0.1.0",
      peer: "ipv4:10.1.2.3:5000",
      connectedAt: 0,
      departed,
      desired: [backend],
      sync: departed === null ? new Map([[backend.name, { state: "synced", version: "v2" }]]) : null,
      applied: new Map([[backend.name, "v2"]]),
      observed: { digest: "d", appliedVersions: {}, backends: [{ backend: backend.name, socket: "/run/haproxy.sock", digest: "x", serving: 0, drift: [] }] },
      rolloutSide: null,
    });
    const status = () => buildFleetStatus({ now: 10, controller: { version: "0.1.0", startedAt: 0 }, agents: [view("edge-7", null), view("edge-8", { since: 5, reason: "gone" })], backends: [backend], frozen: null, rollout: null, changes: [] });
    const metrics = new ControllerMetrics({ fleet: status, streams: () => ({ waitingForDrain: 2, pushCacheBytes: 4_096 }) });
    metrics.pushed();
    metrics.acked("be_app", 1, 0.5);

    const { body } = await metrics.render();

    expect(value(body, "hafleet_agents_connected")).toBe(1);
    expect(value(body, 'hafleet_agents{state="disconnected"}')).toBe(1);
    expect(value(body, 'hafleet_backend_agents{backend="be_app",state="in-sync"}')).toBe(1);
    expect([value(body, "hafleet_streams_waiting_for_drain"), value(body, "hafleet_push_cache_bytes")]).toEqual([2, 4_096]);
    expect(body).not.toMatch(/edge-[78]|10\.1\.2\.3/);
    const ours = body.split("\n").filter((line) => line.startsWith("hafleet_"));
    const labelNames = new Set(ours.flatMap((line) => [...line.matchAll(/[{,]([a-zA-Z_]+)="/g)].map((match) => match[1])));
    expect([...labelNames].sort()).toEqual(["backend", "le", "phase", "state"]);
  });

  it("keeps each instance's series apart: two controllers in one process do not collide", async () => {
    const a = new ControllerMetrics({ fleet: quietFleet, streams: quietStreams });
    const b = new ControllerMetrics({ fleet: quietFleet, streams: quietStreams });
    a.pushed();
    expect(value((await a.render()).body, "hafleet_pushes_total")).toBe(1);
    expect(value((await b.render()).body, "hafleet_pushes_total")).toBe(0);
  });
});

describe("AgentMetrics", () => {
  it("counts commands by verb, failures apart, batches, applies, reloads, the controller link and pushes", async () => {
    let now = 1_700_000_000_000;
    let serving = [
      { backend: "be_app", socket: "/run/haproxy/admin.sock", serving: 3 },
      { backend: "be_old", socket: "/run/haproxy/admin.sock", serving: 1 },
    ];
    const metrics = new AgentMetrics({ serving: () => serving, clock: () => now });
    const before = (await metrics.render()).body;
    for (const outcome of ["converged", "partial", "failed"]) expect(value(before, `hafleet_agent_applies_total{outcome="${outcome}"}`)).toBe(0);
    expect(value(before, "hafleet_agent_last_successful_apply_timestamp_seconds")).toBe(0);

    metrics.commandSent("set server", true);
    metrics.commandSent("set server", false);
    metrics.commandSent("show servers state", true);
    metrics.batch(0.004, true);
    metrics.batch(2, false);
    metrics.applied("converged");
    now += 5_000;
    metrics.applied("partial");
    metrics.reloaded("reloaded", 0.3);
    metrics.reloaded("timeout", 10);
    metrics.controllerConnected();
    metrics.controllerDisconnected();
    metrics.controllerConnected();
    metrics.pushReceived();
    metrics.acked("be_app");
    metrics.nacked("be_api");
    metrics.driftRepaired("be_app");
    metrics.driftRepaired("be_app");

    const { body } = await metrics.render();
    expect(value(body, 'hafleet_runtime_commands_total{command="set server"}')).toBe(2);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="set server"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_commands_total{command="show servers state"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_commands_failed_total{command="show servers state"}')).toBeUndefined();
    expect(value(body, 'hafleet_runtime_batches_total{outcome="answered"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_batches_total{outcome="failed"}')).toBe(1);
    expect(value(body, 'hafleet_runtime_batch_duration_seconds_bucket{le="0.005"}')).toBe(1);
    expect(value(body, "hafleet_runtime_batch_duration_seconds_count")).toBe(2);
    expect(value(body, 'hafleet_agent_applies_total{outcome="converged"}')).toBe(1);
    expect(value(body, 'hafleet_agent_applies_total{outcome="partial"}')).toBe(1);
    // Only a converged apply moves the timestamp: the partial one came 5 s later.
    expect(value(body, "hafleet_agent_last_successful_apply_timestamp_seconds")).toBe(1_700_000_000);
    expect(value(body, 'hafleet_agent_reloads_total{outcome="reloaded"}')).toBe(1);
    expect(value(body, 'hafleet_agent_reloads_total{outcome="timeout"}')).toBe(1);
    expect(value(body, 'hafleet_agent_reloads_total{outcome="failed"}')).toBe(0);
    expect(value(body, "hafleet_agent_reload_duration_seconds_count")).toBe(2);
    expect(value(body, "hafleet_agent_controller_connected")).toBe(1);
    expect(value(body, "hafleet_agent_controller_reconnects_total")).toBe(1);
    expect(value(body, "hafleet_agent_pushes_received_total")).toBe(1);
    expect(value(body, 'hafleet_agent_acks_total{backend="be_app"}')).toBe(1);
    expect(value(body, 'hafleet_agent_nacks_total{backend="be_api"}')).toBe(1);
    expect(value(body, 'hafleet_agent_drift_repaired_total{backend="be_app"}')).toBe(2);
    expect(value(body, 'hafleet_agent_serving_servers{backend="be_app",socket="/run/haproxy/admin.sock"}')).toBe(3);

    serving = [{ backend: "be_app", socket: "/run/haproxy/admin.sock", serving: 4 }];
    const later = (await metrics.render()).body;
    expect(value(later, 'hafleet_agent_serving_servers{backend="be_app",socket="/run/haproxy/admin.sock"}')).toBe(4);
    expect(later).not.toContain('backend="be_old"');
  });
});

describe("the observer hooks", () => {
  it("names each command by its verb alone, never its arguments", () => {
    const backend = nameSchema.parse("be_app");
    const server = nameSchema.parse("srv1");
    const address = addressSchema.parse("10.0.0.1");
    const port = portSchema.parse(8080);
    const verbs = [
      RuntimeCommand.setAddress(backend, server, address, port),
      RuntimeCommand.setWeight(backend, server, weightSchema.parse(10)),
      RuntimeCommand.setState(backend, server, "drain"),
      RuntimeCommand.addServer(backend, server, address, port, { check: true }),
      RuntimeCommand.deleteServer(backend, server),
      RuntimeCommand.enableHealth(backend, server),
      RuntimeCommand.showServersState(),
      RuntimeCommand.showStat("backends"),
      RuntimeCommand.showServerStat(3, 4),
      RuntimeCommand.showInfo(),
      RuntimeCommand.showBackend(),
    ].map((command) => command.verb);
    expect(verbs).toEqual(["set server", "set server", "set server", "add server", "del server", "enable health", "show servers state", "show stat", "show stat", "show info", "show backend"]);
  });

  it("tells each reload's outcome and duration, by the reloader's clock", async () => {
    const fresh = parseMasterStatus(readFileSync(new URL("../fixtures/haproxy-2.6/master-prompt-show-proc.txt", import.meta.url), "utf8"));
    const newWorker: MasterStatus = { ...fresh, proc: { ...fresh.proc, workers: [{ ...fresh.proc.workers[0]!, pid: 99_999 }] } };
    const failed: MasterStatus = {
      prompt: { text: "master[ReloadFailed]> ", reloadFailed: true },
      proc: { ...fresh.proc, master: { ...fresh.proc.master, reloads: fresh.proc.master.reloads + 1, failedReloads: 1 } },
    };
    let time = 0;
    const clock = { now: () => time, sleep: async (ms: number) => void (time += ms) };
    const told: Array<[string, number]> = [];
    // Each reload reads the status before, then polls it every 100 ms until a verdict.
    const reloadWith = async (statuses: MasterStatus[], prepare?: () => Promise<void>) => {
      const master: MasterControl = { name: "/run/master.sock", status: async () => statuses.shift() ?? fresh, reload: async () => undefined };
      const reloader = new Reloader(master, { clock, pollMs: 100, timeoutMs: 1_000, minIntervalMs: 0, observer: { reloaded: (outcome, seconds) => told.push([outcome, seconds]) }, ...(prepare ? { prepare } : {}) });
      await reloader.reload().catch(() => undefined);
    };

    await reloadWith([fresh, fresh, newWorker]);
    await reloadWith([fresh, failed]);
    await reloadWith([]);
    await reloadWith([], async () => {
      throw new Error("cannot save the server-state file");
    });

    expect(told).toEqual([
      ["reloaded", 0.2],
      ["failed", 0.1],
      ["timeout", 1],
      ["error", 0],
    ]);
  });

  it("tells each Consul query's outcome: at once or blocking, and not the one cut short by stop()", async () => {
    let time = 0;
    const clock: WatchClock = { now: () => time, sleep: async (ms) => void (time += ms) };
    const answers: Array<HealthAnswer | Error> = [
      { index: 5, instances: [{ id: "a", address: "10.0.0.1", port: 80 }], dropped: [] },
      new Error("Consul answered HTTP 500"),
      { index: 9, instances: [], dropped: [] },
    ];
    let exhausted = (): void => undefined;
    const done = new Promise<void>((resolve) => (exhausted = resolve));
    const metrics = new ControllerMetrics({ fleet: quietFleet, streams: quietStreams });
    const watch = new ConsulWatch({
      key: "web#eu",
      fetch: (index, signal) => {
        // Consul answers an index-0 query at once; a blocking one when the service changes.
        time += index === 0 ? 40 : 90_000;
        const next = answers.shift();
        if (next === undefined) {
          exhausted();
          return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
        }
        return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
      },
      onSnapshot: () => undefined,
      onError: () => undefined,
      clock,
      random: () => 0,
      rateLimit: { burst: 100, refillPerSecond: 100 },
      observer: metrics,
    });
    watch.start();
    await done;
    await watch.stop();

    const { body } = await metrics.render();
    expect(value(body, 'hafleet_discovery_request_duration_seconds_count{service="web#eu"}')).toBe(1);
    expect(value(body, 'hafleet_discovery_request_duration_seconds_sum{service="web#eu"}')).toBe(0.04);
    expect(value(body, 'hafleet_discovery_blocking_query_seconds_count{service="web#eu"}')).toBe(1);
    expect(value(body, 'hafleet_discovery_blocking_query_seconds_sum{service="web#eu"}')).toBe(90);
    expect(value(body, 'hafleet_discovery_errors_total{service="web#eu"}')).toBe(1);
  });

  it("reaches every watch of a ConsulSource: a real query to the Consul emulator is timed", async () => {
    const consul = await startConsulEmulator();
    const metrics = new ControllerMetrics({ fleet: quietFleet, streams: quietStreams });
    const source = new ConsulSource({ address: consul.url, observer: metrics });
    try {
      await new Promise((resolve, reject) => source.watch("web", "eu", { snapshot: resolve, error: (_key, error) => reject(error) }));
      const { body } = await metrics.render();
      expect(value(body, 'hafleet_discovery_request_duration_seconds_count{service="web#eu"}')).toBe(1);
    } finally {
      await source.close();
      await consul.close();
    }
  });

  it("knows loopback addresses without resolving names", () => {
    expect(["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "localhost", "LOCALHOST"].filter((host) => !isLoopbackHost(host))).toEqual([]);
    expect(["0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1", "128.0.0.1", "localhost.example.com", "my-host"].filter(isLoopbackHost)).toEqual([]);
  });
});
