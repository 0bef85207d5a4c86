import { backendCounts, byProblemThenId, summaryCounts, type EndpointQuery } from "./fleet-status.js";
import type { ReplicaReport, ReportedAgent } from "./replica-report.js";
import type { AgentBackendStatus, AgentStatus, FleetStatus } from "./status-schema.js";

/*
 * One fleet from several replicas: this replica's status with the agents the others reported
 * (replica-report.ts) merged in, and the counts made again over all of them. Pure: the shell
 * reads the reports from Consul and passes them, with the time.
 */

export interface MergeInput {
  /** This replica's own status (its agents, the backends, the rollout, the freeze). */
  local: FleetStatus;
  /** This replica's id, and what its own report left out when it had to be cut. */
  self: { replica: string; truncated: { published: number; connected: number } | null };
  /** The other replicas' live reports (an entry whose session ended is not among them). */
  peers: readonly ReplicaReport[];
  now: number;
  /** A report older than this is named in the scope (default 60 s). */
  staleAfterMs?: number;
  /**
   * Asked with ?endpoint=: the endpoints, and the servers of a backend's version as this
   * replica knows them (null: another version than discovery's now, not known here).
   */
  endpoints?: { queries: readonly EndpointQuery[]; desired: (backend: string, version: string) => ReadonlySet<string> | null };
}

/** Replicas re-publish at least this often with nothing changed; three missed turns is stale. */
export const DEFAULT_STALE_AFTER_MS = 60_000;

export function mergeFleetStatus(input: MergeInput): FleetStatus {
  const { local, self, now } = input;
  const peers = input.peers.filter((peer) => peer.replica !== self.replica).sort((a, b) => (a.replica < b.replica ? -1 : a.replica > b.replica ? 1 : 0));
  const own = local.agents.map((agent) => ({ ...agent, replica: self.replica }));
  const ownConnected = new Set(own.filter((agent) => agent.connected).map((agent) => agent.agent));
  // Held elsewhere: the latest connection wins when two reports name one agent (it moved, the old report lags).
  const elsewhere = new Map<string, AgentStatus>();
  for (const peer of peers) {
    for (const reported of peer.agents) {
      if (ownConnected.has(reported.agent)) continue;
      const seen = elsewhere.get(reported.agent);
      if (seen === undefined || reported.connectedAt > seen.connectedAt) elsewhere.set(reported.agent, agentOf(reported, peer.replica, input.endpoints));
    }
  }
  // An agent that left this replica and is connected to another is shown there, not as gone.
  const agents = [...own.filter((agent) => agent.connected || !elsewhere.has(agent.agent)), ...elsewhere.values()].sort(byProblemThenId);
  return {
    ...local,
    summary: {
      ...local.summary,
      ...summaryCounts(agents),
      scope: scopeOf(self, peers, now, input.staleAfterMs ?? DEFAULT_STALE_AFTER_MS),
    },
    // Each row's version, servers and discovery stay this replica's; its counts cover every replica's agents.
    backends: local.backends.map((backend) => ({ ...backend, ...backendCounts(backend.backend, backend.version, agents) })),
    agents,
  };
}

function agentOf(reported: ReportedAgent, replica: string, endpoints: MergeInput["endpoints"]): AgentStatus {
  return {
    agent: reported.agent,
    labels: { ...reported.labels },
    hafleetVersion: reported.hafleetVersion,
    state: reported.state,
    connected: true,
    peer: "",
    replica,
    problem: reported.problem,
    // Cordons are kept by the replica an operator asked; the leader's rollout reads its own.
    cordoned: null,
    connectedAt: reported.connectedAt,
    lastSeenAt: reported.lastSeenAt,
    disconnectedAt: null,
    disconnectReason: null,
    rolloutSide: reported.rolloutSide,
    backends: reported.backends.map((backend) => {
      const row: AgentBackendStatus = {
        backend: backend.backend,
        state: backend.state,
        desiredVersion: backend.desired,
        appliedVersion: backend.applied,
        pendingSince: null,
        error: backend.problem,
        drift: [],
        serving: backend.serving,
      };
      const asked = endpoints?.queries.filter((query) => query.backend === backend.backend) ?? [];
      return asked.length === 0 ? row : { ...row, endpoint: asked.map((query) => ({ endpoint: query.endpoint, served: servedElsewhere(backend, query.endpoint, endpoints!.desired) })) };
    }),
  };
}

/** Whether HAProxy serves the endpoint, from the report's exceptions and the servers of the version it runs; null: not known. */
function servedElsewhere(backend: ReportedAgent["backends"][number], endpoint: string, desired: (backend: string, version: string) => ReadonlySet<string> | null): "all" | "some" | "none" | null {
  if (backend.exceptions === null) return null;
  const exception = backend.exceptions.find((entry) => entry.endpoint === endpoint);
  if (exception !== undefined) return exception.served;
  const servers = desired(backend.backend, backend.desired);
  return servers === null ? null : servers.has(endpoint) ? "all" : "none";
}

function scopeOf(self: MergeInput["self"], peers: readonly ReplicaReport[], now: number, staleAfterMs: number): string {
  const count = peers.length + 1;
  const notes: string[] = [];
  if (self.truncated !== null) notes.push(`this replica's report to the others cut to ${self.truncated.published} of ${self.truncated.connected} agents (Consul's value size limit)`);
  for (const peer of peers) {
    if (peer.truncated) notes.push(`${peer.replica} reported ${peer.agents.length} of its ${peer.connected} agents (Consul's value size limit)`);
    const age = now - peer.publishedAt;
    if (age > staleAfterMs) notes.push(`${peer.replica}'s report is ${Math.round(age / 1000)} s old`);
  }
  return `fleet (${count} replica${count === 1 ? "" : "s"})${notes.length === 0 ? "" : `: ${notes.join("; ")}`}`;
}
