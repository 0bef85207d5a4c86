import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import type { DesiredStore } from "../core/desired-store.js";
import { AgentStream, type StreamHost } from "./agent-stream.js";

export interface FleetServerOptions {
  heartbeatMs: number;
  deadAfterMs: number;
  logger: Logger;
  clock?: () => number;
}

export interface FleetEvents {
  acked: [agent: string, backend: string, version: string, latencyMs: number];
  nacked: [agent: string, backend: string, version: string, error: string];
  connected: [agent: string];
  disconnected: [agent: string, reason: string];
}

/**
 * The gRPC side of the controller: one AgentStream per connected agent, pushed to whenever
 * the desired store changes. The store never sees gRPC; this server asks it, per agent,
 * which backends that agent should run.
 */
export class FleetServer {
  readonly events = new EventEmitter<FleetEvents>();
  private readonly server: grpc.Server;
  private readonly streams = new Map<string, AgentStream>();
  private readonly host: StreamHost;

  constructor(store: DesiredStore, options: FleetServerOptions) {
    // Keepalive pings let dead TCP peers be noticed even when no heartbeat can be written.
    this.server = new grpc.Server({
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 5_000,
    });
    const events = this.events;
    this.host = {
      backendsFor: (labels) => store.backendsFor(labels),
      attach: (stream) => this.attach(stream),
      detach: (stream, reason) => this.detach(stream, reason),
      events: {
        acked: (...args) => events.emit("acked", ...args),
        nacked: (...args) => events.emit("nacked", ...args),
      },
      heartbeatMs: options.heartbeatMs,
      deadAfterMs: options.deadAfterMs,
      clock: options.clock ?? Date.now,
      logger: options.logger,
    };
    const { service } = loadFleetService();
    this.server.addService(service, {
      Sync: (call: grpc.ServerDuplexStream<unknown, unknown>) => new AgentStream(call, this.host),
    });
  }

  /** Binds `host:port` (port 0 picks one); returns the port. */
  listen(address: string, credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, credentials, (error, port) => (error ? reject(error) : resolve(port)));
    });
  }

  /** The desired state changed: every idle agent gets what it now lacks. */
  desiredChanged(): void {
    for (const stream of this.streams.values()) stream.pushIfIdle();
  }

  connected(): AgentStream[] {
    return [...this.streams.values()];
  }

  /** Lets streams finish for up to `graceMs`, then cuts what is left. */
  async close(graceMs = 2_000): Promise<void> {
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

  private attach(stream: AgentStream): void {
    const agent = stream.session!.agentId;
    // One stream per agent id: the newest wins (the older is most likely a dead connection).
    this.streams.get(agent)?.end(grpc.status.ALREADY_EXISTS, "replaced by a newer stream of the same agent");
    this.streams.set(agent, stream);
    this.events.emit("connected", agent);
  }

  private detach(stream: AgentStream, reason: string): void {
    const agent = stream.session?.agentId;
    if (agent === undefined || this.streams.get(agent) !== stream) return;
    this.streams.delete(agent);
    this.host.logger.info({ agent, reason }, "agent disconnected");
    this.events.emit("disconnected", agent, reason);
  }
}
