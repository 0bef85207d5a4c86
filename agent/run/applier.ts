import type { Logger } from "pino";
import { HafleetError } from "../errors.js";
import type { DesiredState } from "../model/desired-state.js";
import { LedgerStore } from "../reconcile/ledger-store.js";
import type { ObservedState } from "../reconcile/observed-state.js";
import { readObservedState } from "../reconcile/read-observed.js";
import { reconcileSocket, type SocketReport } from "../reconcile/reconciler.js";
import { RuntimeClient, type RuntimeClientOptions } from "../runtime/runtime-client.js";
import type { SocketAddress } from "../runtime/socket-address.js";
import { workerChange, type WorkerChange, type WorkerIdentity } from "../runtime/worker.js";
import { LIMITS, type Hello } from "../../proto/messages.js";
import type { DesiredSet } from "./local-store.js";
import type { CoalescingConfigWriter } from "../hybrid/config-writer.js";
import type { Reloader } from "../hybrid/reloader.js";
import { coalescingWriter, hybridReloader, runHybrid, type HybridSession } from "../hybrid/hybrid-session.js";

/** A socket whose HAProxy could not be read or changed at all: nothing is known of it. */
export interface SocketFailure {
  socket: string;
  error: string;
}

export type SocketApply = SocketReport | SocketFailure;

export type SocketInventory = Hello["sockets"][number];

/**
 * What the run loop needs from the HAProxy side. The real one talks to HAProxy; a benchmark
 * or a test can put a simulated one behind the real gRPC code.
 */
export interface Applier {
  /** Makes every socket run the desired set; never throws for one socket's failure. */
  apply(desired: DesiredSet): Promise<SocketApply[]>;
  /** Per socket, its backends' capacity, for the hello. */
  inventory(): Promise<Hello["sockets"]>;
  /**
   * Asks each HAProxy, on a fresh connection, which process serves now, and returns the sockets
   * where that changed since the last look (a reload or restart: what was applied at runtime
   * may be gone; unreachable; reachable again). An apply looks too, and repairs what it sees.
   */
  workerChanges(): Promise<Array<{ socket: string; change: WorkerChange }>>;
  /** Closes connections; a hybrid-mode applier first writes a render still pending. */
  close(): void | Promise<void>;
}

/** The reconciler's input: backends sorted by name, and those allowed to be emptied. */
export function toReconcileInput(set: DesiredSet): { desired: DesiredState; allowEmptyBackends: Set<string> } {
  const backends = [...set.backends.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    desired: { version: set.version, backends: backends.map((backend) => ({ name: backend.name, servers: backend.servers })) },
    allowEmptyBackends: new Set(backends.filter((backend) => backend.allowEmpty).map((backend) => backend.name)),
  };
}

/** Balance algorithms on which HAProxy refuses `add server`, as the planner knows them. */
const STATIC_ALGORITHMS = new Set(["static-rr"]);

export function inventoryOf(socket: string, observed: ObservedState): SocketInventory {
  const backends = [...observed.values()]
    // The wire limits names to 256 characters; HAProxy's own limit is far above any real name.
    .filter((backend) => backend.rawName.length <= 256)
    .slice(0, LIMITS.backends)
    .map((backend) => ({
      name: backend.rawName,
      slots: backend.servers.length,
      serving: backend.servers.filter((server) => server.admin === "ready").length,
      dynamic: backend.algorithm === null || !STATIC_ALGORITHMS.has(backend.algorithm),
    }));
  return { socket, backends };
}

export interface RuntimeApplierOptions {
  sockets: readonly SocketAddress[];
  stateDir: string;
  drainMs: number;
  logger: Logger;
  client?: Omit<RuntimeClientOptions, "logger">;
  /** A hello should not wait long for one slow HAProxy. */
  inventoryTimeoutMs?: number;
  /** Hybrid mode (one socket): keep the config file in step, reload when unavoidable. */
  hybrid?: HybridSession;
}

interface SocketState {
  /** Hybrid mode only: the one reloader of this HAProxy. */
  reloader?: Reloader;
  client: RuntimeClient;
  ledger: LedgerStore;
  /** The serving process at the last look; null: unreachable then; undefined: never asked. */
  worker: WorkerIdentity | null | undefined;
  /** What HAProxy ran at the last apply that read it. */
  observed?: ObservedState;
  /** What the replaced process ran, until an apply has repaired its successor (PlanOptions.previous). */
  replaced?: ObservedState;
  /** Per backend, the servers last reported as not hafleet's: each new set is logged once. */
  foreign: Map<string, string>;
}

/** One long-lived RuntimeClient per socket, and its ledger in the state dir. */
export class RuntimeApplier implements Applier {
  private readonly sockets: SocketState[];
  private readonly writer: CoalescingConfigWriter | undefined;

  constructor(private readonly options: RuntimeApplierOptions) {
    this.sockets = options.sockets.map((address) => {
      const client = new RuntimeClient(address, { ...options.client, logger: options.logger });
      const reloader = options.hybrid ? hybridReloader(options.hybrid, client, options.logger) : undefined;
      return { client, ledger: new LedgerStore(options.stateDir, client.name), worker: undefined, foreign: new Map(), ...(reloader ? { reloader } : {}) };
    });
    // Hybrid mode manages one HAProxy (one config file): its one socket.
    this.writer = options.hybrid && this.sockets[0] ? coalescingWriter(options.hybrid, this.sockets[0].client, options.logger) : undefined;
  }

  apply(set: DesiredSet): Promise<SocketApply[]> {
    const { desired, allowEmptyBackends } = toReconcileInput(set);
    const reconcileOptions = {
      drainMs: this.options.drainMs,
      // A response must not wait for drains: they do not make a nack, and the caller comes
      // back for them when the earliest one is due.
      waitMs: 0,
      pollMs: 250,
      allowEmpty: false,
      allowEmptyBackends,
      // Hybrid mode renders the config: every server in it is hafleet's (planner.ts isOwn).
      configRendered: this.options.hybrid !== undefined,
      dryRun: false,
      logger: this.options.logger,
    };
    return Promise.all(
      this.sockets.map(async (socket): Promise<SocketApply> => {
        // Before anything is read or sent: the kept connection must be on the serving process.
        this.look(socket, await socket.client.probe());
        try {
          const options = socket.replaced ? { ...reconcileOptions, previous: socket.replaced } : reconcileOptions;
          const reconcile = () => reconcileSocket(socket.client, desired, socket.ledger, options);
          const report = await reconcile();
          socket.observed = report.observed;
          delete socket.replaced;
          this.noteForeign(socket, report);
          const { hybrid } = this.options;
          if (!hybrid || !socket.reloader) return report;
          // A refused render or a failed reload fails the whole socket: every pushed backend is nacked.
          const outcome = await runHybrid(hybrid, socket.client, desired, report, reconcile, this.options.logger, socket.reloader, this.writer);
          return outcome.ok ? outcome.report : { socket: socket.client.name, error: `hybrid mode: ${outcome.failure ?? "failed"}` };
        } catch (error) {
          return { socket: socket.client.name, error: describe(error) };
        }
      }),
    );
  }

  inventory(): Promise<Hello["sockets"]> {
    const timeoutMs = this.options.inventoryTimeoutMs ?? 5_000;
    return Promise.all(
      this.sockets.map(async ({ client }) => {
        try {
          return inventoryOf(client.name, await withTimeout(readObservedState(client), timeoutMs));
        } catch (error) {
          this.options.logger.warn({ socket: client.name, err: describe(error) }, "cannot read HAProxy for the hello: its inventory is sent empty");
          return { socket: client.name, backends: [] };
        }
      }),
    );
  }

  async workerChanges(): Promise<Array<{ socket: string; change: WorkerChange }>> {
    const changes = await Promise.all(
      this.sockets.map(async (socket) => {
        const change = this.look(socket, await socket.client.probe());
        return change === null ? [] : [{ socket: socket.client.name, change }];
      }),
    );
    return changes.flat();
  }

  /**
   * Servers of a managed backend that hafleet will never touch (planner.ts isOwn): said once per
   * change, since after an upgrade a template whose slots lack `disabled` would otherwise leave
   * removals undone without a word.
   */
  private noteForeign(socket: SocketState, report: SocketReport): void {
    for (const backend of report.final.backends) {
      const names = (backend.foreign ?? []).map((entry) => entry.server).join(",");
      if ((socket.foreign.get(backend.backend) ?? "") === names) continue;
      socket.foreign.set(backend.backend, names);
      if (names !== "") this.options.logger.warn({ socket: socket.client.name, backend: backend.backend, servers: names.split(",") }, "servers hafleet did not place are left alone (neither declared disabled nor added by hafleet): declare template slots 'disabled'");
    }
  }

  /** Records who serves now; a new process is remembered with what its predecessor ran. */
  private look(socket: SocketState, current: WorkerIdentity | null): WorkerChange | null {
    const change = workerChange(socket.worker, current);
    socket.worker = current;
    if (change !== null && change.kind !== "gone" && socket.observed) socket.replaced ??= socket.observed;
    return change;
  }

  async close(): Promise<void> {
    for (const { client } of this.sockets) client.close();
    try {
      await this.writer?.close();
    } catch (error) {
      this.options.logger.error({ err: describe(error) }, "the last config render could not be written");
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof HafleetError) return error.message;
  return `unexpected error: ${error instanceof Error ? error.message : String(error)}`;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
