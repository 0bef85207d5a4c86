import { join } from "node:path";
import { pino } from "pino";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { LedgerStore } from "../../agent/reconcile/ledger-store.js";
import { reconcileSocket, type ReconcileOptions, type SocketReport } from "../../agent/reconcile/reconciler.js";
import { RuntimeClient } from "../../agent/runtime/runtime-client.js";
import { parseSocketAddress } from "../../agent/runtime/socket-address.js";
import type { RunningHaproxy } from "./haproxy.js";

export type ServerInput = { address: string; port: number; weight?: number };

export const silentLogger = pino({ level: "silent" });

/** Runs the product's reconciler against a test HAProxy, the ledger kept in its temp dir. */
export async function applyDesired(
  haproxy: RunningHaproxy,
  backends: Record<string, ServerInput[]>,
  options: Partial<ReconcileOptions> & { client?: RuntimeClient } = {},
): Promise<SocketReport> {
  const desired = parseDesiredState({ version: "test", backends: Object.entries(backends).map(([name, servers]) => ({ name, servers })) }, "test");
  const client = options.client ?? new RuntimeClient(parseSocketAddress(haproxy.socket));
  try {
    return await reconcileSocket(client, desired, new LedgerStore(join(haproxy.dir, "state"), client.name), {
      drainMs: 2_000,
      waitMs: 5_000,
      pollMs: 50,
      allowEmpty: false,
      dryRun: false,
      logger: silentLogger,
      ...options,
    });
  } finally {
    if (!options.client) client.close();
  }
}

/** `n` distinct loopback endpoints, 127.0.<base>.x:8000+x. */
export function endpoints(n: number, base = 1, weight?: number): ServerInput[] {
  return Array.from({ length: n }, (_, i) => ({ address: `127.0.${base}.${i + 1}`, port: 8000 + i + 1, ...(weight === undefined ? {} : { weight }) }));
}

/** HAProxy's own view, reduced to what a test compares: `name -> addr:port admin weight`. */
export function summary(rows: ReadonlyArray<Record<string, string>>, backend: string): Record<string, string> {
  return Object.fromEntries(
    rows.filter((row) => row.be_name === backend).map((row) => [row.srv_name, `${row.srv_addr}:${row.srv_port} admin=${row.srv_admin_state} w=${row.srv_uweight}`]),
  );
}

/** The endpoints HAProxy serves (admin state without maint or drain bits) in a backend. */
export function serving(rows: ReadonlyArray<Record<string, string>>, backend: string): string[] {
  return rows
    .filter((row) => row.be_name === backend && (Number(row.srv_admin_state) & 0x7b) === 0)
    .map((row) => `${row.srv_addr}:${row.srv_port}`)
    .sort();
}
