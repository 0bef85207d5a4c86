import type { ReloadObserver, ReloadOutcome } from "../hybrid/reloader.js";
import type { CommandVerb } from "../runtime/commands.js";
import type { RuntimeObserver } from "../runtime/runtime-observer.js";
import { counter, createRegistry, gauge, histogram, renderRegistry, type MetricsSource, type RenderedMetrics } from "./metrics-registry.js";
import type { ApplyOutcome, RunnerObserver } from "../run/runner-observer.js";

/** converged: every desired backend runs; partial: some do not; failed: no HAProxy could be applied to. */

const APPLY_OUTCOMES: readonly ApplyOutcome[] = ["converged", "partial", "failed"];
const RELOAD_OUTCOMES: readonly ReloadOutcome[] = ["reloaded", "failed", "timeout", "error"];
const BATCH_OUTCOMES = ["answered", "failed"] as const;

/** One backend on one HAProxy socket; the entries of the agent's observed report are these. */
export interface ServingCount {
  backend: string;
  socket: string;
  serving: number;
}

export interface AgentMetricsOptions {
  /** Read at each scrape: what the last apply or resync found HAProxy serving. */
  serving: () => readonly ServingCount[];
  /** Epoch milliseconds. */
  clock?: () => number;
}

/**
 * The agent's Prometheus metrics. It observes the Runtime API client and the reloader through
 * their observer interfaces; the runner tells it of pushes, applies and the controller link.
 * No label takes a value from outside a bounded set: command verbs, outcomes, the backends and
 * sockets this agent runs.
 */
export class AgentMetrics implements MetricsSource, RuntimeObserver, ReloadObserver, RunnerObserver {
  private readonly registry = createRegistry();
  private readonly clock: () => number;
  private connectedBefore = false;

  private readonly commands = counter(this.registry, "hafleet_runtime_commands_total", "Runtime API commands sent to HAProxy, by command (the verb, without arguments).", ["command"]);
  private readonly commandsFailed = counter(
    this.registry,
    "hafleet_runtime_commands_failed_total",
    "Runtime API commands HAProxy refused, or that got no reply (connection lost, batch timed out), by command.",
    ["command"],
  );
  private readonly batches = counter(
    this.registry,
    "hafleet_runtime_batches_total",
    "Batches of Runtime API commands sent on one connection; failed: the connection was lost or the batch timed out.",
    ["outcome"],
  );
  private readonly batchSeconds = histogram(
    this.registry,
    "hafleet_runtime_batch_duration_seconds",
    "From a batch's first write to its last reply (or its failure).",
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  private readonly applies = counter(
    this.registry,
    "hafleet_agent_applies_total",
    "Applies of the desired state (pushes and resyncs): converged, partial (some backends not applied), failed (no HAProxy reached).",
    ["outcome"],
  );
  private readonly lastConverged = gauge(
    this.registry,
    "hafleet_agent_last_successful_apply_timestamp_seconds",
    "When an apply last converged (every desired backend applied), in Unix seconds; 0 before the first.",
  );
  private readonly reloads = counter(
    this.registry,
    "hafleet_agent_reloads_total",
    "HAProxy reloads through the master CLI (hybrid mode): reloaded, failed (the old worker serves on), timeout, error (no verdict).",
    ["outcome"],
  );
  private readonly reloadSeconds = histogram(
    this.registry,
    "hafleet_agent_reload_duration_seconds",
    "From a reload's start (state file saved, reload sent) to its verdict.",
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  private readonly connected = gauge(this.registry, "hafleet_agent_controller_connected", "1 while a stream to a controller is open, else 0 (the agent keeps serving its last state).");
  private readonly reconnects = counter(this.registry, "hafleet_agent_controller_reconnects_total", "Streams to a controller opened after the first one.");
  private readonly pushes = counter(this.registry, "hafleet_agent_pushes_received_total", "Pushes of desired state received from the controller.");
  private readonly acks = counter(this.registry, "hafleet_agent_acks_total", "Backend versions pushed and applied (acked), by backend.", ["backend"]);
  private readonly nacks = counter(this.registry, "hafleet_agent_nacks_total", "Backend versions pushed and refused or not applied (nacked), by backend.", ["backend"]);
  private readonly driftRepairs = counter(
    this.registry,
    "hafleet_agent_drift_repaired_total",
    "Servers a resync found HAProxy running differently from the desired state, and repaired, by backend.",
    ["backend"],
  );
  private readonly serving = gauge(this.registry, "hafleet_agent_serving_servers", "Servers ready in HAProxy at the last apply or resync, by backend and admin socket.", ["backend", "socket"]);

  constructor(private readonly options: AgentMetricsOptions) {
    this.clock = options.clock ?? Date.now;
    // Known outcomes start at 0, so that rate() and alerts see them before the first event.
    for (const outcome of APPLY_OUTCOMES) this.applies.inc({ outcome }, 0);
    for (const outcome of RELOAD_OUTCOMES) this.reloads.inc({ outcome }, 0);
    for (const outcome of BATCH_OUTCOMES) this.batches.inc({ outcome }, 0);
  }

  commandSent(verb: CommandVerb, ok: boolean): void {
    this.commands.inc({ command: verb });
    if (!ok) this.commandsFailed.inc({ command: verb });
  }

  batch(seconds: number, answered: boolean): void {
    this.batches.inc({ outcome: answered ? "answered" : "failed" });
    this.batchSeconds.observe(seconds);
  }

  reloaded(outcome: ReloadOutcome, seconds: number): void {
    this.reloads.inc({ outcome });
    this.reloadSeconds.observe(seconds);
  }

  applied(outcome: ApplyOutcome): void {
    this.applies.inc({ outcome });
    if (outcome === "converged") this.lastConverged.set(this.clock() / 1000);
  }

  controllerConnected(): void {
    if (this.connectedBefore) this.reconnects.inc();
    this.connectedBefore = true;
    this.connected.set(1);
  }

  controllerDisconnected(): void {
    this.connected.set(0);
  }

  pushReceived(): void {
    this.pushes.inc();
  }

  acked(backend: string): void {
    this.acks.inc({ backend });
  }

  nacked(backend: string): void {
    this.nacks.inc({ backend });
  }

  driftRepaired(backend: string): void {
    this.driftRepairs.inc({ backend });
  }

  async render(): Promise<RenderedMetrics> {
    // Reset first: a backend no longer desired must not stay frozen at its last count.
    this.serving.reset();
    for (const entry of this.options.serving()) this.serving.set({ backend: entry.backend, socket: entry.socket }, entry.serving);
    return renderRegistry(this.registry);
  }
}
