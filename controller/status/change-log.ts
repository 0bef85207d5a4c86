import type { ChangeStatus } from "./status-schema.js";

interface Change {
  at: number;
  backends: Array<{ backend: string; version: string }>;
  /** Per agent that should get it: the backend versions it has yet to ack. */
  waiting: Map<string, Set<string>>;
  agents: number;
  acked: number;
  convergedMs: number | null;
}

/**
 * The last few desired-state changes and how far each got: which agents it was for, how many
 * acked it, and, once all have, how long that took. Per agent, an ack of the change's versions
 * also yields the time since the change: the convergence time the metrics record.
 */
export class ChangeLog {
  private readonly changes: Change[] = [];

  constructor(private readonly limit = 20) {}

  /** A change of `backends`, for the agents given with the changed backends each should run. */
  recorded(at: number, backends: Array<{ backend: string; version: string }>, agents: ReadonlyMap<string, readonly string[]>): void {
    const waiting = new Map<string, Set<string>>();
    for (const [agent, names] of agents) {
      const keys = new Set(backends.filter((entry) => names.includes(entry.backend)).map(key));
      if (keys.size > 0) waiting.set(agent, keys);
    }
    this.changes.unshift({ at, backends, waiting, agents: waiting.size, acked: 0, convergedMs: waiting.size === 0 ? 0 : null });
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

  /** A departed agent is no longer waited for: a change converges over the agents that stayed. */
  departed(agent: string, now: number): void {
    for (const change of this.changes) if (change.waiting.has(agent)) this.done(change, agent, now, false);
  }

  list(): ChangeStatus[] {
    return this.changes.map(({ at, backends, agents, acked, convergedMs }) => ({ at, backends, agents, acked, convergedMs }));
  }

  private done(change: Change, agent: string, now: number, acked: boolean): void {
    change.waiting.delete(agent);
    if (acked) change.acked++;
    else change.agents--;
    if (change.waiting.size === 0 && change.convergedMs === null) change.convergedMs = now - change.at;
  }
}

function key(entry: { backend: string; version: string }): string {
  return `${entry.backend}\n${entry.version}`;
}
