import { endpointKey, type Name } from "../../agent/model/values.js";
import type { ObservedReport } from "../../proto/messages.js";
import type { BackendSync } from "../core/agent-session.js";
import type { DesiredBackendState } from "../core/desired-store.js";
import {
  SYNC_STATES,
  type AgentBackendStatus,
  type AgentStatus,
  type BackendStatus,
  type ChangeStatus,
  type DiscoveryHealth,
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
  /** A problem of the agent itself (a duplicate id), or null. */
  problem?: string | null;
  /** Why an operator keeps it out of rollouts, or null. */
  cordoned?: string | null;
  /** When it was last heard from. */
  lastSeenAt?: number | null;
  /** The replica holding its stream, when replicas share status. */
  replica?: string | null;
}

/** Whether an agent serves one endpoint of a backend (`hafleet wait --contains/--lacks`). */
export interface EndpointQuery {
  backend: string;
  /** ADDR:PORT as the agent reports endpoints (endpointKey). */
  endpoint: string;
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
  /** Every mapped backend, answered by discovery or not: one never answered still gets a row. */
  mapped?: readonly string[];
  /** Discovery's health per backend; absent: ok (or, for a backend with no state, never answered). */
  discovery?: ReadonlyMap<string, DiscoveryHealth>;
  /** Adds to each agent's row of those backends whether HAProxy serves those endpoints. */
  endpoints?: readonly EndpointQuery[];
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
  const agents = input.agents.map((view) => agentStatus(view, input.endpoints)).sort(byProblemThenId);
  const known = new Map(input.backends.map((backend) => [backend.name as string, backend]));
  const names = [...new Set([...known.keys(), ...(input.mapped ?? [])])];
  const backends = names
    .map((name) => backendStatus(name, known.get(name), agents, fleetVersion(name, known.get(name), input.rollout), discoveryOf(name, known.get(name), input.discovery)))
    .sort((a, b) => compare(a.backend, b.backend));
  return {
    generatedAt: input.now,
    controller: input.controller,
    summary: {
      ...summaryCounts(agents),
      discoveryProblems: backends.filter((backend) => backend.discovery.state !== "ok").length,
      // Other replicas' agents are merged in afterwards (fleet-merge.ts), which says so here.
      scope: "this replica's agents",
    },
    frozen: input.frozen,
    rollout: input.rollout,
    backends,
    agents,
    changes: [...input.changes],
  };
}

/** The summary's counts of agents: how many, connected, per state, whether all are in sync, how many have a problem of their own. */
export function summaryCounts(agents: readonly AgentStatus[]): Pick<FleetStatus["summary"], "agents" | "connected" | "states" | "inSync" | "agentProblems"> {
  const states = emptyCounts();
  for (const agent of agents) states[agent.state]++;
  return {
    agents: agents.length,
    connected: agents.filter((agent) => agent.connected).length,
    states,
    inSync: agents.every((agent) => agent.state === "in-sync"),
    agentProblems: agents.filter((agent) => agent.problem !== null).length,
  };
}

/** Every agent in sync, discovery ok for every backend, no agent with a problem of its own. */
export function isHealthy(status: FleetStatus): boolean {
  return status.agents.every((agent) => agent.state === "in-sync" && agent.problem === null) && status.backends.every((backend) => backend.discovery.state === "ok");
}

/**
 * The version agents should run now, fleet-wide: discovery's (agents in a rollout's later
 * waves are behind it until their wave), except after a rollout of the backend was rolled back
 * or aborted: then every agent is back on the rollout's baseline.
 */
export function fleetVersion(name: string, state: DesiredBackendState | undefined, rollout: RolloutStatus | null): { version: string; servers: number } {
  if (rollout !== null && (rollout.phase === "rolled-back" || rollout.phase === "aborted")) {
    const baseline = rollout.baseline.find((entry) => entry.backend === name);
    if (baseline !== undefined) return { version: baseline.version, servers: baseline.servers ?? state?.servers.length ?? 0 };
  }
  return { version: state?.version ?? "", servers: state?.servers.length ?? 0 };
}

function discoveryOf(name: string, state: DesiredBackendState | undefined, health: ReadonlyMap<string, DiscoveryHealth> | undefined): DiscoveryHealth {
  const known = health?.get(name);
  if (known !== undefined && known.state !== "ok") return known;
  if (state?.held) return { state: "held", since: known?.since ?? null, error: state.held };
  if (state === undefined) return known ?? { state: "never-answered", since: null, error: null };
  return known ?? { state: "ok", since: null, error: null };
}

export function agentStatus(view: AgentView, endpoints: readonly EndpointQuery[] = []): AgentStatus {
  const backends = view.desired.map((backend) => {
    const entry = backendOfAgent(view, backend);
    const asked = endpoints.filter((query) => query.backend === backend.name);
    return asked.length === 0 ? entry : { ...entry, endpoint: asked.map((query) => ({ endpoint: query.endpoint, served: endpointServed(view, backend, query.endpoint) })) };
  });
  const state = view.departed !== null ? "disconnected" : backends.reduce<SyncState>((worst, backend) => worse(worst, backend.state), "in-sync");
  return {
    agent: view.agent,
    labels: { ...view.labels },
    hafleetVersion: view.hafleetVersion,
    state,
    connected: view.departed === null,
    peer: view.peer,
    replica: view.replica ?? null,
    problem: view.problem ?? null,
    cordoned: view.cordoned ?? null,
    connectedAt: view.connectedAt,
    lastSeenAt: view.lastSeenAt ?? null,
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

/**
 * Whether HAProxy serves `endpoint` on every socket ("all"), some, or none, from the agent's
 * own report, or null when that cannot be known: not connected, not acked, repairing, or a
 * report of another version than the one acked (its differences would be from another set).
 */
export function endpointServed(view: AgentView, backend: DesiredBackendState, endpoint: string): "all" | "some" | "none" | null {
  const entries = reportedEntries(view, backend);
  return entries === null ? null : servedOn(entries, backend, endpoint);
}

/**
 * What another replica needs to answer `endpointServed` for any endpoint of this agent: null
 * when it cannot be known; else the endpoints HAProxy does not run as desired (every other one
 * is served everywhere when desired, nowhere when not), each with where it is served.
 */
export function endpointExceptions(view: AgentView, backend: DesiredBackendState): Array<{ endpoint: string; served: "all" | "some" | "none" }> | null {
  const entries = reportedEntries(view, backend);
  if (entries === null) return null;
  const endpoints = [...new Set(entries.flatMap((entry) => entry.drift.map((drift) => drift.endpoint)))].sort();
  return endpoints.map((endpoint) => ({ endpoint, served: servedOn(entries, backend, endpoint) }));
}

/** The agent's report of the backend, when it speaks of the version it should run (acked, reported, not repairing); else null. */
function reportedEntries(view: AgentView, backend: DesiredBackendState): ObservedReport["backends"] | null {
  if (view.departed !== null || view.observed === null) return null;
  const sync = view.sync?.get(backend.name);
  if (sync?.state !== "synced" || sync.version !== backend.version) return null;
  if (view.observed.appliedVersions[backend.name] !== backend.version) return null;
  const entries = view.observed.backends.filter((entry) => entry.backend === backend.name);
  if (entries.length === 0 || entries.some((entry) => entry.repairing)) return null;
  return entries;
}

function servedOn(entries: ObservedReport["backends"], backend: DesiredBackendState, endpoint: string): "all" | "some" | "none" {
  const wanted = backend.servers.some((server) => endpointKey(server.address, server.port) === endpoint);
  let serving = 0;
  for (const entry of entries) {
    const states = new Set(entry.drift.filter((drift) => drift.endpoint === endpoint).map((drift) => drift.state));
    if (states.has("unexpected") || (wanted && !states.has("missing") && !states.has("held"))) serving++;
  }
  return serving === entries.length ? "all" : serving === 0 ? "none" : "some";
}

function backendStatus(name: string, backend: DesiredBackendState | undefined, agents: readonly AgentStatus[], fleet: { version: string; servers: number }, discovery: DiscoveryHealth): BackendStatus {
  const { version } = fleet;
  return { backend: name, version, servers: fleet.servers, ...backendCounts(name, version, agents), held: backend?.held ?? null, discovery };
}

/** Of the agents assigned a backend: how many, in sync on `version`, told to run another for now, per state. */
export function backendCounts(name: string, version: string, agents: readonly AgentStatus[]): Pick<BackendStatus, "agents" | "inSync" | "behind" | "states"> {
  const states = emptyCounts();
  let assigned = 0;
  let inSync = 0;
  let behind = 0;
  for (const agent of agents) {
    const entry = agent.backends.find((candidate) => candidate.backend === name);
    if (entry === undefined) continue;
    assigned++;
    states[entry.state]++;
    if (entry.desiredVersion !== version) behind++;
    else if (entry.state === "in-sync") inSync++;
  }
  return { agents: assigned, inSync, behind, states };
}

export interface StatusFilter {
  agent?: string;
  backend?: string;
  /** Only agents (and their backends) that are not in sync. */
  problems?: boolean;
  /** Only agents with all these labels. */
  selector?: Readonly<Record<string, string>>;
}

/**
 * The same status narrowed to an agent, a backend, a selector, or the problems; the summary
 * stays whole. With an agent or a backend named, `matched` says whether anything has that name.
 */
export function filterStatus(status: FleetStatus, filter: StatusFilter): FleetStatus {
  const selector = Object.entries(filter.selector ?? {});
  const agents = status.agents
    .filter((agent) => filter.agent === undefined || agent.agent === filter.agent)
    .filter((agent) => selector.every(([key, value]) => agent.labels[key] === value))
    .map((agent) => ({
      ...agent,
      backends: agent.backends.filter((backend) => (filter.backend === undefined || backend.backend === filter.backend) && (!filter.problems || isProblem(backend.state) || agent.state === "disconnected")),
    }))
    .filter((agent) => (filter.backend === undefined || agent.backends.length > 0) && (!filter.problems || isProblem(agent.state) || agent.problem !== null));
  const backends = status.backends.filter((backend) => filter.backend === undefined || backend.backend === filter.backend);
  if (filter.agent === undefined && filter.backend === undefined) return { ...status, agents, backends };
  const matched = {
    agents: status.agents.filter((agent) => filter.agent === undefined || agent.agent === filter.agent).length,
    backends: filter.backend === undefined ? status.backends.length : backends.length,
  };
  return { ...status, agents, backends, matched };
}

function emptyCounts(): Record<SyncState, number> {
  return Object.fromEntries(SYNC_STATES.map((state) => [state, 0])) as Record<SyncState, number>;
}

export function byProblemThenId(a: AgentStatus, b: AgentStatus): number {
  return Number(b.problem !== null) - Number(a.problem !== null) || RANK.get(a.state)! - RANK.get(b.state)! || compare(a.agent, b.agent);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
