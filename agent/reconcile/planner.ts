import type { DesiredBackend, DesiredServer } from "../model/desired-state.js";
import { endpointKey, nameSchema, type Name, type Weight } from "../model/values.js";
import { RuntimeCommand } from "../runtime/commands.js";
import { ledgerKey, type Ledger, type LedgerEntry } from "./ledger.js";
import { DYNAMIC_PREFIX, isDisabledInConfig, type AdminMode, type ObservedBackend, type ObservedServer, type ObservedState } from "./observed-state.js";

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
  /**
   * HAProxy runs a config hafleet rendered (hybrid mode): hafleet wrote every server line of
   * the desired backends, filled slots without `disabled`, so each of their servers is its own.
   */
  configRendered?: boolean;
  /**
   * What the process this one replaced ran, as last read (after a reload or restart). A server
   * hafleet left ready there that comes back in drain or maintenance was restored from a
   * server-state file older than the change, not held by an operator: hafleet makes it ready.
   * One the operator held before the reload is still held.
   */
  previous?: ObservedState;
  /**
   * HAProxy 3.0+: how long `wait srv-removable` may hold a dynamic server's deletion for its
   * last connections to end; absent, `del server` is sent alone (and refused while any remain).
   */
  waitRemovableMs?: number;
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

/** A server the plan leaves as it is. */
export interface HeldServer {
  server: string;
  endpoint: string | null;
  admin: AdminMode;
  /** Whether the server's endpoint is desired. */
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
  /**
   * Servers hafleet did not place (see isOwn): never changed. One on a desired endpoint counts
   * as serving it; one held out of rotation there is in `held` too. Always set by the planner.
   */
  foreign?: HeldServer[];
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
    foreign: [],
  };
}

interface ServerView {
  server: ObservedServer & { name: Name };
  endpoint: string | null;
  /** The ledger entry, only if it still describes this server (see viewServers). */
  entry: LedgerEntry | undefined;
}

function planBackend(
  backend: DesiredBackend,
  current: ObservedBackend,
  ledger: Ledger,
  options: PlanOptions,
  usedLedgerKeys: Set<string>,
): { steps: PlanStep[]; report: BackendPlan } {
  const foreign: HeldServer[] = [];
  const report: BackendPlan = { backend: backend.name, held: [], unplaced: [], draining: [], unmanageable: [], foreign };
  const steps: PlanStep[] = [];
  const wanted = new Map(backend.servers.map((server) => [endpointKey(server.address, server.port), server]));
  const views = viewServers(backend.name, current, ledger, options, report, usedLedgerKeys);

  // Foreign servers first, so that hafleet never places a copy of an endpoint one of them has.
  const desiredEndpoints = new Set(wanted.keys());
  let readyAfter = 0;
  for (const view of views.foreign) {
    const desired = view.endpoint !== null && desiredEndpoints.has(view.endpoint);
    const entry = { server: view.server.name, endpoint: view.endpoint, admin: view.server.admin, desired };
    foreign.push(entry);
    if (desired) wanted.delete(view.endpoint!);
    if (view.server.admin === "ready") readyAfter++;
    else if (desired) report.held.push(entry);
  }

  const mayEmpty = options.allowEmpty || options.allowEmptyBackends?.has(backend.name) === true;
  if (backend.servers.length === 0 && !mayEmpty && views.own.some((view) => view.server.admin === "ready")) {
    // An empty set from upstream is far more often a fault than an intent.
    report.unplaced.push({ endpoint: "*", reason: "empty-refused" });
    return { steps, report };
  }

  const unclaimed: ServerView[] = [];
  for (const view of views.own) {
    const desired = view.endpoint === null ? undefined : wanted.get(view.endpoint);
    if (desired) {
      wanted.delete(view.endpoint!);
      const restored = wasReady(options.previous?.get(backend.name), view);
      if (claim(backend.name, view, desired, weightChange(current, view, desired), restored, options.now, steps, report)) readyAfter++;
    } else unclaimed.push(view);
  }

  const freeSlots: ServerView[] = [];
  const removable: ServerView[] = [];
  for (const view of unclaimed) {
    if (view.server.admin === "ready") removable.push(view);
    else release(view, backend.name, options, steps, report, freeSlots);
  }

  // The configured weight of hafleet's slots, else of the backend's other servers.
  const defaultWeight = (views.own.find((view) => !view.server.dynamic)?.server ?? current.servers.find((server) => !server.dynamic))?.initialWeight;
  for (const [endpoint, server] of wanted) {
    const slot = freeSlots.shift();
    if (slot) steps.push(fillSlot(backend.name, slot, endpoint, server, placementWeight(current, slot.server, server), options.now));
    else if (refusesDynamic(current, options)) report.unplaced.push({ endpoint, reason: "no-free-slot" });
    else steps.push(addServer(backend.name, endpoint, server, defaultWeight, current.servers.some((s) => s.checked), options.now));
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
 * A new occupant's weight: the desired one, else the slot's configured one; null when the slot
 * runs it already. Static algorithms take no weight but 0% or 100% at runtime, so there the
 * weight is left as it runs.
 */
function placementWeight(backend: ObservedBackend, server: ObservedServer, desired: DesiredServer): Weight | null {
  if (isStatic(backend)) return null;
  const weight = desired.weight ?? (server.initialWeight as Weight);
  return weight === server.userWeight ? null : weight;
}

/**
 * The weight to set on a server that keeps its endpoint, or null to leave the one it runs.
 * Only a change of the desired weight is applied, so a weight HAProxy's agent-check or an
 * operator set since hafleet's last change stays; each resync used to reset it.
 */
function weightChange(backend: ObservedBackend, view: ServerView, desired: DesiredServer): Weight | null {
  if (isStatic(backend)) return null;
  const wanted = desired.weight ?? null;
  const applied = view.entry?.weight;
  // Nothing recorded (a server hafleet has not weighted, or an older ledger): only an explicit
  // desired weight that does not run yet is applied.
  if (applied === undefined) return wanted !== null && wanted !== view.server.userWeight ? wanted : null;
  if (applied === wanted) return null;
  // Sent even when HAProxy runs it already, so that the ledger records it as applied.
  return wanted ?? (view.server.initialWeight as Weight);
}

function isStatic(backend: ObservedBackend): boolean {
  return backend.algorithm !== null && STATIC_ALGORITHMS.has(backend.algorithm);
}

function refusesDynamic(backend: ObservedBackend, options: PlanOptions): boolean {
  return isStatic(backend) || options.refusesDynamic?.has(backend.rawName) === true;
}

/**
 * Which servers are hafleet's own: the only ones it ever changes. HAProxy records no author, so
 * it is read from what HAProxy shows, and only servers hafleet can have placed are its own:
 *  - template slots, declared `disabled` in the config: HAProxy keeps that bit through every
 *    `set server ... state`, and a reload (runtime mode) brings the slots back with it. The
 *    price: a hand-written line that says `disabled` is taken as a slot too;
 *  - its dynamic servers, named with DYNAMIC_PREFIX (an operator's `add server` is not);
 *  - in a config hafleet rendered (hybrid mode), every server: hafleet wrote each line, filled
 *    slots and servers placed by a reload without `disabled`, so the bit cannot tell there.
 * Any other server (an operator's `server web1 10.0.0.1:80`) is foreign: never drained, disabled,
 * re-addressed, weighted or deleted, whatever the desired state says.
 * The ledger is not asked: HAProxy's view survives an agent restart and a lost state dir, and
 * ledgers of earlier versions record drains of servers hafleet should never have touched.
 */
export function isOwn(server: ObservedServer, configRendered: boolean): boolean {
  return server.dynamic || isDisabledInConfig(server) || configRendered;
}

function viewServers(
  backend: Name,
  current: ObservedBackend,
  ledger: Ledger,
  options: PlanOptions,
  report: BackendPlan,
  usedLedgerKeys: Set<string>,
): { own: ServerView[]; foreign: ServerView[] } {
  const own: ServerView[] = [];
  const foreign: ServerView[] = [];
  for (const server of [...current.servers].sort((a, b) => a.id - b.id)) {
    if (server.name === null) {
      report.unmanageable.push(server.rawName);
      continue;
    }
    const endpoint = server.address !== null && server.port !== null ? endpointKey(server.address, server.port) : null;
    const view: ServerView = { server: server as ObservedServer & { name: Name }, endpoint, entry: undefined };
    // A foreign server's entries (an earlier version's) go stale: nothing hafleet did stands there.
    if (!isOwn(server, options.configRendered === true)) {
      foreign.push(view);
      continue;
    }
    const key = ledgerKey(backend, server.name);
    const recorded = ledger.get(key);
    // An entry describes the server only on the endpoint hafleet left it; a drain or maintenance
    // the server no longer runs was undone by someone else, and a later one is theirs.
    if (recorded && recorded.endpoint === endpoint && (recorded.state === "ready" || server.admin !== "ready")) {
      view.entry = recorded;
      usedLedgerKeys.add(key);
    }
    own.push(view);
  }
  return { own, foreign };
}

/**
 * A server already on a desired endpoint keeps it. Returns whether it serves after the plan: a
 * drain or maintenance hafleet did not set is an operator's, held.
 */
/** The replaced process ran this server ready, on the same endpoint, as hafleet left it. */
function wasReady(previous: ObservedBackend | undefined, view: ServerView): boolean {
  if (previous === undefined || view.entry?.state !== "ready") return false;
  const before = previous.servers.find((server) => server.name === view.server.name);
  return before !== undefined && before.admin === "ready" && before.address !== null && before.port !== null && endpointKey(before.address, before.port) === view.endpoint;
}

function claim(backend: Name, view: ServerView, desired: DesiredServer, weight: Weight | null, restored: boolean, now: number, steps: PlanStep[], report: BackendPlan): boolean {
  const { server, entry } = view;
  if (server.admin === "ready") {
    if (weight !== null) {
      const since = entry?.state === "ready" ? entry.since : now;
      steps.push(step("set-weight", backend, view, [], [RuntimeCommand.setWeight(backend, server.name, weight)], readyEntry(view.endpoint, desired, since)));
    }
    return true;
  }
  if (entry?.state !== server.admin && !restored) {
    report.held.push({ server: server.name, endpoint: view.endpoint, admin: server.admin, desired: true });
    return false;
  }
  // hafleet drained or freed it earlier and the endpoint is wanted again: bring it back.
  const commit = weight === null ? [] : [RuntimeCommand.setWeight(backend, server.name, weight)];
  commit.push(RuntimeCommand.setState(backend, server.name, "ready"));
  steps.push(step("reactivate", backend, view, [], commit, readyEntry(view.endpoint, desired, now)));
  return true;
}

/** hafleet left the server serving on `endpoint`, with the desired weight, if any, applied. */
function readyEntry(endpoint: string | null, desired: DesiredServer, since: number): LedgerEntry {
  return { state: "ready", endpoint, since, weight: desired.weight ?? null };
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
  if (server.dynamic) {
    const wait = options.waitRemovableMs === undefined ? [] : [RuntimeCommand.waitRemovable(backend, server.name, options.waitRemovableMs)];
    steps.push(step("delete", backend, view, [], [...wait, RuntimeCommand.deleteServer(backend, server.name)], null));
  }
  else freeSlots.push(view);
}

function drainEntry(view: ServerView, now: number): LedgerEntry {
  return { state: "drain", endpoint: view.endpoint, since: now, weight: view.entry?.weight };
}

function fillSlot(backend: Name, slot: ServerView, endpoint: string, desired: DesiredServer, weight: Weight | null, now: number): PlanStep {
  const { server } = slot;
  const prepare = [RuntimeCommand.setAddress(backend, server.name, desired.address, desired.port)];
  if (weight !== null) prepare.push(RuntimeCommand.setWeight(backend, server.name, weight));
  const commit = [RuntimeCommand.setState(backend, server.name, "ready")];
  return { action: "fill-slot", backend, server: server.name, endpoint, prepare, commit, ledger: readyEntry(endpoint, desired, now) };
}

function addServer(backend: Name, endpoint: string, desired: DesiredServer, defaultWeight: number | undefined, check: boolean, now: number): PlanStep {
  const server = dynamicServerName(desired);
  const weight = desired.weight ?? (defaultWeight as Weight | undefined);
  const prepare = [RuntimeCommand.addServer(backend, server, desired.address, desired.port, { weight, check })];
  const commit = check ? [RuntimeCommand.enableHealth(backend, server)] : [];
  commit.push(RuntimeCommand.setState(backend, server, "ready"));
  return { action: "add-server", backend, server, endpoint, prepare, commit, ledger: readyEntry(endpoint, desired, now) };
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
