import type { DesiredServer } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import type { ObservedBackend, ObservedServer } from "../../agent/reconcile/observed-state.js";
import type { Plan } from "../../agent/reconcile/planner.js";
import type { SocketReport } from "../../agent/reconcile/reconciler.js";
import type { Applier, SocketApply, SocketInventory } from "../../agent/run/applier.js";
import type { DesiredSet } from "../../agent/run/local-store.js";

/*
 * An agent's HAProxy, simulated: for the fleet benchmark's thousands of agents and the tests
 * that need many agents but assert on the controller, not on HAProxy.
 */

const EMPTY_PLAN: Plan = { steps: [], backends: [], staleLedgerKeys: [], nextCheckAt: null };
/**
 * HAProxy as it would be after a perfect apply: every desired server ready, nothing left to
 * plan. `firstPush` resolves once a pushed set (not the empty startup set) was applied.
 */
export class SimulatedApplier implements Applier {
  readonly firstPush: Promise<void>;
  private pushed: () => void = () => undefined;

  constructor(
    private readonly backends: readonly string[],
    private readonly socket = "sim",
  ) {
    this.firstPush = new Promise((resolve) => (this.pushed = resolve));
  }

  async apply(desired: DesiredSet): Promise<SocketApply[]> {
    if (desired.backends.size > 0) this.pushed();
    return [convergedReport(desired, this.socket)];
  }

  async inventory(): Promise<SocketInventory[]> {
    return [{ socket: this.socket, backends: this.backends.map((name) => ({ name, slots: 100, serving: 0, dynamic: true })) }];
  }

  async reconnected(): Promise<string[]> {
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
