import type { Logger } from "pino";
import type { DesiredState } from "../model/desired-state.js";
import type { RuntimeClient } from "../runtime/runtime-client.js";
import { isAtLeast } from "../runtime/worker.js";
import { executePlan, isDynamicRefusal, type StepOutcome } from "./execute-plan.js";
import { ledgerKey, type LedgerEntry } from "./ledger.js";
import type { LedgerStore } from "./ledger-store.js";
import type { ObservedState } from "./observed-state.js";
import { planChanges, type Plan, type PlanOptions } from "./planner.js";
import { readObservedState } from "./read-observed.js";

export interface ReconcileOptions extends Omit<PlanOptions, "now"> {
  dryRun: boolean;
  /** How long to keep passing while drains run out; after that the report says what waits. */
  waitMs: number;
  pollMs: number;
  clock?: () => number;
  sleep?: (ms: number) => Promise<void>;
  logger: Logger;
}

export interface SocketReport {
  socket: string;
  /** The first plan, as `--dry-run` prints it. */
  plan: Plan;
  /** Every step run, in every pass. */
  outcomes: StepOutcome[];
  /** The plan computed from the last read-back: empty when HAProxy runs the desired state. */
  final: Plan;
  observed: ObservedState;
  converged: boolean;
}

/**
 * How long a deletion may wait for a dynamic server's last connections (HAProxy 3.0+). The
 * batch waits with it, and deletions come last in a plan, so nothing else is held up.
 */
const WAIT_REMOVABLE_MS = 2_000;

/** Bounds the loop whatever happens: each pass moves every server at least one state on. */
const MAX_PASSES = 50;

/**
 * Read, plan, apply, and again, until HAProxy runs the desired state or only drains that
 * have not run out are left. The ledger is saved after every pass that changed anything.
 */
export async function reconcileSocket(client: RuntimeClient, desired: DesiredState, store: LedgerStore, options: ReconcileOptions): Promise<SocketReport> {
  const clock = options.clock ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const log = options.logger.child({ socket: client.name, version: desired.version });
  const ledger = await store.load();
  const deadline = clock() + options.waitMs;
  const outcomes: StepOutcome[] = [];
  let first: Plan | undefined;
  let refused = false;
  const refusesDynamic = new Set<string>();

  for (let pass = 0; ; pass++) {
    const observed = await readObservedState(client);
    // Read after the read above, which told the client which HAProxy serves.
    const waitRemovable = isAtLeast(client.worker, 3, 0) ? { waitRemovableMs: WAIT_REMOVABLE_MS } : {};
    const plan = planChanges(desired.backends, observed, ledger, { ...options, now: clock(), refusesDynamic, ...waitRemovable });
    first ??= plan;
    // After a refusal, the read-back above is the report: the same command would be refused again.
    const stop = options.dryRun || refused || pass >= MAX_PASSES || (plan.steps.length === 0 && (plan.nextCheckAt === null || clock() >= deadline));
    if (stop) return { socket: client.name, plan: first, outcomes, final: plan, observed, converged: isConverged(plan) };

    for (const key of plan.staleLedgerKeys) ledger.delete(key);
    if (plan.steps.length > 0) {
      const results = await executePlan(client, plan.steps);
      outcomes.push(...results);
      recordOutcomes(results, ledger, log);
      await store.save(ledger);
      for (const result of results) if (isDynamicRefusal(result)) refusesDynamic.add(result.step.backend);
      refused = results.some((result) => !result.ok && !isDynamicRefusal(result));
    } else {
      await sleep(Math.max(0, Math.min(options.pollMs, plan.nextCheckAt! - clock())));
    }
  }
}

export function isConverged(plan: Plan): boolean {
  return plan.steps.length === 0 && plan.backends.every((backend) => backend.unplaced.length === 0 && backend.draining.length === 0);
}

function recordOutcomes(results: readonly StepOutcome[], ledger: Map<string, LedgerEntry>, log: Logger): void {
  for (const result of results) {
    const { step } = result;
    const fields = { backend: step.backend, server: step.server, endpoint: step.endpoint, action: step.action };
    if (!result.ok) {
      if ("skipped" in result) log.warn(fields, "removal held back: a new server of this backend could not be placed");
      else log.error({ ...fields, command: result.command, reply: result.reply, reason: result.reason }, "HAProxy refused a command");
      continue;
    }
    log.info(fields, "server changed");
    const key = ledgerKey(step.backend, step.server);
    if (step.ledger === null) ledger.delete(key);
    else if (step.ledger !== undefined) ledger.set(key, step.ledger);
  }
}
