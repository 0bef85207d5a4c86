import { createHash } from "node:crypto";
import type { DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import type { ObservedBackend, ObservedServer } from "../../agent/reconcile/observed-state.js";
import type { Plan } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import type { Applier, SocketApply, SocketInventory } from "../../agent/run/applier.js";
import type { DesiredSet } from "../../agent/run/local-store.js";
import type { WorkerChange } from "../../agent/runtime/worker.js";

/*
 * An agent's HAProxy, simulated: for the fleet benchmark's thousands of agents and the tests
 * that need many agents but assert on the controller, not on HAProxy.
 */

const EMPTY_PLAN: Plan = { steps: [], backends: [], staleLedgerKeys: [], nextCheckAt: null };
/**
 * HAProxy as it would be after a perfect apply: every desired server ready, nothing left to
 * plan. `firstPush` resolves once a pushed set (not the empty startup set) was applied.
 * A backend left out of a desired set keeps its servers, as the real agent leaves it alone.
 */
export class SimulatedApplier implements Applier {
  readonly firstPush: Promise<void>;
  private pushed: () => void = () => undefined;
  private readonly current = new Map<string, readonly DesiredServer[]>();
  private readonly fewest = new Map<string, number>();

  constructor(
    private readonly backends: readonly string[],
    private readonly socket = "sim",
  ) {
    this.firstPush = new Promise((resolve) => (this.pushed = resolve));
  }

  async apply(desired: DesiredSet): Promise<SocketApply[]> {
    if (desired.backends.size > 0) this.pushed();
    for (const backend of desired.backends.values()) {
      this.current.set(backend.name, backend.servers);
      this.fewest.set(backend.name, Math.min(this.fewest.get(backend.name) ?? Infinity, backend.servers.length));
    }
    return [convergedReport(desired, this.socket)];
  }

  /** The servers `backend` serves now (none before its first set). */
  serving(backend: string): readonly DesiredServer[] {
    return this.current.get(backend) ?? [];
  }

  /** The fewest servers `backend` ever served once it had its first set; undefined before. */
  fewestServing(backend: string): number | undefined {
    return this.fewest.get(backend);
  }

  async inventory(): Promise<SocketInventory[]> {
    return [{ socket: this.socket, backends: this.backends.map((name) => ({ name, slots: 100, serving: 0, dynamic: true })) }];
  }

  async workerChanges(): Promise<Array<{ socket: string; change: WorkerChange }>> {
    return [];
  }

  close(): void {}
}

function convergedReport(desired: DesiredSet, socket: string): SocketReport {
  const observed = new Map<string, ObservedBackend>();
  for (const backend of desired.backends.values()) {
    observed.set(backend.name, { rawName: backend.name, name: backend.name, algorithm: "roundrobin", servers: backend.servers.map(servingServer) });
  }
  return { socket, plan: EMPTY_PLAN, outcomes: [], final: EMPTY_PLAN, observed, converged: true };
}

// Ready servers with the desired endpoints: the observed report then shows no drift, as on a
// healthy HAProxy, so the controller is sent (and keeps) what it would keep in production.
function servingServer(server: DesiredServer, index: number): ObservedServer {
  const name = `srv${index + 1}`;
  const weight = server.weight ?? 1;
  return {
    rawName: name,
    name: nameSchema.parse(name),
    id: index + 1,
    rawAddress: server.address,
    address: server.address,
    port: server.port,
    admin: "ready",
    adminBits: 0,
    userWeight: weight,
    initialWeight: weight,
    checked: false,
    dynamic: true,
    status: "no check",
    sessions: null,
  };
}

/** A short digest of a server set's endpoints, in any order: to compare sets across processes. */
export function endpointsDigest(servers: ReadonlyArray<{ address: string; port: number }>): string {
  const endpoints = servers.map((server) => `${server.address} ${server.port}`).sort();
  return createHash("sha256").update(endpoints.join("\n")).digest("hex").slice(0, 16);
}
