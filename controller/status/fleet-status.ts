import type { Name } from "../../agent/model/values.js";
import type { ObservedReport } from "../../proto/messages.js";
import type { BackendSync } from "../core/agent-session.js";
import type { DesiredBackendState } from "../core/desired-store.js";
import {
  SYNC_STATES,
  type AgentBackendStatus,
  type AgentStatus,
  type BackendStatus,
  type ChangeStatus,
  type FleetStatus,
  type RolloutStatus,
  type SyncState,
} from "./status-schema.js";

/*
 * The fleet's status, computed from what the controller already holds: each agent's session
 * (pushes, acks, nacks), its last observed report, and the agents that left. Pure: the
 * server hands over its views, this only reads them.
 */

/** One agent as the controller sees it, connected or not. */
export interface AgentView {
  agent: string;
  labels: Readonly<Record<string, string>>;
  hafleetVersion: string;
  peer: string;
  connectedAt: number;
  /** null while connected. */
  departed: { since: number; reason: string } | null;
  /** What it should run now. */
  desired: readonly DesiredBackendState[];
  /** Per desired backend, from its session; null once disconnected. */
  sync: ReadonlyMap<Name, BackendSync> | null;
  /** The versions it acked last. */
  applied: ReadonlyMap<Name, string>;
  observed: ObservedReport | null;
  rolloutSide: "baseline" | "target" | null;
}

export interface StatusInput {
  now: number;
  controller: FleetStatus["controller"];
  agents: readonly AgentView[];
  /** Every backend's fleet-wide desired state. */
  backends: readonly DesiredBackendState[];
  frozen: { since: number; reason: string } | null;
  rollout: RolloutStatus | null;
  changes: readonly ChangeStatus[];
}

const RANK = new Map<SyncState, number>(SYNC_STATES.map((state, index) => [state, index]));

/** The worse of two states: SYNC_STATES is ordered worst first. */
export function worse(a: SyncState, b: SyncState): SyncState {
  return RANK.get(a)! <= RANK.get(b)! ? a : b;
}

export function isProblem(state: SyncState): boolean {
  return state !== "in-sync";
}

export function buildFleetStatus(input: StatusInput): FleetStatus {
  const agents = input.agents.map(agentStatus).sort(byProblemThenId);
  const states = emptyCounts();
  for (const agent of agents) states[agent.state]++;
  return {
    generatedAt: input.now,
    controller: input.controller,
    summary: {
      agents: agents.length,
      connected: agents.filter((agent) => agent.connected).length,
      states,
      inSync: agents.every((agent) => agent.state === "in-sync"),
    },
    frozen: input.frozen,
    rollout: input.rollout,
    backends: input.backends.map((backend) => backendStatus(backend, agents)).sort((a, b) => compare(a.backend, b.backend)),
    agents,
    changes: [...input.changes],
  };
}

export function agentStatus(view: AgentView): AgentStatus {
  const backends = view.desired.map((backend) => backendOfAgent(view, backend));
  const state = view.departed !== null ? "disconnected" : backends.reduce<SyncState>((worst, backend) => worse(worst, backend.state), "in-sync");
  return {
    agent: view.agent,
    labels: { ...view.labels },
    hafleetVersion: view.hafleetVersion,
    state,
    connected: view.departed === null,
    peer: view.peer,
    connectedAt: view.connectedAt,
    disconnectedAt: view.departed?.since ?? null,
    disconnectReason: view.departed?.reason ?? null,
    rolloutSide: view.rolloutSide,
    backends,
  };
}

function backendOfAgent(view: AgentView, backend: DesiredBackendState): AgentBackendStatus {
  const observed = (view.observed?.backends ?? []).filter((entry) => entry.backend === backend.name);
  const drift = observed.flatMap((entry) => entry.drift);
  const status: AgentBackendStatus = {
    backend: backend.name,
    state: "in-sync",
    desiredVersion: backend.version,
    appliedVersion: view.applied.get(backend.name) ?? "",
    pendingSince: null,
    error: null,
    drift,
    serving: observed.length === 0 ? null : observed.reduce((sum, entry) => sum + entry.serving, 0),
  };
  if (view.departed !== null) return { ...status, state: "disconnected" };
  const sync = view.sync?.get(backend.name) ?? { state: "not-sent" as const, version: backend.version };
  switch (sync.state) {
    case "pending":
      return { ...status, state: "pending", pendingSince: sync.since };
    case "rejected":
      return { ...status, state: "rejected", error: sync.error };
    case "not-sent":
      return { ...status, state: "not-sent" };
    case "synced":
      return observedState(status, backend, observed);
  }
}

/**
 * Acked; what HAProxy has run since decides. In sync only when the agent reported it and,
 * for a backend that should have servers, HAProxy serves at least one of them: an ack says
 * what the agent applied, not what the process serving traffic runs now.
 */
function observedState(status: AgentBackendStatus, backend: DesiredBackendState, observed: ObservedReport["backends"]): AgentBackendStatus {
  const repairing = observed.find((entry) => entry.repairing);
  if (repairing?.repairing) return { ...status, state: "repairing", error: repairing.repairing };
  if (observed.length === 0) return { ...status, state: "unknown" };
  const { drift } = status;
  if (drift.some((entry) => entry.state !== "held")) return { ...status, state: "drifted" };
  if (drift.length > 0) return { ...status, state: "held" };
  if (backend.servers.length > 0 && status.serving === 0) return { ...status, state: "drifted" };
  return status;
}

function backendStatus(backend: DesiredBackendState, agents: readonly AgentStatus[]): BackendStatus {
  const states = emptyCounts();
  let assigned = 0;
  for (const agent of agents) {
    const entry = agent.backends.find((candidate) => candidate.backend === backend.name);
    if (entry === undefined) continue;
    assigned++;
    states[entry.state]++;
  }
  return { backend: backend.name, version: backend.version, servers: backend.servers.length, inSync: states["in-sync"], agents: assigned, states, held: backend.held };
}

export interface StatusFilter {
  agent?: string;
  backend?: string;
  /** Only agents (and their backends) that are not in sync. */
  problems?: boolean;
}

/** The same status narrowed to an agent, a backend, or the problems; the summary stays whole. */
export function filterStatus(status: FleetStatus, filter: StatusFilter): FleetStatus {
  const agents = status.agents
    .filter((agent) => filter.agent === undefined || agent.agent === filter.agent)
    .map((agent) => ({
      ...agent,
      backends: agent.backends.filter((backend) => (filter.backend === undefined || backend.backend === filter.backend) && (!filter.problems || isProblem(backend.state) || agent.state === "disconnected")),
    }))
    .filter((agent) => (filter.backend === undefined || agent.backends.length > 0) && (!filter.problems || isProblem(agent.state)));
  const backends = status.backends.filter((backend) => filter.backend === undefined || backend.backend === filter.backend);
  return { ...status, agents, backends };
}

function emptyCounts(): Record<SyncState, number> {
  return Object.fromEntries(SYNC_STATES.map((state) => [state, 0])) as Record<SyncState, number>;
}

function byProblemThenId(a: AgentStatus, b: AgentStatus): number {
  return RANK.get(a.state)! - RANK.get(b.state)! || compare(a.agent, b.agent);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
