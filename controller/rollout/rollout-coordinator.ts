import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { z } from "zod";
import type { Name } from "../../agent/model/values.js";
import { wireBackendSchema, type WireBackend } from "../../proto/messages.js";
import { toWire, type DesiredBackendState } from "../core/desired-store.js";
import type { AgentStatus, RolloutStatus } from "../status/status-schema.js";
import type { RolloutConfig } from "./rollout-config.js";
import { abort, isFinal, pause, reopen, resume, rollback, rolloutStatus, sideOf, startRollout, stepRollout, type RolloutContext, type RolloutState, type Transition } from "./rollout-state.js";
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

/** Where the rollout is kept: a file in stateDir (RolloutStore), or the leadership's Consul key. */
export interface RolloutPersistence {
  load(): Promise<Rollout | null>;
  save(state: Rollout): Promise<void>;
}

export interface ConcernedAgent {
  id: string;
  labels: Readonly<Record<string, string>>;
  /** The backends it runs. */
  backends: readonly string[];
}

export interface CoordinatorOptions {
  config: RolloutConfig;
  /** null: kept in memory only (no stateDir). */
  store: RolloutPersistence | null;
  /** The agent as the status sees it, undefined when unknown. */
  agent(agentId: string): AgentStatus | undefined;
  /** The connected agents. */
  fleet(): ConcernedAgent[];
  /** Whether pushes are frozen: no wave is judged while nothing can reach the agents. */
  frozen(): boolean;
  /** Why an operator keeps this agent out of rollouts (cordon), or null. */
  cordoned?(agentId: string): string | null;
  /**
   * Whether the agent already fails on one of these backends, whatever the version (it
   * rejects it, or HAProxy drifts from it): said as "rejecting be_app (its error)", else null.
   */
  failing?(agentId: string, backends: ReadonlySet<string>): string | null;
  /** A rollout was rolled back or aborted: its target did not stay (the change log says so). */
  ended?(rollout: { id: string; target: ReadonlyArray<{ backend: string; version: string }>; reason: string }): void;
  /** Something changed which agents run which side: push what they now lack. */
  changed(): void;
  /** How long after a restart agents get to reconnect before a wave is judged. */
  settleMs: number;
  /**
   * With several replicas, the one that leads rollouts (see controller/leadership). A follower
   * starts, judges and moves nothing: it serves the rollout the leader published (follow()),
   * and keeps staged changes the leader has not published yet at what agents ran. Absent: this
   * replica always leads.
   */
  leadership?: { leading(): boolean; leader(): string | null };
  tickMs?: number;
  logger: Logger;
  clock?: () => number;
}

type StagedChange = { before: DesiredBackendState | undefined; after: DesiredBackendState };

export class RolloutCoordinator {
  private state: Rollout | null = null;
  /** What agents on the baseline side run of the rollout's backends, and of every held one. */
  private baseline = new Map<string, DesiredBackendState>();
  private stateBaseline = new Map<string, DesiredBackendState>();
  /** What every agent runs of a held backend, whatever its side. */
  private pinned = new Map<string, DesiredBackendState>();
  private resolved = { baseline: new WeakMap<readonly DesiredBackendState[], readonly DesiredBackendState[]>(), target: new WeakMap<readonly DesiredBackendState[], readonly DesiredBackendState[]>() };
  private judgeFrom = 0;
  /** Staged changes before this wait for agents to reconnect (see hold). */
  private readonly plannableFrom: number;
  /**
   * Staged changes not rolled out yet, by backend: just after a start (until plannableFrom),
   * or on a follower until the leader publishes a rollout of them. `before` is what agents
   * ran before the first of them.
   */
  private held = new Map<string, StagedChange & { reason: string }>();
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
  staged(changes: readonly StagedChange[], reason: string): void {
    if (!this.leading()) return this.hold(changes, reason, "staged change held until the leading replica rolls it out");
    if (this.clock() < this.plannableFrom) return this.hold(changes, reason, "staged change held until agents have reconnected, then rolled out");
    const current = this.state;
    const running = current !== null && current.phase !== "completed";
    const baseline = new Map<string, WireBackend>();
    if (running) for (const backend of current.baseline) baseline.set(backend.name, backend);
    for (const { before, after } of changes) if (before !== undefined && !baseline.has(after.name)) baseline.set(after.name, toWire(before));
    const names = new Set([...baseline.keys(), ...changes.map((change) => change.after.name)]);
    const target = changes.map((change) => toWire(change.after));
    if (running) this.options.logger.warn({ rollout: current.id, backends: [...names] }, "rollout replaced by a newer change of its backends");
    this.start(reason, names, [...baseline.values()], target);
  }

  /**
   * Plans and starts a rollout among the connected agents that run its backends, leaving out
   * the cordoned ones and those already rejecting or drifting on one of its backends: a
   * change cannot be judged on an agent that was failing before it.
   */
  private start(reason: string, names: ReadonlySet<string>, baseline: StagedBackends, target: StagedBackends): void {
    const agents: ConcernedAgent[] = [];
    const excluded: Array<{ agent: string; reason: string }> = [];
    for (const agent of this.options.fleet()) {
      if (!agent.backends.some((backend) => names.has(backend))) continue;
      const cordoned = this.options.cordoned?.(agent.id) ?? null;
      const failing = cordoned === null ? (this.options.failing?.(agent.id, names) ?? null) : null;
      if (cordoned !== null) excluded.push({ agent: agent.id, reason: `cordoned: ${cordoned}` });
      else if (failing !== null) excluded.push({ agent: agent.id, reason: `already ${failing}` });
      else agents.push(agent);
    }
    const id = `r-${this.clock().toString(36)}-${randomBytes(3).toString("hex")}`;
    this.set(startRollout({ id, reason, backends: [...names].sort(), agents, excluded, baseline, target }, this.context()), "started");
  }

  /**
   * Just after a start, agents have not reconnected: waves planned now would hold none of them
   * and the change would reach everyone at once. On a follower, only the leader may plan waves.
   * Until then every agent keeps what it ran.
   */
  private hold(changes: readonly StagedChange[], reason: string, message: string): void {
    for (const change of changes) {
      const earlier = this.held.get(change.after.name);
      this.held.set(change.after.name, { before: earlier === undefined ? change.before : earlier.before, after: change.after, reason });
    }
    this.repin();
    this.options.logger.info({ backends: changes.map((change) => change.after.name), reason }, message);
    this.options.changed();
  }

  /** Takes the rollout the leader published; a no-op on the leader itself. */
  follow(published: Rollout | null): void {
    if (this.leading()) return;
    let released = false;
    for (const [name, change] of this.held) {
      if (published !== null && rollsOut(published, change.after)) released = this.held.delete(name) || released;
    }
    if (released) this.repin();
    if (published !== null) this.set(published, "published by the leader");
    else if (released) this.options.changed();
  }

  /**
   * This replica now leads: it carries on with the rollout the last leader published (its
   * wave judged afresh once agents had time to come back), and rolls out what it held.
   */
  lead(published: Rollout | null): void {
    this.judgeFrom = this.clock() + this.options.settleMs;
    if (published !== null) this.set(reopen(published, this.clock()), "leadership taken");
    const held = [...this.held.values()].filter((change) => published === null || !rollsOut(published, change.after));
    this.held.clear();
    this.repin();
    if (held.length > 0) this.staged(held, [...new Set(held.map((change) => change.reason))].join("; "));
    else this.options.changed();
  }  /** The agent's desired backends, the rollout's backends taken from its side. */
  resolve(agentId: string, live: readonly DesiredBackendState[]): readonly DesiredBackendState[] {
    // Runs for every agent on every change: with nothing pinned nor under rollout, no side to look up.
    if (this.baseline.size === 0) return live;
    const side = this.side(agentId) === "baseline" ? "baseline" : "target";
    const overrides = side === "baseline" ? this.baseline : this.pinned;
    if (overrides.size === 0) return live;
    let resolved = this.resolved[side].get(live);
    if (resolved === undefined) {
      resolved = live.map((backend) => overrides.get(backend.name) ?? backend);
      this.resolved[side].set(live, resolved);
    }
    return resolved;
  }

  side(agentId: string): "baseline" | "target" | null {
    return this.state === null ? null : sideOf(this.state, agentId);
  }

  status(): RolloutStatus | null {
    const state = this.state;
    if (state === null) return null;
    const acked = state.waves.map((agents) => agents.filter((agent) => this.acked(agent, state.backends)).length);
    const versions = (backends: StagedBackends) => backends.map((backend) => ({ backend: backend.name, version: backend.version, servers: backend.servers.length }));
    return rolloutStatus(state, acked, { baseline: versions(state.baseline), target: versions(state.target) });
  }

  /** An operator's action; a refused one (resume a completed rollout) returns its reason. */
  act(action: "pause" | "resume" | "abort" | "rollback" | "retry"): string | null {
    if (!this.leading()) return `this replica follows: ask the leading one (${this.options.leadership?.leader() ?? "none elected now"})`;
    const state = this.state;
    if (state === null) return "there is no rollout";
    if (action === "retry") return this.retry(state);
    const now = this.clock();
    const move: Transition<StagedBackends> =
      action === "pause" ? pause(state, now) : action === "resume" ? resume(state, this.context()) : action === "abort" ? abort(state, now) : rollback(state, now);
    if (!move.ok) return move.error.message;
    this.set(move.state, action);
    return null;
  }

  /**
   * A rolled-back (or aborted) change starts over from its canary, planned afresh among the
   * agents connected now: the operator fixed what made it fail, or wants to see it again.
   * A newer change of its backends would have replaced it already: this one is the latest.
   */
  private retry(state: Rollout): string | null {
    if (state.phase !== "rolled-back" && state.phase !== "aborted") return `rollout ${state.id} is ${state.phase}: only a rolled-back or aborted one can be retried`;
    if (state.target.length === 0) return `rollout ${state.id} has no target to retry`;
    this.options.logger.warn({ rollout: state.id, backends: state.backends }, "rollout retried by the operator");
    this.start(`retry of ${state.id}: ${state.reason}`, new Set(state.backends), state.baseline, state.target);
    return null;
  }

  /** Resolves once the last move is stored. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.saving;
  }

  private tick(): void {
    if (!this.leading()) return;
    if (this.held.size > 0 && this.clock() >= this.plannableFrom) {
      const held = [...this.held.values()];
      this.held.clear();
      this.repin();
      this.staged(held, [...new Set(held.map((change) => change.reason))].join("; "));
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
    if (previous?.baseline !== next.baseline) {
      this.stateBaseline = new Map(next.baseline.map((backend) => [backend.name, stateOf(backend)]));
      this.repin();
    }
    if ((next.phase === "rolled-back" || next.phase === "aborted") && previous !== null && previous.phase !== next.phase && previous.id === next.id) {
      const reason = next.haltReason ?? (next.phase === "aborted" ? "aborted by the operator" : "rolled back by the operator");
      this.options.ended?.({ id: next.id, target: next.target.map((backend) => ({ backend: backend.name, version: backend.version })), reason: `rollout ${next.id}: ${reason}` });
    }
    const last = next.history.at(-1);
    if (last !== undefined && last !== previous?.history.at(-1)) {
      const log = next.phase === "halted" || next.phase === "rolled-back" ? this.options.logger.warn.bind(this.options.logger) : this.options.logger.info.bind(this.options.logger);
      log({ rollout: next.id, phase: next.phase, wave: next.wave, backends: next.backends, cause }, `rollout: ${last.event}`);
    }
    const store = this.options.store;
    if (store !== null && this.leading()) {
      this.saving = this.saving.then(() => store.save(next)).catch((error: unknown) => this.options.logger.error({ err: error, rollout: next.id }, "cannot store the rollout state: a restart would lose this step"));
    }
    this.options.changed();
  }

  private leading(): boolean {
    return this.options.leadership?.leading() ?? true;
  }

  /** Rebuilds what each side runs instead of the live state, after the rollout or the held changes moved. */
  private repin(): void {
    this.pinned = new Map([...this.held.values()].flatMap((change) => (change.before === undefined ? [] : [[change.after.name as string, change.before] as const])));
    this.baseline = new Map([...this.stateBaseline, ...this.pinned]);
    this.resolved = { baseline: new WeakMap(), target: new WeakMap() };
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

/** Whether the rollout takes the backend to this content (so a follower may stop holding it). */
function rollsOut(rollout: Rollout, change: DesiredBackendState): boolean {
  return rollout.target.some((backend) => backend.name === change.name && backend.version === change.version);
}

function stateOf(backend: WireBackend): DesiredBackendState {
  return { name: backend.name as Name, version: backend.version, servers: backend.servers, allowEmpty: backend.allowEmpty, held: null, dropped: [] };
}
