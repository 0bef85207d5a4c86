import http from "node:http";
import type { AddressInfo, Socket } from "node:net";

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
 *   the anonymous token).
 * Faults are injected from tests: failNext, resetIndex, respondWith, delay, setNodeHealth.
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
  service: string | null;
  chunked: boolean;
  cutAfter: number | null;
}

interface ServiceRecord {
  ID: string;
  Service: string;
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
  service: string;
  minIndex: number;
  wake(fault: Fault | null): void;
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
  private faults: Fault[] = [];
  private delayMs = 0;
  private globalIndex = 0;
  private extinctionIndex = 0;
  private closed = false;
  private port = 0;
  /** Every HTTP request received. */
  requestCount = 0;
  /** Every health query, in order, as asked: to check what a client sends back. */
  readonly queryLog: { service: string; index: string | null; wait: string | null; passing: string | null; tags: string[] }[] = [];

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
      socket.on("close", () => this.sockets.delete(socket));
    });
    // The node joins the catalog with its serf check, as an agent does on start.
    this.globalIndex = 5;
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
    const index = hasInstances ? (this.serviceIndexes.get(name) ?? this.globalIndex) : this.extinctionIndex > 0 ? this.extinctionIndex : this.globalIndex;
    // Consul never answers a blocking endpoint with an index below 1.
    return Math.max(1, index);
  }

  // ---- Faults ----

  /** The next `count` health answers (held queries included) are `status` with `body`. */
  failNext(count: number, status = 500, body = "No cluster leader"): void {
    this.addFault({ kind: "fail", status, body: Buffer.from(body), index: null, remaining: count, service: null, chunked: false, cutAfter: null });
  }

  /** The next health answer(s) carry `body` as is: hostile, truncated or huge payloads. */
  respondWith(body: string | Buffer, options: RespondWithOptions = {}): void {
    this.addFault({
      kind: "raw",
      status: options.status ?? 200,
      body: typeof body === "string" ? Buffer.from(body) : body,
      index: options.index === undefined ? "new" : options.index,
      remaining: options.times ?? 1,
      service: options.service?.toLowerCase() ?? null,
      chunked: options.chunked ?? false,
      cutAfter: options.cutAfter ?? null,
    });
  }

  /** Health queries wait this long before they are even looked at (0: no delay). */
  delay(ms: number): void {
    this.delayMs = ms;
  }

  /**
   * The index goes back, as after a raft snapshot restore: the data stays, every index is
   * lowered to `to` at most, and held queries return at once (Consul abandons the old state).
   */
  resetIndex(to = 1): void {
    this.globalIndex = to;
    this.extinctionIndex = Math.min(this.extinctionIndex, to);
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
      if (token.kind !== "management") throw new HttpFailure(403, "Permission denied");
      const text = await readBody(request);
      let body: unknown = null;
      if (text.trim() !== "") {
        try {
          body = JSON.parse(text);
        } catch (error) {
          throw new HttpFailure(400, `Request decode failed: ${(error as Error).message}`);
        }
      }
      run(match, body);
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
    if (readable !== undefined) return { kind: "read", services: new Set(readable.map((name) => name.toLowerCase())) };
    throw new HttpFailure(403, "ACL not found");
  }

  private async healthService(service: string, url: URL, token: Token, response: http.ServerResponse): Promise<void> {
    const name = service.toLowerCase();
    this.queriesByService.set(name, (this.queriesByService.get(name) ?? 0) + 1);
    const params = url.searchParams;
    this.queryLog.push({ service, index: params.get("index"), wait: params.get("wait"), passing: params.get("passing"), tags: params.getAll("tag") });
    if (this.delayMs > 0) await sleep(this.delayMs);
    if (this.closed || response.destroyed) return;

    const immediate = this.takeFault(name);
    if (immediate !== null) return this.answerFault(immediate, response);

    const dc = url.searchParams.get("dc");
    if (dc !== null && dc !== "" && dc !== this.datacenter) throw new HttpFailure(500, "No path to datacenter");
    const passing = parsePassing(url.searchParams);
    const tags = url.searchParams.getAll("tag");
    const minIndex = parseIndex(url.searchParams.get("index"));
    const waitMs = parseWait(url.searchParams.get("wait"));

    const answer = () => this.answerHealth(name, tags, passing, token, response);
    if (minIndex === 0 || this.serviceIndex(name) > minIndex) return answer();

    // Consul spreads wake-ups: up to wait/16 more than asked.
    const timeoutMs = waitMs + this.random() * (waitMs / 16);
    await new Promise<void>((resolve) => {
      const waiter: Waiter = {
        service: name,
        minIndex,
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

  private answerHealth(name: string, tags: readonly string[], passing: boolean, token: Token, response: http.ServerResponse): void {
    const wanted = tags.map((tag) => tag.toLowerCase());
    let filteredByAcl = false;
    const entries: unknown[] = [];
    const instances = [...this.services.values()]
      .filter((record) => record.Service.toLowerCase() === name)
      .filter((record) => wanted.every((tag) => record.Tags.some((own) => own.toLowerCase() === tag)))
      .sort((a, b) => (a.ID < b.ID ? -1 : a.ID > b.ID ? 1 : 0));
    for (const record of instances) {
      if (!canRead(token, name)) {
        filteredByAcl = true;
        continue;
      }
      const checks = this.checksOf(record.ID);
      if (passing && checks.some((check) => check.Status !== "passing")) continue;
      entries.push(this.entryJson(record, checks));
    }
    const headers: Record<string, string> = {
      "X-Consul-Index": String(this.serviceIndex(name)),
      "X-Consul-KnownLeader": "true",
      "X-Consul-LastContact": "0",
      "X-Consul-Effective-Consistency": "leader",
    };
    // Consul hides the header from the anonymous token, so as not to leak what exists.
    if (filteredByAcl && token.kind !== "anonymous") headers["X-Consul-Results-Filtered-By-ACLs"] = "true";
    send(response, 200, JSON.stringify(entries), headers, "application/json");
  }

  private answerFault(fault: Fault, response: http.ServerResponse): void {
    const headers: Record<string, string> = {};
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
    send(response, fault.status, fault.body, headers, type);
  }

  private addFault(fault: Fault): void {
    if (fault.remaining <= 0) return;
    this.faults.push(fault);
    // Held queries answer with it at once, as if something had changed.
    for (const waiter of [...this.waiters]) {
      const taken = this.takeFault(waiter.service);
      if (taken !== null) waiter.wake(taken);
    }
  }

  private takeFault(service: string): Fault | null {
    const fault = this.faults.find((candidate) => candidate.service === null || candidate.service === service);
    if (fault === undefined) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults = this.faults.filter((candidate) => candidate !== fault);
    return fault;
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
    for (const waiter of [...this.waiters]) if (this.serviceIndex(waiter.service) > waiter.minIndex) waiter.wake(null);
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
        Datacenter: this.datacenter,
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
        TaggedAddresses: record.Address === "" ? undefined : { lan_ipv4: { Address: serviceAddress, Port: record.Port }, wan_ipv4: { Address: serviceAddress, Port: record.Port } },
        Meta: record.Meta,
        Port: record.Port,
        Weights: record.Weights,
        EnableTagOverride: record.EnableTagOverride,
        Proxy: { Mode: "", MeshGateway: {}, Expose: {} },
        Connect: {},
        PeerName: "",
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

function serviceFingerprint(record: ServiceRecord): string {
  const { CreateIndex: _create, ModifyIndex: _modify, ...fields } = record;
  return JSON.stringify(fields);
}

function checkFingerprint(check: CheckRecord): string {
  return JSON.stringify([check.CheckID, check.Name, check.Status, check.Output, check.Notes, check.ServiceID, check.ServiceName]);
}

type Token = { kind: "management" } | { kind: "anonymous" } | { kind: "read"; services: Set<string> };

function canRead(token: Token, service: string): boolean {
  if (token.kind === "management") return true;
  if (token.kind === "anonymous") return false;
  return token.services.has(service);
}

const STATUS_OF: Record<string, CheckStatus> = { pass: "passing", warn: "warning", fail: "critical" };

function isStatus(value: unknown): value is CheckStatus {
  return value === "passing" || value === "warning" || value === "critical";
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

function send(response: http.ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, type = "text/plain; charset=utf-8"): void {
  if (response.headersSent || response.destroyed) return;
  const bytes = typeof body === "string" ? Buffer.from(body) : body;
  response.writeHead(status, { ...headers, "Content-Type": type, "Content-Length": String(bytes.length) });
  response.end(bytes);
}

async function readBody(request: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) throw new HttpFailure(413, "Request body too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
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
