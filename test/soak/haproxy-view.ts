import { serving } from "../support/apply.js";
import { parseServersState } from "../support/haproxy.js";
import { sendRaw } from "../support/raw-socket.js";
import { endpointView } from "./soak-catalog.js";

/*
 * HAProxy's own `show servers state`, read with the tests' raw socket and header-based parser
 * (no product code, so a product bug cannot hide itself), reduced per backend to what the
 * catalog decides: the endpoints in service (admin state ready; health checks are HAProxy's
 * business, not hafleet's) and their weights.
 */

export type ServerRows = ReadonlyArray<Record<string, string>>;

/** HAProxy's admin-state bit for a forced drain (srv_admin_state, SRV_ADMF_FDRAIN). */
const FORCED_DRAIN = 0x08;

export async function readServers(adminSocket: string): Promise<ServerRows> {
  return parseServersState(await sendRaw(adminSocket, "show servers state", 10_000));
}

/** `127.0.0.1:PORT w=WEIGHT` of every server in service in `backend`, sorted. */
export function servingView(rows: ServerRows, backend: string): string[] {
  // serving() is the tests' one definition of "in service"; asked row by row to keep each row's weight.
  return rows
    .filter((row) => serving([row], backend).length > 0)
    .map((row) => endpointView(row.srv_addr!, row.srv_port!, row.srv_uweight!))
    .sort();
}

/**
 * What is half-done in `backend` once removals have had their time: servers still draining,
 * and servers added past the template slots (named other than `slotPrefix`N) that are out of
 * service but not deleted.
 */
export function unsettled(rows: ServerRows, backend: string, slotPrefix: string): string[] {
  const slot = new RegExp(`^${slotPrefix}\\d+$`);
  return rows
    .filter((row) => row.be_name === backend)
    .flatMap((row) => {
      const name = `${backend}/${row.srv_name} ${row.srv_addr}:${row.srv_port}`;
      if ((Number(row.srv_admin_state) & FORCED_DRAIN) !== 0) return [`${name} draining`];
      if (!slot.test(row.srv_name!) && serving([row], backend).length === 0) return [`${name} added, out of service, not deleted`];
      return [];
    });
}

interface Waiter {
  backend: string;
  expected: string;
  deadline: number;
  resolve(at: number): void;
  reject(error: Error): void;
}

/**
 * Waits for backends to show what is expected of them. One reader serves every waiter, so a
 * soak with many backends in flight reads HAProxy once per poll, not once per backend; it
 * reads only while someone waits.
 */
export class ConvergenceWatch {
  private readonly waiters = new Set<Waiter>();
  private reading: Promise<void> | null = null;

  constructor(
    private readonly adminSocket: string,
    private readonly pollMs: number,
  ) {}

  /** Resolves with performance.now() of the reading that showed `expected` in `backend`; rejects after `timeoutMs`. */
  until(backend: string, expected: readonly string[], timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.waiters.add({ backend, expected: expected.join(", "), deadline: performance.now() + timeoutMs, resolve, reject });
      this.reading ??= this.read().finally(() => (this.reading = null));
    });
  }

  private async read(): Promise<void> {
    let lastError = "";
    while (this.waiters.size > 0) {
      let rows: ServerRows | null = null;
      try {
        rows = await readServers(this.adminSocket);
      } catch (error) {
        lastError = (error as Error).message;
      }
      const at = performance.now();
      for (const waiter of this.waiters) {
        const view = rows === null ? null : servingView(rows, waiter.backend).join(", ");
        if (view === waiter.expected) {
          this.waiters.delete(waiter);
          waiter.resolve(at);
        } else if (at > waiter.deadline) {
          this.waiters.delete(waiter);
          const seen = view === null ? `HAProxy unreadable (${lastError})` : `HAProxy serves [${view}]`;
          waiter.reject(new Error(`${waiter.backend} did not converge: ${seen}, expected [${waiter.expected}]`));
        }
      }
      if (this.waiters.size > 0) await new Promise((resolve) => setTimeout(resolve, this.pollMs));
    }
  }
}
