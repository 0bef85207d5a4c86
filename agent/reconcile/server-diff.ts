import type { DesiredServer } from "../model/desired-state.js";
import { endpointKey } from "../model/values.js";
import type { ObservedState } from "./observed-state.js";

/**
 * Desired against what HAProxy runs, server by server, for `hafleet-agent show --diff`: what an
 * operator asks when status says drifted. Pure; the same terms as the agent's drift report.
 *  - serving: desired, and HAProxy sends it new traffic;
 *  - held: desired, on a server in drain or maintenance;
 *  - missing: desired, and no server of HAProxy has that address;
 *  - unexpected: HAProxy sends new traffic to it, and it is not desired.
 */
export type ServerDiffState = "serving" | "held" | "missing" | "unexpected";

export interface ServerDiffEntry {
  endpoint: string;
  state: ServerDiffState;
  /** HAProxy's server name, when one has the endpoint. */
  server: string | null;
  /** Its admin state, when HAProxy has it. */
  admin: string | null;
}

export interface BackendDiff {
  backend: string;
  /** False: this HAProxy has no such backend (every desired server is missing). */
  present: boolean;
  entries: ServerDiffEntry[];
}

export function diffServers(desired: ReadonlyArray<{ name: string; servers: readonly DesiredServer[] }>, observed: ObservedState): BackendDiff[] {
  return desired.map((backend) => {
    const current = observed.get(backend.name);
    const byEndpoint = new Map<string, { server: string; admin: string }>();
    for (const server of current?.servers ?? []) {
      if (server.address === null || server.port === null) continue;
      const endpoint = endpointKey(server.address, server.port);
      // A ready server wins over a held one of the same endpoint: traffic is what counts.
      if (!byEndpoint.has(endpoint) || server.admin === "ready") byEndpoint.set(endpoint, { server: server.rawName, admin: server.admin });
    }
    const wanted = new Set(backend.servers.map((server) => endpointKey(server.address, server.port)));
    const entries: ServerDiffEntry[] = [];
    for (const endpoint of wanted) {
      const running = byEndpoint.get(endpoint);
      const state: ServerDiffState = running === undefined ? "missing" : running.admin === "ready" ? "serving" : "held";
      entries.push({ endpoint, state, server: running?.server ?? null, admin: running?.admin ?? null });
    }
    for (const [endpoint, running] of byEndpoint) {
      if (!wanted.has(endpoint) && running.admin === "ready") entries.push({ endpoint, state: "unexpected", server: running.server, admin: running.admin });
    }
    entries.sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
    return { backend: backend.name, present: current !== undefined, entries };
  });
}

/** Whether HAProxy runs exactly the desired servers (held ones count as a difference). */
export function inStep(diffs: readonly BackendDiff[]): boolean {
  return diffs.every((diff) => diff.present && diff.entries.every((entry) => entry.state === "serving"));
}
