import type { DesiredBackend, DesiredServer } from "../model/desired-state.js";
import { endpointKey, nameSchema, type Name, type Weight } from "../model/values.js";
import { RuntimeCommand } from "../runtime/commands.js";
import { ledgerKey, type Ledger, type LedgerEntry } from "./ledger.js";
import { DYNAMIC_PREFIX, type AdminMode, type ObservedBackend, type ObservedServer, type ObservedState } from "./observed-state.js";

export interface PlanOptions {
  now: number;
  /** How long a removed server drains before maintenance, unless its sessions reach 0 first. */
  drainMs: number;
  /** Let a desired backend with no servers empty a backend that serves traffic. */
  allowEmpty: boolean;
  /** The same, for these backends only (the controller's per-backend `allow_empty`). */
  allowEmptyBackends?: ReadonlySet<string>;
  /** Backends whose HAProxy already refused `add server` (hash-based balance, for instance). */
  refusesDynamic?: ReadonlySet<string>;
}

export type StepAction = "fill-slot" | "add-server" | "reactivate" | "set-weight" | "drain" | "maint" | "delete";

/**
 * Commands for one server. `prepare` runs in a first batch; `commit` runs in a second one
 * only if every prepare command of the step succeeded, so a slot whose address could not
 * be set is never made ready with its old address.
 */
export interface PlanStep {
  action: StepAction;
  backend: Name;
  server: Name;
  endpoint: string | null;
  prepare: RuntimeCommand[];
  commit: RuntimeCommand[];
  /** The ledger entry after the step succeeds: null removes it, undefined leaves it. */
  ledger: LedgerEntry | null | undefined;
}

export interface HeldServer {
  server: string;
  endpoint: string | null;
  admin: AdminMode;
  /** Whether the held server's endpoint is still desired. */
  desired: boolean;
}

/** `no-free-slot`: every slot is taken and the backend takes no dynamic servers (static balance). */
export type UnplacedReason = "backend-missing" | "no-free-slot" | "empty-refused";

export interface BackendPlan {
  backend: string;
  held: HeldServer[];
  unplaced: { endpoint: string; reason: UnplacedReason }[];
  draining: { server: string; endpoint: string | null; until: number }[];
  /** Servers whose names cannot be put in a command: left alone, reported. */
  unmanageable: string[];
}

export interface Plan {
  steps: PlanStep[];
  backends: BackendPlan[];
  /** Ledger entries that no longer describe any server. */
  staleLedgerKeys: string[];
  /** When a drain runs out and another pass is due; null when nothing waits. */
  nextCheckAt: number | null;
}

/** HAProxy refuses `add server` on these; anything else is tried and the reply decides. */
const STATIC_ALGORITHMS = new Set(["static-rr"]);

/**
 * The smallest set of commands that makes HAProxy run the desired backends. Pure: the
 * clock comes in as `options.now`, and the ledger says which states hafleet set itself.
 */
export function planChanges(desired: readonly DesiredBackend[], observed: ObservedState, ledger: Ledger, options: PlanOptions): Plan {
  const steps: PlanStep[] = [];
  const backends: BackendPlan[] = [];
  const usedLedgerKeys = new Set<string>();
  for (const backend of desired) {
    const current = observed.get(backend.name);
    const result = current
      ? planBackend(backend, current, ledger, options, usedLedgerKeys)
      : { steps: [], report: missingBackend(backend) };
    steps.push(...result.steps);
    backends.push(result.report);
  }
  const managed = new Set(desired.map((backend) => backend.name as string));
  const staleLedgerKeys = [...ledger.keys()].filter((key) => !usedLedgerKeys.has(key) && managed.has(key.slice(0, key.indexOf("/"))));
  const deadlines = backends.flatMap((backend) => backend.draining.map((drain) => drain.until));
  return { steps: orderSteps(steps), backends, staleLedgerKeys, nextCheckAt: deadlines.length ? Math.min(...deadlines) : null };
}

function missingBackend(backend: DesiredBackend): BackendPlan {
  return {
    backend: backend.name,
    held: [],
    unplaced: backend.servers.map((server) => ({ endpoint: endpointKey(server.address, server.port), reason: "backend-missing" })),
    draining: [],
    unmanageable: [],
  };
}

interface ServerView {
  server: ObservedServer & { name: Name };
  endpoint: string | null;
  /** The ledger entry, only if it still describes this server (same endpoint). */
  entry: LedgerEntry | undefined;
}

function planBackend(
  backend: DesiredBackend,
  current: ObservedBackend,
  ledger: Ledger,
  options: PlanOptions,
  usedLedgerKeys: Set<string>,
): { steps: PlanStep[]; report: BackendPlan } {
  const report: BackendPlan = { backend: backend.name, held: [], unplaced: [], draining: [], unmanageable: [] };
  const steps: PlanStep[] = [];
  const wanted = new Map(backend.servers.map((server) => [endpointKey(server.address, server.port), server]));
  const views = viewServers(backend.name, current, ledger, report, usedLedgerKeys);

  const mayEmpty = options.allowEmpty || options.allowEmptyBackends?.has(backend.name) === true;
  if (backend.servers.length === 0 && !mayEmpty && views.some((view) => view.server.admin === "ready")) {
    // An empty set from upstream is far more often a fault than an intent.
    report.unplaced.push({ endpoint: "*", reason: "empty-refused" });
    return { steps, report };
  }

  const unclaimed: ServerView[] = [];
  let readyAfter = 0;
  for (const view of views) {
    const desired = view.endpoint === null ? undefined : wanted.get(view.endpoint);
    if (desired && claim(view, targetWeight(current, view.server, desired), steps, report, backend.name)) {
      wanted.delete(view.endpoint!);
      if (view.server.admin === "ready" || view.entry !== undefined) readyAfter++;
    } else unclaimed.push(view);
  }

  const freeSlots: ServerView[] = [];
  const removable: ServerView[] = [];
  for (const view of unclaimed) {
    if (view.server.admin === "ready") removable.push(view);
    else release(view, backend.name, options, steps, report, freeSlots);
  }

  const defaultWeight = current.servers.find((server) => !server.dynamic)?.initialWeight;
  for (const [endpoint, server] of wanted) {
    const slot = freeSlots.shift();
    if (slot) steps.push(fillSlot(backend.name, slot, endpoint, server, targetWeight(current, slot.server, server)));
    else if (refusesDynamic(current, options)) report.unplaced.push({ endpoint, reason: "no-free-slot" });
    else steps.push(addServer(backend.name, endpoint, server, defaultWeight, current.servers.some((s) => s.checked)));
    if (slot || !refusesDynamic(current, options)) readyAfter++;
  }

  // With no slot to grow into, old servers are drained to free slots for the new ones; the
  // last one that serves keeps serving until a new server is up, so the backend never empties.
  const keep = readyAfter === 0 && report.unplaced.length > 0 ? 1 : 0;
  for (const view of removable.slice(keep)) {
    steps.push(step("drain", backend.name, view, [], [RuntimeCommand.setState(backend.name, view.server.name, "drain")], drainEntry(view, options.now)));
    report.draining.push({ server: view.server.name, endpoint: view.endpoint, until: options.now + options.drainMs });
  }
  return { steps, report };
}

/**
 * The desired weight, else the slot's configured one. Static algorithms take no weight but
 * 0% or 100% at runtime, so there the weight is left as it runs.
 */
function targetWeight(backend: ObservedBackend, server: ObservedServer, desired: DesiredServer): Weight {
  if (isStatic(backend)) return server.userWeight as Weight;
  return desired.weight ?? (server.initialWeight as Weight);
}

function isStatic(backend: ObservedBackend): boolean {
  return backend.algorithm !== null && STATIC_ALGORITHMS.has(backend.algorithm);
}

function refusesDynamic(backend: ObservedBackend, options: PlanOptions): boolean {
  return isStatic(backend) || options.refusesDynamic?.has(backend.rawName) === true;
}

function viewServers(backend: Name, current: ObservedBackend, ledger: Ledger, report: BackendPlan, usedLedgerKeys: Set<string>): ServerView[] {
  const views: ServerView[] = [];
  for (const server of [...current.servers].sort((a, b) => a.id - b.id)) {
    if (server.name === null) {
      report.unmanageable.push(server.rawName);
      continue;
    }
    const endpoint = server.address !== null && server.port !== null ? endpointKey(server.address, server.port) : null;
    const key = ledgerKey(backend, server.name);
    const recorded = ledger.get(key);
    const entry = recorded && recorded.endpoint === endpoint && server.admin !== "ready" ? recorded : undefined;
    if (entry) usedLedgerKeys.add(key);
    views.push({ server: server as ObservedServer & { name: Name }, endpoint, entry });
  }
  return views;
}

/** A server already on a desired endpoint keeps it. Returns false if it cannot serve it. */
function claim(view: ServerView, weight: Weight, steps: PlanStep[], report: BackendPlan, backend: Name): boolean {
  const { server } = view;
  if (server.admin === "ready") {
    if (server.userWeight !== weight) steps.push(step("set-weight", backend, view, [], [RuntimeCommand.setWeight(backend, server.name, weight)], undefined));
    return true;
  }
  if (view.entry === undefined) {
    report.held.push({ server: server.name, endpoint: view.endpoint, admin: server.admin, desired: true });
    return true;
  }
  // hafleet drained or freed it earlier and the endpoint is wanted again: bring it back.
  const commit = server.userWeight === weight ? [] : [RuntimeCommand.setWeight(backend, server.name, weight)];
  commit.push(RuntimeCommand.setState(backend, server.name, "ready"));
  steps.push(step("reactivate", backend, view, [], commit, null));
  return true;
}

/** A server no longer desired and already out of rotation: maintenance (a free slot), or delete if dynamic. */
function release(view: ServerView, backend: Name, options: PlanOptions, steps: PlanStep[], report: BackendPlan, freeSlots: ServerView[]): void {
  const { server, entry } = view;
  if (server.admin === "drain") {
    if (entry?.state !== "drain") {
      report.held.push({ server: server.name, endpoint: view.endpoint, admin: server.admin, desired: false });
      return;
    }
    const until = entry.since + options.drainMs;
    if (server.sessions === 0 || options.now >= until) {
      steps.push(step("maint", backend, view, [], [RuntimeCommand.setState(backend, server.name, "maint")], { ...entry, state: "maint" }));
    } else {
      report.draining.push({ server: server.name, endpoint: view.endpoint, until });
    }
    return;
  }
  if (server.dynamic) steps.push(step("delete", backend, view, [], [RuntimeCommand.deleteServer(backend, server.name)], null));
  else freeSlots.push(view);
}

function drainEntry(view: ServerView, now: number): LedgerEntry {
  return { state: "drain", endpoint: view.endpoint, since: now };
}

function fillSlot(backend: Name, slot: ServerView, endpoint: string, desired: DesiredServer, weight: Weight): PlanStep {
  const { server } = slot;
  const prepare = [RuntimeCommand.setAddress(backend, server.name, desired.address, desired.port)];
  if (server.userWeight !== weight) prepare.push(RuntimeCommand.setWeight(backend, server.name, weight));
  return { action: "fill-slot", backend, server: server.name, endpoint, prepare, commit: [RuntimeCommand.setState(backend, server.name, "ready")], ledger: null };
}

function addServer(backend: Name, endpoint: string, desired: DesiredServer, defaultWeight: number | undefined, check: boolean): PlanStep {
  const server = dynamicServerName(desired);
  const weight = desired.weight ?? (defaultWeight as Weight | undefined);
  const prepare = [RuntimeCommand.addServer(backend, server, desired.address, desired.port, { weight, check })];
  const commit = check ? [RuntimeCommand.enableHealth(backend, server)] : [];
  commit.push(RuntimeCommand.setState(backend, server, "ready"));
  return { action: "add-server", backend, server, endpoint, prepare, commit, ledger: null };
}

/** Named after the endpoint, so an operator reading `show servers state` sees what it is. */
export function dynamicServerName(server: DesiredServer): Name {
  return nameSchema.parse(`${DYNAMIC_PREFIX}${server.address.replaceAll(":", "_")}-${server.port}`);
}

function step(action: StepAction, backend: Name, view: ServerView, prepare: RuntimeCommand[], commit: RuntimeCommand[], ledger: LedgerEntry | null | undefined): PlanStep {
  return { action, backend, server: view.server.name, endpoint: view.endpoint, prepare, commit, ledger };
}

const ACTION_ORDER: Record<StepAction, number> = {
  "fill-slot": 0,
  "add-server": 1,
  reactivate: 2,
  "set-weight": 3,
  drain: 4,
  maint: 5,
  delete: 6,
};

/** New capacity first, removals last: within each batch HAProxy runs commands in order. */
function orderSteps(steps: PlanStep[]): PlanStep[] {
  return steps.map((s, index) => ({ s, index })).sort((a, b) => ACTION_ORDER[a.s.action] - ACTION_ORDER[b.s.action] || a.index - b.index).map(({ s }) => s);
}
