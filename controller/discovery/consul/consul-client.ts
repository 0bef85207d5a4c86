import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { HafleetError, InvalidInputError } from "../../../agent/errors.js";
import type { DroppedInstance, RawInstance } from "../service-snapshot.js";
import { ConsulAnswerError, parseConsulIndex, parseHealthAnswer, preview, type HealthPolicy, type WeightSource } from "./consul-response.js";

/**
 * The kept-alive connections to one Consul agent: TLS for an https:// address, trusting
 * `caFile` (Consul's CA) when given, else the system's store. Throws naming the file when it
 * cannot be read, at start rather than at the first query.
 */
export function consulAgent(address: string, caFile?: string): http.Agent {
  if (new URL(address).protocol !== "https:") return new http.Agent({ keepAlive: true });
  let ca: Buffer | undefined;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile);
    } catch (error) {
      throw new InvalidInputError("Consul options", [{ path: "caFile", message: `cannot read it: ${(error as Error).message}`, value: caFile }]);
    }
  }
  return new https.Agent({ keepAlive: true, ...(ca === undefined ? {} : { ca }) });
}

/**
 * One blocking query over node:http (or https). Not fetch: undici's default headersTimeout (300 s) would
 * cut Consul's default 5-minute wait (plus up to wait/16 of jitter) short.
 */

export class ConsulHttpError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_HTTP";
  /** `service` names what was asked; `subject` says what it is when not a service (`key 'a/b'`). */
  constructor(
    readonly service: string,
    readonly status: number,
    readonly bodyStart: string,
    subject = `service '${service}'`,
  ) {
    super(`Consul answered HTTP ${status} for ${subject}: ${preview(bodyStart)}`);
    this.name = "ConsulHttpError";
  }
}

export class ConsulConnectError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_CONNECT";
  constructor(
    readonly address: string,
    detail: string,
  ) {
    super(`cannot reach Consul at ${address}: ${detail}`);
    this.name = "ConsulConnectError";
  }
}

export class ConsulTimeoutError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_TIMEOUT";
  constructor(
    readonly service: string,
    readonly timeoutMs: number,
    subject = `service '${service}'`,
  ) {
    super(`Consul did not answer the query for ${subject} within ${timeoutMs} ms`);
    this.name = "ConsulTimeoutError";
  }
}

/** An answer to a call() (sessions, KV) that cannot be used: too large here, or of the wrong shape for its reader. */
export class ConsulReplyError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_BAD_REPLY";
  constructor(
    readonly subject: string,
    readonly detail: string,
  ) {
    super(`Consul's answer for ${subject} is unusable: ${detail}`);
    this.name = "ConsulReplyError";
  }
}

/** Consul caps `wait` at 10 minutes; a longer one would only mislead our own timeout. */
export const MAX_WAIT_MS = 10 * 60_000;
export const DEFAULT_WAIT_MS = 5 * 60_000;
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;
export const DEFAULT_TIMEOUT_MARGIN_MS = 15_000;
const ERROR_BODY_BYTES = 512;

export interface ConsulClientOptions {
  /** `http://host:port`, optionally with a path prefix (a proxy in front of Consul). */
  address: string;
  token?: string;
  datacenter?: string;
  healthy: HealthPolicy;
  weights: WeightSource;
  waitMs: number;
  timeoutMarginMs?: number;
  maxBodyBytes?: number;
  /** Shared keep-alive agent; every blocking query holds one socket while it waits. */
  agent?: http.Agent;
}

export interface HealthQuery {
  service: string;
  tag: string | null;
  /** 0: answer at once; otherwise block until Consul's index for the service passes it. */
  index: number;
}

export interface HealthAnswer {
  index: number;
  instances: RawInstance[];
  dropped: DroppedInstance[];
}

/** A request other than a health query (sessions, KV), over the same transport, token, limits and timeouts. */
export interface ConsulCall {
  method: "GET" | "PUT" | "DELETE";
  /** Below `/v1/`, already escaped: `kv/hafleet/leader`, `session/renew/<uuid>`. */
  path: string;
  /** `dc` is added when the client has a datacenter. */
  query?: Readonly<Record<string, string>>;
  /** Sent with its Content-Length: Consul reads a session's body only when the length is announced. */
  body?: string;
  /** Names the request in errors: `key 'hafleet/leader'`. */
  subject: string;
  /** Default: as long as a blocking query at the client's wait. */
  timeoutMs?: number;
}

export interface ConsulReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** How one exchange names itself in the errors it raises. */
interface Exchange {
  method: ConsulCall["method"];
  url: URL;
  body: string | undefined;
  name: string;
  subject: string;
  timeoutMs: number;
  unusable(detail: string): Error;
}

export interface HealthUrlParts {
  base: URL;
  service: string;
  tag: string | null;
  datacenter?: string;
  passing: boolean;
  index: number;
  waitMs: number;
}

export function healthServiceUrl(parts: HealthUrlParts): URL {
  const basePath = parts.base.pathname.replace(/\/+$/, "");
  const url = new URL(parts.base.href);
  url.pathname = `${basePath}/v1/health/service/${encodeURIComponent(parts.service)}`;
  const query: string[] = [];
  if (parts.passing) query.push("passing=1");
  if (parts.tag !== null) query.push(`tag=${encodeURIComponent(parts.tag)}`);
  if (parts.datacenter !== undefined) query.push(`dc=${encodeURIComponent(parts.datacenter)}`);
  // Without an index Consul answers at once: `wait` would mean nothing.
  if (parts.index > 0) query.push(`index=${parts.index}`, `wait=${Math.ceil(parts.waitMs)}ms`);
  url.search = query.length === 0 ? "" : `?${query.join("&")}`;
  return url;
}

/** Consul may hold a query for `wait` plus up to `wait/16` of jitter, then still has to answer. */
export function responseTimeoutMs(waitMs: number, marginMs: number): number {
  return Math.ceil(waitMs + waitMs / 16 + marginMs);
}

export class ConsulClient {
  private readonly base: URL;
  private readonly timeoutMarginMs: number;
  private readonly maxBodyBytes: number;

  constructor(private readonly options: ConsulClientOptions) {
    this.base = new URL(options.address);
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") throw new ConsulConnectError(options.address, "only http:// and https:// addresses are supported");
    this.timeoutMarginMs = options.timeoutMarginMs ?? DEFAULT_TIMEOUT_MARGIN_MS;
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  url(query: HealthQuery): URL {
    const parts: HealthUrlParts = {
      base: this.base,
      service: query.service,
      tag: query.tag,
      passing: this.options.healthy === "passing",
      index: query.index,
      waitMs: this.options.waitMs,
    };
    if (this.options.datacenter !== undefined) parts.datacenter = this.options.datacenter;
    return healthServiceUrl(parts);
  }

  async healthService(query: HealthQuery, signal?: AbortSignal): Promise<HealthAnswer> {
    const exchange: Exchange = {
      method: "GET",
      url: this.url(query),
      body: undefined,
      name: query.service,
      subject: `service '${query.service}'`,
      timeoutMs: responseTimeoutMs(this.options.waitMs, this.timeoutMarginMs),
      unusable: (detail) => new ConsulAnswerError(query.service, detail),
    };
    const { status, headers, body } = await this.exchange(exchange, signal);
    if (status !== 200) throw new ConsulHttpError(query.service, status, body);
    const index = parseConsulIndex(headers["x-consul-index"], query.service);
    // A token without node:read or service:read sees part of the service: a partial set
    // would look like instances leaving, so it is refused (the anonymous token gets no header).
    if (headers["x-consul-results-filtered-by-acls"] === "true") {
      throw new ConsulAnswerError(query.service, "results filtered by ACLs: the token lacks service:read or node:read on some instances");
    }
    const parsed = parseHealthAnswer(body, { service: query.service, healthy: this.options.healthy, weights: this.options.weights });
    return { index, instances: parsed.instances, dropped: parsed.dropped };
  }

  /** Any status comes back as it is: what a 404 or a `false` means is the caller's to say. */
  call(call: ConsulCall, signal?: AbortSignal): Promise<ConsulReply> {
    const url = new URL(this.base.href);
    url.pathname = `${this.base.pathname.replace(/\/+$/, "")}/v1/${call.path}`;
    const query = new URLSearchParams(call.query);
    if (this.options.datacenter !== undefined) query.set("dc", this.options.datacenter);
    url.search = query.toString();
    const exchange: Exchange = {
      method: call.method,
      url,
      body: call.body,
      name: call.subject,
      subject: call.subject,
      timeoutMs: call.timeoutMs ?? responseTimeoutMs(this.options.waitMs, this.timeoutMarginMs),
      unusable: (detail) => new ConsulReplyError(call.subject, detail),
    };
    return this.exchange(exchange, signal);
  }

  private exchange(exchange: Exchange, signal: AbortSignal | undefined): Promise<ConsulReply> {
    const { url, timeoutMs } = exchange;
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.options.token !== undefined) headers["x-consul-token"] = this.options.token;
    if (exchange.method !== "GET") headers["content-length"] = String(Buffer.byteLength(exchange.body ?? ""));
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      let settled = false;
      const transport = url.protocol === "https:" ? https : http;
      const request = transport.request(url, { method: exchange.method, headers, agent: this.options.agent ?? transport.globalAgent });
      const finish = (error: Error | null, value?: ConsulReply) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error === null && value !== undefined) resolve(value);
        else {
          request.destroy();
          reject(error ?? new Error("unreachable"));
        }
      };
      const timer = setTimeout(() => finish(new ConsulTimeoutError(exchange.name, timeoutMs, exchange.subject)), timeoutMs);
      const onAbort = () => finish(abortReason(signal));
      signal?.addEventListener("abort", onAbort, { once: true });

      request.on("error", (error: NodeJS.ErrnoException) => finish(new ConsulConnectError(this.options.address, error.code ?? error.message)));
      request.on("response", (response) => {
        const status = response.statusCode ?? 0;
        // An error's body is only quoted; a good one is read up to the limit and no further.
        const limit = status === 200 ? this.maxBodyBytes : ERROR_BODY_BYTES;
        const declared = Number(response.headers["content-length"]);
        if (status === 200 && Number.isFinite(declared) && declared > limit) {
          finish(exchange.unusable(`body of ${declared} bytes is over the ${limit}-byte limit`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          if (size >= limit) return;
          chunks.push(chunk);
          size += chunk.length;
          if (size <= limit) return;
          if (status === 200) finish(exchange.unusable(`body is over the ${limit}-byte limit`));
          else {
            finish(null, { status, headers: response.headers, body: Buffer.concat(chunks).subarray(0, limit).toString("utf8") });
            request.destroy();
          }
        });
        response.on("end", () => finish(null, { status, headers: response.headers, body: Buffer.concat(chunks).toString("utf8") }));
        // The connection closed before the body's end: never taken as a complete answer.
        const lost = () => finish(new ConsulConnectError(this.options.address, `connection lost while reading the answer for ${exchange.subject}`));
        response.on("error", lost);
        response.on("close", () => {
          if (!response.complete) lost();
        });
      });
      request.end(exchange.body);
    });
  }
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new Error("aborted");
}
