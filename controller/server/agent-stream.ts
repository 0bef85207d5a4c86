import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { InvalidInputError } from "../../agent/errors.js";
import { heartbeatDue } from "../../proto/heartbeat.js";
import { fullBucket, takeToken, type TokenBucketOptions, type TokenBucketState } from "../core/token-bucket.js";
import { agentMessageSchema, helloShapeProblem, parseMessage, type AgentMessage, type DesiredPush, type ObservedReport } from "../../proto/messages.js";
import { AgentSession } from "../core/agent-session.js";
import type { DesiredBackendState } from "../core/desired-store.js";
import { refuseClaim } from "../tls/peer-identity.js";

export interface StreamHost {
  /** What this agent should run now: by its labels, and its side of a rollout. */
  desiredFor(agentId: string, labels: Readonly<Record<string, string>>): readonly DesiredBackendState[];
  /**
   * While the fleet is frozen, or discovery has not answered for every backend yet, nothing is
   * pushed (heartbeats and acks go on): a controller just started must not tell agents to drop
   * backends it has simply not read yet.
   */
  holding(): boolean;
  /** Backends mapped to this agent that discovery has not published yet: never removed from it (default: none). */
  keeping?(agentId: string, labels: Readonly<Record<string, string>>): ReadonlySet<string>;
  /** The push as wire bytes (see push-encoding.ts). */
  encodePush(push: DesiredPush): Buffer;
  /** Registers the stream; a refusal (the controller is at its limit of agents) says why. */
  attach(stream: AgentStream): string | null;
  detach(stream: AgentStream, reason: string): void;
  events: {
    /** latencyMs: push to ack; null when the ack came in an observed report, not a response. */
    acked(agent: string, backend: string, version: string, latencyMs: number | null): void;
    nacked(agent: string, backend: string, version: string, error: string): void;
    pushed(agent: string, push: DesiredPush): void;
    drift(agent: string, backend: string): void;
  };
  heartbeatMs: number;
  deadAfterMs: number;
  /** limits.pushesPerSecond, per agent: a change storm merges into fewer pushes, not more. */
  pushRate: TokenBucketOptions;
  /** mtls: the hello's agent id must be the one in the client certificate. */
  identity: "mtls" | "insecure";
  clock: () => number;
  logger: Logger;
}

type Call = grpc.ServerDuplexStream<unknown, unknown>;

/**
 * One agent's Sync stream: validates every message, keeps the agent's session, pushes when
 * the session says so, heartbeats, and ends the stream when the agent falls silent. A write
 * that grpc-js buffers (write() false) blocks further writes until 'drain'.
 */
export class AgentStream {
  session: AgentSession | null = null;
  observed: ObservedReport | null = null;
  readonly peer: string;
  readonly connectedAt: number;
  private readonly streamId = randomBytes(4).toString("hex");
  private lastHeard: number;
  private lastSent = 0;
  private blocked = false;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private bucket: TokenBucketState;
  /** Set while a push waits for the rate limit: one timer, whatever the number of changes. */
  private rateTimer: NodeJS.Timeout | null = null;
  private log: Logger;

  /** When the agent was last heard from on this stream (any message). */
  get heardAt(): number {
    return this.lastHeard;
  }

  constructor(
    private readonly call: Call,
    private readonly host: StreamHost,
  ) {
    this.lastHeard = host.clock();
    this.connectedAt = this.lastHeard;
    this.bucket = fullBucket(host.pushRate, this.lastHeard);
    this.peer = call.getPeer();
    this.log = host.logger.child({ stream: this.streamId, peer: this.peer });
    call.on("data", (raw: unknown) => this.onData(raw));
    call.on("end", () => this.close("the agent ended the stream"));
    call.on("cancelled", () => this.close("the agent cancelled the stream"));
    call.on("error", (error: Error) => this.close(`stream error: ${error.message}`));
    this.timer = setInterval(() => this.tick(), host.heartbeatMs);
  }

  /** Sends the next push if the agent has none in flight and lacks something. */
  pushIfIdle(): void {
    if (!this.session || this.closed || this.blocked || this.rateTimer !== null || this.session.busy || this.host.holding()) return;
    const now = this.host.clock();
    const token = takeToken(this.bucket, now, this.host.pushRate);
    if (token.delayMs > 0) {
      this.log.debug({ delayMs: token.delayMs }, "push deferred: limits.pushesPerSecond reached");
      this.rateTimer = setTimeout(() => {
        this.rateTimer = null;
        this.pushIfIdle();
      }, token.delayMs);
      return;
    }
    const push = this.session.nextPush(this.desired(), now, this.host.keeping?.(this.session.agentId, this.session.hello.labels));
    if (!push) return;
    this.bucket = token.state;
    this.log.info({ version: push.version, nonce: push.nonce, backends: push.backends.map((b) => b.name), removed: push.removedBackends }, "push");
    this.write(this.host.encodePush(push));
    this.host.events.pushed(this.session.agentId, push);
  }

  /** Whether writes wait for gRPC's flow control: the agent, or the path to it, is not reading. */
  get waitingForDrain(): boolean {
    return this.blocked;
  }

  /** What the agent should run now (empty before its hello). */
  desired(): readonly DesiredBackendState[] {
    return this.session ? this.host.desiredFor(this.session.agentId, this.session.hello.labels) : [];
  }

  /** Ends the stream with a status, e.g. when a newer stream of the same agent replaces it. */
  end(code: grpc.status, details: string): void {
    if (this.closed) return;
    this.finish(details);
    // grpc-js (1.14) turns an 'error' on a server stream into the call's status and ends it.
    this.call.emit("error", Object.assign(new Error(details), { code, details }));
  }

  private onData(raw: unknown): void {
    this.lastHeard = this.host.clock();
    let message: AgentMessage;
    const oversized = this.session === null ? helloShapeProblem(raw) : null;
    if (oversized !== null) {
      this.log.warn({ err: oversized }, "oversized hello, ending the stream");
      return this.end(grpc.status.RESOURCE_EXHAUSTED, oversized);
    }
    try {
      message = parseMessage(agentMessageSchema, raw, "agent message");
    } catch (error) {
      const detail = error instanceof InvalidInputError ? error.message : String(error);
      // After the hello the child logger names the agent already.
      this.log.warn({ err: detail }, "malformed message, ending the stream");
      this.end(grpc.status.INVALID_ARGUMENT, detail);
      return;
    }
    if (this.session === null) {
      if (message.body !== "hello") return this.end(grpc.status.FAILED_PRECONDITION, `the first message must be a hello, got ${message.body}`);
      if (!this.identityHolds(message.hello.agentId)) return;
      this.session = new AgentSession(message.hello, this.streamId);
      this.log = this.log.child({ agent: message.hello.agentId });
      this.log.info({ labels: message.hello.labels, applied: message.hello.appliedVersions, hafleetVersion: message.hello.hafleetVersion }, "agent connected");
      const refused = this.host.attach(this);
      if (refused !== null) {
        this.log.warn({ reason: refused }, "agent refused");
        return this.end(grpc.status.RESOURCE_EXHAUSTED, refused);
      }
      this.pushIfIdle();
      return;
    }
    switch (message.body) {
      case "hello":
        return this.end(grpc.status.FAILED_PRECONDITION, "hello sent twice on one stream");
      case "response":
        return this.onResponse(message.response);
      case "observed":
        return this.onObserved(message.observed);
      case "heartbeat":
        return;
    }
  }

  /** Without this an agent could take over another's stream and read its desired state. */
  private identityHolds(claimed: string): boolean {
    if (this.host.identity === "insecure") return true;
    const refusal = refuseClaim(claimed, this.call.getAuthContext().sslPeerCertificate);
    if (refusal === null) return true;
    this.log.warn({ agent: refusal.agent, claimed, certificate: refusal.certificate, reason: refusal.reason }, "agent refused: its hello does not match its certificate");
    this.end(grpc.status.PERMISSION_DENIED, refusal.reason);
    return false;
  }

  private onResponse(response: Extract<AgentMessage, { body: "response" }>["response"]): void {
    if (response.observed) this.onObserved(response.observed);
    const outcome = this.session!.onResponse(response, this.host.clock());
    if (!outcome) {
      this.log.warn({ nonce: response.nonce }, "response to a push not in flight, ignored");
      return;
    }
    const agent = this.session!.agentId;
    for (const { backend, version } of outcome.acked) {
      this.log.info({ backend, version, latencyMs: outcome.latencyMs }, "ack");
      this.host.events.acked(agent, backend, version, outcome.latencyMs);
    }
    for (const { backend, version, error } of outcome.nacked) {
      this.log.warn({ backend, version, error }, "nack: held until this backend's desired state changes");
      this.host.events.nacked(agent, backend, version, error);
    }
    this.pushIfIdle();
  }

  private onObserved(report: ObservedReport): void {
    const previous = this.observed;
    this.observed = report;
    if (previous?.digest === report.digest) return;
    for (const { backend, version } of this.session!.onObserved(report.appliedVersions)) {
      this.log.info({ backend, version }, "applied after its nack (the agent retried on its own): in sync");
      this.host.events.acked(this.session!.agentId, backend, version, null);
    }
    for (const backend of report.backends) {
      if (backend.drift.length === 0) continue;
      this.log.warn({ backend: backend.backend, socket: backend.socket, drift: backend.drift }, "drift");
      this.host.events.drift(this.session!.agentId, backend.backend);
    }
  }

  private tick(): void {
    const silentFor = this.host.clock() - this.lastHeard;
    if (silentFor > this.host.deadAfterMs) {
      this.log.warn({ silentMs: silentFor }, "agent silent, ending its stream");
      this.end(grpc.status.UNAVAILABLE, `no message from the agent for ${silentFor} ms`);
      return;
    }
    const now = this.host.clock();
    if (!this.blocked && heartbeatDue(this.lastSent, now, this.host.heartbeatMs)) this.write({ heartbeat: { sentAtMs: now } });
  }

  private write(message: object): void {
    if (this.closed) return;
    this.lastSent = this.host.clock();
    if (!this.call.write(message)) {
      this.blocked = true;
      this.call.once("drain", () => {
        this.blocked = false;
        this.pushIfIdle();
      });
    }
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.finish(reason);
    this.call.end();
  }

  private finish(reason: string): void {
    this.closed = true;
    clearInterval(this.timer);
    if (this.rateTimer !== null) clearTimeout(this.rateTimer);
    this.host.detach(this, reason);
  }
}
