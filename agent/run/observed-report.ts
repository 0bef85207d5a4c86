import { createHash } from "node:crypto";
import type { DesiredServer } from "../model/desired-state.js";
import { endpointKey, type Name } from "../model/values.js";
import type { ObservedBackend, ObservedServer } from "../reconcile/observed-state.js";
import type { StepAction } from "../reconcile/planner.js";
import type { SocketReport } from "../reconcile/reconciler.js";
import type { ObservedReport } from "../../proto/messages.js";
import type { SocketApply } from "./applier.js";

type BackendObserved = ObservedReport["backends"][number];
type Drift = BackendObserved["drift"][number];

export interface ObservedOptions {
  /**
   * Count what this reconcile had to change as drift too (a resync: the desired state did not
   * change, so any change repaired something), so the controller hears of a restarted or
   * hand-edited HAProxy even though it serves correctly again by the time it is told.
   */
  repaired: boolean;
  /**
   * Sockets whose HAProxy was seen replaced (reload, restart) and not re-applied since, with
   * the reason: their entries say so, since what they show is from before.
   */
  repairing?: ReadonlyMap<string, string>;
}

/** What repairing a difference looked like in the first plan of a reconcile. */
const REPAIRS: Partial<Record<StepAction, Drift["state"]>> = {
  "fill-slot": "missing",
  "add-server": "missing",
  reactivate: "missing",
  drain: "unexpected",
};

/**
 * Per desired backend per socket: a digest of what HAProxy serves, how many serve, and how
 * that differs from the desired set; the version of each backend applied last; and a digest
 * over all of it, so an unchanged report can be recognised without reading it. A socket that
 * could not be read serves nothing, as far as anyone can tell: each desired server is missing.
 */
export function observedReport(
  desired: ReadonlyArray<{ name: Name; servers: readonly DesiredServer[]; appliedVersion: string }>,
  sockets: readonly SocketApply[],
  options: ObservedOptions,
): ObservedReport {
  const backends: BackendObserved[] = [];
  for (const backend of [...desired].sort((a, b) => compare(a.name, b.name))) {
    for (const socket of sockets) {
      const entry = "error" in socket ? unreachableBackend(backend, socket.socket) : observeBackend(backend, socket, options);
      const repairing = options.repairing?.get(socket.socket);
      backends.push(repairing === undefined ? entry : { ...entry, repairing });
    }
  }
  const appliedVersions = Object.fromEntries(desired.map((backend) => [backend.name, backend.appliedVersion]));
  const applied = Object.entries(appliedVersions).map(([backend, version]) => `applied\t${backend}\t${version}`);
  return { digest: digestOf([...backends.map(entryLine), ...applied]), backends, appliedVersions };
}

function unreachableBackend(desired: { name: Name; servers: readonly DesiredServer[] }, socket: string): BackendObserved {
  const drift = desired.servers.map((server) => ({ endpoint: endpointKey(server.address, server.port), state: "missing" as const }));
  return { backend: desired.name, socket, digest: digestOf([]), serving: 0, drift: drift.sort((a, b) => compare(a.endpoint, b.endpoint)) };
}

function observeBackend(desired: { name: Name; servers: readonly DesiredServer[] }, report: SocketReport, options: ObservedOptions): BackendObserved {
  const current = report.observed.get(desired.name);
  const serving = servingServers(current);
  const servingEndpoints = new Set(serving.map(endpointOf));
  const wanted = new Set(desired.servers.map((server) => endpointKey(server.address, server.port)));
  const plan = report.final.backends.find((entry) => entry.backend === desired.name);
  const held = new Set((plan?.held ?? []).filter((entry) => entry.desired && entry.endpoint !== null).map((entry) => entry.endpoint!));

  const drift = new Map<string, Drift>();
  const add = (endpoint: string, state: Drift["state"]): void => void drift.set(`${endpoint} ${state}`, { endpoint, state });
  for (const endpoint of wanted) {
    if (held.has(endpoint)) add(endpoint, "held");
    else if (!servingEndpoints.has(endpoint)) add(endpoint, "missing");
  }
  // A server hafleet did not place (planner.ts isOwn) is the operator's: not a difference to repair.
  const foreign = new Set((plan?.foreign ?? []).flatMap((entry) => (entry.endpoint === null ? [] : [entry.endpoint])));
  for (const endpoint of servingEndpoints) if (!wanted.has(endpoint) && !foreign.has(endpoint)) add(endpoint, "unexpected");
  if (options.repaired) {
    for (const step of report.plan.steps) {
      const state = REPAIRS[step.action];
      if (step.backend === desired.name && state !== undefined && step.endpoint !== null) add(step.endpoint, state);
    }
  }
  return {
    backend: desired.name,
    socket: report.socket,
    digest: digestOf(serving.map((server) => `${endpointOf(server)}:${server.userWeight}`)),
    serving: serving.length,
    drift: [...drift.values()].sort((a, b) => compare(a.endpoint, b.endpoint) || compare(a.state, b.state)),
  };
}

/** Ready servers: the ones HAProxy sends new traffic to. */
function servingServers(backend: ObservedBackend | undefined): ObservedServer[] {
  return (backend?.servers ?? []).filter((server) => server.admin === "ready");
}

function endpointOf(server: ObservedServer): string {
  if (server.address !== null && server.port !== null) return endpointKey(server.address, server.port);
  return `${server.rawAddress}:${server.port ?? "-"}`;
}

function entryLine(entry: BackendObserved): string {
  const drift = entry.drift.map((item) => `${item.state}=${item.endpoint}`).join(",");
  return `${entry.backend}\t${entry.socket}\t${entry.digest}\t${entry.serving}\t${drift}\t${entry.repairing ?? ""}`;
}

/** sha256 of the sorted lines, truncated like the controller's versions. */
export function digestOf(lines: readonly string[]): string {
  return createHash("sha256").update([...lines].sort().join("\n")).digest("hex").slice(0, 16);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
