import type { ChangeStatus } from "./status-schema.js";

type Outcome = ChangeStatus["outcome"];

interface Change {
  at: number;
  backends: Array<{ backend: string; version: string }>;
  /** Per agent that should get it: the backend versions it has yet to ack. */
  waiting: Map<string, Set<string>>;
  agents: number;
  acked: number;
  convergedMs: number | null;
  outcome: Outcome;
  outcomeDetail: string | null;
}

/**
 * The last few desired-state changes and how far each got: which agents it was for, how many
 * acked it, and how it ended: converged (with the time from the change to the last ack), rolled
 * back, superseded by a newer change of its backends, or failed (an agent rejected it). Per
 * agent, an ack of the change's versions also yields the time since the change: the convergence
 * time the metrics record. Pure: the caller passes the clock, and stores list() where it likes.
 */
export class ChangeLog {
  private readonly changes: Change[] = [];

  constructor(private readonly limit = 20) {}

  /**
   * Changes kept from before a restart. One that had not ended is "unknown": the agents it
   * waited for were not followed while the controller was down.
   */
  restore(stored: readonly ChangeStatus[]): void {
    const restored = stored.slice(0, this.limit).map(
      (change): Change => ({
        ...change,
        backends: [...change.backends],
        waiting: new Map(),
        ...(change.outcome === "converging" ? { outcome: "unknown" as const, outcomeDetail: "the controller restarted before every agent acked it" } : {}),
      }),
    );
    this.changes.splice(0, this.changes.length, ...restored);
  }

  /**
   * A change of `backends`, for the agents given with the changed backends each should run.
   * An older change not ended yet stops waiting for what this one replaces; one replaced
   * whole is superseded.
   */
  recorded(at: number, backends: Array<{ backend: string; version: string }>, agents: ReadonlyMap<string, readonly string[]>): void {
    const names = new Set(backends.map((entry) => entry.backend));
    for (const change of this.changes) {
      if (change.outcome !== "converging" || !change.backends.some((entry) => names.has(entry.backend))) continue;
      if (change.backends.every((entry) => names.has(entry.backend))) {
        this.end(change, "superseded", `by the change at ${new Date(at).toISOString()}`);
        continue;
      }
      for (const [agent, keys] of change.waiting) {
        for (const entry of change.backends) if (names.has(entry.backend)) keys.delete(key(entry));
        // What it still waited for was replaced: it is no longer waited for, and did not ack it.
        if (keys.size === 0) this.done(change, agent, at, false);
      }
    }
    const waiting = new Map<string, Set<string>>();
    for (const [agent, agentBackends] of agents) {
      const keys = new Set(backends.filter((entry) => agentBackends.includes(entry.backend)).map(key));
      if (keys.size > 0) waiting.set(agent, keys);
    }
    const converged = waiting.size === 0;
    this.changes.unshift({ at, backends, waiting, agents: waiting.size, acked: 0, convergedMs: converged ? 0 : null, outcome: converged ? "converged" : "converging", outcomeDetail: null });
    this.changes.length = Math.min(this.changes.length, this.limit);
  }

  /** An agent acked a backend version: ms since the newest change it completes for it, or null. */
  acked(agent: string, backend: string, version: string, now: number): number | null {
    let sinceChange: number | null = null;
    for (const change of this.changes) {
      const keys = change.waiting.get(agent);
      if (keys === undefined || !keys.delete(key({ backend, version }))) continue;
      sinceChange ??= now - change.at;
      if (keys.size === 0) this.done(change, agent, now, true);
    }
    return sinceChange;
  }

  /** An agent rejected a backend version: a change still converging with it has failed. */
  nacked(agent: string, backend: string, version: string, error: string): void {
    for (const change of this.changes) {
      if (change.outcome !== "converging" || !change.waiting.get(agent)?.has(key({ backend, version }))) continue;
      // Failed for good, but the other agents' acks still count: how far it got is worth knowing.
      change.outcome = "failed";
      change.outcomeDetail = `${agent} rejected ${backend} ${version}: ${error}`;
    }
  }

  /** A rollout to these versions was rolled back (or aborted): its changes did not stay. */
  rolledBack(target: ReadonlyArray<{ backend: string; version: string }>, reason: string): void {
    const keys = new Set(target.map(key));
    for (const change of this.changes) {
      if ((change.outcome !== "converging" && change.outcome !== "converged") || !change.backends.some((entry) => keys.has(key(entry)))) continue;
      this.end(change, "rolled-back", reason);
    }
  }

  /** A departed agent is no longer waited for: a change converges over the agents that stayed. */
  departed(agent: string, now: number): void {
    for (const change of this.changes) if (change.waiting.has(agent)) this.done(change, agent, now, false);
  }

  list(): ChangeStatus[] {
    return this.changes.map(({ at, outcome, outcomeDetail, backends, agents, acked, convergedMs }) => ({ at, outcome, outcomeDetail, backends, agents, acked, convergedMs }));
  }

  private end(change: Change, outcome: Outcome, detail: string): void {
    change.outcome = outcome;
    change.outcomeDetail = detail;
    change.waiting.clear();
  }

  private done(change: Change, agent: string, now: number, acked: boolean): void {
    change.waiting.delete(agent);
    if (acked) change.acked++;
    else change.agents--;
    if (change.waiting.size === 0 && change.outcome === "converging") {
      change.convergedMs = now - change.at;
      change.outcome = "converged";
    }
  }
}

function key(entry: { backend: string; version: string }): string {
  return `${entry.backend}\n${entry.version}`;
}
