import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { listenFailure } from "../../agent/errors.js";
import type { Name } from "../../agent/model/values.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import type { DesiredPush, Hello, ObservedReport } from "../../proto/messages.js";
import type { DesiredBackendState } from "../core/desired-store.js";
import { ServerTls, type ReloadOutcome } from "../tls/server-credentials.js";
import type { Transport } from "../tls/transport-policy.js";
import { AgentStream, type StreamHost } from "./agent-stream.js";
import { acceptingEncoded, PushEncoder } from "./push-encoding.js";

export interface FleetServerOptions {
  heartbeatMs: number;
  deadAfterMs: number;
  /** How long a disconnected agent is remembered (and shown as disconnected). */
  forgetAfterMs: number;
  logger: Logger;
  clock?: () => number;
  /** Connected agents at most; more are refused with RESOURCE_EXHAUSTED. */
  maxAgents: number;
  /** Connections are closed after this long (with jitter), so agents spread over replicas. */
  maxConnectionAgeMs: number;
  /** limits.*: the largest message taken from an agent, its backends, its pushes per second. */
  limits: { maxMessageBytes: number; backendsPerAgent: number; pushesPerSecond: number };
  /** Whether the desired state is complete enough to push (default: always). */
  ready?: () => boolean;
  /** Backends mapped to agents with these labels but not published yet: agents keep them (default: none). */
  pending?: (labels: Readonly<Record<string, string>>) => ReadonlySet<string>;
  /**
   * How agents connect (see transportFor): one value decides both the credentials and whether
   * each hello is checked against the client certificate, so the two cannot disagree.
   * Default: plaintext, unchecked, as on loopback.
   */
  transport?: Transport;
}

/**
 * Two hosts started with one id contend for its stream again and again (with mTLS the newest
 * replaces the other; without it the second is refused). A second stream while the first was
 * alive (heard within two heartbeats) counts; this many in the window make the id a problem,
 * shown until the window passes without one.
 */
const DUPLICATE_WINDOW_MS = 60_000;
const DUPLICATE_REPLACEMENTS = 2;

/** How long an aged connection's stream may go on once it is told to go (GOAWAY). */
const MAX_CONNECTION_AGE_GRACE_MS = 30_000;

export interface FleetEvents {
  acked: [agent: string, backend: string, version: string, latencyMs: number | null];
  nacked: [agent: string, backend: string, version: string, error: string];
  pushed: [agent: string, push: DesiredPush];
  drift: [agent: string, backend: string];
  connected: [agent: string];
  disconnected: [agent: string, reason: string];
}

/** What the controller still knows of an agent whose stream ended. */
export interface DepartedAgent {
  hello: Hello;
  peer: string;
  connectedAt: number;
  since: number;
  reason: string;
  /** The versions it had acked when it left. */
  applied: ReadonlyMap<Name, string>;
  observed: ObservedReport | null;
}

/** Decides per agent what it should run: its labels' backends, or its side of a rollout. */
export type DesiredResolver = (agentId: string, labels: Readonly<Record<string, string>>) => readonly DesiredBackendState[];

/**
 * The gRPC side of the controller: one AgentStream per connected agent, pushed to whenever
 * the desired state changes. It never computes desired state: a resolver says, per agent,
 * which backends that agent should run.
 */
export class FleetServer {
  readonly events = new EventEmitter<FleetEvents>();
  private readonly server: grpc.Server;
  private readonly streams = new Map<string, AgentStream>();
  private readonly departed = new Map<string, DepartedAgent>();
  private readonly host: StreamHost;
  private readonly clock: () => number;
  private readonly transport: Transport;
  private tls: ServerTls | null = null;
  private frozenState: { since: number; reason: string } | null = null;
  private readonly encoder: PushEncoder;
  /** Per agent id: when live streams of it were replaced, and the peers involved. */
  private readonly replacements = new Map<string, { at: number[]; peers: Set<string> }>();

  constructor(
    resolve: DesiredResolver,
    private readonly options: FleetServerOptions,
  ) {
    // Keepalive pings let dead TCP peers be noticed even when no heartbeat can be written.
    this.server = new grpc.Server({
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 5_000,
      // Streams live for ever otherwise: an aged connection is closed (grpc-js adds +-10%
      // jitter), its agent reconnects, to any replica, and is sent nothing it runs already.
      "grpc.max_connection_age_ms": options.maxConnectionAgeMs,
      "grpc.max_connection_age_grace_ms": MAX_CONNECTION_AGE_GRACE_MS,
      "grpc.max_receive_message_length": options.limits.maxMessageBytes,
    });
    this.clock = options.clock ?? Date.now;
    this.transport = options.transport ?? { kind: "plaintext", warning: null };
    const events = this.events;
    const { service } = loadFleetService();
    const encoder = new PushEncoder((message) => service["Sync"]!.responseSerialize(message));
    this.encoder = encoder;
    this.host = {
      desiredFor: resolve,
      holding: () => this.frozenState !== null || !(options.ready?.() ?? true),
      ...(options.pending === undefined ? {} : { keeping: (_agent: string, labels: Readonly<Record<string, string>>) => options.pending!(labels) }),
      encodePush: (push) => encoder.encode(push),
      attach: (stream) => this.attach(stream),
      detach: (stream, reason) => this.detach(stream, reason),
      events: {
        acked: (...args) => events.emit("acked", ...args),
        nacked: (...args) => events.emit("nacked", ...args),
        pushed: (...args) => events.emit("pushed", ...args),
        drift: (...args) => events.emit("drift", ...args),
      },
      heartbeatMs: options.heartbeatMs,
      deadAfterMs: options.deadAfterMs,
      pushRate: { burst: Math.max(1, Math.round(options.limits.pushesPerSecond)), refillPerSecond: options.limits.pushesPerSecond },
      identity: this.transport.kind === "mtls" ? "mtls" : "insecure",
      clock: this.clock,
      logger: options.logger,
    };
    this.server.addService(acceptingEncoded(service), {
      Sync: (call: grpc.ServerDuplexStream<unknown, unknown>) => new AgentStream(call, this.host),
    });
  }

  /**
   * Binds `host:port` (port 0 picks one) with the transport's credentials; returns the port.
   * With mtls, rejects (InvalidInputError naming the file) when the TLS files fail the checks.
   */
  async listen(address: string): Promise<number> {
    const { logger } = this.options;
    let credentials = grpc.ServerCredentials.createInsecure();
    if (this.transport.kind === "mtls") {
      this.tls ??= new ServerTls(this.transport.files, { logger });
      credentials = this.tls.credentials;
    } else if (this.transport.warning !== null) {
      logger.warn({ listen: address }, this.transport.warning);
    }
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, credentials, (error, port) => (error ? reject(listenFailure(address, bindError(error), "--listen (listen)")) : resolve(port)));
    });
  }

  /** Re-reads the TLS files now (SIGHUP); files that fail the checks leave the current ones in use. */
  reloadTls(): ReloadOutcome {
    return this.tls?.reload() ?? "unchanged";
  }

  /** The desired state changed: every idle agent gets what it now lacks. */
  desiredChanged(): void {
    for (const stream of this.streams.values()) stream.pushIfIdle();
  }

  /** The agent's stream while it is connected. */
  stream(agentId: string): AgentStream | undefined {
    return this.streams.get(agentId);
  }

  /** What an agent with this id and these labels should run now. */
  resolve(agentId: string, labels: Readonly<Record<string, string>>): readonly DesiredBackendState[] {
    return this.host.desiredFor(agentId, labels);
  }

  connected(): AgentStream[] {
    return [...this.streams.values()];
  }

  /** For the metrics: what the streams hold back, and the encoded pushes kept. */
  streamGauges(): { waitingForDrain: number; pushCacheBytes: number } {
    let waitingForDrain = 0;
    for (const stream of this.streams.values()) if (stream.waitingForDrain) waitingForDrain++;
    return { waitingForDrain, pushCacheBytes: this.encoder.cachedBytes };
  }

  /** One agent whose stream ended within forgetAfterMs and that is not back since, if it is one. */
  departedAgent(agentId: string): DepartedAgent | undefined {
    const departed = this.departed.get(agentId);
    return departed !== undefined && departed.since >= this.clock() - this.options.forgetAfterMs ? departed : undefined;
  }

  /**
   * Drops a departed agent at once (a decommissioned host): it is no longer shown nor waited
   * for. A connected one is refused with the reason: it would be back at once.
   */
  forget(agentId: string): { forgotten: true } | { forgotten: false; reason: string } {
    if (this.streams.has(agentId)) return { forgotten: false, reason: `agent ${agentId} is connected: stop it first, or it is back at once` };
    if (!this.departed.delete(agentId)) return { forgotten: false, reason: `no disconnected agent ${agentId} is known to this controller` };
    this.replacements.delete(agentId);
    this.options.logger.warn({ agent: agentId }, "agent forgotten by the operator");
    return { forgotten: true };
  }

  /**
   * Whether a connected agent already fails on one of these backends, whatever the version:
   * a nack that stands, or HAProxy drifting from what it acked (held servers are an
   * operator's, not a failure). Said as "rejecting be_app (error)" or "drifting on be_app".
   */
  failingOn(agentId: string, backends: Iterable<string>): string | null {
    const stream = this.streams.get(agentId);
    const session = stream?.session;
    if (stream === undefined || session === null || session === undefined) return null;
    for (const backend of backends) {
      const nack = session.rejection(backend);
      if (nack !== undefined) return `rejecting ${backend} (${nack.error})`;
      if (stream.observed?.backends.some((entry) => entry.backend === backend && entry.drift.some((item) => item.state !== "held"))) return `drifting on ${backend}`;
    }
    return null;
  }

  /**
   * A problem of the id itself: two hosts using it, seen as live streams replacing each
   * other within the window. null: none.
   */
  idProblem(agentId: string): string | null {
    const seen = this.replacements.get(agentId);
    if (seen === undefined) return null;
    const recent = seen.at.filter((at) => at >= this.clock() - DUPLICATE_WINDOW_MS);
    if (recent.length === 0) this.replacements.delete(agentId);
    if (recent.length < DUPLICATE_REPLACEMENTS) return null;
    return `duplicate id: ${seen.peers.size} connections (${[...seen.peers].slice(0, 4).join(", ")}) contended for one stream ${recent.length} times in ${DUPLICATE_WINDOW_MS / 1000} s; give each host its own --id`;
  }

  /** Agents whose stream ended within forgetAfterMs, and not back since. */
  disconnected(): DepartedAgent[] {
    const cutoff = this.clock() - this.options.forgetAfterMs;
    for (const [agent, departed] of this.departed) if (departed.since < cutoff) this.departed.delete(agent);
    return [...this.departed.values()];
  }

  get frozen(): { since: number; reason: string } | null {
    return this.frozenState;
  }

  /** The kill switch: no push leaves until unfreeze(); what is in flight still completes. */
  freeze(reason: string, since = this.clock()): void {
    if (this.frozenState !== null) return;
    this.frozenState = { since, reason };
    this.options.logger.warn({ reason }, "fleet frozen: no pushes until unfrozen");
  }

  unfreeze(): void {
    if (this.frozenState === null) return;
    this.frozenState = null;
    this.options.logger.warn("fleet unfrozen: pushing what agents lack");
    this.desiredChanged();
  }

  /** Lets streams finish for up to `graceMs`, then cuts what is left. */
  async close(graceMs = 2_000): Promise<void> {
    this.tls?.close();
    for (const stream of this.streams.values()) stream.end(grpc.status.UNAVAILABLE, "controller shutting down");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private attach(stream: AgentStream): string | null {
    const agent = stream.session!.agentId;
    const replaced = this.streams.get(agent);
    if (replaced === undefined && this.streams.size >= this.options.maxAgents) {
      return `the controller is at its limit of ${this.options.maxAgents} agents (agents.max): try another controller`;
    }
    const { backendsPerAgent } = this.options.limits;
    const backends = this.host.desiredFor(agent, stream.session!.hello.labels).length;
    if (backends > backendsPerAgent) {
      return `this agent's labels select ${backends} backends, over the limit of ${backendsPerAgent} (limits.backendsPerAgent)`;
    }
    // Without mTLS nothing proves a stream is the agent it names: a second stream for an id whose
    // stream is alive is refused, so a local user on a loopback controller cannot knock the real
    // agent off. A restarted agent's old stream closes with its process, or falls quiet.
    if (replaced !== undefined && this.transport.kind !== "mtls" && this.isLive(replaced)) {
      this.noteReplacement(agent, replaced, stream);
      return `agent ${agent} is connected from ${replaced.peer} and alive; without mTLS nothing proves this stream is the same agent, so it is refused until that one ends or goes quiet (${2 * this.options.heartbeatMs} ms)`;
    }
    // One stream per agent id: the newest wins (the older is most likely a dead connection).
    if (replaced !== undefined) this.noteReplacement(agent, replaced, stream);
    replaced?.end(grpc.status.ALREADY_EXISTS, "replaced by a newer stream of the same agent");
    this.streams.set(agent, stream);
    this.departed.delete(agent);
    this.events.emit("connected", agent);
    return null;
  }

  /** Heard within two heartbeats. */
  private isLive(stream: AgentStream): boolean {
    return this.clock() - stream.heardAt <= 2 * this.options.heartbeatMs;
  }

  /** A second stream while one of the same id is alive: a reconnect does not look like this, two hosts do. */
  private noteReplacement(agent: string, replaced: AgentStream, stream: AgentStream): void {
    const now = this.clock();
    if (!this.isLive(replaced)) return;
    const seen = this.replacements.get(agent) ?? { at: [], peers: new Set<string>() };
    seen.at = [...seen.at.filter((at) => at >= now - DUPLICATE_WINDOW_MS), now];
    seen.peers.add(replaced.peer).add(stream.peer);
    if (seen.peers.size > 8) seen.peers = new Set([...seen.peers].slice(-8));
    this.replacements.set(agent, seen);
    const problem = this.idProblem(agent);
    if (problem !== null) this.options.logger.warn({ agent, peers: [...seen.peers] }, problem);
  }

  private detach(stream: AgentStream, reason: string): void {
    const session = stream.session;
    const agent = session?.agentId;
    if (session === null || agent === undefined || this.streams.get(agent) !== stream) return;
    this.streams.delete(agent);
    this.departed.set(agent, {
      hello: session.hello,
      peer: stream.peer,
      connectedAt: stream.connectedAt,
      since: this.clock(),
      reason,
      applied: session.appliedVersions(),
      observed: stream.observed,
    });
    this.host.logger.info({ agent, reason }, "agent disconnected");
    this.events.emit("disconnected", agent, reason);
  }
}

/**
 * grpc-js reports a failed bind as "No address added out of total 1 resolved errors: [listen
 * EADDRINUSE: ...]": the system's code is in the text only.
 */
function bindError(error: Error): Error & { code?: string } {
  const code = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL)\b/.exec(error.message)?.[1];
  return code === undefined ? error : Object.assign(new Error(error.message), { code });
}
