import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { InvalidInputError } from "../errors.js";
import { connectFailureCause, secureContextOf } from "./connect-failure.js";
import { nameSchema, type Name } from "../model/values.js";
import { loadFleetService } from "../../proto/fleet-protocol.js";
import { heartbeatDue } from "../../proto/heartbeat.js";
import {
  controllerMessageSchema,
  LIMITS,
  parseMessage,
  versionSchema,
  type AgentMessage,
  type ControllerMessage,
  type DesiredPush,
  type Hello,
} from "../../proto/messages.js";

/**
 * The agent's end of the Sync stream: one stream at a time, to the controller addresses in
 * turn, with backoff between attempts; hello first, heartbeats both ways, a silent controller
 * given up on; every write waits for room (grpc-js buffers without bound otherwise).
 * It knows nothing of HAProxy: pushes go to a handler.
 */

type AgentBody = AgentMessage["body"];
type BodyOf<K extends AgentBody> = Extract<AgentMessage, { body: K }> extends infer M ? (K extends keyof M ? M[K] : never) : never;
/** An agent message as written to the stream: `{ hello }`, `{ response }`, `{ observed }` or `{ heartbeat }`. */
export type OutgoingMessage = { [K in AgentBody]: { [P in K]: BodyOf<K> } }[AgentBody];

export type ControllerInput =
  | { kind: "push"; push: DesiredPush }
  /** Refused as a whole: nothing of it is applied, every backend it names is nacked. */
  | { kind: "invalid-push"; nonce: string; backends: Array<{ name: Name; version: string }>; error: string }
  | { kind: "heartbeat" }
  | { kind: "ignored"; reason: string };

/** Validates one decoded controller message; never throws. */
export function readControllerMessage(raw: unknown): ControllerInput {
  let message: ControllerMessage;
  try {
    message = parseMessage(controllerMessageSchema, raw, "controller message");
  } catch (error) {
    const detail = error instanceof InvalidInputError ? error.message : String(error);
    return invalidPush(raw, detail) ?? { kind: "ignored", reason: detail };
  }
  if (message.body === "heartbeat") return { kind: "heartbeat" };
  const conflict = pushConflict(message.push);
  if (conflict !== null) return invalidPush(raw, `controller message: ${conflict}`) ?? { kind: "ignored", reason: conflict };
  return { kind: "push", push: message.push };
}

/** What the schema cannot say: a push must name each backend once. */
function pushConflict(push: DesiredPush): string | null {
  const pushed = new Set<string>();
  for (const backend of push.backends) {
    if (pushed.has(backend.name)) return `push.backends: ${backend.name} is pushed twice`;
    pushed.add(backend.name);
  }
  const both = push.removedBackends.find((name) => pushed.has(name));
  return both === undefined ? null : `push: ${both} is both pushed and removed`;
}

/** The nonce and backend names of a bad push, as far as they can be answered on the wire. */
function invalidPush(raw: unknown, detail: string): ControllerInput | null {
  const push = field(raw, "body") === "push" ? field(raw, "push") : undefined;
  const nonce = field(push, "nonce");
  if (typeof nonce !== "string" || nonce.length > 256) return null;
  const entries = field(push, "backends");
  const backends = new Map<Name, string>();
  for (const entry of Array.isArray(entries) ? entries : []) {
    const name = nameSchema.safeParse(field(entry, "name"));
    const version = versionSchema.safeParse(field(entry, "version"));
    if (name.success && !backends.has(name.data)) backends.set(name.data, version.success ? version.data : "");
  }
  if (backends.size === 0) return null;
  return { kind: "invalid-push", nonce, backends: [...backends].map(([name, version]) => ({ name, version })), error: `push refused, nothing applied: ${detail}` };
}

function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>)[key] : undefined;
}

/** Full jitter: anywhere between 0 and the exponential cap, so restarted agents spread out. */
export function backoffDelay(failures: number, backoff: { initialMs: number; maxMs: number }, random: () => number = Math.random): number {
  const cap = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures, 30));
  return Math.floor(random() * cap);
}

/** The part of a grpc-js duplex call the writer uses. */
export interface WritableCall {
  write(message: OutgoingMessage): boolean;
  once(event: "drain", listener: () => void): unknown;
  removeListener(event: "drain", listener: () => void): unknown;
}

/**
 * Writes in order, one at a time: after a write() that returned false nothing more is
 * written until 'drain'. After close() everything is dropped: a response belongs to the
 * stream its push came on.
 */
export class StreamWriter {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  /** Date.now() of the last message handed to send(). */
  lastSentAt = 0;
  private closed = false;
  private release: (() => void) | null = null;

  constructor(private readonly call: WritableCall) {}

  /** Messages handed to send() and not yet accepted by the stream. */
  get backlog(): number {
    return this.pending;
  }

  /** Resolves once the stream took the message (or dropped it, closed); never rejects. */
  send(message: OutgoingMessage): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.lastSentAt = Date.now();
    this.pending++;
    const written = this.tail.then(() => this.writeNow(message)).finally(() => void this.pending--);
    this.tail = written;
    return written;
  }

  close(): void {
    this.closed = true;
    this.release?.();
  }

  private writeNow(message: OutgoingMessage): Promise<void> {
    if (this.closed) return Promise.resolve();
    let accepted: boolean;
    try {
      accepted = this.call.write(message);
    } catch {
      // Written after the call ended: the stream's own events report why.
      this.closed = true;
      return Promise.resolve();
    }
    if (accepted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.call.removeListener("drain", done);
        this.release = null;
        resolve();
      };
      this.release = done;
      this.call.once("drain", done);
    });
  }
}

/**
 * Transport keepalive: HTTP/2 pings find a dead TCP connection even while the stream is idle.
 * A local subchannel pool: a new attempt must not reuse the connection just given up on.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.use_local_subchannel_pool": 1,
  // Pushes carry whole server lists; gRPC's 4 MB default is a few thousand servers.
  "grpc.max_receive_message_length": LIMITS.messageBytes,
};

export interface LinkSession {
  readonly address: string;
  readonly open: boolean;
  send(message: OutgoingMessage): Promise<void>;
}

export interface LinkHandler {
  /** Built for each new stream, so that it says what the agent runs at that moment. */
  hello(): Promise<Hello>;
  /** The hello is on its way; the session takes messages. */
  opened(session: LinkSession): void;
  received(input: Extract<ControllerInput, { kind: "push" | "invalid-push" }>, session: LinkSession): void;
  closed?(session: LinkSession, reason: string): void;
}

export interface ControllerLinkOptions {
  /** HOST:PORT, tried in order, the next one after each failure. */
  addresses: readonly string[];
  heartbeatMs: number;
  /** Nothing at all from the controller for this long: the stream is given up. */
  deadAfterMs: number;
  connectTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  random?: () => number;
  /** Called for each connection attempt (TLS files re-read, see agent/tls); default: plaintext. */
  credentials?: () => grpc.ChannelCredentials;
  logger: Logger;
}

type SyncCall = grpc.ClientDuplexStream<OutgoingMessage, unknown>;
type FleetClient = grpc.Client & { Sync(): SyncCall };

export class ControllerLink {
  private readonly Client: grpc.ServiceClientConstructor;
  private readonly log: Logger;
  private stopped = false;
  private running: Promise<void> | null = null;
  private call: SyncCall | null = null;
  private client: grpc.Client | null = null;
  private wake: (() => void) | null = null;
  /** Failures already warned of, `address cause`: the same one again is logged at debug. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly handler: LinkHandler,
    private readonly options: ControllerLinkOptions,
  ) {
    if (options.addresses.length === 0) throw new Error("ControllerLink needs at least one controller address");
    this.Client = loadFleetService().Client;
    this.log = options.logger;
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Ends the stream and any wait; resolves once nothing of the link is left running. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    this.call?.cancel();
    this.client?.close();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { addresses } = this.options;
    const backoff = this.options.backoff ?? { initialMs: 200, maxMs: 10_000 };
    let index = 0;
    let failures = 0;
    while (!this.stopped) {
      const address = addresses[index]!;
      const { heard, opened, reason } = await this.attempt(address);
      if (this.stopped) return;
      // Only a stream the controller spoke on counts as a success; one that ends straight
      // after the hello must not make the agent reconnect in a tight loop.
      failures = heard ? 0 : failures + 1;
      index = (index + 1) % addresses.length;
      const delay = backoffDelay(failures, backoff, this.options.random);
      const fields = { controller: address, reason, next: addresses[index], retryInMs: delay };
      // A cause is worth a warning once: retries that fail the same way (a refused port, a
      // certificate the controller refuses, a stream it ends at once) are logged at debug.
      if (heard) this.reported.clear();
      if (heard || this.firstReport(address, reason)) this.log.warn(fields, opened ? "controller stream ended, reconnecting" : "cannot connect to the controller");
      else this.log.debug(fields, opened ? "controller stream ended again, same cause" : "still cannot connect to the controller, same cause");
      await this.pause(delay);
    }
  }

  /** Once per distinct cause and address until the controller speaks; bounded, whatever the causes. */
  private firstReport(address: string, reason: string): boolean {
    const key = `${address} ${reason}`;
    if (this.reported.has(key)) return false;
    if (this.reported.size >= 64) this.reported.clear();
    this.reported.add(key);
    return true;
  }

  private async attempt(address: string): Promise<{ heard: boolean; opened: boolean; reason: string }> {
    const failed = (reason: string) => ({ heard: false, opened: false, reason });
    let client: FleetClient;
    let credentials: grpc.ChannelCredentials;
    try {
      credentials = this.options.credentials?.() ?? grpc.credentials.createInsecure();
      client = new this.Client(address, credentials, CHANNEL_OPTIONS) as unknown as FleetClient;
    } catch (error) {
      return failed((error as Error).message);
    }
    this.client = client;
    try {
      // Connect before reading HAProxy for the hello: an unreachable controller costs nothing.
      const state = await waitForReady(client, this.options.connectTimeoutMs ?? 5_000);
      if (this.stopped) return failed("stopped");
      if (state !== "ready") return failed(await connectFailureCause(client.Sync(), address, secureContextOf(credentials)));
      const hello = await this.handler.hello();
      if (this.stopped) return failed("stopped");
      return { ...(await this.stream(client, address, hello)), opened: true };
    } catch (error) {
      return failed((error as Error).message);
    } finally {
      client.close();
      this.client = null;
    }
  }

  private stream(client: FleetClient, address: string, hello: Hello): Promise<{ heard: boolean; reason: string }> {
    return new Promise((resolve) => {
      const call = client.Sync();
      this.call = call;
      const writer = new StreamWriter(call);
      let heard = false;
      let ended = false;
      const session: LinkSession = {
        address,
        get open() {
          return !ended;
        },
        send: (message) => writer.send(message),
      };
      const finish = (reason: string): void => {
        if (ended) return;
        ended = true;
        clearTimeout(dead);
        clearInterval(beat);
        writer.close();
        call.cancel();
        this.call = null;
        this.handler.closed?.(session, reason);
        resolve({ heard, reason });
      };
      const dead = setTimeout(() => finish(`nothing from the controller for ${this.options.deadAfterMs} ms`), this.options.deadAfterMs);
      const beat = setInterval(() => {
        // A heartbeat behind a backlog, or just after another message, says nothing new.
        if (writer.backlog === 0 && heartbeatDue(writer.lastSentAt, Date.now(), this.options.heartbeatMs)) void writer.send({ heartbeat: { sentAtMs: Date.now() } });
      }, this.options.heartbeatMs);
      call.on("data", (raw: unknown) => {
        if (ended) return;
        heard = true;
        dead.refresh();
        this.dispatch(raw, session);
      });
      call.on("error", (error: Error) => finish(`stream error: ${error.message}`));
      call.on("end", () => finish("the controller ended the stream"));
      call.on("status", (status: grpc.StatusObject) => finish(`stream closed: ${status.details || grpc.status[status.code]}`));
      if (this.stopped) return finish("stopped");
      void writer.send({ hello });
      this.log.info({ controller: address }, "connected to the controller");
      this.handler.opened(session);
    });
  }

  private dispatch(raw: unknown, session: LinkSession): void {
    const input = readControllerMessage(raw);
    switch (input.kind) {
      case "heartbeat":
        return;
      case "ignored":
        this.log.warn({ controller: session.address, reason: input.reason }, "controller message ignored");
        return;
      case "invalid-push":
        this.log.warn({ controller: session.address, nonce: input.nonce, reason: input.error }, "invalid push refused");
        return this.handler.received(input, session);
      case "push":
        return this.handler.received(input, session);
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.wake = null;
    });
  }
}

/**
 * "ready" when the channel is connected, "failed" as soon as it fails (a call on it then says
 * why, see connect-failure.ts); rejects at the timeout.
 */
function waitForReady(client: grpc.Client, timeoutMs: number): Promise<"ready" | "failed"> {
  const channel = client.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      try {
        const state = channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) return resolve("ready");
        if (state === grpc.connectivityState.TRANSIENT_FAILURE) return resolve("failed");
        if (state === grpc.connectivityState.SHUTDOWN) return reject(new Error("the channel was shut down"));
        channel.watchConnectivityState(state, deadline, (error) => (error ? reject(new Error(`not connected within ${timeoutMs} ms`)) : check()));
      } catch (error) {
        reject(error as Error);
      }
    };
    check();
  });
}
