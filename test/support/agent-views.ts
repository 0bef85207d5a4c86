import { parseDesiredState } from "../../agent/model/desired-state.js";
import { nameSchema } from "../../agent/model/values.js";
import type { DesiredBackendState } from "../../controller/core/desired-store.js";
import type { AgentView } from "../../controller/status/fleet-status.js";
import type { ObservedReport } from "../../proto/messages.js";

/** The status builder's inputs, for the pure tests of status and wait: a backend, a report, an agent. */

/** `name` at `version`, with servers 10.0.0.1 on these ports. */
export function backendState(name: string, version: string, ports: readonly number[]): DesiredBackendState {
  const servers = parseDesiredState({ backends: [{ name: "b", servers: ports.map((port) => ({ address: "10.0.0.1", port })) }] }, "t").backends[0]!.servers;
  return { name: nameSchema.parse(name), servers, version, allowEmpty: false, held: null, dropped: [] };
}

/** The agent's report of HAProxy running `backend` as desired (bar `drift`), on `sockets` sockets. */
export function reportOf(backend: DesiredBackendState, drift: ObservedReport["backends"][number]["drift"] = [], sockets = 1): ObservedReport {
  return {
    digest: "d",
    appliedVersions: { [backend.name]: backend.version },
    backends: Array.from({ length: sockets }, (_, socket) => ({ backend: backend.name, socket: `s${socket}`, digest: "x", serving: backend.servers.length, drift })),
  };
}

/** A connected agent in sync on `desired` (its side's state), by its own report, at `now`. */
export function syncedAgent(id: string, desired: DesiredBackendState, now: number, extra: Partial<AgentView> = {}): AgentView {
  return {
    agent: id,
    labels: { region: "eu" },
    hafleetVersion: "t",
    peer: "p",
    connectedAt: now - 10_000,
    departed: null,
    desired: [desired],
    sync: new Map([[desired.name, { state: "synced", version: desired.version }]]),
    applied: new Map([[desired.name, desired.version]]),
    observed: reportOf(desired),
    rolloutSide: null,
    ...extra,
  };
}
