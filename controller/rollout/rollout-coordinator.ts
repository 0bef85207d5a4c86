import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { z } from "zod";
import type { Name } from "../../agent/model/values.js";
import { wireBackendSchema, type WireBackend } from "../../proto/messages.js";
import { toWire, type DesiredBackendState } from "../core/desired-store.js";
import type { AgentStatus, RolloutStatus } from "../status/status-schema.js";
import type { RolloutConfig } from "./rollout-config.js";
import { abort, isFinal, pause, reopen, resume, rollback, rolloutStatus, sideOf, startRollout, stepRollout, type RolloutContext, type RolloutState, type Transition } from "./rollout-state.js";
import type { RolloutStore } from "./rollout-store.js";
import type { WaveObservation } from "./wave-judge.js";

/*
 * The shell around the pure rollout core: it holds the one rollout, persists every move,
 * judges the current wave on a timer, and answers per agent which desired state it runs.
 * Only the rollout's backends differ between the sides: an agent on the baseline runs the
 * last good state of those backends and the live state of every other.
 */

/** The staged backends' states: what the baseline and target payloads hold. */
export const stagedBackendsSchema = z.array(wireBackendSchema);
export type StagedBackends = WireBackend[];
export type Rollout = RolloutState<StagedBackends>;

export interface ConcernedAgent {
  id: string;
  labels: Readonly<Record<string, string>>;
  /** The backends it runs. */
  backends: readonly string[];
}

export interface CoordinatorOptions {
  config: RolloutConfig;
  /** null: kept in memory only (no stateDir). */
  store: RolloutStore<StagedBackends> | null;
  /** The agent as the status sees it, undefined when unknown. */
  agent(agentId: string): AgentStatus | undefined;
  /** The connected agents. */
  fleet(): ConcernedAgent[];
  /** Whether pushes are frozen: no wave is judged while nothing can reach the agents. */
  frozen(): boolean;
  /** Something changed which agents run which side: push what they now lack. */
  changed(): void;
  /** How long after a restart agents get to reconnect before a wave is judged. */
  settleMs: number;
  tickMs?: number;
  logger: Logger;
  clock?: () => number;
}

export class RolloutCoordinator {
  private state: Rollout | null = null;
  private baseline = new Map<string, DesiredBackendState>();
  private resolved = new WeakMap<readonly DesiredBackendState[], readonly DesiredBackendState[]>();
  private judgeFrom = 0;
  /** Staged changes before this wait for agents to reconnect (see holdUntilSettled). */
  private readonly plannableFrom: number;
  private held: { changes: Array<{ before: DesiredBackendState | undefined; after: DesiredBackendState }>; reasons: Set<string> } | null = null;
  private wasFrozen = false;
  private readonly timer: NodeJS.Timeout;
  private saving: Promise<void> = Promise.resolve();
  private readonly clock: () => number;

  constructor(private readonly options: CoordinatorOptions) {
    this.clock = options.clock ?? Date.now;
    this.plannableFrom = this.clock() + options.settleMs;
    this.timer = setInterval(() => this.tick(), options.tickMs ?? 1_000);
  }

  /** Carries on with a stored rollout: its wave is judged afresh once agents had time to come back. */
  async load(): Promise<void> {
    const stored = await this.options.store?.load();
    if (!stored) return;
    this.judgeFrom = this.clock() + this.options.settleMs;
    this.set(reopen(stored, this.clock()), "loaded");
  }

  /**
   * Staged backends changed (`before`: what agents ran; `after`: the new desired state). A
   * rollout of them starts; one under way is replaced, from its own baseline: its canary had
   * other content, so the new content starts over from a canary.
   */
  staged(changes: ReadonlyArray<{ before: DesiredBackendState | undefined; after: DesiredBackendState }>, reason: string): void {
    if (this.clock() < this.plannableFrom) return this.holdUntilSettled(changes, reason);
    const current = this.state;
    const running = current !== null && current.phase !== "completed";
    const baseline = new Map<string, WireBackend>();
    if (running) for (const backend of current.baseline) baseline.set(backend.name, backend);
    for (const { before, after } of changes) if (before !== undefined && !baseline.has(after.name)) baseline.set(after.name, toWire(before));
    const names = new Set([...baseline.keys(), ...changes.map((change) => change.after.name)]);
    const agents = this.options.fleet().filter((agent) => agent.backends.some((backend) => names.has(backend)));
    const target = changes.map((change) => toWire(change.after));
    if (running) this.options.logger.warn({ rollout: current.id, backends: [...names] }, "rollout replaced by a newer change of its backends");
    const id = `r-${this.clock().toString(36)}-${randomBytes(3).toString("hex")}`;
    this.set(startRollout({ id, reason, backends: [...names].sort(), agents, baseline: [...baseline.values()], target }, this.context()), "started");
  }

  /**
   * Just after a start, agents have not reconnected: waves planned now would hold none of them
   * and the change would reach everyone at once. Until then every agent keeps what it ran.
   */
  private holdUntilSettled(changes: ReadonlyArray<{ before: DesiredBackendState | undefined; after: DesiredBackendState }>, reason: string): void {
    const held = this.held ?? { changes: [], reasons: new Set<string>() };
    const names = new Set(changes.map((change) => change.after.name as string));
    held.changes = [...held.changes.filter((change) => !names.has(change.after.name)), ...changes];
    held.reasons.add(reason);
    this.held = held;
    this.baseline = new Map(held.changes.flatMap((change) => (change.before === undefined ? [] : [[change.before.name as string, change.before] as const])));
    this.resolved = new WeakMap();
    this.options.logger.info({ backends: [...names], reason }, "staged change held until agents have reconnected, then rolled out");
    this.options.changed();
  }

  /** The agent's desired backends, the rollout's backends taken from its side. */
  resolve(agentId: string, live: readonly DesiredBackendState[]): readonly DesiredBackendState[] {
    if (this.baseline.size === 0 || this.side(agentId) !== "baseline") return live;
    let resolved = this.resolved.get(live);
    if (resolved === undefined) {
      resolved = live.map((backend) => this.baseline.get(backend.name) ?? backend);
      this.resolved.set(live, resolved);
    }
    return resolved;
  }

  side(agentId: string): "baseline" | "target" | null {
    if (this.held !== null) return "baseline";
    return this.state === null ? null : sideOf(this.state, agentId);
  }

  status(): RolloutStatus | null {
    const state = this.state;
    if (state === null) return null;
    const acked = state.waves.map((agents) => agents.filter((agent) => this.acked(agent, state.backends)).length);
    return rolloutStatus(state, acked);
  }

  /** An operator's action; a refused one (resume a completed rollout) returns its reason. */
  act(action: "pause" | "resume" | "abort" | "rollback"): string | null {
    const state = this.state;
    if (state === null) return "there is no rollout";
    const now = this.clock();
    const move: Transition<StagedBackends> =
      action === "pause" ? pause(state, now) : action === "resume" ? resume(state, this.context()) : action === "abort" ? abort(state, now) : rollback(state, now);
    if (!move.ok) return move.error.message;
    this.set(move.state, action);
    return null;
  }

  /** Resolves once the last move is stored. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.saving;
  }

  private tick(): void {
    const held = this.held;
    if (held !== null && this.clock() >= this.plannableFrom) {
      this.held = null;
      this.staged(held.changes, [...held.reasons].join("; "));
    }
    const state = this.state;
    const frozen = this.options.frozen();
    // A freeze holds every wave where it is; after it, the wave is judged afresh, as after a restart.
    if (this.wasFrozen && !frozen && state !== null) this.set(reopen(state, this.clock()), "unfrozen");
    this.wasFrozen = frozen;
    if (state === null || frozen || isFinal(state) || this.clock() < this.judgeFrom) return;
    this.set(stepRollout(this.state!, this.context()), "step");
  }

  private set(next: Rollout, cause: string): void {
    const previous = this.state;
    if (next === previous) return;
    this.state = next;
    if (previous?.baseline !== next.baseline) this.baseline = new Map(next.baseline.map((backend) => [backend.name, stateOf(backend)]));
    this.resolved = new WeakMap();
    const last = next.history.at(-1);
    if (last !== undefined && last !== previous?.history.at(-1)) {
      const log = next.phase === "halted" || next.phase === "rolled-back" ? this.options.logger.warn.bind(this.options.logger) : this.options.logger.info.bind(this.options.logger);
      log({ rollout: next.id, phase: next.phase, wave: next.wave, backends: next.backends, cause }, `rollout: ${last.event}`);
    }
    const store = this.options.store;
    if (store !== null) {
      this.saving = this.saving.then(() => store.save(next)).catch((error: unknown) => this.options.logger.error({ err: error, rollout: next.id }, "cannot store the rollout state: a restart would lose this step"));
    }
    this.options.changed();
  }

  private context(): RolloutContext {
    return { now: this.clock(), config: this.options.config, observe: (agent) => this.observe(agent) };
  }

  private observe(agentId: string): WaveObservation | undefined {
    const status = this.options.agent(agentId);
    if (status === undefined) return undefined;
    const names = new Set(this.state?.backends ?? []);
    const backends = status.backends.filter((backend) => names.has(backend.backend));
    let serving = 0;
    let desired = 0;
    for (const backend of backends) {
      if (backend.serving === null) return { connected: status.connected, backends, servingShare: null };
      serving += backend.serving;
      desired += this.desiredCount(backend.backend, backend.desiredVersion);
    }
    return { connected: status.connected, backends, servingShare: desired === 0 ? null : serving / desired };
  }

  private desiredCount(backend: string, version: string): number {
    const state = this.state;
    const entry = [...(state?.target ?? []), ...(state?.baseline ?? [])].find((candidate) => candidate.name === backend && candidate.version === version);
    return entry?.servers.length ?? 0;
  }

  private acked(agentId: string, backends: readonly string[]): boolean {
    const status = this.options.agent(agentId);
    return status !== undefined && status.backends.filter((backend) => backends.includes(backend.backend)).every((backend) => backend.state === "in-sync" || backend.state === "held");
  }
}


function stateOf(backend: WireBackend): DesiredBackendState {
  return { name: backend.name as Name, version: backend.version, servers: backend.servers, allowEmpty: backend.allowEmpty, held: null, dropped: [] };
}
