import { counter, createRegistry, gauge, histogram, renderRegistry, type MetricsSource, type RenderedMetrics } from "../../agent/metrics/metrics-registry.js";
import type { DiscoveryObserver } from "../discovery/consul/consul-watch.js";
import { DISCOVERY_STATES, ROLLOUT_PHASES, SYNC_STATES, type DiscoveryHealth, type SyncState } from "../status/status-schema.js";

type StateCounts = Readonly<Record<SyncState, number>>;

/** What the gauges read at each scrape. The status API's FleetStatus is one: pass `() => status.status()`. */
export interface FleetGauges {
  summary: { connected: number; states: StateCounts };
  backends: ReadonlyArray<{ backend: string; states: StateCounts; discovery?: Pick<DiscoveryHealth, "state"> }>;
  rollout: { phase: (typeof ROLLOUT_PHASES)[number]; wave: number } | null;
  frozen: object | null;
}

/** What the gRPC side holds in memory for its streams, read at each scrape. */
export interface StreamGauges {
  /** Streams whose writes wait for gRPC's flow control ('drain'): a stalled agent, or a slow path. */
  waitingForDrain: number;
  pushCacheBytes: number;
}

export interface ControllerMetricsOptions {
  fleet: () => FleetGauges;
  streams: () => StreamGauges;
}

/** A push's round trip includes the agent's apply; convergence adds the debounce and any rollout wave. */
const SECONDS_10MS_TO_60S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The controller's Prometheus metrics. No metric is labelled by agent: a fleet has thousands,
 * and a series per agent would cost more than the rest together; per-agent detail is the
 * status API's job. Labels are backends, services and states: what the configuration bounds.
 */
export class ControllerMetrics implements MetricsSource, DiscoveryObserver {
  private readonly registry = createRegistry();

  private readonly connected = gauge(this.registry, "hafleet_agents_connected", "Agents with an open stream to this controller.");
  private readonly agents = gauge(
    this.registry,
    "hafleet_agents",
    "Agents this controller knows (connected, or gone for less than forgetAfterMs), by sync state: an agent counts in its worst backend's state.",
    ["state"],
  );
  private readonly backendAgents = gauge(this.registry, "hafleet_backend_agents", "Agents assigned a backend, by their sync state on that backend.", ["backend", "state"]);
  private readonly backendDiscovery = gauge(
    this.registry,
    "hafleet_backend_discovery",
    "1 for the state discovery is in for a backend (ok, failing, held by the guard, never-answered), 0 for the others.",
    ["backend", "state"],
  );
  private readonly rolloutPhase = gauge(this.registry, "hafleet_rollout_phase", "1 for the phase the rollout is in, 0 for the others; all 0 when no rollout runs.", ["phase"]);
  private readonly rolloutWave = gauge(this.registry, "hafleet_rollout_wave", "The rollout's wave being applied or baked, counted from 0; 0 when no rollout runs (see hafleet_rollout_phase).");
  private readonly frozen = gauge(this.registry, "hafleet_frozen", "1 while the fleet is frozen (the kill switch: nothing is pushed), else 0.");
  private readonly streamsWaiting = gauge(this.registry, "hafleet_streams_waiting_for_drain", "Agent streams whose writes wait for gRPC flow control (the agent or its path is not reading).");
  private readonly pushCacheBytes = gauge(this.registry, "hafleet_push_cache_bytes", "Bytes of encoded pushes kept for reuse across agents (bounded, oldest dropped first).");
  private readonly pushes = counter(this.registry, "hafleet_pushes_total", "Pushes of desired state sent to agents.");
  private readonly acks = counter(this.registry, "hafleet_acks_total", "Backend versions agents acked (applied), by backend.", ["backend"]);
  private readonly nacks = counter(this.registry, "hafleet_nacks_total", "Backend versions agents nacked (could not apply), by backend.", ["backend"]);
  private readonly drifts = counter(this.registry, "hafleet_drift_reports_total", "Agent reports of HAProxy running something other than the acked version, by backend.", ["backend"]);
  private readonly discoveryErrors = counter(
    this.registry,
    "hafleet_discovery_errors_total",
    "Failed discovery queries, by watched service (service#tag for a tag); the last good state stands.",
    ["service"],
  );
  private readonly guardHolds = counter(this.registry, "hafleet_guard_held_total", "Discovery answers the guard held (they would empty a backend or drop too much of it), by backend.", ["backend"]);
  private readonly convergence = histogram(this.registry, "hafleet_convergence_seconds", "From a desired-state change to each agent's ack of it.", SECONDS_10MS_TO_60S);
  private readonly roundTrip = histogram(this.registry, "hafleet_push_round_trip_seconds", "From a push sent to the agent's response to it, apply included.", SECONDS_10MS_TO_60S);
  private readonly discoveryRequest = histogram(
    this.registry,
    "hafleet_discovery_request_duration_seconds",
    "Discovery queries Consul answers at once (no index: first read, refresh, index reset), by watched service.",
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ["service"],
  );
  private readonly discoveryBlocking = histogram(
    this.registry,
    "hafleet_discovery_blocking_query_seconds",
    "Blocking discovery queries, held by Consul until the service changed or `wait` ran out, by watched service.",
    [0.1, 1, 5, 15, 30, 60, 120, 300, 600],
    ["service"],
  );

  constructor(private readonly options: ControllerMetricsOptions) {}

  pushed(): void {
    this.pushes.inc();
  }

  /**
   * `convergenceSeconds` is null when the ack completes no recorded change (a resend, a
   * reconnect); `roundTripSeconds` when no push was answered (an ack by observed report).
   */
  acked(backend: string, convergenceSeconds: number | null, roundTripSeconds: number | null): void {
    this.acks.inc({ backend });
    if (convergenceSeconds !== null) this.convergence.observe(convergenceSeconds);
    if (roundTripSeconds !== null) this.roundTrip.observe(roundTripSeconds);
  }

  nacked(backend: string): void {
    this.nacks.inc({ backend });
  }

  drift(backend: string): void {
    this.drifts.inc({ backend });
  }

  guardHeld(backend: string): void {
    this.guardHolds.inc({ backend });
  }

  discoveryAnswered(service: string, seconds: number, blocking: boolean): void {
    (blocking ? this.discoveryBlocking : this.discoveryRequest).observe({ service }, seconds);
  }

  discoveryFailed(service: string): void {
    this.discoveryErrors.inc({ service });
  }

  async render(): Promise<RenderedMetrics> {
    const fleet = this.options.fleet();
    this.connected.set(fleet.summary.connected);
    for (const state of SYNC_STATES) this.agents.set({ state }, fleet.summary.states[state]);
    // Reset first: a backend gone from the configuration must not stay at its last counts.
    this.backendAgents.reset();
    this.backendDiscovery.reset();
    for (const { backend, states, discovery } of fleet.backends) {
      for (const state of SYNC_STATES) this.backendAgents.set({ backend, state }, states[state]);
      if (discovery !== undefined) for (const state of DISCOVERY_STATES) this.backendDiscovery.set({ backend, state }, discovery.state === state ? 1 : 0);
    }
    for (const phase of ROLLOUT_PHASES) this.rolloutPhase.set({ phase }, fleet.rollout?.phase === phase ? 1 : 0);
    this.rolloutWave.set(fleet.rollout?.wave ?? 0);
    this.frozen.set(fleet.frozen === null ? 0 : 1);
    const streams = this.options.streams();
    this.streamsWaiting.set(streams.waitingForDrain);
    this.pushCacheBytes.set(streams.pushCacheBytes);
    return renderRegistry(this.registry);
  }
}
