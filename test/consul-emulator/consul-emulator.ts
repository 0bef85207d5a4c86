import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { gzipSync } from "node:zlib";

/**
 * An in-process stand-in for the parts of Consul's HTTP API that hafleet uses, following
 * Consul's documented behaviour (and its source where the docs are silent):
 * - agent endpoints: service register/deregister, TTL check pass/warn/fail/update,
 *   service and node maintenance; one node, with its `serfHealth` check;
 * - `GET /v1/health/service/:service` with `passing`, `tag` (repeatable, all must match,
 *   case-insensitive), `dc`, and blocking on `index` + `wait` (Go duration, default 5 min,
 *   capped at 10 min, plus up to wait/16 of jitter);
 * - a raft-like index: every write that changes something takes the next index; a service's
 *   index is the one of its last change (its instances, their checks, its node's checks);
 *   a service with no instance answers with the index of the last extinction, as Consul does;
 * - ACLs with default deny when started with a token: an unknown token gets 403 "ACL not
 *   found", a write without permission 403 "Permission denied", a read without permission
 *   gets its results filtered (and the X-Consul-Results-Filtered-By-ACLs header, except for
 *   the anonymous token). Sessions and KV need the management token (403 otherwise);
 *   session info is filtered to `[]` instead;
 * - sessions (`/v1/session/create|renew|destroy|info`): TTL between `sessionTtlMinMs`
 *   (Consul's `session_ttl_min`, 10 s) and 24 h, LockDelay (15 s by default, capped at 60 s
 *   when applied, a number below 1000 read as seconds), Behavior release|delete, NodeChecks
 *   (default serfHealth: the node's check going critical invalidates the session). A session
 *   not renewed expires exactly TTL after its creation or last renewal: the earliest moment
 *   Consul allows (Consul's servers wait twice the TTL), so a client that fences itself in
 *   time is tested against the worst case. Invalidation releases (or deletes) every key the
 *   session holds at one index and starts each key's lock-delay. Info does not block;
 * - KV (`/v1/kv/:key`): GET (blocking like health, woken only by a change of that key, and
 *   answering with the entry's ModifyIndex, as Consul does for one key (kvs_endpoint.go);
 *   404 with the KV table's index when absent; `?raw`), PUT with `?acquire`, `?release`, `?cas`,
 *   `?flags` (true/false; an acquire is refused during the key's lock-delay), DELETE (with
 *   `?cas`). GET `?recurse` lists a prefix (blocking on the KV table's index); `?keys` is refused as not emulated.
 * - limits: `limits.http_max_conns_per_client` (200 by default): a connection past it from the
 *   same IP gets Consul's raw 429 "Your IP is issuing too many concurrent connections, please
 *   rate limit your calls" and is closed; 429 and 503 with `Retry-After` as faults;
 * - consistency: `?stale` answers with the configured `X-Consul-LastContact` (a follower's),
 *   `?consistent` and the default with 0; `X-Consul-KnownLeader` as set;
 * - Enterprise and peering: instances carry a namespace, partition and peer (registered with
 *   `Namespace`, `Partition` and, emulator only, `PeerName`); `?ns`, `?partition`, `?peer`
 *   select them; `?filter` understands `Sel == "v"`, `Sel != "v"`, `"v" in Sel`,
 *   `"v" not in Sel`, joined by `and`; other forms get Consul's 400;
 * - `Accept-Encoding: gzip` compresses any answer, as Consul's gziphandler does (no minimum);
 * - denials with Consul's bodies: "ACL not found" for an unknown token, "Permission denied:
 *   token with AccessorID '...' lacks permission 'key:read' on \"a/b\"" for the rest.
 * Faults are injected from tests: failNext, resetIndex, respondWith, delay, setNodeHealth,
 * expireSession. failNext and delay take a scope: health (default), session or kv, and one
 * service, session id or key.
 */

export type CheckStatus = "passing" | "warning" | "critical";

export interface ConsulEmulatorOptions {
  datacenter?: string;
  nodeName?: string;
  nodeAddress?: string;
  /** Turns ACLs on (default deny); this token may do everything. */
  token?: string;
  /** Tokens that may read only the listed services (service:read and node:read). */
  readTokens?: Record<string, readonly string[]>;
  /** For the blocking jitter; Math.random by default. */
  random?: () => number;
  /** Consul's `session_ttl_min` (10 s): tests lower it to keep sessions short. */
  sessionTtlMinMs?: number;
  /** Consul's `limits.http_max_conns_per_client` (default 200). */
  maxConnsPerClient?: number;
  /** Other datacenters this one has a path to (WAN-joined): `?dc=` for one of them answers, any other is 500 "No path to datacenter". */
  otherDatacenters?: readonly string[];
  /** Sameness groups: their members in failover order, "" for this cluster, else a peer's name. */
  samenessGroups?: Record<string, readonly string[]>;
}

/** Which API a fault or a delay hits. */
export type Endpoint = "health" | "session" | "kv";

export interface FaultScope {
  /** Default: health. */
  endpoint?: Endpoint;
  /** One service, session id or key (default: any). */
  target?: string;
  /** Faults only: requests of this method alone (a key's reads, not its writes). */
  method?: "GET" | "PUT" | "DELETE";
  /** Faults only: sent as `Retry-After` (Consul's rate limiter sends it with 429 and 503). */
  retryAfter?: string;
}

export interface RespondWithOptions {
  status?: number;
  /** The X-Consul-Index to send; a string is sent as is; null sends none. Default: a new index. */
  index?: number | string | null;
  /** How many answers get this body (default 1). */
  times?: number;
  /** Only answers for this service (default: any). */
  service?: string;
  /** Send no Content-Length (chunked), so a size limit cannot be checked up front. */
  chunked?: boolean;
  /** Announce the whole body, send this many bytes of it, then cut the connection. */
  cutAfter?: number;
}

interface Fault {
  kind: "fail" | "raw";
  status: number;
  body: Buffer;
  index: number | string | null | "new";
  remaining: number;
  endpoint: Endpoint;
  target: string | null;
  method: string | null;
  chunked: boolean;
  cutAfter: number | null;
  retryAfter: string | null;
}

interface ServiceRecord {
  ID: string;
  Service: string;
  Namespace: string;
  Partition: string;
  PeerName: string;
  /** Emulator only: the datacenter the instance is in (registered with `Datacenter`). */
  Datacenter: string;
  TaggedAddresses: Record<string, { Address: string; Port: number }> | null;
  Tags: string[];
  Address: string;
  Meta: Record<string, string>;
  Port: number;
  Weights: { Passing: number; Warning: number };
  EnableTagOverride: boolean;
  CreateIndex: number;
  ModifyIndex: number;
}

interface CheckRecord {
  CheckID: string;
  Name: string;
  Status: CheckStatus;
  Notes: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  Type: string;
  CreateIndex: number;
  ModifyIndex: number;
  ttlMs: number | null;
  timer: NodeJS.Timeout | null;
}

interface Waiter {
  endpoint: Endpoint;
  target: string;
  /** Whatever the query watches moved since it was held. */
  changed(): boolean;
  wake(fault: Fault | null): void;
}

interface SessionRecord {
  ID: string;
  Name: string;
  Node: string;
  lockDelayMs: number;
  Behavior: "release" | "delete";
  TTL: string;
  ttlMs: number;
  NodeChecks: string[];
  CreateIndex: number;
  ModifyIndex: number;
  timer: NodeJS.Timeout | null;
}

interface KvRecord {
  Key: string;
  Value: Buffer | null;
  Flags: number;
  LockIndex: number;
  Session: string;
  CreateIndex: number;
  ModifyIndex: number;
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_WAIT_MS = 10 * 60_000;
const SESSION_TTL_MAX_MS = 24 * 3_600_000;
const MAX_LOCK_DELAY_MS = 60_000;
const KV_MAX_VALUE_BYTES = 512 * 1024;
const DEFAULT_WAIT_MS = 5 * 60_000;
const NODE_ID = "2f5a3f1e-7c43-4b1b-9d0e-6c1f8a9b0c11";
const SERF_CHECK = "serfHealth";
const NODE_MAINTENANCE = "_node_maintenance";
const SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:";

export async function startConsulEmulator(options: ConsulEmulatorOptions = {}): Promise<ConsulEmulator> {
  const emulator = new ConsulEmulator(options);
  await emulator.listen();
  return emulator;
}

export class ConsulEmulator {
  readonly datacenter: string;
  readonly nodeName: string;
  readonly nodeAddress: string;
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly services = new Map<string, ServiceRecord>();
  private readonly checks = new Map<string, CheckRecord>();
  private readonly serviceIndexes = new Map<string, number>();
  private readonly waiters = new Set<Waiter>();
  private readonly queriesByService = new Map<string, number>();
  private readonly random: () => number;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly kv = new Map<string, KvRecord>();
  /** Per key, the index of its last change, deletion included: what wakes a query held on it. */
  private readonly keyChanges = new Map<string, number>();
  private readonly lockDelays = new Map<string, number>();
  /** Per endpoint, or endpoint and target (`kv:a/b`). */
  private readonly delays = new Map<string, number>();
  private faults: Fault[] = [];
  private globalIndex = 0;
  /** The index of the last catalog write (nodes, services, checks): what a missing service answers with. */
  private catalogIndex = 0;
  private kvIndex = 0;
  private readonly grants = new Map<string, Set<string>>();
  private readonly perClient = new Map<string, number>();
  private lastContactMs = 0;
  private knownLeader = true;
  /** Connections refused by the per-client limit. */
  refusedConnections = 0;
  /** Every session request, with its time and the status answered: to check when a client retries. */
  readonly sessionLog: { operation: string; id: string; at: number; status: number }[] = [];
  private sessionsIndex = 0;
  private extinctionIndex = 0;
  private closed = false;
  private port = 0;
  /** Every HTTP request received. */
  requestCount = 0;
  /** Every health query, in order, as asked: to check what a client sends back. */
  readonly queryLog: { service: string; index: string | null; wait: string | null; passing: string | null; tags: string[]; consistency: "default" | "stale" | "consistent"; params: Record<string, string>; gzip: boolean }[] = [];

  constructor(private readonly options: ConsulEmulatorOptions) {
    this.datacenter = options.datacenter ?? "dc1";
    this.nodeName = options.nodeName ?? "emulator-node";
    this.nodeAddress = options.nodeAddress ?? "127.0.0.1";
    this.random = options.random ?? Math.random;
    this.server = http.createServer((request, response) => {
      this.requestCount += 1;
      this.handle(request, response).catch((error: unknown) => {
        const failure = error instanceof HttpFailure ? error : new HttpFailure(500, String(error));
        send(response, failure.status, failure.message);
      });
    });
    this.server.on("connection", (socket) => {
      this.sockets.add(socket);
      // Consul's connlimit: past the limit, a raw 429 and the connection closed, before any request is read.
      const client = socket.remoteAddress ?? "";
      const open = (this.perClient.get(client) ?? 0) + 1;
      this.perClient.set(client, open);
      socket.on("close", () => {
        this.sockets.delete(socket);
        this.perClient.set(client, (this.perClient.get(client) ?? 1) - 1);
      });
      if (open > (this.options.maxConnsPerClient ?? 200)) {
        this.refusedConnections += 1;
        const message = "Your IP is issuing too many concurrent connections, please rate limit your calls\n";
        socket.end(`HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\nConnection: close\r\n\r\n${message}`);
      }
    });
    // The node joins the catalog with its serf check, as an agent does on start.
    this.globalIndex = 5;
    this.catalogIndex = 5;
    this.checks.set(SERF_CHECK, this.newCheck({ CheckID: SERF_CHECK, Name: "Serf Health Status", Status: "passing", Output: "Agent alive and reachable", CreateIndex: 5, ModifyIndex: 5 }));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The raft index of the last write. */
  get index(): number {
    return this.globalIndex;
  }

  /** Health queries received, for one service (any case) or all. */
  healthQueryCount(service?: string): number {
    if (service !== undefined) return this.queriesByService.get(service.toLowerCase()) ?? 0;
    let total = 0;
    for (const count of this.queriesByService.values()) total += count;
    return total;
  }

  /** Blocking queries being held right now. */
  get heldQueries(): number {
    return this.waiters.size;
  }

  /** The index a health query for `service` would answer with now. */
  serviceIndex(service: string): number {
    const name = service.toLowerCase();
    const hasInstances = [...this.services.values()].some((record) => record.Service.toLowerCase() === name);
    // A KV write or a session moves the raft index, not the catalog's: Consul's fallback is the catalog tables' index.
    const index = hasInstances ? (this.serviceIndexes.get(name) ?? this.catalogIndex) : this.extinctionIndex > 0 ? this.extinctionIndex : this.catalogIndex;
    // Consul never answers a blocking endpoint with an index below 1.
    return Math.max(1, index);
  }

  /** The session holding `key`'s lock, or null. */
  lockHolder(key: string): string | null {
    const holder = this.kv.get(key)?.Session ?? "";
    return holder === "" ? null : holder;
  }

  /** The sessions alive now. */
  sessionIds(): string[] {
    return [...this.sessions.keys()];
  }

  // ---- Faults ----

  /**
   * The next `count` answers in `scope` (held queries included) are `status` with `body`;
   * the request does nothing else (a failed renew does not renew).
   */
  failNext(count: number, status = 500, body = "No cluster leader", scope: FaultScope = {}): void {
    const { endpoint, target } = faultTarget(scope);
    this.addFault({ kind: "fail", status, body: Buffer.from(body), index: null, remaining: count, endpoint, target, method: scope.method ?? null, chunked: false, cutAfter: null, retryAfter: scope.retryAfter ?? null });
  }

  /** A read token may now read `service` too, as an operator updating its policy would. */
  grant(token: string, service: string): void {
    const readable = this.options.readTokens?.[token];
    if (readable === undefined) throw new Error(`no read token ${token}`);
    const granted = this.grants.get(token) ?? new Set<string>();
    granted.add(service.toLowerCase());
    this.grants.set(token, granted);
  }

  /** What `?stale` reads report as `X-Consul-LastContact`: how long ago the answering follower heard from the leader. */
  setLastContact(ms: number): void {
    this.lastContactMs = ms;
  }

  /** `X-Consul-KnownLeader` (false during an election). */
  setKnownLeader(known: boolean): void {
    this.knownLeader = known;
  }

  /** Connections open now from one client IP (default: the loopback the tests use). */
  connectionsFrom(ip = "127.0.0.1"): number {
    return this.perClient.get(ip) ?? this.perClient.get(`::ffff:${ip}`) ?? 0;
  }

  /** Drops every pending failNext and respondWith. */
  clearFaults(): void {
    this.faults = [];
  }

  /** The next health answer(s) carry `body` as is: hostile, truncated or huge payloads. */
  respondWith(body: string | Buffer, options: RespondWithOptions = {}): void {
    this.addFault({
      kind: "raw",
      status: options.status ?? 200,
      body: typeof body === "string" ? Buffer.from(body) : body,
      index: options.index === undefined ? "new" : options.index,
      remaining: options.times ?? 1,
      endpoint: "health",
      target: options.service?.toLowerCase() ?? null,
      method: null,
      chunked: options.chunked ?? false,
      cutAfter: options.cutAfter ?? null,
      retryAfter: null,
    });
  }

  /** Requests in `scope` wait this long before they are even looked at (0: no delay). */
  delay(ms: number, scope: FaultScope = {}): void {
    const { endpoint, target } = faultTarget(scope);
    this.delays.set(target === null ? endpoint : `${endpoint}:${target}`, ms);
  }

  /** Invalidates a session at once, as its TTL running out would. */
  expireSession(id: string): void {
    if (!this.sessions.has(id)) throw new Error(`no session ${id}`);
    this.invalidateSession(id);
  }

  /**
   * The index goes back, as after a raft snapshot restore: the data stays, every index is
   * lowered to `to` at most, and held queries return at once (Consul abandons the old state).
   */
  resetIndex(to = 1): void {
    this.globalIndex = to;
    this.catalogIndex = Math.min(this.catalogIndex, to);
    this.extinctionIndex = Math.min(this.extinctionIndex, to);
    this.kvIndex = Math.min(this.kvIndex, to);
    for (const [name, index] of this.serviceIndexes) this.serviceIndexes.set(name, Math.min(index, to));
    for (const waiter of [...this.waiters]) waiter.wake(null);
  }

  /** The node's `serfHealth` check, as gossip would set it. */
  setNodeHealth(status: CheckStatus, output = status === "passing" ? "Agent alive and reachable" : "Agent not live or unreachable"): void {
    this.updateCheck(SERF_CHECK, status, output);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const check of this.checks.values()) if (check.timer !== null) clearTimeout(check.timer);
    for (const session of this.sessions.values()) if (session.timer !== null) clearTimeout(session.timer);
    for (const waiter of [...this.waiters]) waiter.wake(null);
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closing;
  }

  // ---- HTTP ----

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://emulator");
    const path = url.pathname;
    const token = this.resolveToken(request, url);
    if (path === "/v1/health/service/") throw new HttpFailure(400, "Missing service name");
    const health = /^\/v1\/health\/service\/([^/]+)$/.exec(path);
    if (health !== null) {
      if (request.method !== "GET") throw new HttpFailure(405, `method ${request.method} not allowed`);
      return this.healthService(decodeURIComponent(health[1]!), url, token, response);
    }
    const kv = /^\/v1\/kv\/(.*)$/s.exec(path);
    if (kv !== null) return this.kvEndpoint(request, decodeURIComponent(kv[1]!), url, token, response);
    const session = /^\/v1\/session\/(create|renew|destroy|info)(?:\/(.*))?$/s.exec(path);
    if (session !== null) return this.sessionEndpoint(request, session[1]!, decodeURIComponent(session[2] ?? ""), token, response);
    const routes: [RegExp, (match: RegExpExecArray, body: unknown) => void][] = [
      [/^\/v1\/agent\/service\/register$/, (_match, body) => this.register(body, url.searchParams.get("replace-existing-checks"))],
      [/^\/v1\/agent\/service\/deregister\/([^/]+)$/, (match) => this.deregister(decodeURIComponent(match[1]!))],
      [/^\/v1\/agent\/check\/(pass|warn|fail)\/(.+)$/, (match) => this.ttlUpdate(decodeURIComponent(match[2]!), STATUS_OF[match[1]!]!, url.searchParams.get("note") ?? "")],
      [/^\/v1\/agent\/check\/update\/(.+)$/, (match, body) => this.ttlUpdateFromBody(decodeURIComponent(match[1]!), body)],
      [/^\/v1\/agent\/service\/maintenance\/([^/]+)$/, (match) => this.serviceMaintenance(decodeURIComponent(match[1]!), url)],
      [/^\/v1\/agent\/maintenance$/, () => this.nodeMaintenance(url)],
    ];
    for (const [pattern, run] of routes) {
      const match = pattern.exec(path);
      if (match === null) continue;
      if (request.method !== "PUT") throw new HttpFailure(405, `method ${request.method} not allowed`);
      if (token.kind !== "management") throw denied(token, "service", "write", null);
      const text = await readBody(request);
      run(match, text.trim() === "" ? null : parseJsonBody(text));
      send(response, 200, "");
      return;
    }
    send(response, 404, "404 page not found\n");
  }

  private resolveToken(request: http.IncomingMessage, url: URL): Token {
    if (this.options.token === undefined) return { kind: "management" };
    const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? "");
    const secret = headerValue(request.headers["x-consul-token"]) ?? bearer?.[1] ?? url.searchParams.get("token") ?? "";
    if (secret === "") return { kind: "anonymous" };
    if (secret === this.options.token) return { kind: "management" };
    const readable = this.options.readTokens?.[secret];
    if (readable !== undefined) return { kind: "read", accessor: accessorOf(secret), services: new Set([...readable.map((name) => name.toLowerCase()), ...(this.grants.get(secret) ?? [])]) };
    throw new HttpFailure(403, "ACL not found");
  }

  private async healthService(service: string, url: URL, token: Token, response: http.ServerResponse): Promise<void> {
    const name = service.toLowerCase();
    this.queriesByService.set(name, (this.queriesByService.get(name) ?? 0) + 1);
    const params = url.searchParams;
    const consistency = params.has("consistent") ? "consistent" : params.has("stale") ? "stale" : "default";
    this.queryLog.push({ service, index: params.get("index"), wait: params.get("wait"), passing: params.get("passing"), tags: params.getAll("tag"), consistency, params: Object.fromEntries(params), gzip: acceptsGzip(response) });
    const delayMs = this.delayFor("health", name);
    if (delayMs > 0) await sleep(delayMs);
    if (this.closed || response.destroyed) return;

    const immediate = this.takeFault("health", name, "GET");
    if (immediate !== null) return this.answerFault(immediate, response);

    this.checkDatacenter(url);
    const passing = parsePassing(url.searchParams);
    const tags = url.searchParams.getAll("tag");
    const minIndex = parseIndex(url.searchParams.get("index"));
    const waitMs = parseWait(url.searchParams.get("wait"));

    if (params.has("stale") && params.has("consistent")) throw new HttpFailure(400, "Cannot specify ?stale with ?consistent, conflicting semantics.");
    const group = params.get("sameness-group");
    if (group !== null && params.has("peer")) throw new HttpFailure(400, "Cannot specify both peer and sameness-group");
    const members = group === null ? null : this.options.samenessGroups?.[group];
    if (group !== null && members === undefined) throw new HttpFailure(500, `sameness group "${group}" not found`);
    const scope = { ns: params.get("ns") || "default", partition: params.get("partition") || "default", peer: params.get("peer") ?? "", dc: params.get("dc") || this.datacenter, members: members ?? null };
    const filter = params.has("filter") ? parseFilter(params.get("filter") ?? "") : null;
    const answer = () => this.answerHealth(name, tags, passing, token, response, { ...scope, filter, consistency });
    if (minIndex === 0 || this.serviceIndex(name) > minIndex) return answer();
    await this.hold({ endpoint: "health", target: name, changed: () => this.serviceIndex(name) > minIndex }, waitMs, response, answer);
  }

  /** The delay in force for a request: its target's, else its endpoint's. */
  private delayFor(endpoint: Endpoint, target: string): number {
    return this.delays.get(`${endpoint}:${target}`) ?? this.delays.get(endpoint) ?? 0;
  }

  /** Waits out the delay in force for the request; false when nothing is left to answer. */
  private async admit(endpoint: Endpoint, target: string, response: http.ServerResponse): Promise<boolean> {
    const delayMs = this.delayFor(endpoint, target);
    if (delayMs > 0) await sleep(delayMs);
    return !this.closed && !response.destroyed;
  }

  private checkDatacenter(url: URL): void {
    const dc = url.searchParams.get("dc");
    if (dc !== null && dc !== "" && dc !== this.datacenter && !(this.options.otherDatacenters ?? []).includes(dc)) throw new HttpFailure(500, "No path to datacenter");
  }

  /** A blocking query: answers when what it watches changes, a fault comes, or `wait` (plus jitter) runs out. */
  private async hold(watch: Pick<Waiter, "endpoint" | "target" | "changed">, waitMs: number, response: http.ServerResponse, answer: () => void): Promise<void> {
    // Consul spreads wake-ups: up to wait/16 more than asked.
    const timeoutMs = waitMs + this.random() * (waitMs / 16);
    await new Promise<void>((resolve) => {
      const waiter: Waiter = {
        ...watch,
        wake: (fault) => {
          if (!this.waiters.delete(waiter)) return;
          clearTimeout(timer);
          response.off("close", onClose);
          if (this.closed) response.destroy();
          else if (fault !== null) this.answerFault(fault, response);
          else answer();
          resolve();
        },
      };
      const timer = setTimeout(() => waiter.wake(null), timeoutMs);
      const onClose = () => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve();
      };
      response.on("close", onClose);
      this.waiters.add(waiter);
    });
  }

  private answerHealth(name: string, tags: readonly string[], passing: boolean, token: Token, response: http.ServerResponse, query: HealthScope): void {
    const wanted = tags.map((tag) => tag.toLowerCase());
    let filteredByAcl = false;
    const entries: unknown[] = [];
    const instances = [...this.services.values()]
      .filter((record) => record.Service.toLowerCase() === name)
      .filter((record) => record.Namespace === query.ns && record.Partition === query.partition && record.Datacenter === query.dc)
      // A sameness group answers from its first member with a passing instance, in the group's order.
      .filter((record) => (query.members === null ? record.PeerName === query.peer : record.PeerName === this.samenessMember(name, query)))
      .filter((record) => wanted.every((tag) => record.Tags.some((own) => own.toLowerCase() === tag)))
      .sort((a, b) => (a.ID < b.ID ? -1 : a.ID > b.ID ? 1 : 0));
    for (const record of instances) {
      if (!canRead(token, name)) {
        filteredByAcl = true;
        continue;
      }
      const checks = this.checksOf(record.ID);
      if (passing && checks.some((check) => check.Status !== "passing")) continue;
      const entry = this.entryJson(record, checks);
      if (query.filter !== null && !query.filter(entry)) continue;
      entries.push(entry);
    }
    const stale = query.consistency === "stale";
    const headers: Record<string, string> = {
      "X-Consul-Index": String(this.serviceIndex(name)),
      "X-Consul-KnownLeader": String(this.knownLeader),
      "X-Consul-LastContact": String(stale ? this.lastContactMs : 0),
      "X-Consul-Effective-Consistency": query.consistency === "default" ? "leader" : query.consistency,
    };
    // Consul hides the header from the anonymous token, so as not to leak what exists.
    if (filteredByAcl && token.kind !== "anonymous") headers["X-Consul-Results-Filtered-By-ACLs"] = "true";
    send(response, 200, JSON.stringify(entries), headers, "application/json");
  }

  /** The sameness group's first member (a peer, or "" here) with a passing instance of the service. */
  private samenessMember(name: string, query: HealthScope): string | null {
    for (const member of query.members ?? []) {
      const passing = [...this.services.values()].some(
        (record) => record.Service.toLowerCase() === name && record.PeerName === member && record.Namespace === query.ns && record.Partition === query.partition && this.checksOf(record.ID).every((check) => check.Status === "passing"),
      );
      if (passing) return member;
    }
    return null;
  }

  private answerFault(fault: Fault, response: http.ServerResponse): void {
    const headers: Record<string, string> = {};
    if (fault.retryAfter !== null) headers["Retry-After"] = fault.retryAfter;
    if (fault.kind === "raw") {
      const index = fault.index === "new" ? String(++this.globalIndex) : fault.index === null ? null : String(fault.index);
      if (index !== null) headers["X-Consul-Index"] = index;
    }
    const type = fault.kind === "raw" ? "application/json" : "text/plain; charset=utf-8";
    if (fault.cutAfter !== null) {
      response.writeHead(fault.status, { ...headers, "Content-Type": type, "Content-Length": String(fault.body.length) });
      response.write(fault.body.subarray(0, fault.cutAfter), () => response.destroy());
      return;
    }
    if (fault.chunked) {
      response.writeHead(fault.status, { ...headers, "Content-Type": type });
      response.end(fault.body);
      return;
    }
    send(response, fault.status, fault.body, headers, type, false);
  }

  private addFault(fault: Fault): void {
    if (fault.remaining <= 0) return;
    this.faults.push(fault);
    // Held queries answer with it at once, as if something had changed.
    for (const waiter of [...this.waiters]) {
      const taken = this.takeFault(waiter.endpoint, waiter.target, "GET");
      if (taken !== null) waiter.wake(taken);
    }
  }

  private takeFault(endpoint: Endpoint, target: string, method: string): Fault | null {
    const fault = this.faults.find((candidate) => candidate.endpoint === endpoint && (candidate.target === null || candidate.target === target) && (candidate.method === null || candidate.method === method));
    if (fault === undefined) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults = this.faults.filter((candidate) => candidate !== fault);
    return fault;
  }

  // ---- Sessions ----

  private async sessionEndpoint(request: http.IncomingMessage, operation: string, id: string, token: Token, response: http.ServerResponse): Promise<void> {
    const method = operation === "info" ? "GET" : "PUT";
    if (request.method !== method) throw new HttpFailure(405, `method ${request.method} not allowed`);
    // Consul reads a create's body only when its length is announced (a chunked one is ignored).
    const announced = Number(request.headers["content-length"] ?? 0) > 0;
    const body = await readBytes(request);
    if (!(await this.admit("session", id, response))) return;
    response.once("finish", () => this.sessionLog.push({ operation, id, at: Date.now(), status: response.statusCode }));
    const fault = this.takeFault("session", id, method);
    if (fault !== null) return this.answerFault(fault, response);
    if (operation !== "create" && id === "") throw new HttpFailure(400, "Missing session");

    if (operation === "info") {
      const session = this.sessions.get(id);
      const visible = session !== undefined && token.kind === "management" ? [this.sessionJson(session)] : [];
      send(response, 200, JSON.stringify(visible), { "X-Consul-Index": String(Math.max(1, this.sessionsIndex)) }, "application/json");
      return;
    }
    if (token.kind !== "management") throw denied(token, "session", "write", this.nodeName);
    if (operation === "create") {
      const created = this.createSession(announced ? parseJsonBody(body.toString("utf8")) : null);
      send(response, 200, JSON.stringify({ ID: created.ID }), {}, "application/json");
      return;
    }
    if (operation === "destroy") {
      if (this.sessions.has(id)) this.invalidateSession(id);
      send(response, 200, "true", {}, "application/json");
      return;
    }
    const session = this.sessions.get(id);
    if (session === undefined) throw new HttpFailure(404, `Session id '${id}' not found`);
    this.armSessionTtl(session);
    send(response, 200, JSON.stringify([this.sessionJson(session)]), {}, "application/json");
  }

  private createSession(body: unknown): SessionRecord {
    if (body !== null && !isRecord(body)) throw new HttpFailure(400, "Request decode failed: body must be a JSON object");
    const fields = body ?? {};
    const node = stringField(fields, "Node", this.nodeName);
    if (node !== this.nodeName) throw new HttpFailure(500, "Missing node registration");
    const behavior = stringField(fields, "Behavior", "") || "release";
    if (behavior !== "release" && behavior !== "delete") throw new HttpFailure(500, `Invalid Behavior setting '${behavior}'`);
    const ttl = stringField(fields, "TTL", "");
    const ttlMs = ttl === "" ? 0 : parseGoDuration(ttl);
    if (ttlMs === null) throw new HttpFailure(500, `Session TTL '${ttl}' invalid: time: invalid duration "${ttl}"`);
    const minMs = this.options.sessionTtlMinMs ?? 10_000;
    if (ttlMs !== 0 && (ttlMs < minMs || ttlMs > SESSION_TTL_MAX_MS)) {
      throw new HttpFailure(500, `Invalid Session TTL '${Math.round(ttlMs * 1e6)}', must be between [${formatGoDuration(minMs)}=${formatGoDuration(SESSION_TTL_MAX_MS)}]`);
    }
    // Listing checks replaces the default serfHealth; an empty list binds the session to none.
    const listed = ["NodeChecks", "Checks"].find((name) => field(fields, name) !== undefined);
    const checks = listed === undefined ? [SERF_CHECK] : arrayField(fields, listed);
    for (const checkId of checks) {
      const check = typeof checkId === "string" ? this.checks.get(checkId) : undefined;
      if (check === undefined || check.ServiceID !== "") throw new HttpFailure(500, `Missing check '${String(checkId)}' registration`);
      if (check.Status === "critical") throw new HttpFailure(500, `Check '${check.CheckID}' is in critical state`);
    }
    this.globalIndex += 1;
    this.sessionsIndex = this.globalIndex;
    const session: SessionRecord = {
      ID: randomUUID(),
      Name: stringField(fields, "Name", ""),
      Node: node,
      lockDelayMs: parseLockDelay(field(fields, "LockDelay")),
      Behavior: behavior,
      TTL: ttl,
      ttlMs,
      NodeChecks: checks as string[],
      CreateIndex: this.globalIndex,
      ModifyIndex: this.globalIndex,
      timer: null,
    };
    this.sessions.set(session.ID, session);
    this.armSessionTtl(session);
    return session;
  }

  private armSessionTtl(session: SessionRecord): void {
    if (session.timer !== null) clearTimeout(session.timer);
    session.timer = null;
    if (session.ttlMs === 0 || this.closed) return;
    session.timer = setTimeout(() => this.invalidateSession(session.ID), session.ttlMs);
    session.timer.unref();
  }

  /** The session goes, and with it its locks: released (or deleted) at one index, each with its lock-delay. */
  private invalidateSession(id: string): void {
    const session = this.sessions.get(id);
    if (session === undefined) return;
    if (session.timer !== null) clearTimeout(session.timer);
    this.sessions.delete(id);
    this.globalIndex += 1;
    const index = this.globalIndex;
    this.sessionsIndex = index;
    const delayUntil = Date.now() + Math.min(session.lockDelayMs, MAX_LOCK_DELAY_MS);
    for (const entry of [...this.kv.values()]) {
      if (entry.Session !== id) continue;
      if (session.Behavior === "delete") this.kv.delete(entry.Key);
      else {
        entry.Session = "";
        entry.ModifyIndex = index;
      }
      this.keyChanges.set(entry.Key, index);
      this.kvIndex = index;
      if (session.lockDelayMs > 0) this.lockDelays.set(entry.Key, delayUntil);
    }
    this.wakeWaiters();
  }

  private sessionJson(session: SessionRecord): unknown {
    return {
      ID: session.ID,
      Name: session.Name,
      Node: session.Node,
      LockDelay: Math.round(session.lockDelayMs * 1e6),
      Behavior: session.Behavior,
      TTL: session.TTL,
      NodeChecks: session.NodeChecks,
      ServiceChecks: null,
      CreateIndex: session.CreateIndex,
      ModifyIndex: session.ModifyIndex,
    };
  }

  // ---- KV ----

  private async kvEndpoint(request: http.IncomingMessage, key: string, url: URL, token: Token, response: http.ServerResponse): Promise<void> {
    const method = request.method ?? "";
    if (!["GET", "PUT", "DELETE"].includes(method)) throw new HttpFailure(405, `method ${method} not allowed`);
    const params = url.searchParams;
    if (params.has("keys") || (params.has("recurse") && method !== "GET")) throw new HttpFailure(400, "the emulator supports ?recurse on reads only, and not ?keys");
    const body = await readBytes(request);
    if (!(await this.admit("kv", key, response))) return;
    const fault = this.takeFault("kv", key, method);
    if (fault !== null) return this.answerFault(fault, response);
    if (key === "") throw new HttpFailure(400, "Missing key name");
    this.checkDatacenter(url);
    if (token.kind !== "management") throw denied(token, "key", method === "GET" ? "read" : "write", key);

    if (method === "GET" && params.has("recurse")) {
      const minIndex = parseIndex(params.get("index"));
      const answer = () => this.answerTree(key, response);
      if (minIndex === 0 || this.kvTableIndex() > minIndex) return answer();
      // Consul answers a recursive read with the highest index under the prefix; the table's is a safe stand-in (it wakes more often, never less).
      const since = this.kvIndex;
      await this.hold({ endpoint: "kv", target: key, changed: () => this.kvIndex !== since }, parseWait(params.get("wait")), response, answer);
      return;
    }
    if (method === "GET") {
      const minIndex = parseIndex(params.get("index"));
      const waitMs = parseWait(params.get("wait"));
      const answer = () => this.answerKey(key, params.has("raw"), response);
      if (minIndex === 0 || this.keyIndex(key) > minIndex) return answer();
      const since = this.keyChanges.get(key) ?? 0;
      await this.hold({ endpoint: "kv", target: key, changed: () => (this.keyChanges.get(key) ?? 0) !== since }, waitMs, response, answer);
      return;
    }
    if (method === "DELETE") {
      send(response, 200, JSON.stringify(this.deleteKey(key, params)), {}, "application/json");
      return;
    }
    const exclusive = ["cas", "acquire", "release"].filter((flag) => params.has(flag));
    if (exclusive.length > 1) throw new HttpFailure(400, `Conflicting flags: ${encodeSorted(params)}\n`);
    const declared = Number(request.headers["content-length"] ?? body.length);
    if (declared > KV_MAX_VALUE_BYTES) {
      throw new HttpFailure(413, `Request body(${declared} bytes) too large, max size: ${KV_MAX_VALUE_BYTES} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.`);
    }
    send(response, 200, JSON.stringify(this.putKey(key, body, params)), {}, "application/json");
  }

  /** Consul's X-Consul-Index for a key: its table's, the last KV write of any key (never below 1). */
  private kvTableIndex(): number {
    return Math.max(1, this.kvIndex);
  }

  /** What a read of one key answers with: the entry's ModifyIndex, or the table's when the key is absent (kvs_endpoint.go Get). */
  private keyIndex(key: string): number {
    const entry = this.kv.get(key);
    return entry === undefined ? this.kvTableIndex() : Math.max(1, entry.ModifyIndex);
  }

  private answerKey(key: string, raw: boolean, response: http.ServerResponse): void {
    const headers = { "X-Consul-Index": String(this.keyIndex(key)), "X-Consul-KnownLeader": String(this.knownLeader), "X-Consul-LastContact": "0" };
    const entry = this.kv.get(key);
    if (entry === undefined) send(response, 404, "", headers);
    else if (raw) send(response, 200, entry.Value ?? Buffer.alloc(0), headers, "text/plain");
    else send(response, 200, JSON.stringify([kvJson(entry)]), headers, "application/json");
  }

  /** `?recurse`: every key under the prefix, sorted; 404 when none. */
  private answerTree(prefix: string, response: http.ServerResponse): void {
    const headers = { "X-Consul-Index": String(this.kvTableIndex()), "X-Consul-KnownLeader": String(this.knownLeader), "X-Consul-LastContact": "0" };
    const entries = [...this.kv.values()].filter((entry) => entry.Key.startsWith(prefix)).sort((a, b) => (a.Key < b.Key ? -1 : a.Key > b.Key ? 1 : 0));
    if (entries.length === 0) send(response, 404, "", headers);
    else send(response, 200, JSON.stringify(entries.map(kvJson)), headers, "application/json");
  }

  private putKey(key: string, body: Buffer, params: URLSearchParams): boolean {
    const flags = params.has("flags") ? parseUint(params.get("flags") ?? "") : 0;
    const existing = this.kv.get(key);
    const next: KvRecord = { Key: key, Value: body.length === 0 ? null : body, Flags: flags, LockIndex: existing?.LockIndex ?? 0, Session: existing?.Session ?? "", CreateIndex: 0, ModifyIndex: 0 };
    if (params.has("acquire")) {
      const session = params.get("acquire") ?? "";
      // Consul's leader refuses during a lock-delay before anything else is looked at.
      if ((this.lockDelays.get(key) ?? 0) > Date.now()) return false;
      if (session === "") throw new HttpFailure(500, "missing session");
      if (!this.sessions.has(session)) throw new HttpFailure(500, `invalid session "${session}"`);
      if (existing !== undefined && existing.Session !== "" && existing.Session !== session) return false;
      if (existing?.Session !== session) next.LockIndex += 1;
      next.Session = session;
    } else if (params.has("release")) {
      const session = params.get("release") ?? "";
      if (session === "") throw new HttpFailure(500, "missing session");
      if (existing === undefined || existing.Session !== session) return false;
      next.Session = "";
    } else if (params.has("cas")) {
      const cas = parseUint(params.get("cas") ?? "");
      if (cas === 0 ? existing !== undefined : existing?.ModifyIndex !== cas) return false;
    }
    this.setKey(existing, next);
    return true;
  }

  private setKey(existing: KvRecord | undefined, next: KvRecord): void {
    // Consul skips a write that changes nothing: no new index, nobody woken.
    if (existing !== undefined && kvFingerprint(existing) === kvFingerprint(next)) return;
    this.globalIndex += 1;
    next.CreateIndex = existing?.CreateIndex ?? this.globalIndex;
    next.ModifyIndex = this.globalIndex;
    this.kv.set(next.Key, next);
    this.keyChanges.set(next.Key, this.globalIndex);
    this.kvIndex = this.globalIndex;
    this.wakeWaiters();
  }

  private deleteKey(key: string, params: URLSearchParams): boolean {
    const existing = this.kv.get(key);
    if (params.has("cas")) {
      const cas = parseUint(params.get("cas") ?? "");
      if (existing === undefined) return true;
      if (existing.ModifyIndex !== cas) return false;
    }
    if (existing === undefined) return true;
    this.globalIndex += 1;
    this.kv.delete(key);
    // The tombstone keeps the table's index from going back.
    this.keyChanges.set(key, this.globalIndex);
    this.kvIndex = this.globalIndex;
    this.wakeWaiters();
    return true;
  }

  // ---- The catalog ----

  private register(body: unknown, replaceExistingChecks: string | null): void {
    if (!isRecord(body)) throw new HttpFailure(400, "Request decode failed: body must be a JSON object");
    const name = stringField(body, "Name", "");
    if (name === "") throw new HttpFailure(400, "Missing service name");
    const id = stringField(body, "ID", "") || name;
    const port = field(body, "Port") ?? 0;
    if (typeof port !== "number" || !Number.isInteger(port)) throw new HttpFailure(400, `Request decode failed: json: cannot unmarshal ${typeof port} into Go struct field ServiceDefinition.Port of type int`);
    const tags = field(body, "Tags") ?? [];
    if (!Array.isArray(tags) || !tags.every((tag) => typeof tag === "string")) throw new HttpFailure(400, "Request decode failed: Tags must be an array of strings");
    const meta = field(body, "Meta") ?? {};
    if (!isRecord(meta) || !Object.values(meta).every((value) => typeof value === "string")) throw new HttpFailure(400, "Request decode failed: Meta must map strings to strings");
    const weights = parseWeights(field(body, "Weights"));
    const definitions = [field(body, "Check"), ...arrayField(body, "Checks")].filter((check): check is Record<string, unknown> => isRecord(check) && Object.keys(check).length > 0);
    // Every check is validated before anything changes: a bad one leaves the catalog as it was.
    const checks = definitions.map((definition, position) => checkSpec(definition, id, name, position, definitions.length));

    const previous = this.services.get(id);
    this.write([name, ...(previous === undefined ? [] : [previous.Service])], () => {
      this.services.set(id, {
        ID: id,
        Service: name,
        Namespace: stringField(body, "Namespace", "") || "default",
        Partition: stringField(body, "Partition", "") || "default",
        PeerName: stringField(body, "PeerName", ""),
        Datacenter: stringField(body, "Datacenter", "") || this.datacenter,
        TaggedAddresses: parseTaggedAddresses(field(body, "TaggedAddresses")),
        Tags: tags as string[],
        Address: stringField(body, "Address", ""),
        Meta: meta as Record<string, string>,
        Port: port,
        Weights: weights,
        EnableTagOverride: field(body, "EnableTagOverride") === true,
        CreateIndex: previous?.CreateIndex ?? 0,
        ModifyIndex: previous?.ModifyIndex ?? 0,
      });
      if (replaceExistingChecks === "true" || replaceExistingChecks === "1") {
        for (const check of this.checksOf(id)) if (check.ServiceID === id && !check.CheckID.startsWith(SERVICE_MAINTENANCE_PREFIX)) this.removeCheck(check.CheckID);
      }
      for (const spec of checks) this.addServiceCheck(spec);
    });
  }

  private addServiceCheck(spec: CheckSpec): void {
    const existing = this.checks.get(spec.CheckID);
    if (existing?.timer) clearTimeout(existing.timer);
    // Re-registering keeps a TTL check's current status, as the agent restores its check state.
    const check = this.newCheck({
      CheckID: spec.CheckID,
      Name: spec.Name,
      Status: existing?.Status ?? spec.Status,
      Output: existing?.Output ?? "",
      Notes: spec.Notes,
      ServiceID: spec.ServiceID,
      ServiceName: spec.ServiceName,
      Type: "ttl",
    });
    if (existing !== undefined) {
      check.CreateIndex = existing.CreateIndex;
      check.ModifyIndex = existing.ModifyIndex;
    }
    check.ttlMs = spec.ttlMs;
    this.checks.set(spec.CheckID, check);
    this.armTtl(check);
  }

  private deregister(id: string): void {
    const record = this.services.get(id);
    if (record === undefined) throw new HttpFailure(404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
    this.write([record.Service], () => {
      this.services.delete(id);
      for (const check of this.checksOf(id)) if (check.ServiceID === id) this.removeCheck(check.CheckID);
    });
  }

  private ttlUpdate(checkId: string, status: CheckStatus, output: string): void {
    const check = this.checks.get(checkId);
    if (check === undefined) throw new HttpFailure(404, `Unknown check ID "${checkId}". Ensure that the check ID is passed, not the check name.`);
    if (check.ttlMs === null) throw new HttpFailure(500, `CheckID "${checkId}" does not have associated TTL`);
    this.armTtl(check);
    this.updateCheck(checkId, status, output);
  }

  private ttlUpdateFromBody(checkId: string, body: unknown): void {
    const status = isRecord(body) ? field(body, "Status") : undefined;
    if (!isStatus(status)) throw new HttpFailure(400, `Invalid check status: ${JSON.stringify(status)}`);
    this.ttlUpdate(checkId, status, isRecord(body) ? stringField(body, "Output", "") : "");
  }

  private serviceMaintenance(serviceId: string, url: URL): void {
    const enable = parseEnable(url);
    const record = this.services.get(serviceId);
    if (record === undefined) throw new HttpFailure(404, `Unknown service ID "${serviceId}". Ensure that the service ID is passed, not the service name.`);
    const checkId = `${SERVICE_MAINTENANCE_PREFIX}${serviceId}`;
    const reason = url.searchParams.get("reason") || "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";
    this.write([record.Service], () => {
      if (!enable) this.removeCheck(checkId);
      else if (!this.checks.has(checkId)) {
        this.checks.set(checkId, this.newCheck({ CheckID: checkId, Name: "Service Maintenance Mode", Status: "critical", Notes: reason, ServiceID: serviceId, ServiceName: record.Service, Type: "maintenance" }));
      }
    });
  }

  private nodeMaintenance(url: URL): void {
    const enable = parseEnable(url);
    const reason = url.searchParams.get("reason") || "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
    this.write(this.allServiceNames(), () => {
      if (!enable) this.removeCheck(NODE_MAINTENANCE);
      else if (!this.checks.has(NODE_MAINTENANCE)) {
        this.checks.set(NODE_MAINTENANCE, this.newCheck({ CheckID: NODE_MAINTENANCE, Name: "Node Maintenance Mode", Status: "critical", Notes: reason, Type: "maintenance" }));
      }
    });
  }

  private updateCheck(checkId: string, status: CheckStatus, output: string): void {
    const check = this.checks.get(checkId);
    if (check === undefined) return;
    const affected = check.ServiceID === "" ? this.allServiceNames() : [check.ServiceName];
    this.write(affected, () => {
      check.Status = status;
      check.Output = output;
    });
    // A session is bound to its checks: one going critical invalidates it.
    if (status === "critical") for (const session of [...this.sessions.values()]) if (session.NodeChecks.includes(checkId)) this.invalidateSession(session.ID);
  }

  /**
   * Runs a change; only if what a health query would show differs does it take a new index
   * (Consul skips identical writes: a TTL pass on a passing check with the same output is none).
   */
  private write(serviceNames: readonly string[], change: () => void): void {
    const names = [...new Set(serviceNames.map((name) => name.toLowerCase()))];
    const before = names.map((name) => this.fingerprint(name));
    const servicesBefore = new Map([...this.services].map(([id, record]) => [id, serviceFingerprint(record)]));
    const checksBefore = new Map([...this.checks].map(([id, check]) => [id, checkFingerprint(check)]));
    change();
    const changed = names.filter((name, position) => this.fingerprint(name) !== before[position]);
    if (changed.length === 0) return;
    this.globalIndex += 1;
    const index = this.globalIndex;
    this.catalogIndex = index;
    for (const [id, record] of this.services) {
      if (!servicesBefore.has(id)) record.CreateIndex = index;
      if (servicesBefore.get(id) !== serviceFingerprint(record)) record.ModifyIndex = index;
    }
    for (const [id, check] of this.checks) {
      if (!checksBefore.has(id)) check.CreateIndex = index;
      if (checksBefore.get(id) !== checkFingerprint(check)) check.ModifyIndex = index;
    }
    for (const name of changed) {
      if ([...this.services.values()].some((record) => record.Service.toLowerCase() === name)) this.serviceIndexes.set(name, index);
      else {
        // The last instance left: Consul answers for a missing service with this index.
        this.serviceIndexes.delete(name);
        this.extinctionIndex = index;
      }
    }
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    for (const waiter of [...this.waiters]) if (waiter.changed()) waiter.wake(null);
  }

  private fingerprint(name: string): string {
    const records = [...this.services.values()].filter((record) => record.Service.toLowerCase() === name).sort((a, b) => (a.ID < b.ID ? -1 : 1));
    return JSON.stringify(records.map((record) => [serviceFingerprint(record), this.checksOf(record.ID).map(checkFingerprint)]));
  }

  private checksOf(serviceId: string): CheckRecord[] {
    return [...this.checks.values()].filter((check) => check.ServiceID === "" || check.ServiceID === serviceId).sort((a, b) => (a.CheckID < b.CheckID ? -1 : a.CheckID > b.CheckID ? 1 : 0));
  }

  private allServiceNames(): string[] {
    return [...new Set([...this.services.values()].map((record) => record.Service))];
  }

  private newCheck(fields: Partial<CheckRecord> & Pick<CheckRecord, "CheckID" | "Name" | "Status">): CheckRecord {
    return { Notes: "", Output: "", ServiceID: "", ServiceName: "", Type: "", CreateIndex: 0, ModifyIndex: 0, ttlMs: null, timer: null, ...fields };
  }

  private removeCheck(checkId: string): void {
    const check = this.checks.get(checkId);
    if (check?.timer) clearTimeout(check.timer);
    this.checks.delete(checkId);
  }

  /** A TTL check that is not updated in time turns critical, as the agent does. */
  private armTtl(check: CheckRecord): void {
    if (check.timer !== null) clearTimeout(check.timer);
    if (check.ttlMs === null || this.closed) return;
    check.timer = setTimeout(() => {
      check.timer = null;
      if (this.checks.get(check.CheckID) === check) this.updateCheck(check.CheckID, "critical", `TTL expired (last output before timeout follows): ${check.Output}`);
    }, check.ttlMs);
    check.timer.unref();
  }

  private entryJson(record: ServiceRecord, checks: readonly CheckRecord[]): unknown {
    const address = this.nodeAddress;
    const serviceAddress = record.Address === "" ? address : record.Address;
    return {
      Node: {
        ID: NODE_ID,
        Node: this.nodeName,
        Address: address,
        Datacenter: record.Datacenter,
        TaggedAddresses: { lan: address, lan_ipv4: address, wan: address, wan_ipv4: address },
        Meta: { "consul-network-segment": "" },
        CreateIndex: 5,
        ModifyIndex: 5,
      },
      Service: {
        ID: record.ID,
        Service: record.Service,
        Tags: record.Tags,
        Address: record.Address,
        TaggedAddresses: record.TaggedAddresses ?? (record.Address === "" ? undefined : { lan_ipv4: { Address: serviceAddress, Port: record.Port }, wan_ipv4: { Address: serviceAddress, Port: record.Port } }),
        Meta: record.Meta,
        Port: record.Port,
        Weights: record.Weights,
        EnableTagOverride: record.EnableTagOverride,
        Proxy: { Mode: "", MeshGateway: {}, Expose: {} },
        Connect: {},
        PeerName: record.PeerName,
        Namespace: record.Namespace,
        Partition: record.Partition,
        CreateIndex: record.CreateIndex,
        ModifyIndex: record.ModifyIndex,
      },
      Checks: checks.map((check) => ({
        Node: this.nodeName,
        CheckID: check.CheckID,
        Name: check.Name,
        Status: check.Status,
        Notes: check.Notes,
        Output: check.Output,
        ServiceID: check.ServiceID,
        ServiceName: check.ServiceName,
        ServiceTags: check.ServiceID === "" ? [] : record.Tags,
        // Enterprise fields, as the docs' samples show them (Consul CE leaves them out).
        Namespace: record.Namespace,
        Partition: record.Partition,
        Type: check.Type,
        Interval: "",
        Timeout: "",
        ExposedPort: 0,
        Definition: {},
        CreateIndex: check.CreateIndex,
        ModifyIndex: check.ModifyIndex,
      })),
    };
  }
}

interface CheckSpec {
  CheckID: string;
  Name: string;
  Status: CheckStatus;
  Notes: string;
  ServiceID: string;
  ServiceName: string;
  ttlMs: number;
}

function checkSpec(definition: Record<string, unknown>, serviceId: string, serviceName: string, position: number, count: number): CheckSpec {
  // Consul's defaults: `service:<ID>`, numbered from 1 when a service has several checks.
  const checkId = stringField(definition, "CheckID", "") || stringField(definition, "ID", "") || (count > 1 ? `service:${serviceId}:${position + 1}` : `service:${serviceId}`);
  const ttl = field(definition, "TTL");
  if (typeof ttl !== "string") throw new HttpFailure(400, "Invalid check: the emulator supports TTL checks only");
  const ttlMs = parseGoDuration(ttl);
  if (ttlMs === null || ttlMs <= 0) throw new HttpFailure(400, `Invalid check: TTL must be > 0 (got ${JSON.stringify(ttl)})`);
  // Consul registers a check as critical unless told otherwise, so nothing serves before it is proven.
  const status = stringField(definition, "Status", "critical");
  if (!isStatus(status)) throw new HttpFailure(400, `Invalid check status: ${JSON.stringify(status)}`);
  return { CheckID: checkId, Name: stringField(definition, "Name", "") || `Service '${serviceName}' check`, Status: status, Notes: stringField(definition, "Notes", ""), ServiceID: serviceId, ServiceName: serviceName, ttlMs };
}

function kvJson(entry: KvRecord): unknown {
  return {
    LockIndex: entry.LockIndex,
    Key: entry.Key,
    Flags: entry.Flags,
    Value: entry.Value === null ? null : entry.Value.toString("base64"),
    ...(entry.Session === "" ? {} : { Session: entry.Session }),
    CreateIndex: entry.CreateIndex,
    ModifyIndex: entry.ModifyIndex,
  };
}

function kvFingerprint(entry: KvRecord): string {
  return JSON.stringify([entry.Value?.toString("base64") ?? null, entry.Flags, entry.LockIndex, entry.Session]);
}

function faultTarget(scope: FaultScope): { endpoint: Endpoint; target: string | null } {
  const endpoint = scope.endpoint ?? "health";
  const target = scope.target ?? null;
  return { endpoint, target: endpoint === "health" && target !== null ? target.toLowerCase() : target };
}

/** Consul's session LockDelay: a Go duration string or nanoseconds; below 1000 it means seconds. */
function parseLockDelay(value: unknown): number {
  if (value === undefined || value === null) return 15_000;
  let ns: number;
  if (typeof value === "string") {
    const ms = parseGoDuration(value);
    if (ms === null) throw new HttpFailure(400, `Request decode failed: time: invalid duration "${value}"`);
    ns = ms * 1e6;
  } else if (typeof value === "number") ns = value;
  else throw new HttpFailure(400, "Request decode failed: LockDelay must be a duration");
  if (ns < 1000) ns *= 1e9;
  return ns / 1e6;
}

/** Go's strconv.ParseUint as Consul uses it for ?cas and ?flags (a failure is a 500). */
function parseUint(text: string): number {
  if (!/^[0-9]+$/.test(text)) throw new HttpFailure(500, `strconv.ParseUint: parsing ${JSON.stringify(text)}: invalid syntax`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new HttpFailure(400, `the emulator keeps ${text} only up to 2^53`);
  return value;
}

/** Go's url.Values.Encode: keys sorted. */
function encodeSorted(params: URLSearchParams): string {
  const sorted = new URLSearchParams([...params].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return sorted.toString();
}

/** Go's Duration.String for whole milliseconds: "500ms", "10s", "1m30s", "24h0m0s". */
function formatGoDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = (ms % 60_000) / 1000;
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

function serviceFingerprint(record: ServiceRecord): string {
  const { CreateIndex: _create, ModifyIndex: _modify, ...fields } = record;
  return JSON.stringify(fields);
}

function checkFingerprint(check: CheckRecord): string {
  return JSON.stringify([check.CheckID, check.Name, check.Status, check.Output, check.Notes, check.ServiceID, check.ServiceName]);
}

type Token = { kind: "management" } | { kind: "anonymous" } | { kind: "read"; accessor: string; services: Set<string> };

/** The anonymous token's fixed AccessorID, as Consul creates it. */
const ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002";

/** A token's AccessorID: fixed per secret, so that a test can expect it. */
export function accessorOf(secret: string): string {
  const hex = createHash("sha256").update(secret).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** Consul's acl.PermissionDeniedError text (acl/errors.go): who lacks which permission on what. */
function denied(token: Token, resource: string, level: "read" | "write", name: string | null): HttpFailure {
  const accessor = token.kind === "read" ? token.accessor : ANONYMOUS_ACCESSOR;
  return new HttpFailure(403, `Permission denied: token with AccessorID '${accessor}' lacks permission '${resource}:${level}'${name === null ? "" : ` on ${JSON.stringify(name)}`}`);
}

interface HealthScope {
  ns: string;
  partition: string;
  peer: string;
  dc: string;
  members: readonly string[] | null;
  filter: ((entry: unknown) => boolean) | null;
  consistency: "default" | "stale" | "consistent";
}

/**
 * The part of Consul's filter language (go-bexpr) the tests use: `Sel == "v"`, `Sel != "v"`,
 * `"v" in Sel`, `"v" not in Sel`, joined by `and`; a selector is a dotted path in the entry
 * (`Service.Tags`, `Service.Meta.version`, `Node.Node`). Anything else is Consul's 400.
 */
export function parseFilter(text: string): (entry: unknown) => boolean {
  const clauses = text.split(/\s+and\s+/);
  const tests = clauses.map((clause) => {
    const compare = /^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(==|!=)\s*"([^"]*)"\s*$/.exec(clause);
    if (compare !== null) {
      const [, selector, op, value] = compare;
      return (entry: unknown) => (String(select(entry, selector!)) === value) === (op === "==");
    }
    const contains = /^\s*"([^"]*)"\s+(in|not in)\s+([A-Za-z][A-Za-z0-9_.-]*)\s*$/.exec(clause);
    if (contains !== null) {
      const [, value, op, selector] = contains;
      return (entry: unknown) => {
        const found = select(entry, selector!);
        const has = Array.isArray(found) ? found.includes(value) : isRecord(found) ? value! in found : typeof found === "string" && found.includes(value!);
        return has === (op === "in");
      };
    }
    throw new HttpFailure(400, `Failed to create boolean expression evaluator: 1:1 (0): no match found, expected: "!", "(", "not" or [ \t\r\n]`);
  });
  return (entry) => tests.every((test) => test(entry));
}

function select(entry: unknown, selector: string): unknown {
  let value: unknown = entry;
  for (const part of selector.split(".")) value = isRecord(value) ? value[part] : undefined;
  return value;
}

function canRead(token: Token, service: string): boolean {
  if (token.kind === "management") return true;
  if (token.kind === "anonymous") return false;
  return token.services.has(service);
}

const STATUS_OF: Record<string, CheckStatus> = { pass: "passing", warn: "warning", fail: "critical" };

function isStatus(value: unknown): value is CheckStatus {
  return value === "passing" || value === "warning" || value === "critical";
}

function parseTaggedAddresses(value: unknown): Record<string, { Address: string; Port: number }> | null {
  if (value === undefined || value === null) return null;
  if (!isRecord(value)) throw new HttpFailure(400, "Request decode failed: TaggedAddresses must be an object");
  const result: Record<string, { Address: string; Port: number }> = {};
  for (const [name, entry] of Object.entries(value)) {
    if (!isRecord(entry) || typeof entry["Address"] !== "string" || typeof entry["Port"] !== "number") throw new HttpFailure(400, `Request decode failed: TaggedAddresses.${name} must have an Address and a Port`);
    result[name] = { Address: entry["Address"], Port: entry["Port"] };
  }
  return result;
}

function acceptsGzip(response: http.ServerResponse): boolean {
  return /\bgzip\b/i.test(String(response.req?.headers["accept-encoding"] ?? ""));
}

function parseWeights(value: unknown): { Passing: number; Warning: number } {
  if (value === undefined || value === null) return { Passing: 1, Warning: 1 };
  if (!isRecord(value)) throw new HttpFailure(400, "Request decode failed: Weights must be an object");
  const passing = field(value, "Passing") ?? 0;
  const warning = field(value, "Warning") ?? 0;
  if (typeof passing !== "number" || typeof warning !== "number" || !Number.isInteger(passing) || !Number.isInteger(warning)) {
    throw new HttpFailure(400, "Request decode failed: Weights.Passing and Weights.Warning must be integers");
  }
  // Consul treats an all-zero Weights as unset.
  if (passing === 0 && warning === 0) return { Passing: 1, Warning: 1 };
  if (passing < 1) throw new HttpFailure(400, "Invalid Weights: Passing must be greater than 0");
  if (warning < 0) throw new HttpFailure(400, "Invalid Weights: Warning must be greater or equal than 0");
  return { Passing: passing, Warning: warning };
}

function parsePassing(params: URLSearchParams): boolean {
  if (!params.has("passing")) return false;
  const value = params.get("passing") ?? "";
  if (value === "") return true;
  // Go's strconv.ParseBool.
  if (["1", "t", "T", "TRUE", "true", "True"].includes(value)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(value)) return false;
  throw new HttpFailure(400, "Invalid value for ?passing");
}

function parseIndex(value: string | null): number {
  if (value === null || value === "") return 0;
  if (!/^[0-9]+$/.test(value)) throw new HttpFailure(400, "Invalid index");
  return Number(value);
}

function parseWait(value: string | null): number {
  if (value === null || value === "") return DEFAULT_WAIT_MS;
  const ms = parseGoDuration(value);
  if (ms === null) throw new HttpFailure(400, "Invalid wait time");
  if (ms <= 0) return DEFAULT_WAIT_MS;
  return Math.min(ms, MAX_WAIT_MS);
}

function parseEnable(url: URL): boolean {
  const value = url.searchParams.get("enable");
  if (value === null || value === "") throw new HttpFailure(400, "Missing value for enable");
  if (value === "true") return true;
  if (value === "false") return false;
  throw new HttpFailure(400, `Invalid value for enable: "${value}"`);
}

const DURATION_UNITS_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go's time.ParseDuration, in ms: "300ms", "1.5h", "2h45m"; a bare number only as "0". */
export function parseGoDuration(text: string): number | null {
  const signed = /^([-+]?)(.*)$/s.exec(text);
  if (signed === null) return null;
  let rest = signed[2]!;
  if (rest === "0") return 0;
  if (rest === "") return null;
  let total = 0;
  while (rest !== "") {
    const part = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/.exec(rest);
    if (part === null) return null;
    total += Number(part[1]) * DURATION_UNITS_MS[part[2]!]!;
    rest = rest.slice(part[0].length);
  }
  return signed[1] === "-" ? -total : total;
}

/** Consul decodes request bodies case-insensitively ("Name" or "name"). */
function field(object: Record<string, unknown>, name: string): unknown {
  if (name in object) return object[name];
  const lower = name.toLowerCase();
  const key = Object.keys(object).find((candidate) => candidate.toLowerCase() === lower);
  return key === undefined ? undefined : object[key];
}

function stringField(object: Record<string, unknown>, name: string, fallback: string): string {
  const value = field(object, name);
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "string") throw new HttpFailure(400, `Request decode failed: ${name} must be a string`);
  return value;
}

function arrayField(object: Record<string, unknown>, name: string): unknown[] {
  const value = field(object, name);
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new HttpFailure(400, `Request decode failed: ${name} must be an array`);
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** `compress` false: a raw fault's bytes go out exactly as the test gave them. */
function send(response: http.ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, type = "text/plain; charset=utf-8", compress = true): void {
  if (response.headersSent || response.destroyed) return;
  const plain = typeof body === "string" ? Buffer.from(body) : body;
  // Consul's gziphandler compresses every answer to a client that asks, whatever its size.
  const gzip = compress && acceptsGzip(response);
  const bytes = gzip ? gzipSync(plain) : plain;
  response.writeHead(status, { ...headers, "Content-Type": type, "Content-Length": String(bytes.length), ...(gzip ? { "Content-Encoding": "gzip", Vary: "Accept-Encoding" } : {}) });
  response.end(bytes);
}

async function readBody(request: http.IncomingMessage): Promise<string> {
  return (await readBytes(request)).toString("utf8");
}

async function readBytes(request: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) throw new HttpFailure(413, "Request body too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HttpFailure(400, `Request decode failed: ${(error as Error).message}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- A small client of the emulator's agent API, for tests ----

export interface ServiceRegistration {
  ID?: string;
  Name: string;
  Address?: string;
  Port?: unknown;
  Tags?: string[];
  Meta?: Record<string, string>;
  Weights?: { Passing: number; Warning: number };
  Check?: Record<string, unknown>;
  Checks?: Record<string, unknown>[];
  TaggedAddresses?: Record<string, { Address: string; Port: number }>;
  /** Consul Enterprise's namespace and partition of the service. */
  Namespace?: string;
  Partition?: string;
  /** Emulator only: the instance as imported from this cluster peer. */
  PeerName?: string;
  /** Emulator only: the instance is in this (other) datacenter. */
  Datacenter?: string;
}

export class AgentApi {
  constructor(
    private readonly url: string,
    private readonly token?: string,
  ) {}

  register(service: ServiceRegistration): Promise<void> {
    return this.put("/v1/agent/service/register", service);
  }

  deregister(id: string): Promise<void> {
    return this.put(`/v1/agent/service/deregister/${encodeURIComponent(id)}`);
  }

  pass(checkId: string, note?: string): Promise<void> {
    return this.put(`/v1/agent/check/pass/${encodeURIComponent(checkId)}${note === undefined ? "" : `?note=${encodeURIComponent(note)}`}`);
  }

  warn(checkId: string, note?: string): Promise<void> {
    return this.put(`/v1/agent/check/warn/${encodeURIComponent(checkId)}${note === undefined ? "" : `?note=${encodeURIComponent(note)}`}`);
  }

  fail(checkId: string, note?: string): Promise<void> {
    return this.put(`/v1/agent/check/fail/${encodeURIComponent(checkId)}${note === undefined ? "" : `?note=${encodeURIComponent(note)}`}`);
  }

  maintenance(serviceId: string, enable: boolean, reason?: string): Promise<void> {
    return this.put(`/v1/agent/service/maintenance/${encodeURIComponent(serviceId)}?enable=${enable}${reason === undefined ? "" : `&reason=${encodeURIComponent(reason)}`}`);
  }

  private async put(path: string, body?: unknown): Promise<void> {
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers["X-Consul-Token"] = this.token;
    const response = await fetch(`${this.url}${path}`, { method: "PUT", headers, body: body === undefined ? null : JSON.stringify(body) });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`PUT ${path}: HTTP ${response.status}: ${text}`);
  }
}

/** A service registration with one TTL check that starts passing: the usual test instance. */
export function instance(id: string, name: string, address: string, port: unknown, extra: Partial<ServiceRegistration> = {}): ServiceRegistration {
  return { ID: id, Name: name, Address: address, Port: port, Check: { TTL: "10m", Status: "passing" }, ...extra };
}
