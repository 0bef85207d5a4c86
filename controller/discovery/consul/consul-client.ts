import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import zlib from "node:zlib";
import { HafleetError, InvalidInputError } from "../../../agent/errors.js";
import type { DroppedInstance, RawInstance, WatchScope } from "../service-snapshot.js";
import { ConsulAnswerError, parseConsulIndex, parseHealthAnswer, preview, type AddressChoice, type HealthPolicy, type WeightSource } from "./consul-response.js";

/** How the controller proves itself to Consul and checks Consul's certificate (https:// only). */
export interface ConsulTlsFiles {
  /** The CA that signed Consul's certificate; absent: the system's store. */
  caFile?: string;
  /** A client certificate and its key, for clusters with `verify_incoming`. */
  certFile?: string;
  keyFile?: string;
  /** The name Consul's certificate is checked against (and sent as SNI) when the address's host is not it. */
  tlsServerName?: string;
}

/**
 * The kept-alive connections to one Consul agent: TLS for an https:// address, trusting
 * `caFile` (Consul's CA) when given, else the system's store, with a client certificate when
 * given. Throws naming the file when it cannot be read, at start rather than at the first query.
 * `maxSockets` bounds the connections (Consul's `http_max_conns_per_client`).
 */
export function consulAgent(address: string, files: string | ConsulTlsFiles = {}, maxSockets = Infinity): http.Agent {
  const tls: ConsulTlsFiles = typeof files === "string" ? { caFile: files } : files;
  if (new URL(address).protocol !== "https:") return new http.Agent({ keepAlive: true, maxSockets });
  const read = (field: "caFile" | "certFile" | "keyFile"): Buffer | undefined => {
    const file = tls[field];
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (error) {
      throw new InvalidInputError("Consul options", [{ path: field, message: `cannot read it: ${(error as Error).message}`, value: file }]);
    }
  };
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    const [path, value] = tls.certFile === undefined ? ["certFile", tls.keyFile] : ["keyFile", tls.certFile];
    throw new InvalidInputError("Consul options", [{ path, message: "a client certificate needs both certFile and keyFile", value }]);
  }
  const ca = read("caFile");
  const cert = read("certFile");
  const key = read("keyFile");
  return new https.Agent({
    keepAlive: true,
    maxSockets,
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined || key === undefined ? {} : { cert, key }),
    ...(tls.tlsServerName === undefined ? {} : { servername: tls.tlsServerName }),
  });
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
    /** Consul's `Retry-After` (429, 503), in ms; null when it sent none. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(`Consul answered HTTP ${status} for ${subject}: ${preview(bodyStart)}`);
    this.name = "ConsulHttpError";
  }
}

/**
 * A blocking query that was held, then cut with no answer (the connection closed, or a 504
 * from a proxy): what a proxy or load balancer in front of Consul does to idle requests,
 * often at 60 s. Not a failure: the query is sent again at once with the same index.
 */
export class ConsulIdleCutError extends HafleetError {
  readonly code = "HAFLEET_CONSUL_IDLE_CUT";
  constructor(
    readonly subject: string,
    readonly heldMs: number,
  ) {
    super(`the blocking query for ${subject} was cut after ${Math.round(heldMs)} ms without an answer (a proxy's idle timeout?)`);
    this.name = "ConsulIdleCutError";
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
/** consul-template's default: below the ~60 s idle timeout of most proxies and load balancers. */
export const DEFAULT_WAIT_MS = 60_000;
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;
export const DEFAULT_TIMEOUT_MARGIN_MS = 15_000;
/** consul-template's default `max_stale`: a follower's answer is taken unless it is older. */
export const DEFAULT_MAX_STALE_MS = 2_000;
const ERROR_BODY_BYTES = 512;
/** A blocking query cut after being held at least this long (or half its wait) is an idle cut, not a failure. */
const IDLE_CUT_MIN_MS = 1_000;

/**
 * Which server answers reads (https://developer.hashicorp.com/consul/api-docs/features/consistency):
 * `default` the leader (no update during an election); `stale` any server, checked against
 * `maxStaleMs` with `X-Consul-LastContact`; `consistent` the leader, after a round with a quorum.
 */
export type Consistency = "default" | "stale" | "consistent";

/** Where a service is looked up, beyond its name: Consul Enterprise, peering, several datacenters, a filter. */
export type ServiceScope = Omit<WatchScope, "tags" | "address">;

export interface ConsulClientOptions {
  /** `http://host:port`, optionally with a path prefix (a proxy in front of Consul). */
  address: string;
  /** A function is asked at every request: a token file re-read when it changes. */
  token?: string | (() => string | undefined);
  datacenter?: string;
  /** Enterprise: the namespace and admin partition of every request (a service's own scope overrides them). */
  namespace?: string;
  partition?: string;
  /** Default `default`. */
  consistency?: Consistency;
  /** With `stale`: an answer from a server that heard from the leader longer ago is asked again of the leader. */
  maxStaleMs?: number;
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
  /** More tags, all of which an instance must carry (Consul's repeated `tag`). */
  tags?: readonly string[];
  scope?: ServiceScope;
  /** Which of an instance's addresses is used (default: Service.Address, else Node.Address). */
  address?: AddressChoice;
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
  /** The wait of a blocking query (sent with an index), else null. */
  blockingMs: number | null;
  unusable(detail: string): Error;
}

export interface HealthUrlParts {
  base: URL;
  service: string;
  tag: string | null;
  tags?: readonly string[];
  datacenter?: string;
  scope?: ServiceScope;
  namespace?: string;
  partition?: string;
  consistency?: Consistency;
  passing: boolean;
  index: number;
  waitMs: number;
}

export function healthServiceUrl(parts: HealthUrlParts): URL {
  const basePath = parts.base.pathname.replace(/\/+$/, "");
  const url = new URL(parts.base.href);
  url.pathname = `${basePath}/v1/health/service/${encodeURIComponent(parts.service)}`;
  const query: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined) query.push(`${name}=${encodeURIComponent(value)}`);
  };
  if (parts.passing) query.push("passing=1");
  for (const tag of [...(parts.tag === null ? [] : [parts.tag]), ...(parts.tags ?? [])]) add("tag", tag);
  const scope = parts.scope ?? {};
  add("dc", scope.dc ?? parts.datacenter);
  add("ns", scope.ns ?? parts.namespace);
  add("partition", scope.partition ?? parts.partition);
  add("peer", scope.peer);
  add("sameness-group", scope.samenessGroup);
  add("filter", scope.filter);
  if (parts.consistency === "stale" || parts.consistency === "consistent") query.push(parts.consistency);
  // Without an index Consul answers at once: `wait` would mean nothing.
  if (parts.index > 0) query.push(`index=${parts.index}`, `wait=${Math.ceil(parts.waitMs)}ms`);
  url.search = query.length === 0 ? "" : `?${query.join("&")}`;
  return url;
}

/** `Retry-After`: seconds, or an HTTP date; null when absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | null {
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || text.trim() === "") return null;
  if (/^\s*[0-9]+\s*$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** `X-Consul-LastContact`: ms since the answering server heard from the leader; null when absent. */
export function lastContactMs(header: string | string[] | undefined): number | null {
  const text = Array.isArray(header) ? header[0] : header;
  return text !== undefined && /^[0-9]{1,15}$/.test(text) ? Number(text) : null;
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

  url(query: HealthQuery, consistency: Consistency = this.options.consistency ?? "default", waitMs = this.options.waitMs): URL {
    const parts: HealthUrlParts = {
      base: this.base,
      service: query.service,
      tag: query.tag,
      passing: this.options.healthy === "passing",
      index: query.index,
      waitMs,
      consistency,
    };
    if (query.tags !== undefined) parts.tags = query.tags;
    if (query.scope !== undefined) parts.scope = query.scope;
    if (this.options.datacenter !== undefined) parts.datacenter = this.options.datacenter;
    if (this.options.namespace !== undefined) parts.namespace = this.options.namespace;
    if (this.options.partition !== undefined) parts.partition = this.options.partition;
    return healthServiceUrl(parts);
  }

  /** `waitMs`: this query's blocking wait, when the caller shortens it (a connection budget shared by more watches). */
  async healthService(query: HealthQuery, signal?: AbortSignal, waitMs = this.options.waitMs): Promise<HealthAnswer> {
    const consistency = this.options.consistency ?? "default";
    let reply = await this.healthExchange(query, consistency, waitMs, signal);
    if (consistency === "stale") {
      // consul-template's rule: a follower too long out of touch with the leader is not
      // believed; the same query goes to the leader (https://developer.hashicorp.com/consul/api-docs/features/consistency).
      // KnownLeader is not looked at: during an election no server knows one, and the leader
      // could not answer either; a follower cut off for long shows it in LastContact.
      const contact = lastContactMs(reply.headers["x-consul-lastcontact"]);
      const maxStale = this.options.maxStaleMs ?? DEFAULT_MAX_STALE_MS;
      if (reply.status === 200 && contact !== null && contact > maxStale) {
        reply = await this.healthExchange({ ...query, index: 0 }, "default", waitMs, signal);
      }
    }
    const { status, headers, body } = reply;
    if (status !== 200) throw new ConsulHttpError(query.service, status, body, undefined, retryAfterMs(headers["retry-after"]));
    const index = parseConsulIndex(headers["x-consul-index"], query.service);
    // A token without node:read or service:read sees part of the service: a partial set
    // would look like instances leaving, so it is refused (the anonymous token gets no header).
    if (headers["x-consul-results-filtered-by-acls"] === "true") {
      throw new ConsulAnswerError(query.service, "results filtered by ACLs: the token lacks service:read or node:read on some instances");
    }
    const parsed = parseHealthAnswer(body, { service: query.service, healthy: this.options.healthy, weights: this.options.weights, ...(query.address === undefined ? {} : { address: query.address }) });
    return { index, instances: parsed.instances, dropped: parsed.dropped };
  }

  private healthExchange(query: HealthQuery, consistency: Consistency, waitMs: number, signal: AbortSignal | undefined): Promise<ConsulReply> {
    const exchange: Exchange = {
      method: "GET",
      url: this.url(query, consistency, waitMs),
      body: undefined,
      name: query.service,
      subject: `service '${query.service}'`,
      timeoutMs: responseTimeoutMs(waitMs, this.timeoutMarginMs),
      blockingMs: query.index > 0 ? waitMs : null,
      unusable: (detail) => new ConsulAnswerError(query.service, detail),
    };
    return this.exchange(exchange, signal);
  }

  /** Any status comes back as it is: what a 404 or a `false` means is the caller's to say. */
  call(call: ConsulCall, signal?: AbortSignal): Promise<ConsulReply> {
    const url = new URL(this.base.href);
    url.pathname = `${this.base.pathname.replace(/\/+$/, "")}/v1/${call.path}`;
    const query = new URLSearchParams(call.query);
    if (this.options.datacenter !== undefined) query.set("dc", this.options.datacenter);
    if (this.options.namespace !== undefined && call.path.startsWith("kv/")) query.set("ns", this.options.namespace);
    if (this.options.partition !== undefined) query.set("partition", this.options.partition);
    url.search = query.toString();
    const exchange: Exchange = {
      method: call.method,
      url,
      body: call.body,
      name: call.subject,
      subject: call.subject,
      timeoutMs: call.timeoutMs ?? responseTimeoutMs(this.options.waitMs, this.timeoutMarginMs),
      blockingMs: call.method === "GET" && query.has("index") ? this.options.waitMs : null,
      unusable: (detail) => new ConsulReplyError(call.subject, detail),
    };
    return this.exchange(exchange, signal);
  }

  private token(): string | undefined {
    const token = this.options.token;
    return typeof token === "function" ? token() : token;
  }

  private exchange(exchange: Exchange, signal: AbortSignal | undefined): Promise<ConsulReply> {
    const { url, timeoutMs } = exchange;
    // Consul compresses any answer when asked (gziphandler, no minimum size): a large service's
    // answer is mostly repeated JSON keys and check outputs, and shrinks ~10 times.
    const headers: Record<string, string> = { accept: "application/json", "accept-encoding": "gzip" };
    const token = this.token();
    if (token !== undefined) headers["x-consul-token"] = token;
    if (exchange.method !== "GET") headers["content-length"] = String(Buffer.byteLength(exchange.body ?? ""));
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      let settled = false;
      let answered = false;
      const sentAt = Date.now();
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
      /** A held blocking query cut before any answer: a proxy's idle timeout, not Consul failing. */
      const idleCut = (): boolean => {
        if (exchange.blockingMs === null || answered) return false;
        const heldMs = Date.now() - sentAt;
        return heldMs >= Math.min(IDLE_CUT_MIN_MS, exchange.blockingMs / 2);
      };
      const timer = setTimeout(() => finish(new ConsulTimeoutError(exchange.name, timeoutMs, exchange.subject)), timeoutMs);
      const onAbort = () => finish(abortReason(signal));
      signal?.addEventListener("abort", onAbort, { once: true });

      request.on("error", (error: NodeJS.ErrnoException) => {
        if (idleCut() && error.code !== "ECONNREFUSED") finish(new ConsulIdleCutError(exchange.subject, Date.now() - sentAt));
        else finish(new ConsulConnectError(this.options.address, error.code ?? error.message));
      });
      request.on("response", (response) => {
        const status = response.statusCode ?? 0;
        if (status === 504 && response.headers["x-consul-index"] === undefined && idleCut()) {
          response.resume();
          finish(new ConsulIdleCutError(exchange.subject, Date.now() - sentAt));
          return;
        }
        answered = true;
        // An error's body is only quoted; a good one is read up to the limit and no further.
        const limit = status === 200 ? this.maxBodyBytes : ERROR_BODY_BYTES;
        const gzipped = /^\s*gzip\s*$/i.test(String(response.headers["content-encoding"] ?? ""));
        const declared = Number(response.headers["content-length"]);
        // A compressed length says nothing certain of the body's size: only the plain one is checked up front.
        if (status === 200 && !gzipped && Number.isFinite(declared) && declared > limit) {
          finish(exchange.unusable(`body of ${declared} bytes is over the ${limit}-byte limit (maxBodyBytes)`));
          response.resume();
          return;
        }
        let body: NodeJS.ReadableStream = response;
        if (gzipped) {
          const gunzip = zlib.createGunzip();
          gunzip.on("error", (error) => finish(exchange.unusable(`gzip body unreadable: ${error.message}`)));
          response.pipe(gunzip);
          body = gunzip;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        body.on("data", (chunk: Buffer) => {
          // Once over the limit nothing more is kept (the answer is refused, or quoted up to the limit).
          if (size > limit) return;
          chunks.push(chunk);
          size += chunk.length;
          if (size <= limit) return;
          if (status === 200) finish(exchange.unusable(`body is over the ${limit}-byte limit (maxBodyBytes)`));
          else {
            finish(null, { status, headers: response.headers, body: Buffer.concat(chunks).subarray(0, limit).toString("utf8") });
            request.destroy();
          }
        });
        body.on("end", () => finish(null, { status, headers: response.headers, body: Buffer.concat(chunks).toString("utf8") }));
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
