/*
 * Consul refuses more than `limits.http_max_conns_per_client` (default 200) concurrent
 * connections from one IP with 429 "Your IP is issuing too many concurrent connections", and
 * every blocking query holds one connection for as long as Consul holds it. The budget keeps
 * the controller's queries under a set number: past it, a watch waits its turn, and blocking
 * waits are shortened so that the turns come round (https://developer.hashicorp.com/consul/docs/agent/config/config-files#http_max_conns_per_client).
 */

/** Below Consul's default of 200, leaving room for the CLI, the UI and other tools on the same host. */
export const DEFAULT_MAX_CONNECTIONS = 150;
/**
 * The connections the leadership may hold at once: its session renewal, its key's blocking read,
 * an acquire; and what replicas share beside it (fleet-share.ts): the blocking reads of the
 * reports and of the freeze, a write.
 */
export const LEADERSHIP_CONNECTIONS = 6;
/** A shortened wait is never below this: a turn must be worth its request. */
const MIN_SHARED_WAIT_MS = 1_000;

export interface BudgetPlan {
  watches: number;
  /** Connections the watches may hold at once. */
  slots: number;
  /** True when some watches must wait for a connection. */
  shared: boolean;
  /** The blocking wait each query is sent with. */
  waitMs: number;
}

/** How `watches` blocking queries share `slots` connections: each waits for a slot, and holds it `wait * slots / watches`. */
export function planBudget(watches: number, slots: number, waitMs: number): BudgetPlan {
  const shared = watches > slots;
  const share = shared ? Math.max(MIN_SHARED_WAIT_MS, Math.floor((waitMs * slots) / watches)) : waitMs;
  return { watches, slots, shared, waitMs: Math.min(waitMs, share) };
}

export function describeBudget(plan: BudgetPlan, leadership: boolean): string {
  const extra = leadership ? ` + up to ${LEADERSHIP_CONNECTIONS} for the leadership and the replicas' shared status` : "";
  const needed = `${plan.watches} Consul watch${plan.watches === 1 ? "" : "es"} need ${plan.watches} connection${plan.watches === 1 ? "" : "s"}${extra}`;
  if (!plan.shared) return `${needed}; within the budget of ${plan.slots} (consul.maxConnections)`;
  return `${needed}, over the budget of ${plan.slots} (consul.maxConnections): watches take turns, each blocking query held at most ${plan.waitMs} ms, so a change may be seen later; use a local Consul client agent or raise limits.http_max_conns_per_client and maxConnections`;
}

/** A counting semaphore, first come first served. */
export class ConnectionBudget {
  private inUse = 0;
  private readonly queue: Array<() => void> = [];

  constructor(readonly slots: number) {}

  get waiting(): number {
    return this.queue.length;
  }

  /** Resolves with the release once a slot is free; rejects when `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<() => void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
        return;
      }
      const grant = (): void => {
        signal.removeEventListener("abort", onAbort);
        this.inUse += 1;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.inUse -= 1;
          this.queue.shift()?.();
        });
      };
      const onAbort = (): void => {
        const at = this.queue.indexOf(grant);
        if (at >= 0) this.queue.splice(at, 1);
        reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
      };
      if (this.inUse < this.slots) {
        grant();
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(grant);
    });
  }
}
