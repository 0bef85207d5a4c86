import { AgentApi, startConsulEmulator, type ConsulEmulator } from "../consul-emulator/consul-emulator.js";
import { DemoStack } from "../demo/demo-stack.js";
import { Load, type LoadCounts } from "../demo/load.js";
import { consulView, writeOperation } from "./consul-side.js";
import { ConvergenceWatch, readServers, servingView, unsettled } from "./haproxy-view.js";
import { sampleMemory, trend, type MemorySample, type MemoryTrend } from "./memory.js";
import { SoakCatalog } from "./soak-catalog.js";
import { SLOT_PREFIX, startHafleet, startUpstreams, type Hafleet } from "./soak-stack.js";

/*
 * The soak: the real stack under a steady HTTP load through HAProxy, and scale events in Consul
 * spread over many backends, each awaited until HAProxy's own state shows it. The backends run
 * side by side because the controller's Consul watch takes at most one answer a second per
 * service (its token bucket), as it should against a real Consul: one event per service and
 * second keeps every event its own change, never coalesced with the next. The events are cut
 * into phases; at the end of each, with nothing in flight, Consul's own answer and HAProxy's
 * own state are read for every backend, with the traffic and memory of the phase.
 */

export interface SoakSettings {
  events: number;
  backends: number;
  /** Checkpoints: the first phase is also the memory warm-up. */
  phases: number;
  slots: number;
  minServing: number;
  maxServing: number;
  upstreams: number;
  ratePerSecond: number;
  /** Per service, at least this long from one event to its next: the Consul watch's refill. */
  eventIntervalMs: number;
  sampleMs: number;
  pollMs: number;
  convergeTimeoutMs: number;
  /** The controller's; its defaults (100 ms / 1 s) would put every service's event in one push a second. */
  debounce: { quietMs: number; maxMs: number };
  drainPeriod: string;
  /** After the last event, how long drained and added servers may take to be cleared. */
  settleTimeoutMs: number;
  /** The whole run's bound, start-up included. */
  maxMs: number;
}

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

export interface PhaseTraffic {
  served: number;
  failed: number;
  failures: Record<string, number>;
  /** Upstreams that answered at least one request in the phase. */
  upstreams: number;
}

export type SoakRecord =
  | { record: "started"; dir: string; pids: Record<string, number> }
  | {
      record: "checkpoint";
      phase: number;
      /** Events landed, in this phase and in all. */
      events: number;
      totalEvents: number;
      ms: number;
      convergenceMs: Percentiles;
      traffic: PhaseTraffic;
      /** Per backend: Consul's passing instances and HAProxy's servers in service, both as `ADDR:PORT w=W`. */
      consul: Record<string, string[]>;
      haproxy: Record<string, string[]>;
      memory: MemorySample;
    }
  | {
      record: "result";
      events: number;
      landed: number;
      /** First event to last landing. */
      ms: number;
      convergenceMs: Percentiles;
      requests: LoadCounts;
      reloads: number;
      workerReplaced: boolean;
      /** Servers still draining, or added and not deleted, once settleTimeoutMs has passed. */
      unsettled: string[];
      consul: Record<string, string[]>;
      haproxy: Record<string, string[]>;
      memory: Record<string, { rssKb: MemoryTrend | null; heapKb: MemoryTrend | null }>;
      samples: number;
    };

/** What every phase works with, once everything has started. */
interface Running {
  catalog: SoakCatalog;
  api: AgentApi;
  watch: ConvergenceWatch;
  hafleet: Hafleet;
  consulUrl: string;
  services: readonly string[];
  backends: readonly string[];
  load: Load;
  /** performance.now() values: the run's bound, the first event, each backend's last event. */
  deadline: number;
  begun: number;
  lastEventAt: number[];
}

// HAProxy's own `timeout server`: a slower answer is a failure there too.
const LOAD_TIMEOUT_MS = 5_000;

export class Soak {
  private readonly stack: DemoStack;
  private consul: ConsulEmulator | null = null;
  private load: Load | null = null;
  private sampler: NodeJS.Timeout | null = null;
  private readonly samples: MemorySample[] = [];
  private samplingError: Error | null = null;
  private landed = 0;
  private stopping: Promise<void> | null = null;

  constructor(
    private readonly settings: SoakSettings,
    dir: string,
    private readonly emit: (record: SoakRecord) => void,
  ) {
    this.stack = new DemoStack(dir);
  }

  /** Runs it all and stops every process it started; throws at the first event that does not land. */
  async run(): Promise<void> {
    try {
      await this.body();
    } finally {
      await this.stop();
    }
  }

  /** Stops the load and every process (on Ctrl-C too); the temp dir is the caller's. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.sampler !== null) clearInterval(this.sampler);
      await this.load?.abort();
      await this.stack.stop();
      await this.consul?.close();
    })();
    return this.stopping;
  }

  private async body(): Promise<void> {
    const { settings } = this;
    const deadline = performance.now() + settings.maxMs;
    const consul = (this.consul = await startConsulEmulator());
    const api = new AgentApi(consul.url);
    const services = Array.from({ length: settings.backends }, (_, index) => `web-${index}`);
    const backends = services.map((_, index) => `be_${index}`);
    const upstreams = await startUpstreams(this.stack, settings.upstreams);
    const catalog = new SoakCatalog({ services, upstreamPorts: upstreams.ports, initialServing: settings.minServing + 1, minServing: settings.minServing, maxServing: settings.maxServing });
    for (const operation of catalog.initial()) await writeOperation(api, operation);
    const hafleet = await startHafleet(this.stack, { consulUrl: consul.url, services, backends, slots: settings.slots, debounce: settings.debounce, drainPeriod: settings.drainPeriod });
    this.emit({ record: "started", dir: this.stack.dir, pids: { upstreams: upstreams.process.pid, controller: hafleet.controller.pid, haproxy: hafleet.haproxy.pid, haproxyWorker: hafleet.workerPid, agent: hafleet.agent.pid } });

    const watch = new ConvergenceWatch(hafleet.adminSocket, settings.pollMs);
    await Promise.all(backends.map((backend, index) => watch.until(backend, catalog.expected(services[index]!), settings.convergeTimeoutMs)));
    const load = (this.load = this.startLoad(hafleet.frontendPort, deadline));
    const run: Running = { catalog, api, watch, hafleet, consulUrl: consul.url, services, backends, load, deadline, begun: performance.now(), lastEventAt: backends.map(() => -Infinity) };
    this.startSampler(run);
    const convergence: number[] = [];
    for (let phase = 1; phase <= settings.phases; phase += 1) {
      const events = Math.floor((settings.events * phase) / settings.phases) - Math.floor((settings.events * (phase - 1)) / settings.phases);
      convergence.push(...(await this.phase(run, phase, events)));
    }
    const eventsMs = performance.now() - run.begun;
    if (this.sampler !== null) clearInterval(this.sampler);
    const requests = await load.stop();
    if (this.samplingError !== null) throw this.samplingError;

    const proc = await hafleet.master.showProc();
    const left = await this.settle(hafleet.adminSocket, backends);
    const warmedUpAt = Math.floor(settings.events / settings.phases);
    const memory = Object.fromEntries(
      Object.keys(hafleet.memory).map((name) => [name, { rssKb: trend(this.samples, name, "rssKb", warmedUpAt), heapKb: trend(this.samples, name, "heapKb", warmedUpAt) }]),
    );
    this.emit({
      record: "result",
      events: settings.events,
      landed: this.landed,
      ms: Math.round(eventsMs),
      convergenceMs: percentiles(convergence),
      requests,
      reloads: proc.master.reloads,
      workerReplaced: proc.workers.length !== 1 || proc.workers[0]!.pid !== hafleet.workerPid,
      unsettled: left,
      ...(await this.views(run)),
      memory,
      samples: this.samples.length,
    });
  }

  /**
   * `events` events, every backend taking the next one as soon as its last has landed and its
   * interval has passed; then the checkpoint. The convergence time of each event.
   */
  private async phase(run: Running, phase: number, events: number): Promise<number[]> {
    const { settings } = this;
    const quota = { left: events };
    const begun = performance.now();
    const before = run.load.counts();
    const convergence: number[] = [];
    const backendLoop = async (index: number): Promise<void> => {
      const service = run.services[index]!;
      while (quota.left > 0) {
        quota.left -= 1;
        if (performance.now() > run.deadline) throw new Error(`over the soak's bound of ${settings.maxMs} ms after ${this.landed} events`);
        await sleep(run.lastEventAt[index]! + settings.eventIntervalMs - performance.now());
        const operation = run.catalog.next(service);
        const written = (run.lastEventAt[index] = performance.now());
        await writeOperation(run.api, operation);
        const landedAt = await run.watch.until(run.backends[index]!, run.catalog.expected(service), settings.convergeTimeoutMs);
        convergence.push(landedAt - written);
        this.landed += 1;
      }
    };
    // The first failure ends the phase: the other loops finish the event they are on, and take no more.
    const stopAll = (error: unknown): never => {
      quota.left = 0;
      throw error;
    };
    const outcomes = await Promise.allSettled(run.backends.map((_, index) => backendLoop(index).catch(stopAll)));
    const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === "rejected");
    if (failure !== undefined) throw failure.reason;
    const views = await this.views(run);
    this.emit({
      record: "checkpoint",
      phase,
      events,
      totalEvents: this.landed,
      ms: Math.round(performance.now() - begun),
      convergenceMs: percentiles(convergence),
      traffic: traffic(before, run.load.counts()),
      ...views,
      memory: await sampleMemory(run.hafleet.memory, Math.round(performance.now() - run.begun), this.landed),
    });
    return convergence;
  }

  private startLoad(port: number, deadline: number): Load {
    const { ratePerSecond } = this.settings;
    const maxMs = Math.max(1, deadline - performance.now());
    return new Load({ host: "127.0.0.1", port, ratePerSecond, maxRequests: Math.ceil((ratePerSecond * maxMs) / 1000), maxMs, timeoutMs: LOAD_TIMEOUT_MS });
  }

  private startSampler(run: Running): void {
    let sampling = false;
    this.sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      sampleMemory(run.hafleet.memory, Math.round(performance.now() - run.begun), this.landed)
        .then((sample) => this.samples.push(sample))
        .catch((error: unknown) => (this.samplingError ??= new Error(`memory sampling failed: ${(error as Error).message}`)))
        .finally(() => (sampling = false));
    }, this.settings.sampleMs);
  }

  /** Consul's and HAProxy's views of every backend, read back to back with no event in flight. */
  private async views(run: Running): Promise<{ consul: Record<string, string[]>; haproxy: Record<string, string[]> }> {
    const rows = await readServers(run.hafleet.adminSocket);
    const consul = await Promise.all(run.services.map((service) => consulView(run.consulUrl, service)));
    return {
      consul: Object.fromEntries(run.backends.map((backend, index) => [backend, consul[index]!])),
      haproxy: Object.fromEntries(run.backends.map((backend) => [backend, servingView(rows, backend)])),
    };
  }

  /** Waits, within settleTimeoutMs, for the last drains to end and added servers to be deleted; what is left. */
  private async settle(adminSocket: string, backends: readonly string[]): Promise<string[]> {
    const deadline = performance.now() + this.settings.settleTimeoutMs;
    for (;;) {
      const rows = await readServers(adminSocket);
      const left = backends.flatMap((backend) => unsettled(rows, backend, SLOT_PREFIX));
      if (left.length === 0 || performance.now() > deadline) return left;
      await sleep(this.settings.pollMs);
    }
  }
}

function traffic(before: LoadCounts, after: LoadCounts): PhaseTraffic {
  const failures = Object.fromEntries(
    Object.entries(after.failures).flatMap(([reason, times]) => (times > (before.failures[reason] ?? 0) ? [[reason, times - (before.failures[reason] ?? 0)]] : [])),
  );
  const upstreams = Object.entries(after.byUpstream).filter(([upstream, served]) => served > (before.byUpstream[upstream] ?? 0)).length;
  return { served: after.served - before.served, failed: after.failed - before.failed, failures, upstreams };
}

function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (share: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.ceil(share * sorted.length) - 1)] ?? 0);
  return { p50: at(0.5), p99: at(0.99), max: at(1) };
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}
