import { endpointKey } from "../../agent/model/values.js";
import type { DesiredStore } from "../core/desired-store.js";
import type { AgentStream } from "../server/agent-stream.js";
import type { DepartedAgent, FleetServer } from "../server/fleet-server.js";
import { ChangeLog } from "./change-log.js";
import { mergeFleetStatus } from "./fleet-merge.js";
import { agentStatus, buildFleetStatus, byProblemThenId, endpointExceptions, type AgentView, type EndpointQuery } from "./fleet-status.js";
import type { ExceptionsOf, ReplicaReport } from "./replica-report.js";
import type { AgentStatus, DiscoveryHealth, FleetStatus, RolloutStatus } from "./status-schema.js";

export interface StatusSources {
  server: FleetServer;
  store: DesiredStore;
  /** The side of the rollout an agent is on, when one runs. */
  rolloutSide(agentId: string): "baseline" | "target" | null;
  rollout(): RolloutStatus | null;
  controller: { version: string; startedAt: number };
  /** Absent: no leadership configured. */
  rolloutLeader?: () => string | null;
  /** Every mapped backend's name: one discovery never answered for still gets a row. */
  mapped?: readonly string[];
  /** Discovery's health per backend. */
  discovery?: () => ReadonlyMap<string, DiscoveryHealth>;
  /** Why an operator keeps the agent out of rollouts, or null. */
  cordoned?: (agentId: string) => string | null;
  clock: () => number;
  /**
   * Absent: status covers this replica's agents only (file discovery). Present (replicas share
   * status through Consul): this replica's id, the others' live reports, and what this
   * replica's own report left out.
   */
  fleet?: { replica: string; peers(): readonly ReplicaReport[]; truncated(): { published: number; connected: number } | null };
}

/**
 * Gathers the views the pure status builder reads, and keeps the log of recent changes from
 * the server's events.
 */
export class StatusService {
  readonly changes = new ChangeLog();

  constructor(private readonly sources: StatusSources) {
    sources.server.events.on("disconnected", (agent) => this.changes.departed(agent, sources.clock()));
  }

  /** A desired-state change of these backends: recorded with the agents it is for. */
  changed(backends: readonly string[]): void {
    const states = this.sources.store.all().filter((state) => backends.includes(state.name));
    const versions = new Map(states.map((state) => [state.name as string, state.version]));
    const agents = new Map<string, string[]>();
    for (const stream of this.sources.server.connected()) {
      if (stream.session === null) continue;
      // An agent that already runs the new version (a restarted controller's first answer) acks
      // nothing: waiting for it would leave the change "converging" for ever.
      const applied = stream.session.appliedVersions();
      agents.set(stream.session.agentId, stream.desired().filter((backend) => applied.get(backend.name) !== versions.get(backend.name)).map((backend) => backend.name));
    }
    this.changes.recorded(this.sources.clock(), states.map((state) => ({ backend: state.name, version: state.version })), agents);
  }

  /** One agent, connected or remembered; undefined when the controller does not know it. */
  agent(agentId: string): AgentStatus | undefined {
    const stream = this.sources.server.stream(agentId);
    if (stream !== undefined) return agentStatus(this.connectedView(stream));
    // Not disconnected(): the rollout asks this of every agent of a wave each second.
    const departed = this.sources.server.departedAgent(agentId);
    return departed === undefined ? undefined : agentStatus(this.departedView(departed));
  }

  /** The whole fleet's status: this replica's, with the other replicas' agents merged in when they share theirs. */
  status(query: { endpoints?: readonly EndpointQuery[] } = {}): FleetStatus {
    const local = this.localStatus(query);
    const { fleet } = this.sources;
    if (fleet === undefined) return local;
    const endpoints = query.endpoints === undefined ? {} : { endpoints: { queries: query.endpoints, desired: (backend: string, version: string) => this.desiredEndpoints(backend, version) } };
    return mergeFleetStatus({ local, self: { replica: fleet.replica, truncated: fleet.truncated() }, peers: fleet.peers(), now: this.sources.clock(), ...endpoints });
  }

  /**
   * What this replica reports to the others: its connected agents' rows, worst first, and per
   * agent and backend the endpoints HAProxy does not run as desired (for their `wait --contains`).
   */
  report(): { agents: AgentStatus[]; exceptions: ExceptionsOf } {
    const views = this.sources.server.connected().map((stream) => this.connectedView(stream));
    const exceptions = new Map(views.map((view) => [view.agent, new Map(view.desired.map((backend) => [backend.name as string, endpointExceptions(view, backend)]))]));
    return { agents: views.map((view) => agentStatus(view)).sort(byProblemThenId), exceptions: (agent, backend) => exceptions.get(agent)?.get(backend) ?? null };
  }

  /** This replica's agents only (its metrics; the others' agents merged in by status()). */
  localStatus(query: { endpoints?: readonly EndpointQuery[] } = {}): FleetStatus {
    const { server, store, clock } = this.sources;
    const views = [...server.connected().map((stream) => this.connectedView(stream)), ...server.disconnected().map((departed) => this.departedView(departed))];
    return buildFleetStatus({
      now: clock(),
      controller: this.sources.rolloutLeader === undefined ? this.sources.controller : { ...this.sources.controller, rolloutLeader: this.sources.rolloutLeader() },
      agents: views,
      backends: store.all(),
      frozen: server.frozen,
      rollout: this.sources.rollout(),
      changes: this.changes.list(),
      ...(this.sources.mapped === undefined ? {} : { mapped: this.sources.mapped }),
      ...(this.sources.discovery === undefined ? {} : { discovery: this.sources.discovery() }),
      ...(query.endpoints === undefined ? {} : { endpoints: query.endpoints }),
    });
  }

  /** The endpoints of a backend's version, when it is the one discovery gives now; null for another (a rollout's baseline, an older one). */
  private desiredEndpoints(backend: string, version: string): ReadonlySet<string> | null {
    const state = this.sources.store.all().find((candidate) => candidate.name === backend && candidate.version === version);
    return state === undefined ? null : new Set(state.servers.map((server) => endpointKey(server.address, server.port)));
  }

  private connectedView(stream: AgentStream): AgentView {
    const session = stream.session!;
    const desired = stream.desired();
    return {
      agent: session.agentId,
      labels: session.hello.labels,
      hafleetVersion: session.hello.hafleetVersion,
      peer: stream.peer,
      connectedAt: stream.connectedAt,
      departed: null,
      desired,
      sync: session.sync(desired),
      applied: session.appliedVersions(),
      observed: stream.observed,
      rolloutSide: this.sources.rolloutSide(session.agentId),
      problem: this.sources.server.idProblem(session.agentId),
      lastSeenAt: stream.heardAt,
      cordoned: this.sources.cordoned?.(session.agentId) ?? null,
      replica: this.sources.fleet?.replica ?? null,
    };
  }

  private departedView(departed: DepartedAgent): AgentView {
    const { hello } = departed;
    return {
      agent: hello.agentId,
      labels: hello.labels,
      hafleetVersion: hello.hafleetVersion,
      peer: departed.peer,
      connectedAt: departed.connectedAt,
      departed: { since: departed.since, reason: departed.reason },
      desired: this.sources.server.resolve(hello.agentId, hello.labels),
      sync: null,
      applied: departed.applied,
      observed: departed.observed,
      rolloutSide: this.sources.rolloutSide(hello.agentId),
      problem: this.sources.server.idProblem(hello.agentId),
      lastSeenAt: departed.since,
      cordoned: this.sources.cordoned?.(hello.agentId) ?? null,
      replica: this.sources.fleet?.replica ?? null,
    };
  }
}
